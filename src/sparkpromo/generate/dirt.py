"""Defects injected into the events, one per dirty row, each counted."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from sparkpromo import columns as C
from sparkpromo.generate.population import _Events, _Items, _Users
from sparkpromo.generate.spec import (
    _CART,
    _COL_ITEM,
    _COL_PRICE,
    _COL_QTY,
    _COL_TIME,
    _COL_TYPE,
    _COL_USER,
    _DAY,
    MALFORMED_TIMESTAMPS,
    UNKNOWN_EVENT_TYPES,
)


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
