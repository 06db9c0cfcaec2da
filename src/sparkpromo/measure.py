"""Campaign outcome measurement: what each campaign changed, measured against its control group.

Recommend lists every selected user of a campaign, control users too (``is_control``, ``delivered = false``: scored
and given their would-be offers, never sent). For each past ``(campaign_id, run_date)`` of ``gold/recommendations``
this stage joins the listed users with their ``silver/events`` purchases in the attribution window after the run
date, ``(run_date, run_date + measure.window_days]``, and compares the treated arm (delivered) with the control arm:

* conversion (any purchase in the window) and offer conversion (a purchase of an item on the user's list), each
  with the absolute uplift (treated - control), the relative uplift and a 95% two-proportion interval
  (Wald, unpooled: ``d +- 1.96 sqrt(p_t (1 - p_t) / n_t + p_c (1 - p_c) / n_c)``);
* revenue per user (price x quantity of the window's purchases) with a 95% Welch interval (Welch-Satterthwaite
  degrees of freedom; the t quantile by its Cornish-Fisher expansion, exact to 1e-4 from 4 degrees of freedom);
* incremental conversions and revenue (uplift x treated users), the discount cost (the offer's discount on treated
  users' purchases of listed items) and the incremental return on it, ``(incremental revenue - cost) / cost``;
* uplift by score: users in deciles of their best listed score (1 = top), the Qini curve (cumulative incremental
  conversions ``Y_t(d) - Y_c(d) N_t(d) / N_c(d)``) against random targeting, and its area (AUUC, trapezoids over the
  share of users targeted).

Every row has a ``status``: ``window_open`` (the window ends after the measure run's date: counts only),
``no_control`` / ``no_treated`` (an arm is empty: no comparison), ``small_sample`` (an arm has fewer than
``measure.min_users`` users: shown, not to be trusted) or ``ok``. ``in_config`` is false for a campaign no longer
configured: its past runs are still measured (the discount comes from the stored offer, not the config).

Tables (Delta): ``metrics/campaign_outcomes`` (:data:`OUTCOMES`, one row per campaign and run date) and
``metrics/uplift`` (:data:`UPLIFT`, one row per campaign, run date and decile). A measure run replaces the rows of
the run dates up to its own; later run dates are left as they are. With ``measure.pause_negative`` or
``measure.reallocate_budgets``, the decisions go to ``metrics/campaign_actions`` (:data:`ACTIONS`), which recommend
applies. Only per-campaign aggregates reach the driver.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import math
from collections.abc import Mapping, Sequence
from functools import reduce
from itertools import chain
from typing import Any

from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql.types import (
    DoubleType,
    IntegerType,
    LongType,
    StringType,
    StructType,
)

from sparkpromo import columns as C
from sparkpromo import delta_io
from sparkpromo import tables as T
from sparkpromo.config import AppConfig, Campaign
from sparkpromo.frame import Transform
from sparkpromo.logs import stage
from sparkpromo.schemas import ACTIONS, OUTCOMES, UPLIFT

log = logging.getLogger(__name__)


OK, SMALL_SAMPLE, WINDOW_OPEN, NO_CONTROL, NO_TREATED = "ok", "small_sample", "window_open", "no_control", "no_treated"
STATUSES = (OK, SMALL_SAMPLE, WINDOW_OPEN, NO_CONTROL, NO_TREATED)
MEASURED = (OK, SMALL_SAMPLE)  # statuses with a comparison
PAUSE, BUDGET = "pause", "budget"
DECILES = 10

Z95 = 1.959963984540054  # the standard normal's 97.5% quantile
# Cornish-Fisher terms of Student's t 97.5% quantile in powers of 1/df (Abramowitz & Stegun 26.7.5) at z = Z95.
_T_TERMS = tuple(g(Z95) for g in (
    lambda z: (z ** 3 + z) / 4,
    lambda z: (5 * z ** 5 + 16 * z ** 3 + 3 * z) / 96,
    lambda z: (3 * z ** 7 + 19 * z ** 5 + 17 * z ** 3 - 15 * z) / 384,
    lambda z: (79 * z ** 9 + 776 * z ** 7 + 1482 * z ** 5 - 1920 * z ** 3 - 945 * z) / 92160))

# Columns that only mean something once the window has closed and both arms have users.
_COMPARISON_COLUMNS = tuple(f.name for f in OUTCOMES.fields[9:-1])



# The columns each input is read with.
RECOMMENDATION_COLUMNS = (C.CAMPAIGN_ID, C.RUN_DATE, C.USER_ID, C.ITEM_ID, C.SCORE, C.IS_CONTROL, C.OFFER)
EVENT_COLUMNS = (C.USER_ID, C.ITEM_ID, C.EVENT_TYPE, C.EVENT_DATE, C.PRICE, C.QUANTITY)
_KEYS = (C.CAMPAIGN_ID, C.RUN_DATE)


# ----------------------------------------------------------------------------------------------------------------
# Statistics as column expressions
# ----------------------------------------------------------------------------------------------------------------
def _div(num: Column, den: Column) -> Column:
    """``num / den`` as a double; null when ``den`` is 0 or null (never an error under ANSI mode)."""
    return F.try_divide(num.cast(DoubleType()), den.cast(DoubleType()))


def t_quantile_975(df: Column) -> Column:
    """Student's t 97.5% quantile for ``df`` degrees of freedom (Cornish-Fisher; Z95 for infinite/null df)."""
    d = df.cast(DoubleType())
    series = reduce(lambda acc, k: acc + F.lit(_T_TERMS[k]) / F.pow(d, F.lit(float(k + 1))),
                    range(len(_T_TERMS)), F.lit(Z95))
    return F.when(d.isNull() | F.isnan(d), F.lit(Z95)).otherwise(series)


