"""Fixed costs of two plans, measured side by side in one session: recommend's candidates and VACUUM's listing.

1. **Recommend in one plan or two.** On a lakehouse left by ``sparkpromo run --sample`` (made here unless
   ``--lakehouse`` names one), the recommend stage's inputs are read and cached once, then, alternating for
   ``--repeats`` rounds, the same recommendations are materialised
   (a) as one plan, :func:`sparkpromo.recommend.recommendations` (candidate sources and the policy together: how
       the stage ran before), with adaptive execution on, as in production,
   (b) the same single plan with adaptive execution off (how much of (a) is re-planning), and
   (c) as the stage runs now: :func:`~sparkpromo.recommend.candidate_pool` materialised first, then
       :func:`~sparkpromo.recommend.ranked_offers` over it, adaptive execution on.
   Each variant's rows are checked equal to (c)'s before any figure is reported.
2. **VACUUM's listing.** A small Delta table with a few superseded files is vacuumed (``RETAIN 0 HOURS``, as
   ``forget`` does), alternating between Spark's default listing parallelism (10,000 tasks,
   ``spark.sql.sources.parallelPartitionDiscovery.parallelism``) and the session's shuffle partitions (what
   ``session.py`` now sets). A fresh superseded file is written before every vacuum.

    .venv/bin/python benchmarks/planning.py [--events 2500] [--lakehouse DIR] [--repeats 3] [--json]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import tempfile
from pathlib import Path

from delta.tables import DeltaTable
from harness import emit, local_config, session, timed  # benchmarks/ is on sys.path when a script runs
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from sparkpromo import campaigns as K
from sparkpromo import columns as C
from sparkpromo import delta_io
from sparkpromo import recommend as R
from sparkpromo import tables as T
from sparkpromo.cli import main as cli_main
from sparkpromo.config import AppConfig
from sparkpromo.features import decay_reference

RUN_DATE = "2026-11-01"
LISTING = "spark.sql.sources.parallelPartitionDiscovery.parallelism"
AQE = "spark.sql.adaptive.enabled"


def make_lakehouse(root: Path, events: int) -> None:
    os.environ["SPARKPROMO_LAKEHOUSE"], os.environ["SPARKPROMO_LANDING"] = str(root / "lake"), str(root / "land")
    rc = cli_main(["run", "--sample", "--events", str(events), "--run-date", RUN_DATE, "--stages",
                   "ingest,clean,features,train", "--set", "spark.shuffle_partitions=2"])
    if rc != 0:
        raise SystemExit(f"run --sample failed (exit {rc})")


def recommend_variants(spark: SparkSession, cfg: AppConfig, repeats: int) -> dict[str, object]:
    run_date = dt.date.fromisoformat(RUN_DATE)
    active = K.active_campaigns(cfg.campaigns, run_date)
    _, model, champion = R.load_champion(spark, cfg)
    r = cfg.recommend
    users, items, id_map, interactions = (delta_io.read(spark, cfg.table("gold", n)).persist()
                                          for n in ("user_features", "item_features", "id_map", "interactions"))
    events = (delta_io.read(spark, T.SILVER_EVENTS.uri(cfg)).where(F.col(C.EVENT_DATE) <= F.lit(run_date))
              .select(*R.EVENT_COLUMNS).persist())
    last = events.agg(F.max(C.EVENT_DATE)).first()
    frames = R.campaign_frames(active, run_date, users, items, events, r.segment, r.reasons, r.candidates,
                               decay_reference(run_date, last[0] if last else None))

    def one_plan() -> DataFrame:
        return R.recommendations(frames, active, run_date, users, events, id_map, interactions, model, r
                                 ).localCheckpoint(eager=True)

    def two_plans() -> DataFrame:
        cands = R.candidate_pool(frames, active, run_date, users, events, id_map, model, r).localCheckpoint(eager=True)
        return R.ranked_offers(cands, frames, active, run_date, events, id_map, interactions, model, r
                               ).localCheckpoint(eager=True)

    reference = two_plans()
    for name, variant, aqe in (("one plan", one_plan, "true"), ("one plan, AQE off", one_plan, "false")):
        spark.conf.set(AQE, aqe)
        got = variant()
        spark.conf.set(AQE, "true")
        if got.exceptAll(reference).count() or reference.exceptAll(got).count():
            raise SystemExit(f"{name}: rows differ from the stage's two plans")
    times: dict[str, list[float]] = {"one": [], "one_no_aqe": [], "two": []}
    for _ in range(repeats):
        times["one"].append(timed(one_plan)[0])
        spark.conf.set(AQE, "false")
        times["one_no_aqe"].append(timed(one_plan)[0])
        spark.conf.set(AQE, "true")
        times["two"].append(timed(two_plans)[0])
    best = {k: min(v) for k, v in times.items()}
    return {"champion": champion, "campaigns": len(active), "rows": reference.count(),
            "one plan (before) / two plans (now), AQE on": round(best["one"] / best["two"], 2),
            "one plan, AQE off / two plans (now), AQE on": round(best["one_no_aqe"] / best["two"], 2),
            "recommend rounds": repeats}


def vacuum_variants(spark: SparkSession, shuffle_partitions: int, repeats: int) -> dict[str, object]:
    spark.conf.set("spark.databricks.delta.retentionDurationCheck.enabled", "false")
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "t")
        times: dict[str, list[float]] = {"default": [], "ours": []}
        for i in range(repeats * 2 + 1):
            spark.range(100).withColumn("round", F.lit(i)).write.format("delta").mode("overwrite").save(path)
            if i == 0:
                continue  # the first vacuum of the session also warms up; not counted
            which = "default" if i % 2 else "ours"
            spark.conf.set(LISTING, "10000" if which == "default" else str(shuffle_partitions))
            times[which].append(timed(lambda: DeltaTable.forPath(spark, path).vacuum(0))[0])
    spark.conf.set(LISTING, str(shuffle_partitions))
    return {"VACUUM, listing with 10,000 tasks (Spark's default) / with the shuffle partitions (now)":
            round(min(times["default"]) / min(times["ours"]), 1), "vacuum rounds": repeats}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=2500, help="sample size when no --lakehouse is given")
    ap.add_argument("--lakehouse", default=None, help="a lakehouse already through run --sample (train included)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.lakehouse is None:
            make_lakehouse(Path(tmp), args.events)
            lakehouse = str(Path(tmp) / "lake")
        else:
            lakehouse = args.lakehouse
        cfg = local_config({"lakehouse": lakehouse, "spark.master": "local[2]", "spark.shuffle_partitions": 2})
        spark = session(cfg, "planning")
        result: dict[str, object] = {"events": args.events if args.lakehouse is None else "(given lakehouse)",
                                     "master": "local[2]", "shuffle partitions": 2}
        result.update(recommend_variants(spark, cfg, args.repeats))
        result.update(vacuum_variants(spark, 2, args.repeats))
    emit(result, args.json)


if __name__ == "__main__":
    main()
