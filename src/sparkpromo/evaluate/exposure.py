"""Exposure metrics of served recommendations per campaign: rows, users, coverage, Gini, head share and the same
figures for the popularity baseline (the fairness report). The offline ranking metrics are in :mod:`.metrics`."""

from __future__ import annotations

import math
from collections.abc import Sequence

from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import DoubleType

from sparkpromo import columns as C
from sparkpromo.frame import POSITION, Transform, positions_within


# ----------------------------------------------------------------------------------------------------------------
# Summary metrics
# ----------------------------------------------------------------------------------------------------------------
def exposure_gini(catalog_size: int) -> Transform:
    """Delivered rows -> ``(campaign_id, gini)`` of the per-item exposure counts over the whole catalogue (items
    never shown count as 0): 0 = every item shown equally, close to 1 = one item shown to everyone."""
    def apply(recs: DataFrame) -> DataFrame:
        counts = recs.groupBy(C.CAMPAIGN_ID, C.ITEM_ID).agg(F.count("*").cast(DoubleType()).alias("_x"))
        ranked = counts.transform(positions_within([C.CAMPAIGN_ID], [F.asc("_x"), F.asc(C.ITEM_ID)]))
        # With m shown items among n, the j-th smallest (j = pos + 1) sits at position i = n - m + j of all n, so
        # sum((2i - n - 1) x) = 2 sum(j x) + (n - 2m - 1) sum(x): one aggregate, no count over a window.
        agg = ranked.groupBy(C.CAMPAIGN_ID).agg(
            F.sum((F.col(POSITION) + F.lit(1)).cast(DoubleType()) * F.col("_x")).alias("_jx"),
            F.sum("_x").alias("_sx"), F.count("*").cast(DoubleType()).alias("_m"))
        n = F.greatest(F.lit(float(catalog_size)), F.col("_m"))
        return agg.select(C.CAMPAIGN_ID, ((F.lit(2.0) * F.col("_jx") + (n - F.lit(2.0) * F.col("_m") - F.lit(1.0))
                                           * F.col("_sx")) / (n * F.col("_sx"))).alias("gini"))
    return apply


# Exposure of the delivered slots next to the popularity baseline's, per campaign (stored in metrics/campaigns).
FAIRNESS_METRICS = ("head_share", "baseline_coverage", "baseline_gini", "baseline_head_share")


def most_popular(items: DataFrame, catalog_size: int, share: float = 0.1) -> DataFrame:
    """``item_id`` of the ``share`` most popular items of the catalogue (at least one): the "head" of exposure."""
    n = max(1, math.ceil(catalog_size * share))
    return items.orderBy(F.desc(C.POPULARITY), F.asc(C.ITEM_ID)).limit(n).select(C.ITEM_ID)


def exposure_metrics(catalog_size: int, head: DataFrame, prefix: str = "") -> Transform:
    """Delivered rows -> ``(campaign_id, coverage, gini, head_share)``: distinct items / catalogue, exposure Gini
    and the share of slots that went to the ``head`` items (see :func:`most_popular`); names get ``prefix``."""
    def apply(rows: DataFrame) -> DataFrame:
        coverage = rows.groupBy(C.CAMPAIGN_ID).agg(
            (F.countDistinct(C.ITEM_ID) / F.lit(float(max(catalog_size, 1)))).alias(f"{prefix}coverage"))
        gini = rows.transform(exposure_gini(catalog_size)).withColumnRenamed("gini", f"{prefix}gini")
        return (coverage.join(rows.transform(head_share(head, f"{prefix}head_share")), C.CAMPAIGN_ID)
                .join(gini, C.CAMPAIGN_ID, "left"))
    return apply


def head_share(head: DataFrame, name: str = "head_share") -> Transform:
    """Rows -> ``(campaign_id, <name>)``: the share of rows whose item is one of the ``head`` items."""
    def apply(rows: DataFrame) -> DataFrame:
        flagged = rows.join(F.broadcast(head.withColumn("_head", F.lit(1))), C.ITEM_ID, "left")
        return flagged.groupBy(C.CAMPAIGN_ID).agg((F.count("_head") / F.count("*")).alias(name))
    return apply


