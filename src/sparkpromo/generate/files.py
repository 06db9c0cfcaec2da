"""Writing the landing files (events CSV parts, users JSON lines, items CSV) atomically."""

from __future__ import annotations

import csv
import json
import os
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np

from sparkpromo import columns as C
from sparkpromo.generate.dirt import _ts_str
from sparkpromo.generate.population import _Events, _Items, _Users
from sparkpromo.generate.spec import (
    _CART,
    BAD_BIRTH_DATES,
    CATEGORIES,
    DAILY_DIR,
    DAILY_PATTERNS,
    EVENTS_DIR,
    EVENTS_HEADER,
    ITEMS_HEADER,
    ITEMS_PATH,
    ROWS_PER_PART,
    USERS_FIELDS,
    USERS_PATH,
    WRITE_CHUNK,
)


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
