"""Scoring speed, as ratios measured side by side in one session.

1. ``--lakehouse``: a lakehouse that has been through ``sparkpromo run`` (gold tables + a registered ALS model).
   Times the whole recommend stage (scoring, campaign eligibility, exclusions, caps, control, reasons, writes)
   against a bare ``model.recommendForAllUsers(K)`` on the same model. Target: ≤ 2×.
2. ``--data``: MovieLens 100k. Fits one implicit ALS, then times top-K with seen-item exclusion for all users
   (sparkpromo's ``top_k_excluding_seen``: ask for K + max-seen candidates, anti-join, re-rank) against the
   cross-join-and-anti-join approach of public Spark ALS notebooks (score every user × item pair with
   ``model.transform``, anti-join seen pairs, rank with a window).

    .venv/bin/python benchmarks/scoring.py --lakehouse lakehouse --data ../shared/data/ml-100k [--json]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import time
from collections.abc import Callable
from pathlib import Path

from pyspark.ml.recommendation import ALS, ALSModel
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from sparkpromo import columns as C
from sparkpromo.config import load_config
from sparkpromo.evaluate import top_k_excluding_seen
from sparkpromo.recommend import load_champion, run_recommend
from sparkpromo.session import build_session

ROOT = Path(__file__).resolve().parents[1]


def timed(fn: Callable[[], object], repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def crossjoin_top_k(spark: SparkSession, model: ALSModel, train: DataFrame, k: int) -> DataFrame:
    users = train.select(C.USER_IDX).distinct()
    items = train.select(C.ITEM_IDX).distinct()
    scored = model.transform(users.crossJoin(items)).withColumnRenamed("prediction", C.SCORE)
    unseen = scored.join(train.select(C.USER_IDX, C.ITEM_IDX), [C.USER_IDX, C.ITEM_IDX], "left_anti")
    w = Window.partitionBy(C.USER_IDX).orderBy(F.col(C.SCORE).desc())
    return unseen.withColumn(C.RANK, F.row_number().over(w)).where(F.col(C.RANK) <= k)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lakehouse", default=None)
    ap.add_argument("--run-date", default="2026-11-01")
    ap.add_argument("--data", default=None)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    overrides = {"spark.master": "local[2]", "spark.shuffle_partitions": 8}
    if args.lakehouse:
        overrides["lakehouse"] = args.lakehouse
    cfg = load_config("local", ROOT / "conf", overrides=overrides)
    spark = build_session(cfg, app_name="sparkpromo-bench-scoring")
    result: dict[str, object] = {"k": args.k, "master": "local[2]"}

    if args.lakehouse:
        _, model, champion = load_champion(spark, cfg)
        assert model is not None, "the lakehouse has no ALS model"
        bare = timed(lambda: model.recommendForAllUsers(args.k).write.format("noop").mode("overwrite").save(),
                     args.repeats)
        full = timed(lambda: run_recommend(spark, cfg, "bench", dt.date.fromisoformat(args.run_date)), args.repeats)
        result.update(bare_recommend_for_all_users_s=round(bare, 2), recommend_stage_s=round(full, 2),
                      ratio_recommend_stage_to_bare=round(full / bare, 2))

    if args.data:
        train = (spark.read.option("sep", "\t").csv(str(Path(args.data) / "u.data"))
                 .select(F.col("_c0").cast("int").alias(C.USER_IDX), F.col("_c1").cast("int").alias(C.ITEM_IDX),
                         F.lit(1.0).alias(C.CONFIDENCE)).cache())
        train.count()
        model = ALS(userCol=C.USER_IDX, itemCol=C.ITEM_IDX, ratingCol=C.CONFIDENCE, implicitPrefs=True, rank=32,
                    maxIter=10, regParam=0.1, alpha=1.0, seed=42).fit(train)

        def ours() -> None:
            top_k_excluding_seen(model, train, args.k).write.format("noop").mode("overwrite").save()

        def crossjoin() -> None:
            crossjoin_top_k(spark, model, train, args.k).write.format("noop").mode("overwrite").save()

        t_ours, t_cross = timed(ours, args.repeats), timed(crossjoin, args.repeats)
        result.update(topk_exclusion_s=round(t_ours, 2), crossjoin_antijoin_s=round(t_cross, 2),
                      ratio_crossjoin_to_ours=round(t_cross / t_ours, 2))
    spark.stop()
    print("| measure | value |\n|---|---|")
    for key, v in result.items():
        print(f"| {key} | {v} |")
    if args.json:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
