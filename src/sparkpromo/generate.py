"""Deterministic generator of a realistic online shop's raw landing files: pure Python + numpy, no Spark.

Everything is drawn from one ``numpy.random.default_rng(seed)``, so the same arguments give byte-identical files.

Files under ``out_dir`` (exactly what the ``sources:`` section of ``conf/base.yaml`` reads):

* ``events/part-00000.csv``, ``part-00001.csv``, ... -- CSV with the header
  ``event_id,user_id,product_id,event_type,event_time,price,quantity,session_id``, at most ``ROWS_PER_PART`` data
  rows per file. ``event_time`` is ISO-8601 UTC (``2026-10-01T12:34:56Z``); event types are ``view``,
  ``favorite``, ``add_to_cart``, ``purchase``; ``price`` (2 decimals, the item's catalogue price) and ``quantity``
  (int >= 1) are set on ``add_to_cart``/``purchase`` rows and blank on ``view``/``favorite`` rows. Rows are in time
  order with increasing event ids, except the re-sent duplicates (a later exact copy of an earlier row).
* ``users/users.jsonl`` -- JSON lines with ``user_id`` (``u000123``), ``signup_date`` and ``birth_date``
  (``YYYY-MM-DD``), ``country`` (ISO-2, skewed over 8 countries), ``marketing_consent`` (JSON bool, ~85% true).
* ``items/items.csv`` -- CSV with the header ``product_id,category,brand,price,stock`` (``p00042``).
* ``_generation_report.json`` -- the :class:`GenerationReport` (paths relative to ``out_dir``).

The window: valid events lie in ``[end - days, end)`` (UTC, ``end`` exclusive, default ``DEFAULT_END``), so the last
event day is ``end - 1``. Behaviour: sessions of a few events minutes apart, Zipf-like item popularity, per-user
affinity for 1-3 categories, view -> add_to_cart -> purchase funnels (a purchase always follows a cart of the same
item in the same session, at checkout at the end of the session; a cart follows a view of the item), ~6% of users
signed up in the last 30 days before ``end`` (a third of them in the last 3 days; a quarter of them have no
events), birthdays spread over the year, plenty of abandoned carts worth >= 50.

Dirty records (``dirty=True`` only). Each dirty row carries exactly ONE defect, so every kind is countable, and the
exact count of each kind is in ``GenerationReport.dirt``. Count = ``max(1, round(share * denominator))``:

======================  ======  ============================================================================
kind                    share   what (share of ``n_events`` unless said otherwise)
======================  ======  ============================================================================
missing_required        0.5%    user_id, product_id or event_type is the empty string
unknown_event_type      0.5%    event_type in ``UNKNOWN_EVENT_TYPES`` (click, hover, scroll, share)
malformed_timestamp     0.3%    event_time in ``MALFORMED_TIMESTAMPS``
future_timestamp        0.3%    a valid event_time 100 to 104 years after ``end`` (after any ingest)
negative_value          0.3%    an add_to_cart/purchase row with a negative price or negative quantity
duplicate_event         1.0%    an exact re-sent copy of an earlier clean row (same event_id), a few rows later
unknown_user            0.5%    user_id not in users.jsonl (looks valid, e.g. ``u012345``)
unknown_item            0.5%    product_id not in items.csv (looks valid)
whitespace_case_noise   5.0%    FIXABLE, not to be rejected: event_type upper/title-cased and/or padded with
                                spaces (`` VIEW ``, ``Add_To_Cart``) or user_id/product_id padded with spaces
user_duplicate          0.2%    of users: an exact copy of a valid user line
user_bad_birth_date     0.2%    of users: an extra user (no events) whose birth_date is in ``BAD_BIRTH_DATES``
user_blank_id           0.1%    of users: an extra user line whose user_id is ``""``
item_negative_price     0.25%   of items: an extra item (no events) with a negative price
item_blank_id           0.25%   of items: an extra item row whose product_id is blank
======================  ======  ============================================================================

Bots (also ``dirty=True`` only): ``min(2 + n_events // 2_000_000, (n_events // 4) // BOT_MAX_VIEWS)`` extra users
(none below 4,800 events, 1 below 9,600, 2 from there up to 2M, 7 at 10M) that exist in users.jsonl and each
produce ``BOT_MIN_VIEWS`` to ``BOT_MAX_VIEWS - 1`` views of random items within ONE UTC day (so a filter at 1000
events/day catches them; organic users stay far below it unless ``n_users`` is set absurdly small). Bot events
COUNT WITHIN ``n_events``: the event files always hold exactly ``n_events`` data rows (organic + dirty + duplicates +
bot views). Bot rows are otherwise clean. ``dirt["bot_users"]`` and ``dirt["bot_events"]`` hold their counts.

For a cleaner: valid rows = ``events - duplicate_event - bot_events - sum(REJECTED_EVENT_KINDS)``, reported as
``GenerationReport.expected_clean_events`` (the whitespace/case-noise rows are among the valid ones). Only
generated files are removed before writing (``events/part-*.csv``, the users and items files, the daily batches
below); temporary files are hidden (``.name.tmp``).

Daily batches (:func:`generate_daily`): the same shop, row for row, as one batch per arrival day: mostly that day's
events, ``LATE_SHARE`` of rows sent 1 to ``MAX_LATE_DAYS`` days late, and every re-sent duplicate sent again 1 to
``MAX_LATE_DAYS`` days after its original (so most duplicates cross days); users exported on their signup day plus
daily updates of users already sent, the catalogue on the first day plus daily stock updates. They are staged under
``_daily/<day>/`` and :func:`deliver_day` moves one day into the landing zone as ``events/events-<day>.csv``,
``users/users-<day>.jsonl`` and ``items/items-<day>.csv`` (names the default source patterns read).
"""

from __future__ import annotations

import csv
import datetime as dt
import filecmp
import io as _io
import json
import logging
import os
import shutil
import time
import types
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sparkpromo import columns as C

log = logging.getLogger(__name__)

# --- the raw export's own column names (mapped to canonical names by the `sources:` config) ---
PRODUCT_ID = "product_id"
EVENT_TIME = "event_time"
EVENTS_HEADER: tuple[str, ...] = (C.EVENT_ID, C.USER_ID, PRODUCT_ID, C.EVENT_TYPE, EVENT_TIME, C.PRICE, C.QUANTITY,
                                  C.SESSION_ID)
