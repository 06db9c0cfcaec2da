"""Measure's daily cost against its history: one more day measured incrementally against a full measure of every
run date, side by side in one process, at two history lengths.

    .venv/bin/python benchmarks/measure_history.py --days 30 60 [--users 2000] [--json]

For each history length N a synthetic lakehouse holds N daily campaign runs in ``gold/recommendations`` (five
campaigns, ``--users`` listed users each, three items per user, a tenth of them control) and the purchases of
``silver/events`` (``--users`` purchases a day), both written as the pipeline declares them (change data feed on).
A measure run on day N goes first (full: the history's first), then day N + 1 arrives (its lists and purchases),
and the pipeline's measure stage runs for it twice per round, alternating the order over ``--rounds``: incremental
(what a scheduled run does) and ``--full-refresh`` (every run date measured again). Each timed run starts from its
own copy of the lakehouse as day N left it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
import statistics
from pathlib import Path
from typing import Any

from harness import bare_config, emit, session, timed, workdir  # benchmarks/ is on sys.path when a script runs
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from sparkpromo import columns as C
from sparkpromo import delta_io
from sparkpromo import tables as T
from sparkpromo.pipeline import RunContext, run_stage
from sparkpromo.schemas import RECOMMENDATIONS

CAMPAIGNS = 5
ITEMS_PER_USER = 3
POPULATION = 50_000
END = dt.date(2026, 11, 30)


def lists(spark: SparkSession, first: dt.date, days: int, users: int) -> DataFrame:
    """``days`` daily runs from ``first``: per campaign ``users`` users of a shifting population, three items each."""
    per_day = CAMPAIGNS * users * ITEMS_PER_USER
    ids = spark.range(days * per_day)
    day = (F.col("id") / per_day).cast("int")
    camp = (F.col("id") / (users * ITEMS_PER_USER)).cast("int") % CAMPAIGNS
    user = ((F.col("id") / ITEMS_PER_USER).cast("long") % users + day * 997 + camp * 7919) % POPULATION
    rank = (F.col("id") % ITEMS_PER_USER + 1).cast("int")
    control = F.xxhash64(user, camp, day) % 10 == 0
    cols = {
        C.CAMPAIGN_ID: F.concat(F.lit("c"), camp.cast("string")), C.RUN_DATE: F.date_add(F.lit(first), day),
        C.USER_ID: F.concat(F.lit("u"), user.cast("string")),
        C.ITEM_ID: F.concat(F.lit("i"), (F.xxhash64(user, rank) % 500).cast("string")), C.RANK: rank,
        C.SCORE: F.rand(1), C.RAW_SCORE: F.rand(2), C.SOURCE: F.lit("als"), C.IS_CONTROL: control,
        C.DELIVERED: ~control, C.MODEL_RUN_ID: F.lit("m"),
        C.OFFER: F.struct(F.lit(10.0).alias(C.DISCOUNT_PCT), F.lit(None).cast("string").alias(C.COUPON_CODE),
                          F.lit("c").alias(C.CAMPAIGN_NAME), F.lit("t").alias(C.OFFER_TEXT)),
        C.REASON: F.array(F.lit("r")), C.RUN_ID: F.lit("bench"),
    }
    return ids.select(*(cols[f.name].cast(f.dataType).alias(f.name) for f in RECOMMENDATIONS.fields))


def purchases(spark: SparkSession, first: dt.date, days: int, per_day: int) -> DataFrame:
    ids = spark.range(days * per_day)
    return ids.select(
        F.concat(F.lit("u"), (F.xxhash64(F.col("id")) % POPULATION).cast("string")).alias(C.USER_ID),
        F.concat(F.lit("i"), (F.xxhash64(F.col("id"), F.lit(1)) % 500).cast("string")).alias(C.ITEM_ID),
        F.lit(C.PURCHASE).alias(C.EVENT_TYPE),
        F.date_add(F.lit(first), (F.col("id") / per_day).cast("int")).alias(C.EVENT_DATE),
        F.lit(20.0).alias(C.PRICE), F.lit(1).alias(C.QUANTITY))


def one_history(spark: SparkSession, lake: Path, days: int, users: int, rounds: int) -> dict[str, Any]:
    cfg = bare_config(lake, measure={"min_users": 1})
    recs_uri, events_uri = T.RECOMMENDATIONS.uri(cfg), T.SILVER_EVENTS.uri(cfg)
    first = END - dt.timedelta(days=days - 1)
    feed = {delta_io.CHANGE_FEED: "true"}
    delta_io.overwrite(lists(spark, first, days, users), recs_uri, partition_by=T.RECOMMENDATIONS.partition_by,
                       properties=feed)
    delta_io.overwrite(purchases(spark, first, days, users), events_uri, properties=feed)
    run_stage("measure", spark, cfg, RunContext("history", END))
    new_day = END + dt.timedelta(days=1)
    delta_io.replace_partition(lists(spark, new_day, 1, users), recs_uri, {C.RUN_DATE: new_day},
                               partition_by=T.RECOMMENDATIONS.partition_by)
    delta_io.append(purchases(spark, new_day, 1, users), events_uri)
    seconds: dict[str, list[float]] = {"incremental": [], "full": []}
    measured: dict[str, int] = {}
    for i in range(rounds):
        for mode in (("incremental", "full") if i % 2 == 0 else ("full", "incremental")):
            # Each timed run starts from a copy of the lakehouse as day N left it (Delta's versions travel with it).
            copy = lake.parent / f"{lake.name}-{i}-{mode}"
            shutil.rmtree(copy, ignore_errors=True)
            shutil.copytree(lake, copy)
            s, out = timed(run_stage, "measure", spark, bare_config(copy, measure={"min_users": 1}),
                           RunContext("next", new_day), full_refresh=mode == "full")
            assert out["mode"] == mode, out
            seconds[mode].append(s)
            measured[mode] = out["run_dates_measured"]
            shutil.rmtree(copy, ignore_errors=True)
    inc, full = statistics.median(seconds["incremental"]), statistics.median(seconds["full"])
    return {f"{days}d run dates measured (incremental / full)": f"{measured['incremental']} / {measured['full']}",
            f"{days}d incremental s (median)": round(inc, 2), f"{days}d full s (median)": round(full, 2),
            f"{days}d incremental / full": round(inc / full, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--days", type=int, nargs="+", default=[30, 60])
    ap.add_argument("--users", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--work", default=None)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    work = workdir(args.work, "measure-history")
    result: dict[str, Any] = {"users per campaign run": args.users, "campaigns": CAMPAIGNS}
    spark = session(bare_config(work / "lake"), "measure-history")
    for days in args.days:
        result.update(one_history(spark, work / f"lake-{days}", days, args.users, args.rounds))
    emit(result, args.json)


if __name__ == "__main__":
    main()
