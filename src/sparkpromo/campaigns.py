"""Campaign audiences and item eligibility, as pure DataFrame transformations.

Every audience function returns a ``Transform`` over ``gold.user_features`` and keeps only users with
``marketing_consent = true``. Audiences have the same shape for every campaign type::

    user_id, min_price, max_price        (the price band is null except for cart_threshold audiences)

Rules from config (``audience``/``items``) compile to Spark Columns built with ``F.col``/``F.lit`` only: a value is
always a literal, never SQL text.

Date conventions (``run_date`` is the date the run targets; events after it are ignored everywhere):

* welcome: ``0 <= run_date - signup_date <= signup_within_days`` (from ``signup_date``, not the feature table's
  ``days_since_signup``, which is relative to the features' own as-of date).
* birthday: only month and day of birth are kept in silver. The window is the seven days
  ``[run_date, run_date + 6]`` intersected with the campaign's validity window, so weekly runs tile the calendar
  without contacting a user twice; daily runs rely on :func:`recontact_days` (a user listed is not listed again
  for seven days). It is enumerated as concrete dates, which handles the year wrap
  (Dec 29 - Jan 4); a 29 February birthday is celebrated on 28 February in non-leap years.
* cart_threshold: see :func:`open_cart_lines` and :func:`cart_threshold_audience`.
* bundle: see :func:`co_occurrence` and :func:`bundle_candidates`.
"""

from __future__ import annotations

import calendar
import datetime as dt
from collections.abc import Sequence
from typing import Any

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql.types import (
    DataType,
    DoubleType,
    StructType,
)

from sparkpromo import columns as C
from sparkpromo.cart import LIST_PRICE, open_lines
from sparkpromo.config import ITEM_RULE_FIELDS, RULE_OPERATORS, USER_RULE_FIELDS, Campaign, Condition, Rule
from sparkpromo.config.validate import rule_value
from sparkpromo.frame import Transform

BIRTHDAY_HORIZON_DAYS = 7
BASKET_MAX_ITEMS = 50  # per user, most recent first: bounds the self-join behind co-occurrence
# Per anchor item, its best co-occurring partners (item-to-item neighbours). Without a bound a popular item's
# partners are most of the catalogue, and anchors x partners explodes (at 10M generated events: billions of rows).
BUNDLE_MAX_PARTNERS = 50
REASON_BOUGHT_WITH = "bought together with "


class RuleError(ValueError):
    """A rule that cannot be compiled (unknown field or operator, or a value of the wrong type)."""


# ----------------------------------------------------------------------------------------------------------------
# Activity windows
# ----------------------------------------------------------------------------------------------------------------
def is_active(campaign: Campaign, run_date: dt.date) -> bool:
    """A campaign runs on ``run_date`` when its validity window (both ends inclusive) contains it."""
    return campaign.valid_from <= run_date <= campaign.valid_to


def active_campaigns(campaigns: Sequence[Campaign], run_date: dt.date) -> list[Campaign]:
    return [c for c in campaigns if is_active(c, run_date)]


def recontact_days(campaign: Campaign) -> int:
    """Days after listing a user during which the campaign does not list the user again (see
    ``recontact_after_days``): the configured value, else the type's own period, so that a daily schedule sends one
    welcome per new user and one birthday offer per birthday."""
    if campaign.recontact_after_days is not None:
        return campaign.recontact_after_days
    if campaign.type == "welcome":
        return campaign.signup_within_days
    if campaign.type == "birthday":
        return BIRTHDAY_HORIZON_DAYS
    return 0


# ----------------------------------------------------------------------------------------------------------------
# Rule compiler
# ----------------------------------------------------------------------------------------------------------------
def _literal(field: str, dtype: DataType | None, value: Any) -> Any:
    """Check ``value`` against the column type (when known) and convert ISO date strings for date columns."""
    if dtype is None:
        return value
    try:
        return rule_value(field, dtype, value)
    except ValueError as e:
        raise RuleError(str(e)) from None