USERS_FIELDS: tuple[str, ...] = (C.USER_ID, C.SIGNUP_DATE, C.BIRTH_DATE, C.COUNTRY, C.MARKETING_CONSENT)
ITEMS_HEADER: tuple[str, ...] = (PRODUCT_ID, C.CATEGORY, C.BRAND, C.PRICE, C.STOCK)

EVENTS_DIR = "events"
USERS_PATH = "users/users.jsonl"
ITEMS_PATH = "items/items.csv"
REPORT_PATH = "_generation_report.json"
# Daily shops (generate_daily): batches are staged under DAILY_DIR/<day>/ (no source reads it) and delivered into
# the landing zone under these names, '*' being the arrival day (YYYY-MM-DD).
DAILY_DIR = "_daily"
DAILY_PATTERNS: Mapping[str, str] = types.MappingProxyType({
    "events": "events/events-*.csv", "users": "users/users-*.jsonl", "items": "items/items-*.csv"})
DAILY_STREAM = 18  # seeds the daily draws apart from the main generator, so both layouts hold the same rows
LATE_SHARE = 0.03  # of event rows: sent 1 to MAX_LATE_DAYS days after the day they happened
MAX_LATE_DAYS = 3
USER_UPDATE_SHARE = 0.002  # of users, in each daily users export after the first: an update (consent changed)
ITEM_UPDATE_SHARE = 0.01  # of items, in each daily items export after the first: a stock update

DEFAULT_END = dt.date(2026, 11, 1)  # fixed, never "today": output must not depend on the clock
MIN_EVENTS = 1_000
ROWS_PER_PART = 1_000_000
WRITE_CHUNK = 200_000  # rows formatted at a time: bounds the memory of the string columns

DIRT_SHARES: Mapping[str, float] = types.MappingProxyType({
    # share of n_events
    "missing_required": 0.005,
    "unknown_event_type": 0.005,
    "malformed_timestamp": 0.003,
    "future_timestamp": 0.003,
    "negative_value": 0.003,
    "duplicate_event": 0.01,
    "unknown_user": 0.005,
    "unknown_item": 0.005,
    "whitespace_case_noise": 0.05,
    # share of valid users
    "user_duplicate": 0.002,
    "user_bad_birth_date": 0.002,
    "user_blank_id": 0.001,
    # share of valid items
    "item_negative_price": 0.0025,
    "item_blank_id": 0.0025,
})
EVENT_DIRT_KINDS: tuple[str, ...] = ("missing_required", "unknown_event_type", "malformed_timestamp",
                                     "future_timestamp", "negative_value", "duplicate_event", "unknown_user",
                                     "unknown_item", "whitespace_case_noise")
USER_DIRT_KINDS: tuple[str, ...] = ("user_duplicate", "user_bad_birth_date", "user_blank_id")
ITEM_DIRT_KINDS: tuple[str, ...] = ("item_negative_price", "item_blank_id")
BOT_KINDS: tuple[str, ...] = ("bot_users", "bot_events")
# Event rows a correct cleaner rejects (besides dropping duplicates and bot users' events).
REJECTED_EVENT_KINDS: tuple[str, ...] = ("missing_required", "unknown_event_type", "malformed_timestamp",
                                         "future_timestamp", "negative_value", "unknown_user", "unknown_item")

MALFORMED_TIMESTAMPS: tuple[str, ...] = ("not-a-date", "2026-13-45T99:00:00Z", "yesterday")
UNKNOWN_EVENT_TYPES: tuple[str, ...] = ("click", "hover", "scroll", "share")
BAD_BIRTH_DATES: tuple[str, ...] = ("1985-02-30", "31/12/1980", "unknown")
BOT_MIN_VIEWS = 1_050
BOT_MAX_VIEWS = 1_200  # exclusive

# category, share of the catalogue (also the global category popularity), median price, price sigma,
# add_to_cart probability per item visit, brands
_CATEGORIES: tuple[tuple[str, float, float, float, float, tuple[str, ...]], ...] = (
    ("electronics", 0.14, 90.0, 0.8, 0.08, ("Voltix", "Sonora", "Pixelon", "Ampere", "Lumen")),
    ("computers", 0.08, 450.0, 0.6, 0.06, ("Bytewise", "Corelab", "Nimbus", "Quanta")),
    ("grocery", 0.14, 4.5, 0.6, 0.22, ("FreshFarm", "Daily Pantry", "GreenLeaf", "Mill & Co")),
    ("books", 0.14, 14.0, 0.4, 0.12, ("Papyrus Press", "Inkwell", "Northwind Books", "Folio")),
    ("fashion", 0.14, 39.0, 0.6, 0.10, ("Urbana", "Threadline", "Nordic Wear", "Velvet & Oak")),
    ("home", 0.11, 32.0, 0.7, 0.09, ("Hearth", "Casa Nova", "Linen Lane", "Oakhouse")),
    ("toys", 0.08, 24.0, 0.6, 0.11, ("Playmaker", "Tiny Giants", "Brickworks")),
    ("sports", 0.09, 45.0, 0.7, 0.09, ("Stride", "Summit", "ProCourt", "AquaFit")),
    ("beauty", 0.08, 17.0, 0.5, 0.14, ("Glow", "Petal", "Aurea", "Silk Skin")),
)
CATEGORIES: tuple[str, ...] = tuple(c[0] for c in _CATEGORIES)
_COUNTRIES: tuple[tuple[str, float], ...] = (("DE", 0.28), ("FR", 0.17), ("GB", 0.15), ("NL", 0.10), ("ES", 0.09),
                                             ("IT", 0.09), ("PL", 0.07), ("SE", 0.05))
# relative session starts per UTC hour: quiet nights, evening peak
_HOUR_PROFILE = np.array([1.0, 0.6, 0.4, 0.3, 0.3, 0.4, 0.8, 1.5, 2.0, 2.2, 2.3, 2.5,
                          2.8, 2.6, 2.4, 2.4, 2.6, 3.0, 3.5, 4.0, 4.2, 3.8, 3.0, 2.0])

_VIEW, _FAV, _CART, _BUY = (C.EVENT_TYPES.index(t) for t in (C.VIEW, C.FAVORITE, C.ADD_TO_CART, C.PURCHASE))
_DAY = 86_400
# column positions in EVENTS_HEADER
_COL_USER, _COL_ITEM, _COL_TYPE, _COL_TIME, _COL_PRICE, _COL_QTY = 1, 2, 3, 4, 5, 6


