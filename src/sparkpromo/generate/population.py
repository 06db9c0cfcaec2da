"""The catalogue, the users and their events (organic sessions and bots), drawn with numpy."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sparkpromo.generate.spec import (
    _BUY,
    _CART,
    _CATEGORIES,
    _COUNTRIES,
    _DAY,
    _FAV,
    _HOUR_PROFILE,
    _VIEW,
    BOT_MAX_VIEWS,
    BOT_MIN_VIEWS,
    CATEGORIES,
)


# ----------------------------------------------------------------------------------------------------------------
# Catalogue and users
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class _Items:
    ids: np.ndarray  # object: product id strings
    cat: np.ndarray  # int category index
    brand: list[str]
    price_str: np.ndarray  # object: "12.99"
    stock: np.ndarray
    cum: np.ndarray  # cumulative popularity weights, items in category order
    order: np.ndarray  # item index of each position of cum
    cat_base: np.ndarray  # cum value before each category
    cat_total: np.ndarray  # total weight of each category
    cat_last: np.ndarray  # last position of each category in cum


def _make_items(rng: np.random.Generator, n: int, width: int) -> _Items:
    k = len(_CATEGORIES)
    shares = np.array([c[1] for c in _CATEGORIES])
    shares = shares / shares.sum()
    cat = np.concatenate([np.arange(k), rng.choice(k, n - k, p=shares)])
    cat = cat[rng.permutation(n)]  # every category has an item; ids are not grouped by category
    median = np.array([c[2] for c in _CATEGORIES])[cat]
    sigma = np.array([c[3] for c in _CATEGORIES])[cat]
    raw = median * np.exp(sigma * rng.standard_normal(n))
    price = np.where(raw >= 10, np.floor(raw) + 0.99, np.maximum(0.49, np.round(raw, 2)))
    brand_pick = rng.random(n)
    brand = [_CATEGORIES[c][5][int(b * len(_CATEGORIES[c][5]))]
             for c, b in zip(cat.tolist(), brand_pick.tolist(), strict=True)]
    stock = np.where(rng.random(n) < 0.07, 0, np.round(rng.lognormal(np.log(40), 1.0, n)).astype(np.int64) + 1)
    # Zipf-like popularity: a random popularity rank per item, weight 1 / rank
    weight = 1.0 / (rng.permutation(n) + 1.0)
    order = np.argsort(cat, kind="stable")
    cum = np.cumsum(weight[order])
    sorted_cat = cat[order]
    first = np.searchsorted(sorted_cat, np.arange(k), side="left")
    last = np.searchsorted(sorted_cat, np.arange(k), side="right") - 1
    base = np.where(first > 0, cum[np.maximum(first - 1, 0)], 0.0)
    fmt = f"p{{:0{width}d}}".format
    return _Items(ids=np.array([fmt(i) for i in range(n)], dtype=object), cat=cat, brand=brand,
                  price_str=np.array([f"{p:.2f}" for p in price.tolist()], dtype=object), stock=stock,
                  cum=cum, order=order, cat_base=base, cat_total=cum[last] - base, cat_last=last)


@dataclass
class _Users:
    ids: np.ndarray  # object: user id strings, organic users then bots
    signup: np.ndarray  # day number (days since epoch)
    birth: np.ndarray  # day number
    country: np.ndarray  # object
    consent: np.ndarray  # bool
    activity: np.ndarray  # relative session rate (0 = never active), organic users only
    pref: np.ndarray  # (n, 3) preferred categories
    n_pref: np.ndarray  # 1..3


def _make_users(rng: np.random.Generator, n: int, n_bots: int, end_day: int, days: int, width: int) -> _Users:
    total = n + n_bots
    offset = rng.integers(31, days + 731, total)  # days before `end` of the signup
    n_recent = max(2, int(0.06 * n + 0.5))
    recent = rng.choice(n, n_recent, replace=False)
    n_very = max(1, n_recent // 3)
    offset[recent[:n_very]] = rng.integers(1, 4, n_very)
    offset[recent[n_very:]] = rng.integers(4, 31, n_recent - n_very)
    offset[n:] = rng.integers(days + 30, days + 731, n_bots)  # bots: old accounts
    age_days = np.clip(rng.normal(38.0, 13.0, total), 18.0, 85.0) * 365.25
    countries = [c for c, _ in _COUNTRIES]
    cw = np.array([w for _, w in _COUNTRIES])
    activity = rng.lognormal(0.0, 1.0, n)
    activity[recent] *= 4.0  # new customers explore the shop right after signing up
    dormant = rng.permutation(recent)[:max(1, n_recent // 4)]  # recent signups with no events at all
    activity[dormant] = 0.0
    k = len(_CATEGORIES)
    shares = np.array([c[1] for c in _CATEGORIES])
    keys = np.log(shares) + rng.gumbel(size=(n, k))  # weighted sampling without replacement
    pref = np.argsort(-keys, axis=1)[:, :3]
    fmt = f"u{{:0{width}d}}".format
    return _Users(ids=np.array([fmt(i) for i in range(total)], dtype=object), signup=end_day - offset,
                  birth=end_day - age_days.astype(np.int64), country=np.array(countries, dtype=object)[
                      rng.choice(len(countries), total, p=cw / cw.sum())],
                  consent=rng.random(total) < 0.85, activity=activity, pref=pref, n_pref=rng.integers(1, 4, n))


# ----------------------------------------------------------------------------------------------------------------
# Events
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class _Events:
    user: np.ndarray
    item: np.ndarray
    etype: np.ndarray
    ts: np.ndarray  # epoch seconds
    session: np.ndarray  # session number (string "s%08d" when written)
    qty: np.ndarray  # 0 = blank
    is_bot: np.ndarray


def _organic_events(rng: np.random.Generator, m: int, users: _Users, items: _Items, start_s: int,
                    end_s: int) -> tuple[_Events, int]:
    """``m`` organic events in sessions (not yet time-sorted) and the number of sessions."""
    n = len(users.activity)
    lo_user = np.maximum(start_s, users.signup[:n] * _DAY)
    weight = users.activity * (end_s - lo_user) / float(end_s - start_s)
    p_user = weight / weight.sum()
    k = len(_CATEGORIES)
    shares = np.array([c[1] for c in _CATEGORIES])
    shares = shares / shares.sum()
    p_cart_cat = np.array([c[4] for c in _CATEGORIES])
    grocery = CATEGORIES.index("grocery")
    n_sess = int(m / 3.9 * 1.15) + 16
    while True:
        s_user = rng.choice(n, n_sess, p=p_user)
        n_visits = np.minimum(rng.geometric(0.33, n_sess), 25)
        s_cat = users.pref[s_user, (rng.random(n_sess) * users.n_pref[s_user]).astype(np.int64)]
        v_sess = np.repeat(np.arange(n_sess), n_visits)
        v_user = s_user[v_sess]
        nv = len(v_sess)
        r = rng.random(nv)
        other_pref = users.pref[v_user, (rng.random(nv) * users.n_pref[v_user]).astype(np.int64)]
        cat = np.where(r < 0.65, s_cat[v_sess], np.where(r < 0.85, other_pref, rng.choice(k, nv, p=shares)))
        target = items.cat_base[cat] + rng.random(nv) * items.cat_total[cat]
        pos = np.minimum(np.searchsorted(items.cum, target, side="right"), items.cat_last[cat])
        v_item = items.order[pos]
        extra = rng.random(nv) < 0.18
        fav = rng.random(nv) < 0.05
        cart = rng.random(nv) < p_cart_cat[items.cat[v_item]]
        buy = cart & (rng.random(nv) < 0.5)
        qty = rng.choice(np.array([1, 2, 3, 4]), nv, p=[0.8, 0.13, 0.05, 0.02])
        qty = np.where(items.cat[v_item] == grocery, 1 + np.minimum(rng.poisson(1.2, nv), 8), qty)
        if int(nv + extra.sum() + fav.sum() + cart.sum() + buy.sum()) >= m:
            break
        n_sess = int(n_sess * 1.5) + 16
    # browse phase: view, (second view), (favorite), (add_to_cart) per visit; checkout phase: the purchases
    slots = np.stack([np.ones(nv, dtype=bool), extra, fav, cart], axis=1).ravel()
    flat = np.flatnonzero(slots)
    slot_type = np.array([_VIEW, _VIEW, _FAV, _CART], dtype=np.int8)
    buy_v = np.flatnonzero(buy)
    ev_visit = np.concatenate([flat // 4, buy_v])
    ev_type = np.concatenate([slot_type[flat % 4], np.full(len(buy_v), _BUY, dtype=np.int8)])
    phase = np.concatenate([np.zeros(len(flat), np.int64), np.ones(len(buy_v), np.int64)])
    order = np.argsort(v_sess[ev_visit] * 2 + phase, kind="stable")[:m]  # checkout last: truncation keeps funnels
    ev_visit, ev_type = ev_visit[order], ev_type[order]
    ev_sess = v_sess[ev_visit]
    # time offsets inside a session: gaps of about a minute, checkout a couple of minutes after browsing
    first = np.ones(m, dtype=bool)
    first[1:] = ev_sess[1:] != ev_sess[:-1]
    is_buy = ev_type == _BUY
    prev_buy = np.zeros(m, dtype=bool)
    prev_buy[1:] = is_buy[:-1] & ~first[1:]
    gap = np.clip(rng.exponential(60.0, m), 2, 1200).astype(np.int64)
    gap = np.where(is_buy & ~prev_buy, np.clip(rng.exponential(120.0, m), 10, 900).astype(np.int64), gap)
    gap = np.where(is_buy & prev_buy, rng.integers(1, 5, m), gap)
    gap[first] = 0
    cs = np.cumsum(gap)
    first_idx = np.flatnonzero(first)
    sess_no = np.cumsum(first) - 1  # sessions are contiguous and numbered 0..n_kept-1 in this order
    offset = cs - cs[first_idx][sess_no]
    last_idx = np.r_[first_idx[1:] - 1, m - 1]
    dur = offset[last_idx]
    n_kept = len(first_idx)
    # session start: a day of the user's active span, an hour from the daily profile; must end before `end`
    su = s_user[:n_kept]
    lo = lo_user[su]
    hi = end_s - 1 - dur
    room = hi - lo
    day0, day1 = lo // _DAY, np.maximum(hi, lo) // _DAY
    day = day0 + (rng.random(n_kept) * (day1 - day0 + 1)).astype(np.int64)
    hour = rng.choice(24, n_kept, p=_HOUR_PROFILE / _HOUR_PROFILE.sum())
    cand = day * _DAY + hour * 3600 + rng.integers(0, 3600, n_kept)
    fallback = lo + (rng.random(n_kept) * np.maximum(room, 0)).astype(np.int64)
    start = np.where((room > 0) & (cand >= lo) & (cand <= hi), cand, np.where(room > 0, fallback, lo))
    scale = np.where(room > 0, 1.0, (end_s - 1 - lo) / np.maximum(dur, 1))  # squeeze a too-long late session
    ts = start[sess_no] + np.floor(offset * scale[sess_no]).astype(np.int64)
    # session numbers in order of session start
    rank = np.empty(n_kept, dtype=np.int64)
    rank[np.argsort(start, kind="stable")] = np.arange(n_kept)
    ev = _Events(user=su[sess_no], item=v_item[ev_visit], etype=ev_type, ts=ts, session=rank[sess_no],
                 qty=np.where(ev_type >= _CART, qty[ev_visit], 0), is_bot=np.zeros(m, dtype=bool))
    return ev, n_kept


def _bot_events(rng: np.random.Generator, bot_users: np.ndarray, n_items: int, start_s: int, days: int,
                first_session: int) -> _Events:
    """Each bot views random items ``BOT_MIN_VIEWS``..``BOT_MAX_VIEWS - 1`` times within one UTC day."""
    parts: list[_Events] = []
    session = first_session
    for u in bot_users.tolist():
        nv = int(rng.integers(BOT_MIN_VIEWS, BOT_MAX_VIEWS))
        day_s = start_s + int(rng.integers(0, days)) * _DAY
        sec = np.sort(rng.integers(0, _DAY, nv))
        sess = sec // 1800  # a new session every half hour
        _, sess = np.unique(sess, return_inverse=True)
        parts.append(_Events(user=np.full(nv, u), item=rng.integers(0, n_items, nv),
                             etype=np.full(nv, _VIEW, dtype=np.int8), ts=day_s + sec, session=session + sess,
                             qty=np.zeros(nv, dtype=np.int64), is_bot=np.ones(nv, dtype=bool)))
        session += int(sess.max()) + 1
    if not parts:
        empty = np.zeros(0, dtype=np.int64)
        return _Events(empty, empty, empty.astype(np.int8), empty, empty, empty, empty.astype(bool))
    return _Events(*(np.concatenate([getattr(p, f) for p in parts]) for f in _Events.__dataclass_fields__))


def _concat_sorted(a: _Events, b: _Events) -> _Events:
    merged = {f: np.concatenate([getattr(a, f), getattr(b, f)]) for f in _Events.__dataclass_fields__}
    order = np.argsort(merged["ts"], kind="stable")
    return _Events(**{f: v[order] for f, v in merged.items()})
