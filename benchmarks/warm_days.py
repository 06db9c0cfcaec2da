"""Warm daily stages of a small generated shop, one process (a fixed-cost probe for issues 18, 23 and 24).

    PYTHONPATH=src .venv/bin/python benchmarks/warm_days.py [--set KEY=VALUE ...] [--json]

Generates a four-day shop of 1,500 events; each day delivers its batch, then runs ingest, clean, features,
recommend and measure (train on the first day only), with the test suite's small-data settings. Days 2-4 are summed
per stage: warm runs, so what is left is each stage's fixed work. Run one process per variant and alternate them
(``--set spark.conf=...`` or another checkout on ``PYTHONPATH``): only side-by-side ratios compare."""

from __future__ import annotations

import argparse
import datetime as dt
import os
import time
from typing import Any

import yaml
from harness import emit, local_config, session, workdir  # benchmarks/ is on sys.path

from sparkpromo.generate import deliver_day, generate_daily
from sparkpromo.pipeline import RunContext, run_stage

SMALL_DATA = {"spark.sql.adaptive.enabled": "false", "spark.sql.codegen.wholeStage": "false",
              "spark.sql.codegen.factoryMode": "NO_CODEGEN"}
DAILY = ("ingest", "clean", "features", "recommend", "measure")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=1500)
    ap.add_argument("--days", type=int, default=4)
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="extra config override")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    work = workdir(args.workdir, "warm-days")
    os.environ["SPARKPROMO_LAKEHOUSE"] = str(work / "lakehouse")
    os.environ["SPARKPROMO_LANDING"] = str(work / "landing")
    overrides: dict[str, Any] = {"spark.master": "local[2]", "spark.shuffle_partitions": 2, "spark.conf": SMALL_DATA,
                                 "train.grid": {"rank": [4], "reg_param": [0.1], "alpha": [5.0], "max_iter": [5]}}
    for pair in args.set:
        key, _, value = pair.partition("=")
        value = yaml.safe_load(value)
        # Spark settings add to the small-data ones instead of replacing them.
        overrides[key] = {**SMALL_DATA, **value} if key == "spark.conf" and isinstance(value, dict) else value
    cfg = local_config(overrides)
    report = generate_daily(work / "landing", n_events=args.events, seed=7, days=args.days,
                            end=dt.date(2026, 10, 1) + dt.timedelta(days=args.days))
    spark = session(cfg, "warm-days")
    warm: dict[str, float] = {}
    for i, batch in enumerate(report.batches):
        deliver_day(work / "landing", batch.day)
        ctx = RunContext(RunContext.default_run_id(batch.day), batch.day)
        for name in (*DAILY[:3], *(["train"] if i == 0 else []), *DAILY[3:]):
            t0 = time.perf_counter()
            run_stage(name, spark, cfg, ctx)
            if i:
                warm[name] = warm.get(name, 0.0) + time.perf_counter() - t0
    emit({"days_timed": args.days - 1, **{f"{k}_s": round(v, 1) for k, v in warm.items()},
          "warm_s": round(sum(warm.values()), 1)}, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
