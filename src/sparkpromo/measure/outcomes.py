"""Outcomes: each listed user's purchases in the attribution window, and per campaign run the comparison of the
treated arm with the control arm and its ``status``."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from itertools import chain
from typing import Any

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import DoubleType, IntegerType, LongType, StringType

from sparkpromo import columns as C
from sparkpromo.frame import Transform
from sparkpromo.measure.stats import _div, two_proportion_ci, welch_ci
from sparkpromo.schemas import OUTCOMES

OK, SMALL_SAMPLE, WINDOW_OPEN, NO_CONTROL, NO_TREATED = "ok", "small_sample", "window_open", "no_control", "no_treated"
STATUSES = (OK, SMALL_SAMPLE, WINDOW_OPEN, NO_CONTROL, NO_TREATED)
MEASURED = (OK, SMALL_SAMPLE)  # statuses with a comparison

# Columns that only mean something once the window has closed and both arms have users.
_COMPARISON_COLUMNS = tuple(f.name for f in OUTCOMES.fields[9:-1])

_KEYS = (C.CAMPAIGN_ID, C.RUN_DATE)


def assignments() -> Transform:
    """Recommendations -> one row per listed user of a campaign run: ``(campaign_id, run_date, user_id,
    is_control, user_score, discount_pct)``; ``user_score`` is the user's best listed score."""
    def apply(recs: DataFrame) -> DataFrame:
        return (recs.groupBy(C.CAMPAIGN_ID, C.RUN_DATE, C.USER_ID)
                .agg(F.max(F.col(C.IS_CONTROL)).alias(C.IS_CONTROL),
                     F.max(C.SCORE).cast(DoubleType()).alias(C.USER_SCORE),
                     F.max(F.coalesce(F.col(C.OFFER)[C.DISCOUNT_PCT], F.lit(0.0))).cast(DoubleType())
                     .alias(C.DISCOUNT_PCT)))
    return apply


def user_outcomes(events: DataFrame, offered: DataFrame, window_days: int) -> Transform:
    """Assignments -> the same rows with ``window_end`` and the user's purchases in ``(run_date, window_end]``:
    ``converted``, ``offer_converted``, ``revenue`` and ``offer_revenue`` (price x quantity, a missing quantity
    counts 1). ``offered`` holds ``(campaign_id, run_date, user_id, item_id)`` of the lists."""
    def apply(assigned: DataFrame) -> DataFrame:
        purchases = (events.where(F.col(C.EVENT_TYPE) == C.PURCHASE)
                     .select(C.USER_ID, C.ITEM_ID, C.EVENT_DATE,
                             (F.coalesce(F.col(C.PRICE), F.lit(0.0))
                              * F.coalesce(F.col(C.QUANTITY), F.lit(1)).cast(DoubleType())).alias("_value")))
        windows = assigned.select(*_KEYS, C.USER_ID,
                                  F.date_add(F.col(C.RUN_DATE), window_days).alias(C.WINDOW_END))
        listed = offered.select(*_KEYS, C.USER_ID, C.ITEM_ID, F.lit(True).alias("_listed")).distinct()
        # Each purchase goes to the run dates whose window holds it (run_date in [day - window_days, day - 1]),
        # so the join is on (user, run date): keyed on the user alone it paired every listed run of a user with
        # every purchase of the user's whole history.
        runs = F.explode(F.sequence(F.date_sub(F.col(C.EVENT_DATE), window_days),
                                    F.date_sub(F.col(C.EVENT_DATE), 1))).alias(C.RUN_DATE)
        in_windows = (purchases.join(windows.select(C.USER_ID).distinct(), C.USER_ID, "left_semi")
                      .select("*", runs))
        bought = (windows.join(in_windows, [C.USER_ID, C.RUN_DATE])
                  .join(listed, [*_KEYS, C.USER_ID, C.ITEM_ID], "left")
                  .groupBy(*_KEYS, C.USER_ID)
                  .agg(F.sum("_value").alias(C.REVENUE),
                       F.sum(F.when(F.col("_listed"), F.col("_value")).otherwise(F.lit(0.0))).alias(C.OFFER_REVENUE),
                       F.max(F.coalesce(F.col("_listed"), F.lit(False))).alias(C.OFFER_CONVERTED)))
        return (assigned.join(windows, [*_KEYS, C.USER_ID]).join(bought, [*_KEYS, C.USER_ID], "left")
                .select(*assigned.columns, C.WINDOW_END,
                        F.col(C.REVENUE).isNotNull().alias(C.CONVERTED),
                        F.coalesce(F.col(C.OFFER_CONVERTED), F.lit(False)).alias(C.OFFER_CONVERTED),
                        F.coalesce(F.col(C.REVENUE), F.lit(0.0)).alias(C.REVENUE),
                        F.coalesce(F.col(C.OFFER_REVENUE), F.lit(0.0)).alias(C.OFFER_REVENUE)))
    return apply


def _arm(treated: bool, value: Column) -> Column:
    """``value`` for the users of one arm, null for the other (so aggregates see one arm only)."""
    in_arm = ~F.col(C.IS_CONTROL) if treated else F.col(C.IS_CONTROL)
    return F.when(in_arm, value)


def _by_campaign(values: Mapping[str, Any]) -> Column:
    if not values:
        return F.lit(None).cast(StringType())
    return F.create_map(*chain.from_iterable((F.lit(k), F.lit(v)) for k, v in values.items()))[F.col(C.CAMPAIGN_ID)]


