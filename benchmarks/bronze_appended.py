"""The rows an incremental clean takes from bronze: read from the change data feed against found by comparing two
versions of the table, side by side in one process (issue 18).

    PYTHONPATH=src .venv/bin/python benchmarks/bronze_appended.py [--events 1000000] [--days 30] [--rounds 5] [--json]

A generated daily shop's first ``--days`` batches are ingested at once (the history), then the next day's batch (the
new day), as the daily job ingests them. Then, for each bronze table the new day appended to, the clean's first
step runs both ways, alternating by round: the distinct (``_source_file``, ``_ingest_ts``) of the appended rows
(:func:`sparkpromo.clean.incremental.appended_pairs`), checkpointed and counted as the clean keeps them, the feed's
way after the clean's check that the feed holds them. Both ways must give the same pairs. Result: each way's
median seconds per table and ``ratio = feed / compare``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
from typing import Any

from harness import emit, landing_overrides, local_config, session, timed, workdir  # benchmarks/ on sys.path
from pyspark.sql import SparkSession

from sparkpromo import delta_io
from sparkpromo import tables as T
from sparkpromo.clean.incremental import appended_pairs
from sparkpromo.clean.state import appends_in_feed
from sparkpromo.generate import deliver_day, generate_daily
from sparkpromo.parallel import checkpoint_all
from sparkpromo.pipeline import RunContext, run_stage

END = dt.date(2026, 11, 30)
WAYS = {"feed": True, "compare": False}


def kept_count(spark: SparkSession, uri: str, start: int, end: int, feed: bool) -> int:
    """The appended pairs as the clean keeps them (checkpointed), counted; the feed's way includes the clean's check
    that the feed holds them (:func:`appends_in_feed`: the table's properties and the range's commits)."""
    if feed and not appends_in_feed(spark, uri, start, end):
        raise SystemExit(f"{uri}: the change data feed does not hold versions {start + 1} to {end}")
    kept = checkpoint_all(spark, [appended_pairs(spark, uri, start, end, feed)])[0]
    try:
        return kept.count()
    finally:
        kept.unpersist()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=1_000_000, help="events of the history and the new day")
    ap.add_argument("--days", type=int, default=30, help="history days (default 30)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    if args.days < 1 or args.rounds < 1 or args.events < 1:
        ap.error("--events, --days and --rounds must be >= 1")
    work = workdir(args.workdir, "bronze-appended")
    cfg = local_config({**landing_overrides(work), "spark.master": "local[2]", "spark.shuffle_partitions": 8})
    spark = session(cfg, "bronze-appended")
    report = generate_daily(work / "landing", n_events=args.events * (args.days + 1) // args.days, seed=7,
                            days=args.days + 1, end=END)
    days = [b.day for b in report.batches]
    for day in days[:-1]:
        deliver_day(work / "landing", day)
    run_stage("ingest", spark, cfg, RunContext("history", days[-2]))
    before = {s: delta_io.version(spark, t.uri(cfg)) for s, t in T.BRONZE.items()}
    deliver_day(work / "landing", days[-1])
    run_stage("ingest", spark, cfg, RunContext(RunContext.default_run_id(days[-1]), days[-1]))
    result: dict[str, Any] = {"events_history": args.events, "days": args.days, "rounds": args.rounds}
    for source, table in T.BRONZE.items():
        uri, start, end = table.uri(cfg), before[source], delta_io.version(spark, table.uri(cfg))
        if start is None or end is None or start == end:
            continue
        feed, compare = (appended_pairs(spark, uri, start, end, w) for w in WAYS.values())
        if feed.exceptAll(compare).count() or compare.exceptAll(feed).count():
            raise SystemExit(f"bronze.{source}: the two ways found different rows")
        seconds: dict[str, list[float]] = {w: [] for w in WAYS}
        pairs = 0
        for r in range(args.rounds + 1):  # round 0 warms both ways up and is not counted
            for w in (list(WAYS) if r % 2 else list(WAYS)[::-1]):
                s, pairs = timed(kept_count, spark, uri, start, end, WAYS[w])
                if r:
                    seconds[w].append(s)
        medians = {w: statistics.median(v) for w, v in seconds.items()}
        result.update({f"{source}.pairs": pairs, f"{source}.bronze_rows": delta_io.read(spark, uri).count(),
                       **{f"{source}.{w}_s": round(m, 3) for w, m in medians.items()},
                       f"{source}.ratio": round(medians["feed"] / medians["compare"], 3)})
    emit(result, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
