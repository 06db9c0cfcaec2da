"""Version lookups: a daily run's stages with table versions read off the log's file names against asked of
Delta's history, side by side in one process.

    .venv/bin/python benchmarks/version_lookups.py [--events 3000] [--days 6] [--json]

A stage looks up a dozen table versions (the run manifest's pins, its own incremental checks, the versions it
records). ``sparkpromo.delta_io.latest_commit`` reads a local table's latest version and commit time off its
``_delta_log`` listing; the baseline asks ``DeltaTable.history(1)`` for every lookup, as a remote table does.

Two lakehouses replay the same generated daily shop (``--days`` daily batches, ``--events`` events in all), each
day's batch delivered just before its run: ingest, clean, features, recommend and measure (a daily run between
retrainings: recommend lists popularity). Each day runs once per way, the order alternating by day; the first day
(first runs, full builds) warms the process and is not counted. Result: the seconds of the counted days per stage
and way, and ``ratio = listing / history`` per stage and in all.
"""

from __future__ import annotations

import argparse
import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from harness import emit, landing_overrides, local_config, session, timed, workdir  # benchmarks/ on sys.path

from sparkpromo import delta_io
from sparkpromo.config import AppConfig
from sparkpromo.pipeline import RunContext, generate_sample, run_days

STAGES = ["ingest", "clean", "features", "recommend", "measure"]
END = dt.date(2026, 11, 30)
WAYS = ("listing", "history")


@contextmanager
def way(name: str) -> Iterator[None]:
    """``history``: every lookup asks Delta, as for a table off the driver's file system."""
    listed = delta_io._listed_commit
    if name == "history":
        delta_io._listed_commit = lambda uri: None  # type: ignore[assignment]
    try:
        yield
    finally:
        delta_io._listed_commit = listed  # type: ignore[assignment]


def config(work: Path, events: int, days: int) -> AppConfig:
    return local_config({**landing_overrides(work), "spark.master": "local[2]", "spark.shuffle_partitions": 2,
                         "generate.events": events, "generate.days": days, "generate.daily": True})


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=3000, help="events in the whole shop (default 3,000)")
    ap.add_argument("--days", type=int, default=6, help="daily runs, the first not counted (default 6)")
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    root = workdir(args.workdir, "version-lookups")
    cfgs = {w: config(root / w, args.events, args.days) for w in WAYS}
    spark = session(cfgs["listing"], "version-lookups")
    dates = [END - dt.timedelta(days=args.days - 1 - i) for i in range(args.days)]
    for cfg in cfgs.values():
        generate_sample(cfg, RunContext("gen", END), deliver=False)
    seconds = {(w, s): 0.0 for w in WAYS for s in STAGES}
    for n, day in enumerate(dates):
        for w in (WAYS if n % 2 == 0 else WAYS[::-1]):
            with way(w):
                for stage in STAGES:
                    elapsed, _ = timed(run_days, spark, cfgs[w], [day], [stage], deliver=stage == "ingest")
                    if n > 0:
                        seconds[(w, stage)] += elapsed
    result: dict[str, Any] = {"events": args.events, "days_counted": args.days - 1}
    for s in STAGES:
        result[f"{s}.listing_s"] = round(seconds[("listing", s)], 1)
        result[f"{s}.history_s"] = round(seconds[("history", s)], 1)
        result[f"{s}.ratio"] = round(seconds[("listing", s)] / seconds[("history", s)], 2)
    total = {w: sum(seconds[(w, s)] for s in STAGES) for w in WAYS}
    result.update(listing_s=round(total["listing"], 1), history_s=round(total["history"], 1),
                  ratio=round(total["listing"] / total["history"], 2))
    emit(result, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
