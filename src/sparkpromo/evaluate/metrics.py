"""Ranking metrics of top-K lists on a holdout (Spark's RankingEvaluator), coverage and novelty."""

from __future__ import annotations

import logging
import math

from pyspark import StorageLevel
from pyspark.ml.evaluation import RankingEvaluator
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import ArrayType, DoubleType

from sparkpromo import columns as C
from sparkpromo.evaluate.topk import RANKING_METRICS, as_lists

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------------------------------
# Metrics
# ----------------------------------------------------------------------------------------------------------------
def ranking_frame(recs: DataFrame, holdout: DataFrame) -> DataFrame:
    """One row per holdout user: ``prediction`` (the user's recommendation list, empty when there is none) and
    ``label`` (the user's holdout items), both array<double> as RankingEvaluator wants them."""
    labels = holdout.groupBy(C.USER_IDX).agg(
        F.array_sort(F.collect_set(F.col(C.ITEM_IDX).cast(DoubleType()))).alias(C.LABEL))
    empty = F.array().cast(ArrayType(DoubleType()))
    return (labels.join(recs.select(C.USER_IDX, C.RECOMMENDATIONS), C.USER_IDX, "left")
            .select(C.USER_IDX,
                    F.coalesce(F.col(C.RECOMMENDATIONS).cast(ArrayType(DoubleType())), empty).alias(C.PREDICTION),
                    C.LABEL))


def _ranking_evaluator(metric: str, k: int) -> RankingEvaluator:
    if metric not in RANKING_METRICS:
        raise ValueError(f"unknown ranking metric {metric!r} (expected one of {', '.join(RANKING_METRICS)})")
    return RankingEvaluator(predictionCol=C.PREDICTION, labelCol=C.LABEL, metricName=RANKING_METRICS[metric], k=k)


def _finite(x: float) -> float:
    return x if math.isfinite(x) else 0.0


def ranking_metrics(recs: DataFrame, holdout: DataFrame, k: int) -> dict[str, float]:
    """NDCG@k, precision@k, recall@k and MAP@k (Spark's RankingEvaluator definitions) of ``recs``
    (user_idx, recommendations) against ``holdout`` (user_idx, item_idx), averaged over holdout users; a user
    without recommendations scores 0. An empty holdout gives 0.0 for every metric."""
    frame = ranking_frame(recs, holdout).persist(StorageLevel.MEMORY_AND_DISK)  # scanned once per metric
    try:
        if frame.isEmpty():  # RankingEvaluator fails on an empty frame
            return dict.fromkeys(RANKING_METRICS, 0.0)
        return {name: _finite(_ranking_evaluator(name, k).evaluate(frame)) for name in RANKING_METRICS}
    finally:
        frame.unpersist()


def catalog_coverage(ranked: DataFrame, catalog: DataFrame) -> float:
    """Distinct recommended items / distinct items in ``catalog`` (any frame with item_idx)."""
    row = (ranked.agg(F.countDistinct(C.ITEM_IDX).alias("rec"))
           .crossJoin(catalog.agg(F.countDistinct(C.ITEM_IDX).alias("cat"))).first())
    return float(row["rec"]) / row["cat"] if row and row["cat"] else 0.0


def novelty(ranked: DataFrame, train: DataFrame) -> float:
    """Mean self-information -log2(share of train users who interacted with the item) over all recommended
    (user, item) rows; 0.0 when nothing is recommended."""
    users = train.agg(F.countDistinct(C.USER_IDX).alias("_users"))
    pop = train.groupBy(C.ITEM_IDX).agg(F.countDistinct(C.USER_IDX).alias("_pop"))
    row = (ranked.join(pop, C.ITEM_IDX).crossJoin(users)
           .agg(F.avg(-F.log2(F.col("_pop") / F.col("_users")))).first())
    return float(row[0]) if row and row[0] is not None else 0.0


def evaluate_recommendations(ranked: DataFrame, holdout: DataFrame, train: DataFrame, k: int) -> dict[str, float]:
    """All holdout metrics of ranked top-K rows: ndcg, precision, recall, map, coverage (of the train catalog),
    novelty."""
    ranked = ranked.persist(StorageLevel.MEMORY_AND_DISK)  # three passes; computing top-K lists is the costly part
    try:
        out = ranking_metrics(as_lists(ranked), holdout, k)
        out["coverage"] = catalog_coverage(ranked, train)
        out["novelty"] = novelty(ranked, train)
        return out
    finally:
        ranked.unpersist()


__all__ = [
    "ranking_frame", "ranking_metrics", "catalog_coverage", "novelty", "evaluate_recommendations",
]
