"""Daily increment against a full rebuild, side by side in one process (issue 18).

    PYTHONPATH=src .venv/bin/python benchmarks/daily.py [--events 1000000] [--days 30] [--new-days 1]
        [--warm-up-days 0] [--tiny-day 0] [--scale] [--json]

For a history of ``--days`` days holding about ``--events`` events (a generated daily shop, ``generate --days``:
late and re-sent rows across days included), it

1. builds the history: every history batch delivered, then ingest + clean + features once, as of the last history
   day (run id ``history``);
2. delivers the next ``--new-days`` day(s) (about ``events / days`` events each) and times ingest + clean +
   features of that one daily run (run id ``YYYYMMDD`` of the new day): the **incremental** run;
3. times clean + features of the same data rebuilt from all of bronze (``run_stage(..., full_refresh=True)``, run id
   ``full-YYYYMMDD``): the **full rebuild**. Ingest is not repeated there: bronze is the system of record, and a
   full refresh rebuilds silver and gold from it.

With ``--tiny-day N``, one more day is run after 3.: only the first N events of the next day's export land (no
users or items export), and ingest + clean + features of that day are timed as 2. was. Its ratio to the rebuild
(``tiny_ratio``) is what an incremental day costs with next to nothing new: the part of 2. that follows the
history and the stages' fixed work, not the day.

With ``--warm-up-days K``, K more days are delivered and run incrementally (untimed) between 1. and 2.: the rebuild
in 3. runs warm (the history build ran the same code in the same process), and so the timed incremental run does
too; without it, the incremental run is the first of its kind in the process and pays for compiling its plans.

The result is ``ratio = incremental / full rebuild``. Targets: ``ratio <= 0.2``, and with ``--scale`` (the same
again with twice the days and twice the events, so each day is as large) the ratio must not grow: the 2x ratio is
at most the 1x ratio plus 10% of it (timing noise on a shared machine).

A build whose ``run_stage`` has no ``full_refresh`` keyword (clean's incremental MERGE not merged yet) rebuilds with
``force=True`` instead, which there means the same thing (clean rebuilds silver from the whole bronze snapshot);
the result says which in ``full_rebuild_mode``.

``--online-retail ../shared/data/online-retail`` replays the real daily arrivals instead: the log's first
``--days`` trading-day files as the history, then the next ``--new-days``, each copied into the folder the
online-retail example reads just before its run.
"""

from __future__ import annotations

import argparse
import datetime as dt
import inspect
import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import yaml
from harness import ROOT, emit, local_config, session, timed, workdir  # benchmarks/ is on sys.path

from sparkpromo.config import AppConfig
from sparkpromo.generate import daily_file, deliver_day, generate_daily
from sparkpromo.pipeline import RunContext, run_stage

FIRST_DAY = dt.date(2026, 10, 1)
ONLINE_RETAIL_CONF = ROOT / "conf" / "examples" / "online-retail.yaml"
TARGET_RATIO = 0.2
NOISE = 0.1  # the 2x ratio may exceed the 1x ratio by this share of it before it counts as growing
INCREMENTAL = ("ingest", "clean", "features")
REBUILT = ("clean", "features")


def full_refresh_supported() -> bool:
    return "full_refresh" in inspect.signature(run_stage).parameters


def rebuild(name: str, spark: Any, cfg: AppConfig, ctx: RunContext) -> dict[str, Any]:
    if full_refresh_supported():
        return run_stage(name, spark, cfg, ctx, force=True, full_refresh=True)  # type: ignore[call-arg]
    return run_stage(name, spark, cfg, ctx, force=True)


@dataclass(frozen=True)
class Replay:
    """Daily landing batches to replay: ``days[i]`` lands by ``deliver(days[i])`` and holds ``events[i]`` rows;
    ``deliver_head(day, n)`` lands only the first ``n`` events of ``day``'s export."""

    cfg: AppConfig
    days: list[dt.date]
    events: list[int]
    deliver: Callable[[dt.date], object]
    deliver_head: Callable[[dt.date, int], object]


def land_head(source: Path, target: Path, n: int) -> None:
    """The header and first ``n`` data lines of the CSV ``source``, written to ``target`` (renamed into place, as an
    export arrives)."""
    with source.open(encoding="utf-8", errors="replace") as fh:
        lines = [line for _, line in zip(range(n + 1), fh, strict=False)]
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_text("".join(lines), encoding="utf-8")
    os.replace(tmp, target)


