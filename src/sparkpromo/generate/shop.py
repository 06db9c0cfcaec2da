"""A whole shop drawn and written: :func:`generate_shop`."""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
import types
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sparkpromo.generate.dirt import _inject_event_dirt
from sparkpromo.generate.files import _clean_landing, _items_text, _replace_file, _users_text, _write_events
from sparkpromo.generate.population import (
    _bot_events,
    _concat_sorted,
    _Events,
    _Items,
    _make_items,
    _make_users,
    _organic_events,
    _Users,
)
from sparkpromo.generate.spec import (
    _DAY,
    DEFAULT_END,
    EVENT_DIRT_KINDS,
    EVENTS_DIR,
    ITEM_DIRT_KINDS,
    ITEMS_PATH,
    MIN_EVENTS,
    REJECTED_EVENT_KINDS,
    REPORT_PATH,
    USER_DIRT_KINDS,
    USERS_PATH,
    GenerationReport,
    bot_count,
    default_sizes,
    dirt_count,
)

log = logging.getLogger(__name__)


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


__all__ = [
    "generate_shop",
]
