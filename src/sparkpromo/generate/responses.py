"""A shop that responds to offers: purchases after treated users' offers, with a planted
uplift."""

from __future__ import annotations

import csv
import datetime as dt
import io as _io
import logging
import types
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sparkpromo import columns as C
from sparkpromo.generate.dirt import _ts_str
from sparkpromo.generate.files import _replace_file
from sparkpromo.generate.spec import _COL_TIME, _DAY, EVENTS_DIR, EVENTS_HEADER

log = logging.getLogger(__name__)


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
    plus the ``uplift`` of every campaign type the user was *treated* (not control) in, negative ones included
    (never below 0); control membership adds nothing. The effects add up, so in each campaign treated and control
    users differ by exactly that campaign's planted uplift in expectation (the arms are drawn independently per
    campaign). A purchase caused by an offer is of that offer's item; a base purchase is of one of the user's
    offered items. Each purchase is an ``add_to_cart`` and a ``purchase`` one minute apart in one session, at the
    item's price, quantity 1. Deterministic for a given ``seed`` and ``run_date``; the file is replaced, never
    appended to.
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
        # A negative uplift (an offer that puts buyers off) takes its share from the base purchases.
        base = max(base_rate + sum(lift for _, lift in causes if lift < 0), 0.0)
        u = float(rng.random())
        bought: Assignment | None = None
        if u < base:
            bought = mine[int(rng.integers(0, len(mine)))]
        else:
            edge = base
            for a, lift in causes:
                if lift <= 0:
                    continue
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


__all__ = [
    "PLANTED_UPLIFT", "BASE_RESPONSE_RATE", "RESPONSES_PREFIX", "Assignment", "ResponseReport", "responses_path",
    "generate_responses",
]