def popularity_baseline(eligible: DataFrame) -> Transform:
    """Delivered rows -> the same slots filled by the popularity baseline: slot ``rank`` r of every user gets the
    campaign's r-th most popular eligible item. What a non-personalised campaign would have exposed."""
    def apply(delivered: DataFrame) -> DataFrame:
        ranked = (eligible.select(C.CAMPAIGN_ID, C.ITEM_ID, C.POPULARITY)
                  .transform(positions_within([C.CAMPAIGN_ID], [F.desc(C.POPULARITY), F.asc(C.ITEM_ID)]))
                  .select(C.CAMPAIGN_ID, C.ITEM_ID, (F.col(POSITION) + F.lit(1)).alias(C.RANK)))
        return delivered.select(C.CAMPAIGN_ID, C.USER_ID, C.RANK).join(ranked, [C.CAMPAIGN_ID, C.RANK])
    return apply


def campaign_metrics(catalog_size: int, fallback_sources: Sequence[str], head: DataFrame | None = None,
                     eligible: DataFrame | None = None) -> Transform:
    """Recommendations -> one row per campaign: rows, users listed, served (delivered users), control users,
    fallback share (delivered rows whose ``source`` is one of ``fallback_sources``), catalogue coverage and
    exposure Gini over delivered rows.

    With the ``head`` items (:func:`most_popular`) it adds ``head_share``, the share of delivered slots going to
    them, and with the campaigns' ``eligible`` items it adds the same three exposure figures for the popularity
    baseline (``baseline_coverage``, ``baseline_gini``, ``baseline_head_share``), for the fairness report."""
    def apply(recs: DataFrame) -> DataFrame:
        delivered = F.col(C.DELIVERED)
        stats = recs.groupBy(C.CAMPAIGN_ID).agg(
            F.count("*").alias("rows"),
            F.countDistinct(C.USER_ID).alias("users_listed"),
            F.countDistinct(F.when(delivered, F.col(C.USER_ID))).alias("served"),
            F.countDistinct(F.when(F.col(C.IS_CONTROL), F.col(C.USER_ID))).alias("control"),
            F.count(F.when(delivered, 1)).alias("_delivered_rows"),
            F.count(F.when(delivered & F.col(C.SOURCE).isin(*fallback_sources), 1)).alias("_fallback_rows"),
            F.countDistinct(F.when(delivered, F.col(C.ITEM_ID))).alias("_items"))
        safe = F.greatest(F.col("_delivered_rows"), F.lit(1)).cast(DoubleType())
        gini = recs.where(delivered).transform(exposure_gini(catalog_size))
        return (stats.join(gini, C.CAMPAIGN_ID, "left")
                .select(C.CAMPAIGN_ID, "rows", "users_listed", "served", "control",
                        (F.col("_fallback_rows") / safe).alias("fallback_share"),
                        (F.col("_items") / F.lit(float(max(catalog_size, 1)))).alias("coverage"),
                        F.coalesce(F.col("gini"), F.lit(0.0)).alias("gini")))

    def with_exposure(recs: DataFrame) -> DataFrame:
        out = apply(recs)
        delivered = recs.where(F.col(C.DELIVERED))
        if head is not None:
            # Coverage and Gini of our rows are already in ``out``: only the head share is new.
            out = out.join(delivered.transform(head_share(head)), C.CAMPAIGN_ID, "left")
            if eligible is not None:
                base = (delivered.transform(popularity_baseline(eligible))
                        .transform(exposure_metrics(catalog_size, head, prefix="baseline_")))
                out = out.join(base, C.CAMPAIGN_ID, "left")
        return out
    return with_exposure

__all__ = ["FAIRNESS_METRICS", "campaign_metrics", "exposure_gini", "exposure_metrics", "head_share",
    "most_popular", "popularity_baseline"]