def two_proportion_ci(p_t: Column, n_t: Column, p_c: Column, n_c: Column) -> tuple[Column, Column, Column]:
    """``(difference, low, high)`` of two proportions: the 95% Wald interval with unpooled variances."""
    diff = p_t - p_c
    se = F.sqrt(_div(p_t * (F.lit(1.0) - p_t), n_t) + _div(p_c * (F.lit(1.0) - p_c), n_c))
    return diff, diff - F.lit(Z95) * se, diff + F.lit(Z95) * se


def welch_ci(mean_t: Column, var_t: Column, n_t: Column, mean_c: Column, var_c: Column, n_c: Column
             ) -> tuple[Column, Column, Column]:
    """``(difference, low, high)`` of two means: the 95% Welch interval (sample variances, Welch-Satterthwaite
    degrees of freedom). Zero variance in both arms gives an interval of width 0."""
    a, b = _div(var_t, n_t), _div(var_c, n_c)
    se2 = a + b
    df = _div(se2 * se2, _div(a * a, n_t - F.lit(1)) + _div(b * b, n_c - F.lit(1)))
    half = F.when(se2 == 0, F.lit(0.0)).otherwise(t_quantile_975(df) * F.sqrt(se2))
    diff = mean_t - mean_c
    return diff, diff - half, diff + half