def _condition(cond: Condition, allowed_fields: Sequence[str], schema: StructType | None) -> Column:
    if cond.field not in allowed_fields:
        raise RuleError(f"unknown rule field '{cond.field}' (expected one of: {', '.join(allowed_fields)})")
    if cond.op not in RULE_OPERATORS:
        raise RuleError(f"unknown rule operator '{cond.op}' (expected one of: {', '.join(RULE_OPERATORS)})")
    dtype: DataType | None = None
    if schema is not None:
        if cond.field not in schema.fieldNames():
            raise RuleError(f"rule field '{cond.field}' is not a column of the input")
        dtype = schema[cond.field].dataType
    col = F.col(cond.field)
    op, v = cond.op, cond.value
    if op == "is_null":
        return col.isNull()
    if op == "not_null":
        return col.isNotNull()
    if op in ("in", "not_in", "between"):
        if not isinstance(v, (tuple, list)) or not v or (op == "between" and len(v) != 2):
            raise RuleError(f"rule field '{cond.field}': operator '{op}' needs "
                            f"{'two values' if op == 'between' else 'a non-empty list'}, got {v!r}")
        values = [F.lit(_literal(cond.field, dtype, x)) for x in v]
        if op == "between":
            return col.between(values[0], values[1])
        return col.isin(*values) if op == "in" else ~col.isin(*values)
    if v is None or isinstance(v, (tuple, list)):
        raise RuleError(f"rule field '{cond.field}': operator '{op}' needs a single value, got {v!r}")
    lit = F.lit(_literal(cond.field, dtype, v))
    return {"eq": col == lit, "ne": col != lit, "lt": col < lit, "le": col <= lit, "gt": col > lit,
            "ge": col >= lit}[op]


def compile_rule(rule: Rule | None, allowed_fields: Sequence[str], schema: StructType | None = None) -> Column:
    """``all`` conditions ANDed, ANDed with the OR of the ``any`` conditions; no rule (or an empty one) is true.

    A condition on a null value is false (except ``is_null``). With ``schema``, each field must be a column of it
    and each value must fit the column's type. Raises :class:`RuleError` (a ValueError) naming what is wrong.
    """
    if rule is None:
        return F.lit(True)
    out = F.lit(True)
    for cond in rule.all:
        out = out & _condition(cond, allowed_fields, schema)
    if rule.any:
        any_ = F.lit(False)
        for cond in rule.any:
            any_ = any_ | _condition(cond, allowed_fields, schema)
        out = out & any_
    return F.coalesce(out, F.lit(False))


# ----------------------------------------------------------------------------------------------------------------
# Audiences
# ----------------------------------------------------------------------------------------------------------------
def _consenting(users: DataFrame) -> DataFrame:
    return users.where(F.coalesce(F.col(C.MARKETING_CONSENT), F.lit(False)))


def _audience(users: DataFrame, min_price: Column | None = None, max_price: Column | None = None) -> DataFrame:
    none = F.lit(None).cast(DoubleType())
    return users.select(C.USER_ID, (none if min_price is None else min_price.cast(DoubleType())).alias(C.MIN_PRICE),
                        (none if max_price is None else max_price.cast(DoubleType())).alias(C.MAX_PRICE))


def welcome_audience(run_date: dt.date, signup_within_days: int) -> Transform:
    """Consenting users who signed up at most ``signup_within_days`` days before ``run_date`` (any activity)."""
    def apply(users: DataFrame) -> DataFrame:
        age = F.datediff(F.lit(run_date), F.col(C.SIGNUP_DATE))
        return _audience(_consenting(users).where(age.between(0, signup_within_days)))
    return apply


def birthday_window(campaign: Campaign, run_date: dt.date,
                    horizon_days: int = BIRTHDAY_HORIZON_DAYS) -> tuple[dt.date, dt.date] | None:
    """The birthday dates targeted by this run: ``[run_date, run_date + horizon - 1]`` within validity, or None."""
    start = max(campaign.valid_from, run_date)
    end = min(campaign.valid_to, run_date + dt.timedelta(days=horizon_days - 1))
    return (start, end) if start <= end else None


def birthday_keys(start: dt.date, end: dt.date) -> list[int]:
    """``month * 100 + day`` for every date in ``[start, end]`` (at most a year of dates); 29 February birthdays are
    celebrated on 28 February in non-leap years."""
    keys: set[int] = set()
    d = start
    while d <= end and len(keys) < 366:
        keys.add(d.month * 100 + d.day)
        if d.month == 2 and d.day == 28 and not calendar.isleap(d.year):
            keys.add(229)
        d += dt.timedelta(days=1)
    return sorted(keys)


def birthday_audience(start: dt.date, end: dt.date) -> Transform:
    """Consenting users whose birthday (month and day) falls on a date in ``[start, end]``."""
    keys = birthday_keys(start, end)

    def apply(users: DataFrame) -> DataFrame:
        key = F.col(C.BIRTH_MONTH) * 100 + F.col(C.BIRTH_DAY)
        return _audience(_consenting(users).where(key.isin(*[F.lit(k) for k in keys])))
    return apply


def open_cart_lines(items: DataFrame, run_date: dt.date, lookback_days: int) -> Transform:
    """Open cart lines ``(user_id, item_id, line_value)`` from silver events as of ``run_date``, priced from
    ``items`` where an event has no price (:func:`sparkpromo.cart.open_lines`)."""
    def apply(events: DataFrame) -> DataFrame:
        return (events.where(F.col(C.EVENT_DATE) <= F.lit(run_date))
                .join(items.select(C.ITEM_ID, F.col(C.PRICE).alias(LIST_PRICE)), C.ITEM_ID, "left")
                .transform(open_lines(run_date, lookback_days)))
    return apply