def config(work: Path, master: str, shuffle_partitions: int, settings: list[str], extra: list[Path]) -> AppConfig:
    os.environ["SPARKPROMO_LAKEHOUSE"] = str(work / "lakehouse")
    os.environ["SPARKPROMO_LANDING"] = str(work / "landing")
    overrides: dict[str, Any] = {"spark.master": master, "spark.shuffle_partitions": shuffle_partitions}
    for pair in settings:
        key, _, value = pair.partition("=")
        overrides[key] = yaml.safe_load(value)
    return local_config(overrides, extra)


def generated(events: int, days: int, later: int, work: Path, cfg: AppConfig) -> Replay:
    """A generated daily shop of ``days + later`` days, about ``events`` of them in the first ``days``."""
    total = days + later
    end = FIRST_DAY + dt.timedelta(days=total)
    report = generate_daily(work / "landing", n_events=round(events * total / days), seed=7, days=total, end=end)
    staged = {b.day: b.events_file for b in report.batches}

    def deliver_head(day: dt.date, n: int) -> None:
        land_head(staged[day], daily_file(work / "landing", "events", day), n)
    return Replay(cfg, [b.day for b in report.batches], [b.events for b in report.batches],
                  partial(deliver_day, work / "landing"), deliver_head)


def online_retail(source: Path, days: int, later: int, work: Path, cfg: AppConfig) -> Replay:
    """The first ``days + later`` trading days of the online-retail log (one file per day), copied one at a
    time into the folder ``conf/examples/online-retail.yaml`` reads (``$SPARKPROMO_ONLINE_RETAIL/by-day``)."""
    files = sorted((source / "by-day").glob("*.csv"))[:days + later]
    if len(files) < days + later:
        raise SystemExit(f"--online-retail: {source}/by-day has {len(files)} daily files, fewer than the "
                         f"{days + later} this run replays (--days, --warm-up-days, --new-days and one for --tiny-day)")
    target = work / "retail" / "by-day"
    target.mkdir(parents=True, exist_ok=True)
    by_day = {dt.date.fromisoformat(f.stem): f for f in files}

    def deliver(day: dt.date) -> None:
        shutil.copy2(by_day[day], target / by_day[day].name)

    def deliver_head(day: dt.date, n: int) -> None:
        land_head(by_day[day], target / by_day[day].name, n)

    def rows(f: Path) -> int:
        with f.open(encoding="utf-8", errors="replace") as fh:
            return sum(1 for _ in fh) - 1
    return Replay(cfg, list(by_day), [rows(f) for f in by_day.values()], deliver, deliver_head)


