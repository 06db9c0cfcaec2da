"""ALS robustness: 50 iterations without a StackOverflowError (checkpointing is always on), identical top-K from
two fits with the same seed and input, and finite metrics when a holdout user is unknown to the model."""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path

from chispa import assert_approx_df_equality
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from sparkpromo import columns as C
from sparkpromo import evaluate as E
from sparkpromo import schemas
from sparkpromo import train as T
from tests.measure import record

T0 = dt.datetime(2024, 1, 1)


def tastes(spark: SparkSession) -> DataFrame:
    """Users 0-9 like items 0-5, users 10-15 like items 6-11, each skipping one item of their taste."""
    rows = [(u, i, 1.0 + (u + i) % 3) for u in range(10) for i in range(6) if i != u % 6]
    rows += [(u, i, 1.0 + (u + i) % 3) for u in range(10, 16) for i in range(6, 12) if i != 6 + u % 6]
    return spark.createDataFrame([(u, i, c, T0 + dt.timedelta(hours=n)) for n, (u, i, c) in enumerate(rows)],
                                 schemas.INTERACTIONS)


def test_fifty_iterations_with_checkpointing(spark: SparkSession, spark_root: Path) -> None:
    ckpt = spark.sparkContext._jsc.sc().getCheckpointDir()
    assert ckpt.isDefined() and "_checkpoints" in ckpt.get()  # session.py always sets it
    data = tastes(spark)
    als = T.build_als(implicit=True, seed=1, blocks=2, rank=4, maxIter=50, regParam=0.1, alpha=5.0).als()
    assert als.getCheckpointInterval() == 5 and als.getMaxIter() == 50
    model = als.fit(data)
    factors = [v for r in model.userFactors.collect() for v in r["features"]]
    assert len(factors) == 16 * 4 and all(math.isfinite(v) for v in factors)
    record("model", "ALS maxIter=50 (checkpointInterval=5)", data.count(), "16 users x rank 4 factors, all finite",
           "no StackOverflowError")


def test_same_seed_same_top_k(spark: SparkSession) -> None:
    data = tastes(spark)

    def top_k() -> DataFrame:
        als = T.build_als(implicit=True, seed=7, blocks=2, rank=3, maxIter=8, regParam=0.1, alpha=5.0).als()
        return E.top_k_excluding_seen(als.fit(data), data, 3).orderBy(C.USER_IDX, C.RANK)

    first, second = top_k(), top_k()
    assert first.count() == 16 * 3
    assert_approx_df_equality(first, second, precision=1e-9, ignore_nullable=True)
    record("model", "two ALS fits, same seed and input", 2, "48 top-3 rows each, identical", "pass")


def test_user_only_in_holdout_gives_finite_metrics(spark: SparkSession) -> None:
    data = tastes(spark)
    # User 99 and item 99 exist only in the holdout.
    holdout = spark.createDataFrame([(0, 0), (10, 6), (99, 1), (3, 99)], f"{C.USER_IDX} int, {C.ITEM_IDX} int")
    model = T.build_als(implicit=True, seed=3, blocks=2, rank=3, maxIter=5, regParam=0.1, alpha=5.0).als().fit(data)
    users = holdout.select(C.USER_IDX).distinct()
    ranked = E.top_k_excluding_seen(model, data, 3, users=users)
    assert ranked.where(F.col(C.USER_IDX) == 99).count() == 0  # unknown to the model: no list, no NaN score
    raw = E.evaluate_recommendations(ranked, holdout, data, 3)
    assert all(math.isfinite(v) for v in raw.values()), raw
    # The split drops such rows before scoring, as the train stage does.
    kept = E._drop_unknown(data, holdout)
    assert {(r[0], r[1]) for r in kept.select(C.USER_IDX, C.ITEM_IDX).collect()} == {(0, 0), (10, 6)}
    clean_metrics = E.evaluate_recommendations(ranked.join(kept.select(C.USER_IDX).distinct(), C.USER_IDX), kept,
                                               data, 3)
    assert all(math.isfinite(v) for v in clean_metrics.values()), clean_metrics
    assert clean_metrics["recall"] >= raw["recall"]  # the cold user's forced zero is gone
    # A validation fold whose every user is unknown scores 0.0, not NaN.
    frame = E.ranking_frame(E.as_lists(ranked), holdout.where(F.col(C.USER_IDX) == 99))
    assert E.TopKEvaluator("ndcg", 3).evaluate(frame) == 0.0
    record("model", "holdout with a user and an item unseen in training", holdout.count(),
           "ndcg/precision/recall/map/coverage/novelty all finite", "pass")
