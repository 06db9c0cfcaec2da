"""Uplift by score: per-decile uplift, the Qini curve and its area (AUUC)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql.types import DoubleType, LongType

from sparkpromo import columns as C
from sparkpromo.frame import Transform, ntile_within
from sparkpromo.measure.outcomes import _KEYS, MEASURED, _arm
from sparkpromo.measure.stats import _div

DECILES = 10


def uplift_by_decile(measured_on: dt.date, deciles: int = DECILES) -> Transform:
    """User outcomes of closed windows -> one row per ``(campaign_id, run_date, decile)`` (:data:`UPLIFT` without
    the run id): users and conversions per arm in each decile of ``user_score`` (1 = the top-scored users; ties
    and missing scores ordered by a hash), the decile's uplift, and the Qini curve after it: ``cum_share`` of
    users targeted, ``qini`` = ``Y_t - Y_c * N_t / N_c`` over deciles 1..d, ``qini_random`` = the whole run's
    Qini x ``cum_share``. Runs whose window is still open are left out."""
    def apply(users: DataFrame) -> DataFrame:
        order = [F.desc_nulls_last(C.USER_SCORE), F.xxhash64(F.col(C.CAMPAIGN_ID), F.col(C.USER_ID)),
                 F.asc(C.USER_ID)]
        conv = F.col(C.CONVERTED).cast(LongType())
        per = (users.where(F.col(C.WINDOW_END) <= F.lit(measured_on))
               .transform(ntile_within(list(_KEYS), order, deciles, C.DECILE))
               .groupBy(*_KEYS, C.DECILE)
               .agg(F.count(_arm(True, F.lit(1))).alias(C.USERS_TREATED),
                    F.count(_arm(False, F.lit(1))).alias(C.USERS_CONTROL),
                    F.coalesce(F.sum(_arm(True, conv)), F.lit(0)).cast(LongType()).alias(C.CONVERSIONS_TREATED),
                    F.coalesce(F.sum(_arm(False, conv)), F.lit(0)).cast(LongType()).alias(C.CONVERSIONS_CONTROL)))
        cum = Window.partitionBy(*_KEYS).orderBy(C.DECILE).rowsBetween(Window.unboundedPreceding,
                                                                       Window.currentRow)
        whole = Window.partitionBy(*_KEYS)

        def qini(y_t: Column, y_c: Column, n_t: Column, n_c: Column) -> Column:
            return y_t.cast(DoubleType()) - _div(y_c * n_t, n_c)

        def total(name: str, w: Any) -> Column:
            return F.sum(name).over(w)

        share = _div(total(C.USERS_TREATED, cum) + total(C.USERS_CONTROL, cum),
                     total(C.USERS_TREATED, whole) + total(C.USERS_CONTROL, whole))
        return per.select(
            *_KEYS, C.DECILE, F.lit(measured_on).alias(C.MEASURED_ON), C.USERS_TREATED, C.USERS_CONTROL,
            C.CONVERSIONS_TREATED, C.CONVERSIONS_CONTROL,
            (_div(F.col(C.CONVERSIONS_TREATED), F.col(C.USERS_TREATED))
             - _div(F.col(C.CONVERSIONS_CONTROL), F.col(C.USERS_CONTROL))).alias(C.UPLIFT),
            share.alias(C.CUM_SHARE),
            qini(total(C.CONVERSIONS_TREATED, cum), total(C.CONVERSIONS_CONTROL, cum), total(C.USERS_TREATED, cum),
                 total(C.USERS_CONTROL, cum)).alias(C.QINI),
            (qini(total(C.CONVERSIONS_TREATED, whole), total(C.CONVERSIONS_CONTROL, whole),
                  total(C.USERS_TREATED, whole), total(C.USERS_CONTROL, whole)) * share).alias(C.QINI_RANDOM))
    return apply


def qini_areas() -> Transform:
    """Uplift rows -> one row per ``(campaign_id, run_date)``: ``auuc`` (trapezoids of the Qini curve from the origin
    over ``cum_share``), ``auuc_random`` (the diagonal's area, final Qini / 2) and ``qini_coefficient`` (their
    difference). Null when a decile's Qini is (no control users up to it)."""
    def apply(uplift: DataFrame) -> DataFrame:
        w = Window.partitionBy(*_KEYS).orderBy(C.DECILE)
        last = Window.partitionBy(*_KEYS).orderBy(F.desc(C.DECILE))
        prev_q = F.coalesce(F.lag(C.QINI).over(w), F.lit(0.0))
        prev_s = F.coalesce(F.lag(C.CUM_SHARE).over(w), F.lit(0.0))
        pieces = (uplift.select(*_KEYS, C.QINI,
                                ((F.col(C.QINI) + prev_q) / F.lit(2.0) * (F.col(C.CUM_SHARE) - prev_s)).alias("_a"),
                                F.when(F.row_number().over(last) == 1, F.col(C.QINI)).alias("_final"))
                  .groupBy(*_KEYS)
                  .agg(F.sum("_a").alias(C.AUUC), F.count(F.col(C.QINI)).alias("_n"), F.count("*").alias("_all"),
                       F.max("_final").alias("_final")))
        complete = F.col("_n") == F.col("_all")
        auuc = F.when(complete, F.col(C.AUUC))
        rand = F.when(complete, F.col("_final") / F.lit(2.0))
        return pieces.select(*_KEYS, auuc.alias(C.AUUC), rand.alias(C.AUUC_RANDOM),
                             (auuc - rand).alias(C.QINI_COEFFICIENT))
    return apply


def with_auuc(areas: DataFrame) -> Transform:
    """Outcome rows + their run's Qini areas (null where there is no curve)."""
    def apply(outcomes: DataFrame) -> DataFrame:
        measured = F.col(C.STATUS).isin(*MEASURED)
        joined = outcomes.join(areas, list(_KEYS), "left")
        return joined.select(*outcomes.columns, *(F.when(measured, F.col(c)).alias(c)
                                                  for c in (C.AUUC, C.AUUC_RANDOM, C.QINI_COEFFICIENT)))
    return apply


__all__ = [
    "DECILES", "uplift_by_decile", "qini_areas", "with_auuc",
]
