"""Ranking metrics of top-K lists on a holdout (Spark's RankingEvaluator), coverage and novelty."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable

from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import ArrayType, DecimalType, DoubleType

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


def _finite(x: float) -> float:
    return x if math.isfinite(x) else 0.0


def per_user_ranking_metrics(k: int) -> dict[str, Column]:
    """Each ranking metric of one row of :func:`ranking_frame`, as a column, with exactly the arithmetic of Spark's
    ``RankingMetrics`` (``ndcgAt``, ``precisionAt``, ``recallAt``, ``meanAveragePrecisionAt``: the same gains,
    added in the same order): a row without labels scores 0. Columns, so that every metric of every model comes
    out of one aggregate query instead of a job per metric."""
    top = F.slice(F.col(C.PREDICTION), 1, k)
    labels = F.col(C.LABEL)
    relevant = F.size(labels)
    hits = F.transform(top, lambda x: F.array_contains(labels, x))
    n_hits = F.size(F.filter(hits, lambda h: h))
    # DCG over the first k predictions; the ideal DCG over the first min(|labels|, k) positions. Natural logs, as
    # Spark's: their ratio is the log2 one.
    dcg = F.aggregate(F.transform(hits, lambda h, i: F.when(h, 1.0 / F.log(i + 2)).otherwise(0.0)), F.lit(0.0),
                      lambda acc, g: acc + g)
    ideal = F.aggregate(F.sequence(F.lit(0), F.least(relevant, F.lit(k)) - 1), F.lit(0.0),
                        lambda acc, i: acc + 1.0 / F.log(i + 2))
    # Average precision: the precision at each hit's rank, summed (count, rank and sum carried along the list).
    start = F.struct(F.lit(0).alias("n"), F.lit(0).alias("c"), F.lit(0.0).alias("s"))
    precisions = F.aggregate(hits, start, lambda acc, h: F.struct(
        (acc["n"] + 1).alias("n"), (acc["c"] + h.cast("int")).alias("c"),
        (acc["s"] + F.when(h, (acc["c"] + 1) / (acc["n"] + 1)).otherwise(0.0)).alias("s")), lambda acc: acc["s"])
    scored = {"ndcg": dcg / ideal, "precision": n_hits / F.lit(float(k)), "recall": n_hits / relevant,
              "map": precisions / F.least(relevant, F.lit(k))}
    return {name: F.when(relevant > 0, value).otherwise(0.0) for name, value in scored.items()}


_EXACT = DecimalType(38, 18)


def _mean(value: Column) -> Column:
    # A sum of decimals is exact, so the mean does not depend on how the rows are partitioned (a sum of doubles
    # does: local and cluster runs would differ in the last bits); 18 decimals are far below any reported digit.
    return F.coalesce((F.sum(value.cast(_EXACT)) / F.count(F.lit(1))).cast(DoubleType()), F.lit(0.0))


def ranking_aggregates(k: int, names: Iterable[str] = RANKING_METRICS) -> list[Column]:
    """The mean of each ranking metric in ``names`` over the rows of :func:`ranking_frame` (0.0 when there is
    none), named after the metric: NDCG@k, precision@k, recall@k and MAP@k as Spark's RankingEvaluator defines
    them."""
    per_user = per_user_ranking_metrics(k)
    unknown = [name for name in names if name not in per_user]
    if unknown:
        raise ValueError(f"unknown ranking metric {unknown[0]!r} (expected one of {', '.join(RANKING_METRICS)})")
    return [_mean(per_user[name]).alias(name) for name in names]


def ranking_metrics(recs: DataFrame, holdout: DataFrame, k: int) -> dict[str, float]:
    """NDCG@k, precision@k, recall@k and MAP@k (Spark's RankingEvaluator definitions) of ``recs``
    (user_idx, recommendations) against ``holdout`` (user_idx, item_idx), averaged over holdout users; a user
    without recommendations scores 0. An empty holdout gives 0.0 for every metric. One query."""
    row = ranking_frame(recs, holdout).agg(*ranking_aggregates(k)).first()
    return {name: _finite(float(row[name])) if row else 0.0 for name in RANKING_METRICS}


def _coverage(ranked: DataFrame, catalog: DataFrame) -> DataFrame:
    """One row: ``coverage``, distinct recommended items / distinct items in ``catalog`` (0.0 for an empty one)."""
    rec, cat = F.col("_rec"), F.col("_cat")
    return (ranked.agg(F.countDistinct(C.ITEM_IDX).alias("_rec"))
            .crossJoin(catalog.agg(F.countDistinct(C.ITEM_IDX).alias("_cat")))
            .select(F.when(cat > 0, rec / cat).otherwise(0.0).alias("coverage")))


def _novelty(ranked: DataFrame, train: DataFrame) -> DataFrame:
    """One row: ``novelty``, the mean self-information -log2(share of train users who interacted with the item)
    over all recommended (user, item) rows; 0.0 when nothing is recommended."""
    users = train.agg(F.countDistinct(C.USER_IDX).alias("_users"))
    pop = train.groupBy(C.ITEM_IDX).agg(F.countDistinct(C.USER_IDX).alias("_pop"))
    return (ranked.join(pop, C.ITEM_IDX).crossJoin(users)
            .agg(F.coalesce(F.avg(-F.log2(F.col("_pop") / F.col("_users"))), F.lit(0.0)).alias("novelty")))


def catalog_coverage(ranked: DataFrame, catalog: DataFrame) -> float:
    """Distinct recommended items / distinct items in ``catalog`` (any frame with item_idx)."""
    row = _coverage(ranked, catalog).first()
    return float(row[0]) if row else 0.0


def novelty(ranked: DataFrame, train: DataFrame) -> float:
    """Mean self-information -log2(share of train users who interacted with the item) over all recommended
    (user, item) rows; 0.0 when nothing is recommended."""
    row = _novelty(ranked, train).first()
    return float(row[0]) if row else 0.0


def evaluate_recommendations(ranked: DataFrame, holdout: DataFrame, train: DataFrame, k: int) -> dict[str, float]:
    """All holdout metrics of ranked top-K rows: ndcg, precision, recall, map, coverage (of the train catalog),
    novelty; one query (the ranked rows are read three times in it, so they are cached for it)."""
    ranked = ranked.persist(StorageLevel.MEMORY_AND_DISK)  # computing top-K lists is the costly part
    try:
        row = (ranking_frame(as_lists(ranked), holdout).agg(*ranking_aggregates(k))
               .crossJoin(_coverage(ranked, train)).crossJoin(_novelty(ranked, train)).first())
    finally:
        ranked.unpersist()
    names = (*RANKING_METRICS, "coverage", "novelty")
    return {name: _finite(float(row[name])) if row else 0.0 for name in names}


__all__ = [
    "ranking_frame", "per_user_ranking_metrics", "ranking_aggregates", "ranking_metrics", "catalog_coverage", "novelty",
    "evaluate_recommendations",
]