# ----------------------------------------------------------------------------------------------------------------
# Per-user outcomes
# ----------------------------------------------------------------------------------------------------------------
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
        bought = (windows.join(purchases, C.USER_ID)
                  .where((F.col(C.EVENT_DATE) > F.col(C.RUN_DATE)) & (F.col(C.EVENT_DATE) <= F.col(C.WINDOW_END)))
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


# ----------------------------------------------------------------------------------------------------------------
# Per campaign run
# ----------------------------------------------------------------------------------------------------------------
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


def uplift_by_decile(measured_on: dt.date, deciles: int = DECILES) -> Transform:
    """User outcomes of closed windows -> one row per ``(campaign_id, run_date, decile)`` (:data:`UPLIFT` without
    the run id): users and conversions per arm in each decile of ``user_score`` (1 = the top-scored users; ties
    and missing scores ordered by a hash), the decile's uplift, and the Qini curve after it: ``cum_share`` of
    users targeted, ``qini`` = ``Y_t - Y_c * N_t / N_c`` over deciles 1..d, ``qini_random`` = the whole run's
    Qini x ``cum_share``. Runs whose window is still open are left out."""
    def apply(users: DataFrame) -> DataFrame:
        order = Window.partitionBy(*_KEYS).orderBy(
            F.desc_nulls_last(C.USER_SCORE), F.xxhash64(F.col(C.CAMPAIGN_ID), F.col(C.USER_ID)), F.asc(C.USER_ID))
        conv = F.col(C.CONVERTED).cast(LongType())
        per = (users.where(F.col(C.WINDOW_END) <= F.lit(measured_on))
               .withColumn(C.DECILE, F.ntile(deciles).over(order))
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


def conform(schema: StructType, run_id: str) -> Transform:
    """Add the run id and cast to ``schema``'s column order and types."""
    def apply(df: DataFrame) -> DataFrame:
        df = df.withColumn(C.RUN_ID, F.lit(run_id))
        return df.select(*(F.col(f.name).cast(f.dataType).alias(f.name) for f in schema.fields))
    return apply


# ----------------------------------------------------------------------------------------------------------------
# Feedback into the next run (optional)
# ----------------------------------------------------------------------------------------------------------------
def decide_actions(history: Sequence[Mapping[str, Any]], campaigns: Sequence[Campaign], pause_negative: bool,
                   min_runs: int, reallocate: bool) -> list[tuple[str, str, float | None, str]]:
    """``(campaign_id, action, value, reason)`` decisions from the measured outcome rows (small: one per campaign
    run; each a mapping of :data:`OUTCOMES` columns). ``pause``: the last ``min_runs`` measured runs all have an
    uplift interval wholly below zero. ``budget``: budgeted campaigns share their summed budget in proportion to
    their latest measured incremental revenue per treated user (floored at 0; none measured or all at 0: no
    change). Paused campaigns get no budget share."""
    by_campaign: dict[str, list[Mapping[str, Any]]] = {}
    for row in sorted(history, key=lambda r: r[C.RUN_DATE]):
        if row[C.STATUS] in MEASURED:
            by_campaign.setdefault(row[C.CAMPAIGN_ID], []).append(row)
    out: list[tuple[str, str, float | None, str]] = []
    paused: set[str] = set()
    if pause_negative:
        for camp in campaigns:
            runs = by_campaign.get(camp.id, [])[-min_runs:]
            if len(runs) == min_runs and all(r[C.UPLIFT_CI_HIGH] is not None and r[C.UPLIFT_CI_HIGH] < 0
                                             for r in runs):
                paused.add(camp.id)
                out.append((camp.id, PAUSE, None,
                            f"uplift 95% CI below zero in the last {min_runs} measured run(s) "
                            f"(latest {runs[-1][C.UPLIFT_CI_LOW]:.4f} to {runs[-1][C.UPLIFT_CI_HIGH]:.4f})"))
    if reallocate:
        budgeted = [c for c in campaigns if c.budget > 0 and c.id not in paused]
        per_offer = {}
        for c in budgeted:
            runs = by_campaign.get(c.id, [])
            if runs and runs[-1][C.INCREMENTAL_REVENUE] is not None and runs[-1][C.USERS_TREATED]:
                per_offer[c.id] = max(0.0, runs[-1][C.INCREMENTAL_REVENUE] / runs[-1][C.USERS_TREATED])
        weight = sum(per_offer.values())
        if len(per_offer) == len(budgeted) and budgeted and weight > 0:
            total = sum(c.budget for c in budgeted)
            for c in budgeted:
                share = per_offer[c.id] / weight
                out.append((c.id, BUDGET, float(math.floor(total * share)),
                            f"{share:.1%} of the budgeted campaigns' {total} offers: incremental revenue per "
                            f"offer {per_offer[c.id]:.4f}"))
    return out


def read_actions(spark: SparkSession, cfg: AppConfig, run_date: dt.date) -> dict[str, dict[str, float | None]]:
    """The automatic decisions of the latest measure run before ``run_date`` (a run date's own measure runs after
    its recommend): campaign id -> {action: value}."""
    uri = T.CAMPAIGN_ACTIONS.uri(cfg)
    if not delta_io.is_delta(spark, uri):
        return {}
    df = delta_io.read(spark, uri).where(F.col(C.MEASURED_ON) < F.lit(run_date))
    latest = df.agg(F.max(C.MEASURED_ON)).first()
    if latest is None or latest[0] is None:
        return {}
    out: dict[str, dict[str, float | None]] = {}
    for row in df.where(F.col(C.MEASURED_ON) == F.lit(latest[0])).collect():  # one row per campaign and action
        out.setdefault(row[C.CAMPAIGN_ID], {})[row[C.ACTION]] = row[C.ACTION_VALUE]
    return out


def apply_actions(campaigns: Sequence[Campaign], actions: Mapping[str, Mapping[str, float | None]]
                  ) -> tuple[list[Campaign], list[str]]:
    """The campaigns recommend runs after the automatic decisions (paused ones dropped, budgets replaced), and one
    log line per change."""
    kept: list[Campaign] = []
    changes: list[str] = []
    for camp in campaigns:
        act = actions.get(camp.id, {})
        if PAUSE in act:
            changes.append(f"campaign {camp.id}: paused by measure.pause_negative")
            continue
        budget = act.get(BUDGET)
        new = None if budget is None else max(1, int(budget))  # 0 would mean "no budget": keep at least 1 offer
        if new is not None and new != camp.budget:
            changes.append(f"campaign {camp.id}: budget {camp.budget} -> {new} by measure.reallocate_budgets")
            camp = dataclasses.replace(camp, budget=new)
        kept.append(camp)
    return kept, changes


# ----------------------------------------------------------------------------------------------------------------
# The stage
# ----------------------------------------------------------------------------------------------------------------
def _summary_row(row: Mapping[str, Any]) -> dict[str, Any]:
    keys = (C.CONVERSION_TREATED, C.CONVERSION_CONTROL, C.UPLIFT, C.UPLIFT_CI_LOW, C.UPLIFT_CI_HIGH,
            C.INCREMENTAL_REVENUE, C.DISCOUNT_COST)
    return {"run_date": row[C.RUN_DATE].isoformat(), "status": row[C.STATUS],
            C.USERS_TREATED: int(row[C.USERS_TREATED]), C.USERS_CONTROL: int(row[C.USERS_CONTROL]),
            **{k: (round(float(row[k]), 6) if row[k] is not None else None) for k in keys}}


def run_measure(spark: SparkSession, cfg: AppConfig, run_id: str, run_date: dt.date) -> dict[str, Any]:
    """Measure every campaign run of ``gold/recommendations`` up to ``run_date`` and write
    ``metrics/campaign_outcomes`` and ``metrics/uplift`` (rows of those run dates replaced in one commit each);
    with the feedback options on, also ``metrics/campaign_actions``. Returns a summary with, per campaign, its
    latest closed (or else latest) run's figures."""
    from sparkpromo.recommend import table_uri

    m = cfg.measure
    summary: dict[str, Any] = {"run_id": run_id, "run_date": run_date.isoformat(), "window_days": m.window_days}
    recs_uri = table_uri(cfg)
    if not delta_io.is_delta(spark, recs_uri):
        summary.update(runs_measured=0, warning="no recommendations table yet: nothing to measure")
        log.warning("%s", summary["warning"])
        return summary
    recs = (delta_io.read(spark, recs_uri).where(F.col(C.RUN_DATE) <= F.lit(run_date))
            .select(*RECOMMENDATION_COLUMNS))
    dates = sorted(r[0] for r in recs.select(C.RUN_DATE).distinct().collect())  # one row per past run date
    if not dates:
        summary.update(runs_measured=0, warning=f"no recommendations on or before {run_date}: nothing to measure")
        log.warning("%s", summary["warning"])
        return summary
    events = delta_io.read(spark, T.SILVER_EVENTS.uri(cfg)).select(*EVENT_COLUMNS)
    types = {c.id: c.type for c in cfg.campaigns}
    users = (recs.transform(assignments())
             .transform(user_outcomes(events, recs.select(*_KEYS, C.USER_ID, C.ITEM_ID), m.window_days))
             .persist(StorageLevel.MEMORY_AND_DISK))
    try:
        uplift = users.transform(uplift_by_decile(run_date)).localCheckpoint(eager=True)
        outcomes = (users.transform(campaign_outcomes(run_date, m.min_users, types))
                    .transform(with_auuc(uplift.transform(qini_areas())))
                    .transform(conform(OUTCOMES, run_id)).localCheckpoint(eager=True))
        with stage("measure.write", run_dates=len(dates)) as counts:
            where = {C.RUN_DATE: dates}
            delta_io.replace_partition(outcomes, T.CAMPAIGN_OUTCOMES.uri(cfg), where, name=T.CAMPAIGN_OUTCOMES.key)
            delta_io.replace_partition(uplift.transform(conform(UPLIFT, run_id)), T.UPLIFT.uri(cfg), where,
                                       name=T.UPLIFT.key)
            rows = [r.asDict() for r in outcomes.collect()]  # one row per campaign run: small
            counts["rows"] = len(rows)
    finally:
        users.unpersist()
    per_campaign: dict[str, dict[str, Any]] = {}
    for row in sorted(rows, key=lambda r: r[C.RUN_DATE]):
        if row[C.STATUS] != WINDOW_OPEN or row[C.CAMPAIGN_ID] not in per_campaign:
            per_campaign[row[C.CAMPAIGN_ID]] = _summary_row(row)
    for cid, v in per_campaign.items():
        log.info("campaign %s run %s: status=%s treated=%s control=%s uplift=%s [%s, %s]", cid, v["run_date"],
                 v["status"], v[C.USERS_TREATED], v[C.USERS_CONTROL], v[C.UPLIFT], v[C.UPLIFT_CI_LOW],
                 v[C.UPLIFT_CI_HIGH])
    statuses = [r[C.STATUS] for r in rows]
    summary.update(runs_measured=sum(s in MEASURED for s in statuses), runs_window_open=statuses.count(WINDOW_OPEN),
                   runs_without_control=statuses.count(NO_CONTROL), campaigns=per_campaign)
    if m.pause_negative or m.reallocate_budgets:
        actions = decide_actions(rows, cfg.campaigns, m.pause_negative, m.min_runs, m.reallocate_budgets)
        df = spark.createDataFrame([(run_date, cid, a, v, why, run_id) for cid, a, v, why in actions], ACTIONS)
        delta_io.replace_partition(df, T.CAMPAIGN_ACTIONS.uri(cfg), {C.MEASURED_ON: run_date},
                                   name=T.CAMPAIGN_ACTIONS.key)
        for cid, a, v, why in actions:
            log.warning("automatic change for the next run: campaign %s %s%s (%s)", cid, a,
                        "" if v is None else f" {v:g}", why)
        summary["actions"] = len(actions)
    return summary