def with_cart_value(cart_lines: DataFrame) -> Transform:
    """Add (or replace) ``cart_value``: the sum of the user's open cart lines, 0 when none."""
    def apply(users: DataFrame) -> DataFrame:
        totals = cart_lines.groupBy(C.USER_ID).agg(F.sum(C.LINE_VALUE).alias("_cart"))
        return (users.drop(C.CART_VALUE).join(totals, C.USER_ID, "left")
                .withColumn(C.CART_VALUE, F.coalesce(F.col("_cart"), F.lit(0.0))).drop("_cart"))
    return apply


def cart_threshold_audience(cart_lines: DataFrame, threshold: float, slack: float) -> Transform:
    """Consenting users whose open cart is worth at least ``threshold - slack``.

    Recommended items must fit the gap: with ``gap = max(threshold - cart_value, 0)`` an item is eligible when
    ``gap <= price <= gap + slack`` (a user already over the threshold gets add-ons priced up to ``slack``); with
    ``slack = 0`` there is no upper bound. Items already in the open cart are excluded by the recommend stage.
    """
    def apply(users: DataFrame) -> DataFrame:
        totals = cart_lines.groupBy(C.USER_ID).agg(F.sum(C.LINE_VALUE).alias(C.CART_VALUE))
        aud = _consenting(users.drop(C.CART_VALUE)).join(totals, C.USER_ID).where(
            F.col(C.CART_VALUE) >= F.lit(threshold - slack))
        gap = F.greatest(F.lit(threshold) - F.col(C.CART_VALUE), F.lit(0.0))
        upper = gap + F.lit(slack) if slack > 0 else None
        return _audience(aud, gap, upper)
    return apply


def basket_items(run_date: dt.date, lookback_days: int | None = None,
                 max_items: int = BASKET_MAX_ITEMS) -> Transform:
    """``(user_id, item_id)`` the user bought or put in the cart up to ``run_date`` (within ``lookback_days`` when
    given), at most ``max_items`` per user, most recent first."""
    def apply(events: DataFrame) -> DataFrame:
        cond = F.col(C.EVENT_TYPE).isin(C.PURCHASE, C.ADD_TO_CART) & (F.col(C.EVENT_DATE) <= F.lit(run_date))
        if lookback_days is not None:
            cond = cond & (F.col(C.EVENT_DATE) > F.date_sub(F.lit(run_date), lookback_days))
        last = events.where(cond).groupBy(C.USER_ID, C.ITEM_ID).agg(F.max(C.EVENT_TS).alias("_ts"))
        w = Window.partitionBy(C.USER_ID).orderBy(F.desc("_ts"), F.asc(C.ITEM_ID))
        return (last.withColumn("_rn", F.row_number().over(w)).where(F.col("_rn") <= max_items)
                .select(C.USER_ID, C.ITEM_ID))
    return apply


def co_occurrence(min_co_occurrence: int) -> Transform:
    """Item-to-item co-occurrence over user baskets ``(user_id, item_id)`` (distinct rows).

    Returns both directions ``(item_id, other_item_id, co_count, score)`` for pairs seen together in at least
    ``min_co_occurrence`` baskets; ``score = co_count / sqrt(n_item * n_other)`` (cosine of the basket vectors).
    """
    def apply(baskets: DataFrame) -> DataFrame:
        b = baskets.select(C.USER_ID, C.ITEM_ID).distinct()
        pairs = (b.join(b.withColumnRenamed(C.ITEM_ID, C.OTHER_ITEM_ID), C.USER_ID)
                 .where(F.col(C.ITEM_ID) != F.col(C.OTHER_ITEM_ID))
                 .groupBy(C.ITEM_ID, C.OTHER_ITEM_ID).agg(F.count("*").alias(C.CO_COUNT))
                 .where(F.col(C.CO_COUNT) >= min_co_occurrence))
        n = b.groupBy(C.ITEM_ID).agg(F.count("*").cast(DoubleType()).alias("_n"))
        return (pairs.join(n, C.ITEM_ID)
                .join(n.withColumnRenamed(C.ITEM_ID, C.OTHER_ITEM_ID).withColumnRenamed("_n", "_m"), C.OTHER_ITEM_ID)
                .select(C.ITEM_ID, C.OTHER_ITEM_ID, C.CO_COUNT,
                        (F.col(C.CO_COUNT) / F.sqrt(F.col("_n") * F.col("_m"))).alias(C.SCORE)))
    return apply