def run_day(spark: Any, cfg: AppConfig, ctx: RunContext, rows: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """Ingest + clean + features of one daily run, timed per stage; a skipped stage is an error (nothing timed)."""
    seconds: dict[str, float] = {}
    for name in INCREMENTAL:
        seconds[name], out = timed(run_stage, name, spark, cfg, ctx)
        if out.get("skipped"):
            raise RuntimeError(f"the {ctx.run_date} {name} was skipped: nothing was timed")
        rows.update({f"{prefix}{name}.{k}": v for k, v in out.items()
                     if k in ("events_rows", "events.silver_rows", "mode", "recomputed_users", "users")})
    return seconds


def measure(replay: Replay, days: int, new_days: int, warm_up: int = 0, tiny: int = 0) -> dict[str, Any]:
    cfg = replay.cfg
    spark = session(cfg, "daily")
    for day in replay.days[:days]:
        replay.deliver(day)
    history = RunContext("history", replay.days[days - 1])
    build_s = 0.0
    for name in INCREMENTAL:
        seconds, _ = timed(run_stage, name, spark, cfg, history)
        build_s += seconds
    for day in replay.days[days:days + warm_up]:  # untimed: the timed day's code paths then run warm too
        replay.deliver(day)
        for name in INCREMENTAL:
            run_stage(name, spark, cfg, RunContext(RunContext.default_run_id(day), day))
    timed_days = replay.days[days + warm_up:len(replay.days) - (1 if tiny else 0)]
    for day in timed_days:
        replay.deliver(day)
    new = RunContext(RunContext.default_run_id(timed_days[-1]), timed_days[-1])
    rows: dict[str, Any] = {}
    incremental = run_day(spark, cfg, new, rows)
    full = RunContext(f"full-{new.run_id}", timed_days[-1])
    rebuilt: dict[str, float] = {}
    for name in REBUILT:
        rebuilt[name], out = timed(rebuild, name, spark, cfg, full)
        rows.update({f"full.{name}.{k}": v for k, v in out.items() if k == "events.silver_rows"})
    inc_s, full_s = sum(incremental.values()), sum(rebuilt.values())
    if tiny:
        last = replay.days[-1]
        replay.deliver_head(last, tiny)
        small = run_day(spark, cfg, RunContext(RunContext.default_run_id(last), last), rows, prefix="tiny.")
        rows.update({f"tiny_{k}_s": round(v, 2) for k, v in small.items()})
        rows.update(tiny_day_s=round(sum(small.values()), 2), tiny_ratio=round(sum(small.values()) / full_s, 3))
    return {
        "days": days, "new_days": new_days, "first_day": replay.days[0].isoformat(),
        "new_day": timed_days[-1].isoformat(), "warm_up_days": warm_up,
        "events_history": sum(replay.events[:days]),
        "events_new": sum(replay.events[days + warm_up:days + warm_up + new_days]),
        "history_build_s": round(build_s, 1),
        **{f"incremental_{k}_s": round(v, 2) for k, v in incremental.items()},
        "incremental_s": round(inc_s, 2),
        **{f"full_rebuild_{k}_s": round(v, 2) for k, v in rebuilt.items()},
        "full_rebuild_s": round(full_s, 2), "ratio": round(inc_s / full_s, 3), **rows}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=1_000_000, help="events in the history (default 1,000,000)")
    ap.add_argument("--days", type=int, default=30, help="days of history (default 30)")
    ap.add_argument("--new-days", type=int, default=1, help="days in the timed incremental run (default 1)")
    ap.add_argument("--warm-up-days", type=int, default=0,
                    help="days run incrementally, untimed, between the history and the timed day, so that the "
                         "incremental run is timed warm as the rebuild is (default 0)")
    ap.add_argument("--tiny-day", type=int, default=0, metavar="N",
                    help="after the rebuild, time one more daily run that brings only the next day's first N "
                         "events (default 0: not run)")
    ap.add_argument("--scale", action="store_true", help="also measure twice the days and events (one process)")
    ap.add_argument("--master", default="local[2]")
    ap.add_argument("--shuffle-partitions", type=int, default=8)
    ap.add_argument("--workdir", default=None, help="scratch directory (default: a temporary one, removed)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="extra config override")
    ap.add_argument("--online-retail", default=None, metavar="DIR",
                    help="replay the online-retail log's daily files (DIR/by-day/*.csv, e.g. "
                         "../shared/data/online-retail) through conf/examples/online-retail.yaml instead of a "
                         "generated shop; --days counts trading days and --events is ignored")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    if args.days < 1 or args.new_days < 1 or args.warm_up_days < 0 or args.tiny_day < 0:
        ap.error("--days and --new-days must be >= 1, --warm-up-days and --tiny-day >= 0")
    work = workdir(args.workdir, "daily")
    sizes = [(args.events, args.days)] + ([(2 * args.events, 2 * args.days)] if args.scale else [])
    later = args.warm_up_days + args.new_days + (1 if args.tiny_day else 0)  # days staged after the history

    def replay(events: int, days: int) -> Replay:
        here = work / f"{days}d"
        if args.online_retail:
            os.environ["SPARKPROMO_ONLINE_RETAIL"] = str(here / "retail")
            cfg = config(here, args.master, args.shuffle_partitions, args.set, [ONLINE_RETAIL_CONF])
            return online_retail(Path(args.online_retail), days, later, here, cfg)
        cfg = config(here, args.master, args.shuffle_partitions, args.set, [])
        return generated(events, days, later, here, cfg)

    try:
        runs = [measure(replay(n, d), d, args.new_days, args.warm_up_days, args.tiny_day) for n, d in sizes]
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    result: dict[str, Any] = {
        "data": "online-retail" if args.online_retail else "generated", "master": args.master,
        "cores": os.cpu_count(),
        "full_rebuild_mode": "full_refresh" if full_refresh_supported() else "force (no full_refresh in this build)"}
    for r in runs:
        result.update({f"{r['days']}d.{k}": v for k, v in r.items() if k != "days"})
    result["target_ratio_at_most_0.2"] = all(r["ratio"] <= TARGET_RATIO for r in runs)
    if args.scale:
        result["ratio_2x_over_1x"] = round(runs[1]["ratio"] / runs[0]["ratio"], 3)
        result["ratio_not_growing"] = runs[1]["ratio"] <= runs[0]["ratio"] * (1 + NOISE)
    emit(result, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
