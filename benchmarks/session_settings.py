"""Clean under different driver-JVM settings, each in its own process, alternated, on one bronze snapshot.

    .venv/bin/python benchmarks/session_settings.py --events 1000000 --rounds 2 [--warm 2] [--json]

The garbage collector and Spark's generated-code cache (``spark.sql.codegen.cache.maxEntries``) are fixed when
the JVM starts, so they can't be alternated inside one session the way ``clean_ab.py`` alternates code. Instead
every variant runs in a fresh process per round, in rotating order, each on its own copy of the same bronze
tables: one cold clean (what a scheduled job sees), then ``--warm`` cleans in the same JVM (the steady state).

Variants: ``previous`` is what the session used before (Java 17's default G1, Spark's default cache of 100
classes); ``current`` is what ``session.local_settings`` sets now; the two others change one setting each.
Reported: the median cold and warm time of each variant and its ratio to ``previous``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

from clean_ab import RUN_DATE, config
from harness import emit, session, timed, workdir  # benchmarks/ is on sys.path when a script runs

JAVA_BASE = "-Dlog4j.rootLogger=WARN,console -Xss16m"
VARIANTS: dict[str, dict[str, str]] = {
    "previous": {"spark.driver.extraJavaOptions": f"{JAVA_BASE} -XX:+UseG1GC",
                 "spark.sql.codegen.cache.maxEntries": "100"},
    "g1_cache1000": {"spark.driver.extraJavaOptions": f"{JAVA_BASE} -XX:+UseG1GC",
                     "spark.sql.codegen.cache.maxEntries": "1000"},
    "parallel_cache100": {"spark.driver.extraJavaOptions": f"{JAVA_BASE} -XX:+UseParallelGC",
                          "spark.sql.codegen.cache.maxEntries": "100"},
    "current": {},  # session.local_settings as it stands
}


def child(args: argparse.Namespace) -> None:
    """One process: ``prepare`` generates and ingests; a variant cleans its own copy cold, then warm."""
    from sparkpromo.clean import run_clean
    from sparkpromo.ingest import run_ingest

    work = Path(args.work)
    if args.child == "prepare":
        from sparkpromo.generate import generate_shop
        generate_shop(work / "landing", n_events=args.events, seed=7, days=60, end=RUN_DATE)
        cfg = config(work, "lake_src", args.master, {})
        run_ingest(session(cfg, "settings-prepare"), cfg, "prep")
        return
    lake = f"lake_{args.child}_{args.round}"
    shutil.copytree(work / "lake_src" / "bronze", work / lake / "bronze")
    cfg = config(work, lake, args.master, VARIANTS[args.child])
    spark = session(cfg, f"settings-{args.child}")
    spark.range(1).count()  # JVM start-up outside the measurement, as in throughput.py
    now = dt.datetime.combine(RUN_DATE, dt.time())
    times, rows = [], 0
    for i in range(1 + args.warm):
        seconds, counts = timed(run_clean, spark, cfg, f"settings-{i}", now, full_refresh=True)
        times.append(seconds)
        rows = counts["events.silver_rows"]
    spark.stop()
    shutil.rmtree(work / lake, ignore_errors=True)
    print(json.dumps({"variant": args.child, "cold_s": times[0], "warm_s": times[1:], "silver_rows": rows}))


def run_child(args: argparse.Namespace, work: Path, name: str, round_: int = 0) -> dict[str, object]:
    cmd = [sys.executable, __file__, "--child", name, "--work", str(work), "--events", str(args.events),
           "--master", args.master, "--warm", str(args.warm), "--round", str(round_)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()
    return json.loads(out[-1]) if name != "prepare" else {}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--warm", type=int, default=2, help="warm cleans per process after the cold one")
    ap.add_argument("--master", default="local[2]")
    ap.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset of " + ",".join(VARIANTS))
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--work", help=argparse.SUPPRESS)
    ap.add_argument("--round", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.child:
        child(args)
        return

    names = [v for v in args.variants.split(",") if v]
    unknown = sorted(set(names) - set(VARIANTS))
    if unknown or "previous" not in names:
        raise SystemExit(f"--variants: unknown {unknown} (known: {', '.join(VARIANTS)}; 'previous' is required)")
    work = workdir(None, "settings")
    cold: dict[str, list[float]] = {n: [] for n in names}
    warm: dict[str, list[float]] = {n: [] for n in names}
    rows: dict[str, int] = {}
    try:
        run_child(args, work, "prepare")
        for r in range(args.rounds):
            for name in names[r % len(names):] + names[:r % len(names)]:  # rotate the order every round
                res = run_child(args, work, name, r)
                cold[name].append(float(res["cold_s"]))  # type: ignore[arg-type]
                warm[name] += [float(x) for x in res["warm_s"]]  # type: ignore[union-attr]
                rows[name] = int(res["silver_rows"])  # type: ignore[call-overload]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if len(set(rows.values())) != 1:
        raise SystemExit(f"silver rows differ between variants: {rows}")
    med_cold = {n: statistics.median(v) for n, v in cold.items()}
    med_warm = {n: statistics.median(v) for n, v in warm.items()}
    result: dict[str, object] = {"events": args.events, "rounds": args.rounds, "warm_per_process": args.warm,
                                 "silver_rows": rows["previous"]}
    for n in names:
        result[f"{n}.cold_s"] = [round(x, 2) for x in cold[n]]
        result[f"{n}.warm_s"] = [round(x, 2) for x in warm[n]]
        result[f"{n}.cold_over_previous"] = round(med_cold[n] / med_cold["previous"], 3)
        result[f"{n}.warm_over_previous"] = round(med_warm[n] / med_warm["previous"], 3)
        result[f"{n}.warm_events_per_s"] = round(args.events / med_warm[n])
        result[f"{n}.cold_events_per_s"] = round(args.events / med_cold[n])
    emit(result, args.json)


if __name__ == "__main__":
    main()
