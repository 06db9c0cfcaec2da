"""The same shop as daily batches, staged and delivered one day at a time."""

from __future__ import annotations

import datetime as dt
import filecmp
import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sparkpromo import columns as C
from sparkpromo.generate.files import (
    _clean_landing,
    _days_str,
    _items_text,
    _replace_file,
    _user_line,
    _user_lines,
    _write_events,
)
from sparkpromo.generate.shop import _report, _Shop, _simulate
from sparkpromo.generate.spec import (
    _DAY,
    CATEGORIES,
    DAILY_DIR,
    DAILY_PATTERNS,
    DAILY_STREAM,
    ITEM_UPDATE_SHARE,
    ITEMS_HEADER,
    LATE_SHARE,
    MAX_LATE_DAYS,
    REPORT_PATH,
    USER_UPDATE_SHARE,
    GenerationReport,
)

log = logging.getLogger(__name__)


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


__all__ = [
    "DayBatch", "DailyReport", "daily_file", "generate_daily", "staged_days", "deliver_day",
]
