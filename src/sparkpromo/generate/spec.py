"""The generator's parameters (shares, sizes, paths, column names) and its report."""

from __future__ import annotations

import datetime as dt
import types
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sparkpromo import columns as C

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


__all__ = [
    "PRODUCT_ID", "EVENT_TIME", "EVENTS_HEADER", "USERS_FIELDS", "ITEMS_HEADER", "EVENTS_DIR", "USERS_PATH",
    "ITEMS_PATH", "REPORT_PATH", "DAILY_DIR", "DAILY_PATTERNS", "DAILY_STREAM", "LATE_SHARE", "MAX_LATE_DAYS",
    "USER_UPDATE_SHARE", "ITEM_UPDATE_SHARE", "DEFAULT_END", "MIN_EVENTS", "ROWS_PER_PART", "WRITE_CHUNK",
    "DIRT_SHARES", "EVENT_DIRT_KINDS", "USER_DIRT_KINDS", "ITEM_DIRT_KINDS", "BOT_KINDS", "REJECTED_EVENT_KINDS",
    "MALFORMED_TIMESTAMPS", "UNKNOWN_EVENT_TYPES", "BAD_BIRTH_DATES", "BOT_MIN_VIEWS", "BOT_MAX_VIEWS",
    "CATEGORIES", "GenerationReport", "default_sizes", "bot_count", "dirt_count",
]