@dataclass(frozen=True)
class GenerationReport:
    """What :func:`generate_shop` wrote. ``dirt`` holds the exact number of injected records of each kind."""

    out_dir: Path
    event_files: tuple[Path, ...]
    users_file: Path
    items_file: Path
    seed: int
    start: dt.date  # first day of the window (inclusive)
    end: dt.date  # end of the window (exclusive): the last event day is end - 1
    dirty: bool
    events: int  # data rows in the event files, everything included (bots, dirt, duplicates)
    users: int  # distinct valid user ids in users.jsonl (bots included)
    items: int  # distinct valid product ids in items.csv
    user_rows: int  # lines in users.jsonl (valid + dirty)
    item_rows: int  # data rows in items.csv (valid + dirty)
    expected_clean_events: int  # events minus duplicates, bot events and REJECTED_EVENT_KINDS rows
    bot_user_ids: tuple[str, ...] = ()
    dirt: Mapping[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict with paths relative to ``out_dir`` (so it is identical wherever it was written)."""
        def rel(p: Path) -> str:
            return p.relative_to(self.out_dir).as_posix()
        return {
            "seed": self.seed, "start": self.start.isoformat(), "end": self.end.isoformat(), "dirty": self.dirty,
            "events": self.events, "users": self.users, "items": self.items,
            "user_rows": self.user_rows, "item_rows": self.item_rows,
            "expected_clean_events": self.expected_clean_events, "bot_user_ids": list(self.bot_user_ids),
            "dirt": dict(self.dirt), "dirt_shares": dict(DIRT_SHARES),
            "files": {"events": [rel(p) for p in self.event_files], "users": rel(self.users_file),
                      "items": rel(self.items_file)},
        }


def default_sizes(n_events: int) -> tuple[int, int]:
    """(users, items) derived from the number of events: ~40 events per user, ~200 per item, with floors."""
    return max(50, n_events // 40), max(200, n_events // 200)


def bot_count(n_events: int) -> int:
    """Number of bot users injected when ``dirty``: a few, and never more than a quarter of the events."""
    return max(0, min(2 + n_events // 2_000_000, (n_events // 4) // BOT_MAX_VIEWS))


def dirt_count(kind: str, denominator: int) -> int:
    """Exact number of records of ``kind`` injected for ``denominator`` events/users/items (dirty runs)."""
    return max(1, int(DIRT_SHARES[kind] * denominator + 0.5))


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


# ----------------------------------------------------------------------------------------------------------------
# Dirt
# ----------------------------------------------------------------------------------------------------------------
class _Overrides:
    """Per-column replacement strings keyed by event row (rows index the time-sorted events)."""

    def __init__(self) -> None:
        self._cols: dict[int, tuple[list[int], list[str]]] = {}

    def add(self, col: int, row: int, value: str) -> None:
        rows, values = self._cols.setdefault(col, ([], []))
        rows.append(row)
        values.append(value)

    def frozen(self) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        out: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        for col, (rows, values) in self._cols.items():
            r = np.array(rows, dtype=np.int64)
            order = np.argsort(r, kind="stable")
            out[col] = (r[order], np.array(values, dtype=object)[order])
        return out


def _ts_str(seconds: np.ndarray) -> np.ndarray:
    return np.datetime_as_string(seconds.astype("datetime64[s]"), timezone="UTC")


def _inject_event_dirt(rng: np.random.Generator, ev: _Events, counts: Mapping[str, int], users: _Users,
                       items: _Items, n_user_ids: int, n_item_ids: int,
                       end_s: int) -> tuple[_Overrides, np.ndarray, int]:
    """Choose disjoint organic rows for each kind and record their replacement strings.

    Returns the overrides, the (sorted) rows to re-send as duplicates and the number of negative-value rows.
    """
    ov = _Overrides()
    pool = rng.permutation(np.flatnonzero(~ev.is_bot))
    priced = ev.etype[pool] >= _CART
    n_neg = min(counts["negative_value"], int(priced.sum()))
    neg_rows = pool[priced][:n_neg]
    pool = pool[~np.isin(pool, neg_rows)]
    for row in neg_rows.tolist():
        if rng.random() < 0.5:
            ov.add(_COL_PRICE, row, "-" + items.price_str[ev.item[row]])
        else:
            ov.add(_COL_QTY, row, f"-{ev.qty[row]}")
    taken = 0

    def take(kind: str) -> list[int]:
        nonlocal taken
        rows = pool[taken:taken + counts[kind]].tolist()
        taken += len(rows)
        return rows

    for row in take("missing_required"):
        ov.add((_COL_USER, _COL_ITEM, _COL_TYPE)[int(rng.integers(0, 3))], row, "")
    for row in take("unknown_event_type"):
        ov.add(_COL_TYPE, row, UNKNOWN_EVENT_TYPES[int(rng.integers(0, len(UNKNOWN_EVENT_TYPES)))])
    for row in take("malformed_timestamp"):
        ov.add(_COL_TIME, row, MALFORMED_TIMESTAMPS[int(rng.integers(0, len(MALFORMED_TIMESTAMPS)))])
    rows = take("future_timestamp")
    # Judged against the time a row reached bronze (the wall clock), so far enough ahead to stay in the future.
    future = end_s + 100 * 365 * _DAY + rng.integers(0, 4 * 365 * _DAY, len(rows))
    for row, value in zip(rows, _ts_str(future).tolist(), strict=True):
        ov.add(_COL_TIME, row, value)
    u_width = len(users.ids[0]) - 1
    for row in take("unknown_user"):
        ov.add(_COL_USER, row, f"u{n_user_ids + 1000 + int(rng.integers(0, max(1000, n_user_ids))):0{u_width}d}")
    i_width = len(items.ids[0]) - 1
    for row in take("unknown_item"):
        ov.add(_COL_ITEM, row, f"p{n_item_ids + 1000 + int(rng.integers(0, max(1000, n_item_ids))):0{i_width}d}")
    for row in take("whitespace_case_noise"):
        which = rng.random()
        if which < 0.6:
            t = C.EVENT_TYPES[ev.etype[row]]
            variants = (t.upper(), t.title(), f" {t} ", f" {t.upper()} ", f"{t.capitalize()}  ")
            ov.add(_COL_TYPE, row, variants[int(rng.integers(0, len(variants)))])
        else:
            col = _COL_USER if which < 0.8 else _COL_ITEM
            value = users.ids[ev.user[row]] if col == _COL_USER else items.ids[ev.item[row]]
            pads = (f" {value} ", f"{value} ", f"  {value}", f" {value}  ")
            ov.add(col, row, pads[int(rng.integers(0, len(pads)))])
    dup_src = np.sort(np.array(take("duplicate_event"), dtype=np.int64))
    return ov, dup_src, n_neg


# ----------------------------------------------------------------------------------------------------------------
# Writing
# ----------------------------------------------------------------------------------------------------------------
def _replace_file(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8", newline="")
    os.replace(tmp, path)


def _clean_landing(out: Path) -> None:
    """Remove every generated landing file, single-batch and daily (and the daily staging folder), so a new shop
    never sits next to the rows of an older one. Other files (responses, the user's own) are left alone."""
    for pattern in (f"{EVENTS_DIR}/part-*.csv", f"{EVENTS_DIR}/.part-*.csv.tmp", *DAILY_PATTERNS.values(),
                    USERS_PATH, ITEMS_PATH):
        for old in out.glob(pattern):
            old.unlink()
    shutil.rmtree(out / DAILY_DIR, ignore_errors=True)


def _write_events(events_dir: Path, out_rows: np.ndarray, ev: _Events, users: _Users, items: _Items,
                  overrides: dict[int, tuple[np.ndarray, np.ndarray]],
                  name: Callable[[int], str] = "part-{:05d}.csv".format, id_total: int = 0) -> tuple[Path, ...]:
    """Write ``out_rows`` (event indices, in file order) as CSV files of at most ``ROWS_PER_PART`` rows, the
    ``part``-th named ``name(part)``. Event ids are numbered over ``id_total`` rows (default: these rows), so a
    day's batch of a daily shop carries the same ids as the single-batch shop."""
    total = len(out_rows)
    id_fmt = f"e{{:0{max(9, len(str(id_total or total)))}d}}".format
    sess_fmt = f"s{{:0{max(8, len(str(int(ev.session.max(initial=0)))))}d}}".format
    type_str = np.array(C.EVENT_TYPES, dtype=object)
    qty_str = np.array([""] + [str(q) for q in range(1, int(ev.qty.max(initial=1)) + 1)], dtype=object)
    paths: list[Path] = []
    events_dir.mkdir(parents=True, exist_ok=True)
    for part, a in enumerate(range(0, max(total, 1), ROWS_PER_PART)):
        b = min(total, a + ROWS_PER_PART)
        path = events_dir / name(part)
        tmp = events_dir / f".{path.name}.tmp"
        with tmp.open("w", encoding="utf-8", newline="") as fh:
            writer = csv.writer(fh, lineterminator="\n")
            writer.writerow(EVENTS_HEADER)
            for c0 in range(a, b, WRITE_CHUNK):
                rows = out_rows[c0:min(b, c0 + WRITE_CHUNK)]
                item = ev.item[rows]
                cols: list[np.ndarray] = [
                    np.array(list(map(id_fmt, (rows + 1).tolist())), dtype=object),
                    users.ids[ev.user[rows]],
                    items.ids[item],
                    type_str[ev.etype[rows]],
                    _ts_str(ev.ts[rows]).astype(object),
                    np.where(ev.etype[rows] >= _CART, items.price_str[item], ""),
                    qty_str[ev.qty[rows]],
                    np.array(list(map(sess_fmt, ev.session[rows].tolist())), dtype=object),
                ]
                for col, (ov_rows, ov_vals) in overrides.items():
                    idx = np.minimum(np.searchsorted(ov_rows, rows), len(ov_rows) - 1)
                    hit = np.flatnonzero(ov_rows[idx] == rows)
                    if len(hit):
                        cols[col] = cols[col].copy()
                        cols[col][hit] = ov_vals[idx[hit]]
                writer.writerows(zip(*(c.tolist() for c in cols), strict=True))
        os.replace(tmp, path)
        paths.append(path)
    return tuple(paths)


def _user_line(user_id: str, signup: str, birth: str, country: str, consent: bool) -> str:
    values = (user_id, signup, birth, country, consent)
    return json.dumps(dict(zip(USERS_FIELDS, values, strict=True)), separators=(",", ":"))


def _days_str(days: np.ndarray) -> list[str]:
    return np.datetime_as_string(days.astype("datetime64[D]")).tolist()


def _insert_at_random(rng: np.random.Generator, lines: list[str], extra: list[str]) -> list[str]:
    """Insert ``extra`` lines at random positions of ``lines`` (deterministic for a given rng state)."""
    pos = np.sort(rng.integers(0, len(lines) + 1, len(extra)))
    out: list[str] = []
    prev = 0
    for p, line in zip(pos.tolist(), extra, strict=True):
        out.extend(lines[prev:p])
        out.append(line)
        prev = p
    out.extend(lines[prev:])
    return out


def _users_text(rng: np.random.Generator, users: _Users, counts: Mapping[str, int], end_day: int) -> tuple[str, int]:
    out = _user_lines(rng, users, counts, end_day)
    return "".join(line + "\n" for line in out), len(out)


def _user_lines(rng: np.random.Generator, users: _Users, counts: Mapping[str, int], end_day: int) -> list[str]:
    total = len(users.ids)
    signup, birth = _days_str(users.signup), _days_str(users.birth)
    lines = [_user_line(u, s, b, c, bool(k)) for u, s, b, c, k in
             zip(users.ids.tolist(), signup, birth, users.country.tolist(), users.consent.tolist(), strict=True)]
    n_organic = len(users.activity)
    extra: list[str] = []
    extra += [lines[i] for i in rng.integers(0, n_organic, counts["user_duplicate"]).tolist()]
    width = len(users.ids[0]) - 1
    signup_extra = _days_str(end_day - rng.integers(31, 700, counts["user_bad_birth_date"] + counts["user_blank_id"]))
    for j in range(counts["user_bad_birth_date"]):
        extra.append(_user_line(f"u{total + j:0{width}d}", signup_extra[j], BAD_BIRTH_DATES[j % len(BAD_BIRTH_DATES)],
                                "DE", True))
    for j in range(counts["user_blank_id"]):
        extra.append(_user_line("", signup_extra[counts["user_bad_birth_date"] + j], "1990-06-15", "FR", True))
    return _insert_at_random(rng, lines, extra)


def _items_text(rng: np.random.Generator, items: _Items, counts: Mapping[str, int]) -> tuple[str, int]:
    n = len(items.ids)
    rows = [[pid, CATEGORIES[c], b, p, str(s)] for pid, c, b, p, s in
            zip(items.ids.tolist(), items.cat.tolist(), items.brand, items.price_str.tolist(), items.stock.tolist(),
                strict=True)]
    width = len(items.ids[0]) - 1
    extra: list[list[str]] = []
    for j in range(counts["item_negative_price"]):
        src = rows[int(rng.integers(0, n))]
        extra.append([f"p{n + j:0{width}d}", src[1], src[2], "-" + src[3], src[4]])
    for _ in range(counts["item_blank_id"]):
        src = rows[int(rng.integers(0, n))]
        extra.append(["", src[1], src[2], src[3], src[4]])

    def line(r: list[str]) -> str:
        return ",".join(r)

    out = _insert_at_random(rng, [line(r) for r in rows], [line(r) for r in extra])
    return ",".join(ITEMS_HEADER) + "\n" + "".join(x + "\n" for x in out), len(out)


# ----------------------------------------------------------------------------------------------------------------
# Entry point
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class _Shop:
    """Everything drawn for one shop, before any file is written (the rng has drawn items, users and events)."""

    rng: np.random.Generator
    seed: int
    start: dt.date
    end: dt.date
    days: int
    dirty: bool
    end_day: int
    items: _Items
    users: _Users
    ev: _Events
    out_rows: np.ndarray  # event indices in file order, re-sent duplicates included
    is_copy: np.ndarray  # per out_rows position: a re-sent duplicate
    overrides: dict[int, tuple[np.ndarray, np.ndarray]]
    ev_counts: dict[str, int]
    user_counts: dict[str, int]
    item_counts: dict[str, int]
    n_users: int
    n_items: int
    n_bots: int
    n_bot_events: int


def _simulate(n_events: int, seed: int, days: int, end: dt.date | None, n_users: int, n_items: int,
              dirty: bool) -> _Shop:
    if n_events < MIN_EVENTS:
        raise ValueError(f"n_events must be at least {MIN_EVENTS}, got {n_events}")
    if days < 1:
        raise ValueError(f"days must be >= 1, got {days}")
    if n_users and n_users < 10:
        raise ValueError(f"n_users must be 0 (derived) or >= 10, got {n_users}")
    if n_items and n_items < 20:
        raise ValueError(f"n_items must be 0 (derived) or >= 20, got {n_items}")
    end = end or DEFAULT_END
    if isinstance(end, dt.datetime):
        end = end.date()
    start = end - dt.timedelta(days=days)
    end_day = (end - dt.date(1970, 1, 1)).days
    end_s, start_s = end_day * _DAY, (end_day - days) * _DAY
    d_users, d_items = default_sizes(n_events)
    n_users, n_items = n_users or d_users, n_items or d_items
    rng = np.random.default_rng(seed)

    n_bots = bot_count(n_events) if dirty else 0
    ev_counts = {k: dirt_count(k, n_events) if dirty else 0 for k in EVENT_DIRT_KINDS}
    user_counts = {k: dirt_count(k, n_users) if dirty else 0 for k in USER_DIRT_KINDS}
    item_counts = {k: dirt_count(k, n_items) if dirty else 0 for k in ITEM_DIRT_KINDS}
    n_user_ids = n_users + n_bots + user_counts["user_bad_birth_date"]
    n_item_ids = n_items + item_counts["item_negative_price"]
    items = _make_items(rng, n_items, max(5, len(str(n_item_ids))))
    users = _make_users(rng, n_users, n_bots, end_day, days, max(6, len(str(n_user_ids))))

    bots = _bot_events(rng, np.arange(n_users, n_users + n_bots), n_items, start_s, days, first_session=0)
    n_organic = n_events - len(bots.user) - ev_counts["duplicate_event"]
    organic, n_sessions = _organic_events(rng, n_organic, users, items, start_s, end_s)
    bots.session += n_sessions
    ev = _concat_sorted(organic, bots)
    overrides, dup_src, n_neg = _inject_event_dirt(rng, ev, ev_counts, users, items, n_user_ids, n_item_ids, end_s)
    ev_counts["negative_value"] = n_neg  # lower than asked only if there are too few cart/purchase rows
    # re-sent duplicates: an exact copy of the source row, a few rows after it
    n_rows = len(ev.ts)
    dup_at = np.minimum(dup_src + rng.integers(1, 2000, len(dup_src)), n_rows - 1)
    keys = np.concatenate([np.arange(n_rows) * 2, dup_at * 2 + 1])
    order = np.argsort(keys, kind="stable")
    out_rows = np.concatenate([np.arange(n_rows), dup_src])[order]
    return _Shop(rng=rng, seed=seed, start=start, end=end, days=days, dirty=dirty, end_day=end_day, items=items,
                 users=users, ev=ev, out_rows=out_rows, is_copy=order >= n_rows, overrides=overrides.frozen(),
                 ev_counts=ev_counts, user_counts=user_counts, item_counts=item_counts, n_users=n_users,
                 n_items=n_items, n_bots=n_bots, n_bot_events=len(bots.user))


def _report(shop: _Shop, out: Path, event_files: tuple[Path, ...], users_file: Path, items_file: Path,
            user_rows: int, item_rows: int) -> GenerationReport:
    ev_counts = shop.ev_counts
    dirt = {**ev_counts, **shop.user_counts, **shop.item_counts, "bot_users": shop.n_bots,
            "bot_events": shop.n_bot_events}
    rejected = sum(ev_counts[k] for k in REJECTED_EVENT_KINDS)
    n_out = len(shop.out_rows)
    return GenerationReport(
        out_dir=out, event_files=event_files, users_file=users_file, items_file=items_file, seed=shop.seed,
        start=shop.start, end=shop.end, dirty=shop.dirty, events=n_out, users=shop.n_users + shop.n_bots,
        items=shop.n_items, user_rows=user_rows, item_rows=item_rows,
        expected_clean_events=n_out - ev_counts["duplicate_event"] - shop.n_bot_events - rejected,
        bot_user_ids=tuple(shop.users.ids[shop.n_users:].tolist()), dirt=types.MappingProxyType(dirt))


def generate_shop(out_dir: str | Path, n_events: int, seed: int = 7, days: int = 60,
                  end: dt.date | None = None, n_users: int = 0, n_items: int = 0,
                  dirty: bool = True) -> GenerationReport:
    """Write a deterministic sample shop (events, users, items, report) under ``out_dir``; see the module docstring.

    ``end`` is the exclusive end of the event window (default ``DEFAULT_END``; pass the run date in a pipeline).
    ``n_users``/``n_items`` of 0 are derived from ``n_events`` (:func:`default_sizes`). Generated landing files
    already under ``out_dir`` (single-batch or daily) are removed first; every file is written to a hidden
    temporary name and renamed.
    """
    t0 = time.perf_counter()
    shop = _simulate(n_events, seed, days, end, n_users, n_items, dirty)
    rng = shop.rng
    out = Path(out_dir)
    _clean_landing(out)
    event_files = _write_events(out / EVENTS_DIR, shop.out_rows, shop.ev, shop.users, shop.items, shop.overrides)
    (out / USERS_PATH).parent.mkdir(parents=True, exist_ok=True)
    (out / ITEMS_PATH).parent.mkdir(parents=True, exist_ok=True)
    users_text, user_rows = _users_text(rng, shop.users, shop.user_counts, shop.end_day)
    _replace_file(out / USERS_PATH, users_text)
    items_text, item_rows = _items_text(rng, shop.items, shop.item_counts)
    _replace_file(out / ITEMS_PATH, items_text)
    report = _report(shop, out, event_files, out / USERS_PATH, out / ITEMS_PATH, user_rows, item_rows)
    _replace_file(out / REPORT_PATH, json.dumps(report.to_dict(), indent=2, sort_keys=True) + "\n")
    log.info("generated shop in %s: events=%d parts=%d users=%d items=%d bots=%d dirty=%s elapsed_s=%.1f",
             out, report.events, len(event_files), report.users, report.items, shop.n_bots, dirty,
             time.perf_counter() - t0)
    return report


# ----------------------------------------------------------------------------------------------------------------
# Daily batches
# ----------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DayBatch:
    """One arrival day of a daily shop: its three export files (under the staging folder) and what they hold."""

    day: dt.date
    events_file: Path
    users_file: Path
    items_file: Path
    events: int  # data rows in the events file
    late: int  # rows whose event happened on an earlier day (sent late)
    resent: int  # exact re-sent copies of rows sent before (in an earlier batch, or in this one on the window's
    # last day, past which a copy cannot be sent later)
    users: int  # lines in the users export
    user_updates: int  # lines that update a user an earlier export already sent (consent changed)
    items: int  # data rows in the items export
    item_updates: int  # rows that update an item an earlier export already sent (stock changed)

    def files(self) -> tuple[Path, Path, Path]:
        return self.events_file, self.users_file, self.items_file

    def to_dict(self, out_dir: Path) -> dict[str, Any]:
        return {"day": self.day.isoformat(), "events": self.events, "late": self.late, "resent": self.resent,
                "users": self.users, "user_updates": self.user_updates, "items": self.items,
                "item_updates": self.item_updates,
                "files": [p.relative_to(out_dir).as_posix() for p in self.files()]}


@dataclass(frozen=True)
class DailyReport:
    """What :func:`generate_daily` wrote: the shop as a whole and its batches, first arrival day first."""

    shop: GenerationReport
    batches: tuple[DayBatch, ...]

    def batch(self, day: dt.date) -> DayBatch:
        for b in self.batches:
            if b.day == day:
                return b
        raise KeyError(f"no batch for {day} (the shop's days are {self.shop.start} to {self.shop.end})")

    def to_dict(self) -> dict[str, Any]:
        return {**self.shop.to_dict(), "batches": [b.to_dict(self.shop.out_dir) for b in self.batches]}


def daily_file(out_dir: str | Path, source: str, day: dt.date) -> Path:
    """Where ``source``'s export of arrival ``day`` lands (``events/events-2026-10-01.csv``, ...)."""
    return Path(out_dir) / DAILY_PATTERNS[source].replace("*", day.isoformat())


def _staged(out_dir: Path, source: str, day: dt.date) -> Path:
    return out_dir / DAILY_DIR / day.isoformat() / daily_file("", source, day)


def _arrival_days(shop: _Shop) -> np.ndarray:
    """The arrival day (0 = the first day of the window) of every out_rows position.

    A row arrives on the day it happened, except ``LATE_SHARE`` of them, sent 1..``MAX_LATE_DAYS`` days late, and
    the re-sent duplicates, sent again 1..``MAX_LATE_DAYS`` days after their original arrived (the same day when
    that would be past the window). Drawn from a generator of their own, so the rows match the single-batch shop.
    """
    rng = np.random.default_rng([shop.seed, DAILY_STREAM])
    last = shop.days - 1
    start_day = shop.end_day - shop.days
    event_day = shop.ev.ts[shop.out_rows] // _DAY - start_day
    arrival = event_day.copy()
    originals = np.flatnonzero(~shop.is_copy)
    can_be_late = originals[event_day[originals] < last]
    n_late = min(len(can_be_late), int(LATE_SHARE * len(originals) + 0.5))
    late = np.sort(rng.choice(can_be_late, n_late, replace=False)) if n_late else can_be_late[:0]
    arrival[late] = np.minimum(event_day[late] + rng.integers(1, MAX_LATE_DAYS + 1, n_late), last)
    copies = np.flatnonzero(shop.is_copy)
    original_at = np.empty(len(shop.ev.ts), dtype=np.int64)
    original_at[shop.out_rows[originals]] = originals
    src_arrival = arrival[original_at[shop.out_rows[copies]]]
    arrival[copies] = np.minimum(src_arrival + rng.integers(1, MAX_LATE_DAYS + 1, len(copies)), last)
    return arrival


def generate_daily(out_dir: str | Path, n_events: int, seed: int = 7, days: int = 60,
                   end: dt.date | None = None, n_users: int = 0, n_items: int = 0,
                   dirty: bool = True) -> DailyReport:
    """Write the shop of :func:`generate_shop` as ``days`` daily batches, staged under ``out_dir/_daily/<day>/``
    (outside every source folder, so ingest never sees them) until :func:`deliver_day` moves a day into the landing
    zone as ``events/events-<day>.csv``, ``users/users-<day>.jsonl`` and ``items/items-<day>.csv``.

    The batches hold exactly the single-batch shop's event rows (same ids, same dirt), by arrival day: mostly the
    rows of that day, some late ones (:func:`_arrival_days`) and the re-sent duplicates a few days after their
    original. Users are exported on their signup day (everyone who signed up before the window, and the dirty
    user lines, on the first day) and each later export also updates ``USER_UPDATE_SHARE`` of the users sent
    before (marketing consent flipped). Items: the whole catalogue on the first day, then each day a stock update of
    ``ITEM_UPDATE_SHARE`` of them. Every day has all three files. Generated landing files already under
    ``out_dir`` are removed first. Deterministic by ``seed``.
    """
    t0 = time.perf_counter()
    shop = _simulate(n_events, seed, days, end, n_users, n_items, dirty)
    out = Path(out_dir)
    _clean_landing(out)
    day_of = [shop.start + dt.timedelta(days=k) for k in range(days)]
    arrival = _arrival_days(shop)
    order = np.argsort(arrival, kind="stable")  # file order kept within each day
    bounds = np.searchsorted(arrival[order], np.arange(days + 1))
    start_day = shop.end_day - days
    event_day = shop.ev.ts[shop.out_rows] // _DAY - start_day
    # The single-batch users and items draw from the main generator exactly as generate_shop does.
    user_lines = _user_lines(shop.rng, shop.users, shop.user_counts, shop.end_day)
    items_text, _ = _items_text(shop.rng, shop.items, shop.item_counts)
    rng = np.random.default_rng([seed, DAILY_STREAM, 1])
    signup = [dt.date.fromisoformat(json.loads(line)[C.SIGNUP_DATE]) for line in user_lines]
    export_day = [max(0, (d - shop.start).days) for d in signup]
    per_day_users: list[list[str]] = [[] for _ in range(days)]
    for line, k in zip(user_lines, export_day, strict=True):
        per_day_users[k].append(line)
    organic_signup = shop.users.signup[:shop.n_users] - start_day
    users_per_update = max(1, int(USER_UPDATE_SHARE * shop.n_users + 0.5))
    items_per_update = max(1, int(ITEM_UPDATE_SHARE * shop.n_items + 0.5))
    ids, ustr = shop.users.ids, _days_str(shop.users.signup)
    bstr = _days_str(shop.users.birth)
    consent = shop.users.consent.copy()
    batches: list[DayBatch] = []
    for k, day in enumerate(day_of):
        rows = shop.out_rows[order[bounds[k]:bounds[k + 1]]]
        positions = order[bounds[k]:bounds[k + 1]]
        events_file = _staged(out, "events", day)
        _write_events(events_file.parent, rows, shop.ev, shop.users, shop.items, shop.overrides,
                      name=_part_name(events_file.name), id_total=len(shop.out_rows))
        updates: list[str] = []
        if k:
            known = np.flatnonzero(organic_signup < k)
            picked = np.sort(rng.choice(known, min(users_per_update, len(known)), replace=False))
            consent[picked] = ~consent[picked]  # each update changes the user's last exported row
            updates = [_user_line(ids[u], ustr[u], bstr[u], shop.users.country[u], bool(consent[u]))
                       for u in picked.tolist()]
        users_file = _staged(out, "users", day)
        users_file.parent.mkdir(parents=True, exist_ok=True)
        lines = per_day_users[k] + updates
        _replace_file(users_file, "".join(line + "\n" for line in lines))
        items_file = _staged(out, "items", day)
        items_file.parent.mkdir(parents=True, exist_ok=True)
        if k == 0:
            item_text, n_item_rows, n_item_updates = items_text, items_text.count("\n") - 1, 0
        else:
            picked = np.sort(rng.choice(shop.n_items, items_per_update, replace=False))
            stock = rng.integers(0, 200, len(picked))
            item_rows = [",".join((shop.items.ids[i], CATEGORIES[shop.items.cat[i]], shop.items.brand[i],
                                   shop.items.price_str[i], str(s)))
                         for i, s in zip(picked.tolist(), stock.tolist(), strict=True)]
            item_text = ",".join(ITEMS_HEADER) + "\n" + "".join(r + "\n" for r in item_rows)
            n_item_rows = n_item_updates = len(item_rows)
        _replace_file(items_file, item_text)
        batches.append(DayBatch(
            day=day, events_file=events_file, users_file=users_file, items_file=items_file, events=len(rows),
            late=int(np.sum(event_day[positions] < k)), resent=int(np.sum(shop.is_copy[positions] &
                                                                           (arrival[positions] == k))),
            users=len(lines), user_updates=len(updates), items=n_item_rows, item_updates=n_item_updates))
    staged = out / DAILY_DIR
    report = DailyReport(
        shop=_report(shop, out, tuple(b.events_file for b in batches), batches[0].users_file,
                     batches[0].items_file, sum(b.users for b in batches), sum(b.items for b in batches)),
        batches=tuple(batches))
    _replace_file(staged / REPORT_PATH, json.dumps(report.to_dict(), indent=2, sort_keys=True) + "\n")
    log.info("generated daily shop in %s: days=%d events=%d late=%d resent=%d elapsed_s=%.1f", staged, days,
             report.shop.events, sum(b.late for b in batches), sum(b.resent for b in batches),
             time.perf_counter() - t0)
    return report


def _part_name(file_name: str) -> Callable[[int], str]:
    stem, _, ext = file_name.rpartition(".")
    return lambda part: file_name if part == 0 else f"{stem}-{part:05d}.{ext}"


def staged_days(out_dir: str | Path) -> tuple[dt.date, ...]:
    """The arrival days staged under ``out_dir`` by :func:`generate_daily`, first first."""
    root = Path(out_dir) / DAILY_DIR
    if not root.is_dir():
        return ()
    return tuple(sorted(dt.date.fromisoformat(p.name) for p in root.iterdir() if p.is_dir()))


def deliver_day(out_dir: str | Path, day: dt.date) -> tuple[Path, ...]:
    """Move ``day``'s staged batch (:func:`generate_daily`) into the landing zone under ``out_dir``, as an export
    arrives: each file copied under a hidden name and renamed, its modification time kept. A file already delivered
    with the same bytes is left as it is, so delivering a day twice gives ingest nothing new. Returns the landing
    paths; raises ``FileNotFoundError`` when no batch of ``day`` is staged."""
    out = Path(out_dir)
    if not (out / DAILY_DIR / day.isoformat()).is_dir():
        raise FileNotFoundError(f"no daily batch of {day} staged under {out / DAILY_DIR}")
    landed: list[Path] = []
    for source in DAILY_PATTERNS:
        staged = _staged(out, source, day)
        for part in sorted(staged.parent.glob(f"{staged.stem}*{staged.suffix}")):
            target = daily_file(out, source, day).with_name(part.name)
            landed.append(target)
            if target.is_file() and filecmp.cmp(part, target, shallow=False):
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.tmp")
            shutil.copy2(part, tmp)
            os.replace(tmp, target)
    log.info("delivered the %s batch: %s", day, ", ".join(p.name for p in landed))
    return tuple(landed)


# ----------------------------------------------------------------------------------------------------------------
# A shop that responds to offers
# ----------------------------------------------------------------------------------------------------------------
# The true effect of an offer on the chance of a purchase in the days after it, per campaign type (absolute).
PLANTED_UPLIFT: Mapping[str, float] = types.MappingProxyType({
    "welcome": 0.06, "birthday": 0.03, "cart_threshold": 0.04, "bundle": 0.0, "generic": 0.02})
BASE_RESPONSE_RATE = 0.10
RESPONSES_PREFIX = "response-"


@dataclass(frozen=True)
class Assignment:
    """One listed user of one campaign run: the campaign's type, the arm and the user's first offered item."""

    campaign_type: str
    user_id: str
    is_control: bool
    item_id: str
    price: float


@dataclass(frozen=True)
class ResponseReport:
    path: Path
    run_date: dt.date
    users: int  # distinct listed users
    purchases: int  # purchase rows written (one per buying user)
    by_type: Mapping[str, tuple[int, int, int, int]]  # type -> (treated, treated buyers, control, control buyers)


def responses_path(out_dir: str | Path, run_date: dt.date) -> Path:
    return Path(out_dir) / EVENTS_DIR / f"{RESPONSES_PREFIX}{run_date:%Y%m%d}.csv"


def generate_responses(out_dir: str | Path, assignments: Sequence[Assignment], run_date: dt.date,
                       window_days: int, seed: int = 7, base_rate: float = BASE_RESPONSE_RATE,
                       uplift: Mapping[str, float] = PLANTED_UPLIFT) -> ResponseReport:
    """Write the shop's response to one run's offers as ``events/response-<run date>.csv`` (the events header).

    Each listed user buys at most once in ``(run_date, run_date + window_days]``, with probability ``base_rate``
    plus the ``uplift`` of every campaign type the user was *treated* (not control) in; control membership adds
    nothing. The effects add up, so in each campaign treated and control users differ by exactly that campaign's
    planted uplift in expectation (the arms are drawn independently per campaign). A purchase caused by an offer
    is of that offer's item; a base purchase is of one of the user's offered items. Each purchase is an
    ``add_to_cart`` and a ``purchase`` one minute apart in one session, at the item's price, quantity 1.
    Deterministic for a given ``seed`` and ``run_date``; the file is replaced, never appended to.
    """
    if not 0 <= base_rate < 1:
        raise ValueError(f"base_rate must be in [0, 1), got {base_rate}")
    if window_days < 1:
        raise ValueError(f"window_days must be >= 1, got {window_days}")
    rng = np.random.default_rng([seed, run_date.toordinal()])
    per_user: dict[str, list[Assignment]] = {}
    for a in sorted(assignments, key=lambda x: (x.user_id, x.campaign_type, x.item_id)):
        per_user.setdefault(a.user_id, []).append(a)
    counts: dict[str, list[int]] = {}
    rows: list[tuple[str, ...]] = []
    start_s = (run_date - dt.date(1970, 1, 1)).days * _DAY + _DAY  # the day after the run date
    for user, mine in per_user.items():
        causes = [(a, uplift.get(a.campaign_type, 0.0)) for a in mine if not a.is_control]
        u = float(rng.random())
        bought: Assignment | None = None
        if u < base_rate:
            bought = mine[int(rng.integers(0, len(mine)))]
        else:
            edge = base_rate
            for a, lift in causes:
                edge += lift
                if u < edge:
                    bought = a
                    break
        for a in mine:
            c = counts.setdefault(a.campaign_type, [0, 0, 0, 0])
            k = 2 if a.is_control else 0
            c[k] += 1
            c[k + 1] += bought is not None
        if bought is None:
            continue
        ts = start_s + int(rng.integers(0, window_days * _DAY - 60))
        n = len(rows) // 2
        session = f"rs{run_date:%Y%m%d}{n:07d}"
        price = f"{bought.price:.2f}"
        for offset, etype in ((0, C.ADD_TO_CART), (60, C.PURCHASE)):
            rows.append((f"r{run_date:%Y%m%d}{len(rows):08d}", user, bought.item_id, etype,
                         str(_ts_str(np.array([ts + offset]))[0]), price, "1", session))
    rows.sort(key=lambda r: r[_COL_TIME])
    path = responses_path(out_dir, run_date)
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = _io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(EVENTS_HEADER)
    writer.writerows(rows)
    _replace_file(path, buf.getvalue())
    log.info("responses to the %s offers: %d listed users, %d purchases -> %s", run_date, len(per_user),
             len(rows) // 2, path)
    return ResponseReport(path=path, run_date=run_date, users=len(per_user), purchases=len(rows) // 2,
                          by_type=types.MappingProxyType({k: (v[0], v[1], v[2], v[3]) for k, v in counts.items()}))


__all__ = ["DEFAULT_END", "DIRT_SHARES", "EVENTS_HEADER", "PLANTED_UPLIFT", "Assignment", "DailyReport", "DayBatch",
           "GenerationReport", "ITEMS_HEADER", "ResponseReport", "USERS_FIELDS", "daily_file", "deliver_day",
           "generate_daily", "generate_responses", "generate_shop", "staged_days"]