def campaign_outcomes(measured_on: dt.date, min_users: int, campaign_types: Mapping[str, str]) -> Transform:
    """User outcomes -> one row per ``(campaign_id, run_date)`` with the comparison of the two arms, a ``status``
    and ``in_config`` (the campaign is in ``campaign_types``, id -> type, of the current config).
    Shape: :data:`OUTCOMES` without the area columns and the run id (see :func:`with_auuc`, :func:`conform`)."""
    def apply(users: DataFrame) -> DataFrame:
        one = F.lit(1)
        conv, offer_conv = F.col(C.CONVERTED).cast(IntegerType()), F.col(C.OFFER_CONVERTED).cast(IntegerType())
        agg = users.groupBy(*_KEYS).agg(
            F.max(C.WINDOW_END).alias(C.WINDOW_END),
            F.count(_arm(True, one)).alias(C.USERS_TREATED),
            F.count(_arm(False, one)).alias(C.USERS_CONTROL),
            F.coalesce(F.sum(_arm(True, conv)), F.lit(0)).cast(LongType()).alias(C.CONVERSIONS_TREATED),
            F.coalesce(F.sum(_arm(False, conv)), F.lit(0)).cast(LongType()).alias(C.CONVERSIONS_CONTROL),
            F.sum(_arm(True, offer_conv)).alias("_oy_t"),
            F.sum(_arm(False, offer_conv)).alias("_oy_c"),
            F.avg(_arm(True, F.col(C.REVENUE))).alias(C.REVENUE_TREATED),
            F.avg(_arm(False, F.col(C.REVENUE))).alias(C.REVENUE_CONTROL),
            F.coalesce(F.var_samp(_arm(True, F.col(C.REVENUE))), F.lit(0.0)).alias("_var_t"),
            F.coalesce(F.var_samp(_arm(False, F.col(C.REVENUE))), F.lit(0.0)).alias("_var_c"),
            F.coalesce(F.sum(_arm(True, F.col(C.OFFER_REVENUE) * F.col(C.DISCOUNT_PCT) / F.lit(100.0))),
                       F.lit(0.0)).alias(C.DISCOUNT_COST))
        n_t, n_c = F.col(C.USERS_TREATED), F.col(C.USERS_CONTROL)
        p_t, p_c = _div(F.col(C.CONVERSIONS_TREATED), n_t), _div(F.col(C.CONVERSIONS_CONTROL), n_c)
        op_t, op_c = _div(F.col("_oy_t"), n_t), _div(F.col("_oy_c"), n_c)
        up, up_lo, up_hi = two_proportion_ci(p_t, n_t, p_c, n_c)
        oup, oup_lo, oup_hi = two_proportion_ci(op_t, n_t, op_c, n_c)
        rev, rev_lo, rev_hi = welch_ci(F.col(C.REVENUE_TREATED), F.col("_var_t"), n_t,
                                       F.col(C.REVENUE_CONTROL), F.col("_var_c"), n_c)
        incremental_revenue = rev * n_t
        status = (F.when(F.col(C.WINDOW_END) > F.lit(measured_on), F.lit(WINDOW_OPEN))
                  .when(n_c == 0, F.lit(NO_CONTROL)).when(n_t == 0, F.lit(NO_TREATED))
                  .when(F.least(n_t, n_c) < F.lit(min_users), F.lit(SMALL_SAMPLE)).otherwise(F.lit(OK)))
        stats = {
            C.CONVERSION_TREATED: p_t, C.CONVERSION_CONTROL: p_c, C.UPLIFT: up, C.UPLIFT_RELATIVE: _div(up, p_c),
            C.UPLIFT_CI_LOW: up_lo, C.UPLIFT_CI_HIGH: up_hi,
            C.OFFER_CONVERSION_TREATED: op_t, C.OFFER_CONVERSION_CONTROL: op_c, C.OFFER_UPLIFT: oup,
            C.OFFER_UPLIFT_CI_LOW: oup_lo, C.OFFER_UPLIFT_CI_HIGH: oup_hi,
            C.REVENUE_TREATED: F.col(C.REVENUE_TREATED), C.REVENUE_CONTROL: F.col(C.REVENUE_CONTROL),
            C.REVENUE_UPLIFT: rev, C.REVENUE_UPLIFT_CI_LOW: rev_lo, C.REVENUE_UPLIFT_CI_HIGH: rev_hi,
            C.INCREMENTAL_CONVERSIONS: up * n_t, C.INCREMENTAL_REVENUE: incremental_revenue,
            C.DISCOUNT_COST: F.col(C.DISCOUNT_COST),
            C.INCREMENTAL_ROI: _div(incremental_revenue - F.col(C.DISCOUNT_COST), F.col(C.DISCOUNT_COST)),
        }
        measured = F.col(C.STATUS).isin(*MEASURED)
        configured = list(campaign_types)
        return (agg.withColumn(C.STATUS, status)
                .select(*_KEYS, F.lit(measured_on).alias(C.MEASURED_ON), C.WINDOW_END, C.STATUS,
                        (F.col(C.CAMPAIGN_ID).isin(*configured) if configured else F.lit(False)).alias(C.IN_CONFIG),
                        _by_campaign(campaign_types).alias(C.CAMPAIGN_TYPE), n_t.alias(C.USERS_TREATED),
                        n_c.alias(C.USERS_CONTROL),
                        F.when(F.col(C.STATUS) != WINDOW_OPEN, F.col(C.CONVERSIONS_TREATED))
                        .alias(C.CONVERSIONS_TREATED),
                        F.when(F.col(C.STATUS) != WINDOW_OPEN, F.col(C.CONVERSIONS_CONTROL))
                        .alias(C.CONVERSIONS_CONTROL),
                        *(F.when(measured, col).cast(DoubleType()).alias(name) for name, col in stats.items())))
    return apply


__all__ = [
    "OK", "SMALL_SAMPLE", "WINDOW_OPEN", "NO_CONTROL", "NO_TREATED", "STATUSES", "MEASURED", "assignments",
    "user_outcomes", "campaign_outcomes",
]