def top_partners(max_partners: int) -> Transform:
    """Co-occurrence pairs (see :func:`co_occurrence`) -> each item's ``max_partners`` best partners (by score,
    then partner id)."""
    def apply(pairs: DataFrame) -> DataFrame:
        w = Window.partitionBy(C.ITEM_ID).orderBy(F.desc(C.SCORE), F.asc(C.OTHER_ITEM_ID))
        return pairs.withColumn("_rn", F.row_number().over(w)).where(F.col("_rn") <= max_partners).drop("_rn")
    return apply


def bundle_candidates(pairs: DataFrame, max_reasons: int, max_partners: int = BUNDLE_MAX_PARTNERS,
                      max_candidates: int | None = None) -> Transform:
    """Bundle candidates for anchors ``(user_id, item_id)`` (recent purchases and cart items).

    Each anchor contributes its ``max_partners`` best co-occurring items (:func:`top_partners`); a target item's
    score is the sum of its co-occurrence scores with the user's anchors, and targets that are anchors themselves
    are dropped. With ``max_candidates``, each user keeps that many best targets (by score, then item id).
    ``reason`` names up to ``max_reasons`` anchors that contribute most (best first, ties by anchor id), computed
    for the kept targets only. Output: ``(user_id, item_id, score, reason)``.
    """
    def apply(anchors: DataFrame) -> DataFrame:
        a = anchors.select(C.USER_ID, C.ITEM_ID).distinct()
        hits = (a.join(pairs.transform(top_partners(max_partners)), C.ITEM_ID)
                .select(C.USER_ID, F.col(C.ITEM_ID).alias("_anchor"), F.col(C.OTHER_ITEM_ID).alias(C.ITEM_ID),
                        C.SCORE)
                .join(a, [C.USER_ID, C.ITEM_ID], "left_anti"))
        scored = hits.groupBy(C.USER_ID, C.ITEM_ID).agg(F.sum(C.SCORE).alias(C.SCORE))
        if max_candidates is not None:
            best = Window.partitionBy(C.USER_ID).orderBy(F.desc(C.SCORE), F.asc(C.ITEM_ID))
            scored = (scored.withColumn("_rn", F.row_number().over(best)).where(F.col("_rn") <= max_candidates)
                      .drop("_rn"))
        empty = F.array().cast("array<string>")
        if max_reasons <= 0:
            return scored.select(C.USER_ID, C.ITEM_ID, C.SCORE, empty.alias(C.REASON))
        # Only the few top anchors of each kept target are collected (an aggregate over every hit would sort them
        # all by a string key).
        w = Window.partitionBy(C.USER_ID, C.ITEM_ID).orderBy(F.desc(C.SCORE), F.asc("_anchor"))
        why = (hits.join(scored.select(C.USER_ID, C.ITEM_ID), [C.USER_ID, C.ITEM_ID], "left_semi")
               .withColumn("_rn", F.row_number().over(w)).where(F.col("_rn") <= max_reasons)
               .groupBy(C.USER_ID, C.ITEM_ID)
               .agg(F.sort_array(F.collect_list(F.struct(F.col("_rn"), F.col("_anchor")))).alias("_why")))
        reason = F.transform(F.col("_why"), lambda x: F.concat(F.lit(REASON_BOUGHT_WITH), x["_anchor"]))
        return (scored.join(why, [C.USER_ID, C.ITEM_ID], "left")
                .select(C.USER_ID, C.ITEM_ID, C.SCORE, F.coalesce(reason, empty).alias(C.REASON)))
    return apply


def bundle_audience(candidates: DataFrame) -> Transform:
    """Consenting users who have at least one bundle candidate."""
    def apply(users: DataFrame) -> DataFrame:
        return _audience(_consenting(users).join(candidates.select(C.USER_ID).distinct(), C.USER_ID, "left_semi"))
    return apply


def generic_audience(rule: Rule | None) -> Transform:
    """Consenting users matching the campaign's ``audience`` rule over user features (no rule: all of them)."""
    def apply(users: DataFrame) -> DataFrame:
        return _audience(_consenting(users).where(compile_rule(rule, USER_RULE_FIELDS, users.schema)))
    return apply


def rule_fields(rule: Rule | None) -> set[str]:
    return set() if rule is None else {c.field for c in (*rule.all, *rule.any)}


# ----------------------------------------------------------------------------------------------------------------
# Items
# ----------------------------------------------------------------------------------------------------------------
def eligible_items(rule: Rule | None = None) -> Transform:
    """Items a campaign may offer: matching its ``items`` rule (if any) and in stock (``stock`` > 0; a null stock
    means "not tracked" and is allowed). Keeps all item feature columns."""
    def apply(items: DataFrame) -> DataFrame:
        in_stock = F.col(C.STOCK).isNull() | (F.col(C.STOCK) > 0)
        return items.where(in_stock & compile_rule(rule, ITEM_RULE_FIELDS, items.schema))
    return apply
