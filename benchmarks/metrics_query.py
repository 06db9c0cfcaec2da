"""Holdout metrics in one query against a job per metric, side by side in one session.

Train scores every model it compares (ALS and popularity, as evaluated offline and as served) on the holdout:
NDCG, precision, recall and MAP at k, catalog coverage and novelty. They used to take seven Spark actions per
model (an emptiness check, one ``RankingEvaluator.evaluate`` per ranking metric, one query each for coverage and
novelty); :func:`sparkpromo.evaluate.evaluate_recommendations` now computes them in one aggregate query. On
generated frames (``--users`` users, 300 items, ten ranked items per user, about three holdout items each),
alternating for ``--repeats`` rounds after one warm-up round, both ways are timed and their values compared
(within 1e-12).

    .venv/bin/python benchmarks/metrics_query.py [--users 1000] [--repeats 6] [--json]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile

from harness import bare_config, emit, session, timed  # benchmarks/ is on sys.path when a script runs
from pyspark import StorageLevel
from pyspark.ml.evaluation import RankingEvaluator
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from sparkpromo import columns as C
from sparkpromo import evaluate as E

ITEMS, K = 300, 10


def per_metric_jobs(ranked: DataFrame, holdout: DataFrame, train: DataFrame, k: int) -> dict[str, float]:
    """The metrics as train computed them before: a job per ranking metric (Spark's RankingEvaluator), then one
    query each for coverage and novelty."""
    ranked = ranked.persist(StorageLevel.MEMORY_AND_DISK)
    frame = E.ranking_frame(E.as_lists(ranked), holdout).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        out = dict.fromkeys(E.RANKING_METRICS, 0.0) if frame.isEmpty() else {
            name: RankingEvaluator(predictionCol=C.PREDICTION, labelCol=C.LABEL, metricName=spark_name,
                                   k=k).evaluate(frame) for name, spark_name in E.RANKING_METRICS.items()}
        out["coverage"] = E.catalog_coverage(ranked, train)
        out["novelty"] = E.novelty(ranked, train)
        return out
    finally:
        frame.unpersist()
        ranked.unpersist()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=6)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    spark = session(bare_config(tempfile.mkdtemp(prefix="sparkpromo-metrics-")), "metrics")
    n, user = args.users, (F.col("id") % args.users).cast("int").alias(C.USER_IDX)
    train = (spark.range(n * 20).select(user, ((F.col("id") * 7919) % ITEMS).cast("int").alias(C.ITEM_IDX))
             .distinct().localCheckpoint())
    holdout = (spark.range(n * 3).select(user, ((F.col("id") * 104729 + 13) % ITEMS).cast("int").alias(C.ITEM_IDX))
               .distinct().localCheckpoint())
    ranked = (spark.range(n * K).select(user, ((F.col("id") * 31 + 5) % ITEMS).cast("int").alias(C.ITEM_IDX),
                                        F.rand(1).alias(C.SCORE), ((F.col("id") / n).cast("int") + 1).alias(C.RANK))
              .dropDuplicates([C.USER_IDX, C.ITEM_IDX]).localCheckpoint())
    ways = {"one_query": E.evaluate_recommendations, "job_per_metric": per_metric_jobs}
    times: dict[str, list[float]] = {name: [] for name in ways}
    values: dict[str, dict[str, float]] = {}
    for r in range(args.repeats + 1):
        for name in (list(ways) if r % 2 else list(ways)[::-1]):
            seconds, values[name] = timed(ways[name], ranked, holdout, train, K)
            if r:  # the first round warms both up
                times[name].append(seconds)
    for metric, value in values["job_per_metric"].items():
        if abs(values["one_query"][metric] - value) > 1e-12:
            raise SystemExit(f"{metric}: {values['one_query'][metric]} in one query, {value} a job per metric")
    medians = {name: statistics.median(ts) for name, ts in times.items()}
    emit({"users": n, "k": K, "repeats": args.repeats,
          **{f"{name}_median_s": round(s, 3) for name, s in medians.items()},
          "ratio one_query / job_per_metric": round(medians["one_query"] / medians["job_per_metric"], 2),
          **{f"ndcg ({name})": round(v["ndcg"], 6) for name, v in values.items()}}, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
