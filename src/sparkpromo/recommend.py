"""The recommend stage: per-campaign offers from the champion model, written to ``gold/recommendations``.

Flow of :func:`run_recommend` for one ``run_date``:

1. the campaigns whose validity window contains ``run_date``; each one's audience (:mod:`sparkpromo.campaigns`;
   consenting users only) and eligible items (in stock, the campaign's ``items`` rule);
2. candidates per (campaign, user), by precedence ``level``: 0 = the primary source (ALS
   ``recommendForUserSubset`` for the union of the audiences, or global popularity tagged ``popularity`` when the
   champion is the popularity baseline or no model is registered; bundle campaigns use co-occurrence, ``bundle``),
   1 = popularity in the user's segment (``recommend.segment``), 2 = global popularity. Bundle campaigns get no
   popularity fill: an unrelated popular item is not "bought together";
3. eligibility filter BEFORE the top-K cut (so lists are not cut short), purchased items dropped (except
   ``repeatable_categories``), items already in the open cart dropped for cart campaigns, one row per item (the
   lowest level wins), per-category cap, top ``top_k`` by (level, score desc, item_id);
4. across campaigns: the contact cap (``max_offers_per_user`` campaigns per user, by priority desc then campaign
   id), then each campaign's budget (users chosen by best level, best score, then a hash), then a deterministic
   hash-based control group (``xxhash64(campaign_id, user_id)``) flagged ``is_control``/``delivered = false``.
   Control users count towards the contact cap and budget, so the control group is a random slice of exactly the
   population that is treated;
5. reasons (ALS: the user's past items most cosine-similar in item-factor space; otherwise a plain text), offers;
6. each active campaign's ``(campaign_id, run_date)`` partition is replaced in its own Delta commit, also when it
   is empty, so a rerun clears stale rows. Partitions of other campaigns and dates are never touched.

Output: the Delta table ``cfg.table("gold", "recommendations")`` (:data:`RECOMMENDATIONS`), partitioned by
``campaign_id`` and ``run_date``. ``user_id`` is the id found in the gold tables: the pseudonym when
``privacy.pseudonymise`` is on (ids are pseudonymised before silver), so coupon codes carry the pseudonym too.
Only the per-campaign summary rows are collected to the driver.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import logging
import math
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from functools import reduce
from itertools import chain
from typing import Any

from pyspark import StorageLevel
from pyspark.errors import AnalysisException
from pyspark.ml.functions import array_to_vector, vector_to_array
from pyspark.ml.recommendation import ALSModel
from pyspark.ml.stat import Summarizer
from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql.types import (
    ArrayType,
    BooleanType,
    DateType,
    DoubleType,
    IntegerType,
    StringType,
    StructField,
    StructType,
)

from sparkpromo import campaigns as K
from sparkpromo import columns as C
from sparkpromo import io
from sparkpromo.config import AppConfig, Campaign, RecommendConfig, join_uri
from sparkpromo.features import decay_reference
from sparkpromo.frame import Transform
from sparkpromo.logs import spark_progress, stage

log = logging.getLogger(__name__)


TABLE_LAYER, TABLE_NAME = "gold", "recommendations"
PARTITION_COLUMNS = (C.CAMPAIGN_ID, C.RUN_DATE)

ALS, POPULARITY, SEGMENT_POPULARITY, GLOBAL_POPULARITY, BUNDLE = (
    "als", "popularity", "segment_popularity", "global_popularity", "bundle")
FALLBACK_SOURCES = (POPULARITY, SEGMENT_POPULARITY, GLOBAL_POPULARITY)
CHAMPIONS = (ALS, POPULARITY)
REASON_SIMILAR = "similar to "
REASON_POPULAR_IN = "popular in "
REASON_POPULAR = "popular overall"
HISTORY_ITEMS = 20  # past items per user considered for ALS reasons
CONTROL_BUCKETS = 1_000_000
_RUN_ID_RE = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")

OFFER_TYPE = StructType([
    StructField(C.DISCOUNT_PCT, DoubleType(), True),
    StructField(C.COUPON_CODE, StringType(), True),
    StructField(C.CAMPAIGN_NAME, StringType(), True),
    StructField(C.OFFER_TEXT, StringType(), True),
])

# An offer's text when its campaign sets none, by campaign type; "plain" for an offer without a coupon.
DEFAULT_OFFER_TEXT = {
    "welcome": "Welcome! {discount}% off {item_name} with code {coupon}",
    "birthday": "Happy birthday! {discount}% off {item_name} with code {coupon}",
    "cart_threshold": "Add {item_name} to your cart and save {discount}% with code {coupon}",
    "bundle": "Complete the set with {item_name}: {discount}% off with code {coupon}",
    "generic": "{campaign}: {discount}% off {item_name} with code {coupon}",
    "plain": "{campaign}: {item_name}",
}
COUPON_CODE_LENGTH = 10
# score = (MAX_LEVEL - level + p) / (MAX_LEVEL + 1), p the raw score min-max scaled within (campaign, source)
MAX_LEVEL = 2

RECOMMENDATIONS = StructType([
    StructField(C.CAMPAIGN_ID, StringType(), False),
    StructField(C.RUN_DATE, DateType(), False),
    StructField(C.USER_ID, StringType(), False),
    StructField(C.ITEM_ID, StringType(), False),
    StructField(C.RANK, IntegerType(), False),
    StructField(C.SCORE, DoubleType(), True),
    StructField(C.RAW_SCORE, DoubleType(), True),
    StructField(C.SOURCE, StringType(), False),
    StructField(C.IS_CONTROL, BooleanType(), False),
    StructField(C.DELIVERED, BooleanType(), False),
    StructField(C.MODEL_RUN_ID, StringType(), True),
    StructField(C.OFFER, OFFER_TYPE, True),
    StructField(C.REASON, ArrayType(StringType()), True),
    StructField(C.RUN_ID, StringType(), True),
])

# A control-group row is never a delivered one (see README "Measuring campaigns": why control users get no offer).
CONTROL_CONSTRAINTS = {"control_never_delivered": f"NOT ({C.IS_CONTROL} AND {C.DELIVERED})"}

# The silver.events columns this stage reads.
EVENT_COLUMNS = (C.USER_ID, C.ITEM_ID, C.EVENT_TYPE, C.EVENT_TS, C.EVENT_DATE, C.PRICE, C.QUANTITY)

# Candidate rows flowing through the ranking transforms.
CANDIDATE_COLUMNS = (C.CAMPAIGN_ID, C.USER_ID, C.ITEM_ID, C.SCORE, C.SOURCE, C.LEVEL, C.REASON, C.MIN_PRICE,
                     C.MAX_PRICE)


class RecommendError(RuntimeError):
    """A recommend-stage problem (unreadable registry); ``str()`` is one line."""


# ----------------------------------------------------------------------------------------------------------------
# Model registry
# ----------------------------------------------------------------------------------------------------------------
def read_small_text(spark: SparkSession, uri: str) -> str | None:
    """A small text file through Spark's Hadoop FS (local, s3a, abfss, dbfs); None when it does not exist."""
    try:
        row = spark.read.text(uri, wholetext=True).first()
    except AnalysisException as e:
        cond = getattr(e, "getCondition", getattr(e, "getErrorClass", lambda: None))()
        if cond == "PATH_NOT_FOUND" or "PATH_NOT_FOUND" in str(e):
            return None
        raise
    return "" if row is None else str(row[0])


def latest_run_id(spark: SparkSession, cfg: AppConfig) -> str | None:
    """The run id in ``<lakehouse>/registry/LATEST`` (the model in service); None when nothing is registered.
    Raises :class:`RecommendError` on a malformed id."""
    registry = join_uri(cfg.lakehouse, "registry")
    latest = read_small_text(spark, join_uri(registry, "LATEST"))
    if latest is None or not latest.strip():
        return None
    run = latest.strip()
    if not _RUN_ID_RE.match(run):
        raise RecommendError(f"{registry}/LATEST: invalid model run id {run[:80]!r}")
    return run


def load_champion(spark: SparkSession, cfg: AppConfig) -> tuple[str | None, ALSModel | None, str]:
    """``(model_run_id, model, champion)`` from ``<lakehouse>/registry/LATEST`` and that run's ``params.json``.

    No ``LATEST`` (nothing trained yet) gives ``(None, None, "popularity")``. The ALS model is loaded only when it is
    the champion. Files are read through Spark, so any Hadoop URI works.
    """
    registry = join_uri(cfg.lakehouse, "registry")
    run = latest_run_id(spark, cfg)
    if run is None:
        log.warning("no model registered (%s/LATEST missing or empty): popularity candidates only", registry)
        return None, None, POPULARITY
    params_uri = join_uri(registry, run, "params.json")
    text = read_small_text(spark, params_uri)
    if text is None:
        raise RecommendError(f"{params_uri}: missing (registry run {run} is incomplete)")
    try:
        champion = json.loads(text).get("champion")
    except (ValueError, AttributeError):
        raise RecommendError(f"{params_uri}: not a JSON object") from None
    if champion not in CHAMPIONS:
        raise RecommendError(f"{params_uri}: champion must be one of {', '.join(CHAMPIONS)}, got {champion!r}")
    model = ALSModel.load(join_uri(registry, run, "model")) if champion == ALS else None
    log.info("champion of model run %s: %s", run, champion)
    return run, model, champion


# ----------------------------------------------------------------------------------------------------------------
# Small helpers
# ----------------------------------------------------------------------------------------------------------------
def _by_campaign(values: Mapping[str, Any]) -> Column:
    """Per-campaign literal looked up by ``campaign_id`` (a literal map; values never become SQL text)."""
    return F.create_map(*chain.from_iterable((F.lit(k), F.lit(v)) for k, v in values.items()))[F.col(C.CAMPAIGN_ID)]


def _order() -> list[Column]:
    """Ranking order inside a list: source precedence, then score, then item id (deterministic)."""
    return [F.asc(C.LEVEL), F.desc(C.SCORE), F.asc(C.ITEM_ID)]


def _empty_reason() -> Column:
    return F.lit(None).cast(ArrayType(StringType()))


# ----------------------------------------------------------------------------------------------------------------
# Candidate sources
# ----------------------------------------------------------------------------------------------------------------
def als_candidates(model: ALSModel, n: int) -> Transform:
    """``(user_idx)`` rows -> the model's top ``n`` ``(user_idx, item_idx, score)`` per user."""
    ucol, icol = model.getUserCol(), model.getItemCol()

    def apply(users: DataFrame) -> DataFrame:
        subset = users.select(F.col(C.USER_IDX).alias(ucol)).distinct()
        recs = model.recommendForUserSubset(subset, n)
        return (recs.select(F.col(ucol).alias(C.USER_IDX), F.explode("recommendations").alias("_r"))
                .select(C.USER_IDX, F.col("_r")[icol].alias(C.ITEM_IDX),
                        F.col("_r")["rating"].cast(DoubleType()).alias(C.SCORE)))
    return apply


def _ids(id_map: DataFrame, kind: str, id_col: str, idx_col: str) -> DataFrame:
    return id_map.where(F.col(C.ID_KIND) == kind).select(F.col(C.ORIGINAL_ID).alias(id_col),
                                                         F.col(C.IDX).alias(idx_col))


def with_user_idx(id_map: DataFrame) -> Transform:
    """Add ``user_idx``; users unknown to the id map are dropped (they are cold-start users)."""
    def apply(df: DataFrame) -> DataFrame:
        return df.join(_ids(id_map, "user", C.USER_ID, C.USER_IDX), C.USER_ID)
    return apply


def to_original_ids(id_map: DataFrame) -> Transform:
    """Replace ``user_idx``/``item_idx`` by the original ``user_id``/``item_id``."""
    def apply(df: DataFrame) -> DataFrame:
        return (df.join(_ids(id_map, "user", C.USER_ID, C.USER_IDX), C.USER_IDX)
                .join(_ids(id_map, "item", C.ITEM_ID, C.ITEM_IDX), C.ITEM_IDX)
                .drop(C.USER_IDX, C.ITEM_IDX))
    return apply


def popularity_lists(n: int) -> Transform:
    """Eligible items ``(campaign_id, item_id, popularity)`` -> each campaign's top ``n`` by popularity."""
    def apply(eligible: DataFrame) -> DataFrame:
        w = Window.partitionBy(C.CAMPAIGN_ID).orderBy(F.desc(C.POPULARITY), F.asc(C.ITEM_ID))
        return (eligible.withColumn("_rn", F.row_number().over(w)).where(F.col("_rn") <= n)
                .select(C.CAMPAIGN_ID, C.ITEM_ID, F.col(C.POPULARITY).cast(DoubleType()).alias(C.SCORE)))
    return apply


def segment_item_popularity(users: DataFrame, segment: str) -> Transform:
    """Events -> ``(segment, item_id, popularity)``: distinct users of each segment value who touched the item."""
    def apply(events: DataFrame) -> DataFrame:
        seg = users.select(C.USER_ID, F.col(segment).alias(C.SEGMENT)).where(F.col(C.SEGMENT).isNotNull())
        return (events.select(C.USER_ID, C.ITEM_ID).join(seg, C.USER_ID)
                .groupBy(C.SEGMENT, C.ITEM_ID).agg(F.countDistinct(C.USER_ID).alias(C.POPULARITY)))
    return apply


def segment_lists(n: int, segment_popularity: DataFrame) -> Transform:
    """Eligible items ``(campaign_id, item_id)`` -> top ``n`` per (campaign, segment): ``(.., segment, score)``."""
    def apply(eligible: DataFrame) -> DataFrame:
        w = Window.partitionBy(C.CAMPAIGN_ID, C.SEGMENT).orderBy(F.desc(C.POPULARITY), F.asc(C.ITEM_ID))
        return (eligible.select(C.CAMPAIGN_ID, C.ITEM_ID).join(segment_popularity, C.ITEM_ID)
                .withColumn("_rn", F.row_number().over(w)).where(F.col("_rn") <= n)
                .select(C.CAMPAIGN_ID, C.SEGMENT, C.ITEM_ID, F.col(C.POPULARITY).cast(DoubleType()).alias(C.SCORE)))
    return apply


def _tag(df: DataFrame, source: str, level: int, reason: Column | None) -> DataFrame:
    return df.select(C.CAMPAIGN_ID, C.USER_ID, C.ITEM_ID, F.col(C.SCORE).cast(DoubleType()).alias(C.SCORE),
                     F.lit(source).alias(C.SOURCE), F.lit(level).alias(C.LEVEL),
                     (reason if reason is not None else _empty_reason()).alias(C.REASON), C.MIN_PRICE, C.MAX_PRICE)


def user_candidates(candidates: DataFrame, source: str, level: int = 0) -> Transform:
    """Audience ``(campaign_id, user_id, ..)`` x per-user candidates ``(user_id, item_id, score[, reason])``."""
    def apply(audience: DataFrame) -> DataFrame:
        joined = audience.join(candidates, C.USER_ID)
        reason = F.col(C.REASON) if C.REASON in candidates.columns else None
        return _tag(joined, source, level, reason)
    return apply


def list_candidates(lists: DataFrame, source: str, level: int, reason: Column) -> Transform:
    """Audience x per-campaign (or per campaign and segment) popularity lists, joined on their shared keys."""
    keys = [k for k in (C.CAMPAIGN_ID, C.SEGMENT) if k in lists.columns]

    def apply(audience: DataFrame) -> DataFrame:
        return _tag(audience.join(lists, keys), source, level, reason)
    return apply


def fill_candidates(segment_top: DataFrame, global_top: DataFrame) -> Transform:
    """Cold-start / short-list fill for every audience row: segment popularity (level 1), then global (level 2)."""
    def apply(audience: DataFrame) -> DataFrame:
        seg = audience.transform(list_candidates(segment_top, SEGMENT_POPULARITY, 1,
                                                 F.array(F.concat(F.lit(REASON_POPULAR_IN), F.col(C.SEGMENT)))))
        glob = audience.transform(list_candidates(global_top, GLOBAL_POPULARITY, 2, F.array(F.lit(REASON_POPULAR))))
        return seg.unionByName(glob)
    return apply


# ----------------------------------------------------------------------------------------------------------------
# Eligibility and the per-list cut
# ----------------------------------------------------------------------------------------------------------------
def keep_eligible(eligible: DataFrame) -> Transform:
    """Keep candidates of items eligible for their campaign ``(campaign_id, item_id, category, price)``, priced
    inside the row's ``[min_price, max_price]`` band (null bounds are open). Adds ``category`` and ``price``."""
    def apply(cands: DataFrame) -> DataFrame:
        items = eligible.select(C.CAMPAIGN_ID, C.ITEM_ID, C.CATEGORY, C.PRICE)
        lo = F.col(C.MIN_PRICE).isNull() | (F.col(C.PRICE) >= F.col(C.MIN_PRICE))
        hi = F.col(C.MAX_PRICE).isNull() | (F.col(C.PRICE) <= F.col(C.MAX_PRICE))
        return cands.join(items, [C.CAMPAIGN_ID, C.ITEM_ID]).where(F.coalesce(lo & hi, F.lit(False)))
    return apply


def exclude_purchased(purchases: DataFrame, repeatable_categories: Sequence[str]) -> Transform:
    """Drop items the user already bought ``(user_id, item_id)``, unless their ``category`` is repeatable."""
    def apply(cands: DataFrame) -> DataFrame:
        bought = purchases.select(C.USER_ID, C.ITEM_ID).distinct().withColumn("_bought", F.lit(True))
        repeatable = (F.coalesce(F.col(C.CATEGORY).isin(*repeatable_categories), F.lit(False))
                      if repeatable_categories else F.lit(False))
        return (cands.join(bought, [C.USER_ID, C.ITEM_ID], "left")
                .where(F.col("_bought").isNull() | repeatable).drop("_bought"))
    return apply


def exclude_pairs(pairs: DataFrame) -> Transform:
    """Drop candidates matching ``(campaign_id, user_id, item_id)`` rows (e.g. items already in the open cart)."""
    def apply(cands: DataFrame) -> DataFrame:
        return cands.join(pairs.select(C.CAMPAIGN_ID, C.USER_ID, C.ITEM_ID), [C.CAMPAIGN_ID, C.USER_ID, C.ITEM_ID],
                          "left_anti")
    return apply


def dedupe_items() -> Transform:
    """One row per (campaign, user, item): the lowest level (then best score) wins."""
    def apply(cands: DataFrame) -> DataFrame:
        w = Window.partitionBy(C.CAMPAIGN_ID, C.USER_ID, C.ITEM_ID).orderBy(F.asc(C.LEVEL), F.desc(C.SCORE))
        return cands.withColumn("_rn", F.row_number().over(w)).where(F.col("_rn") == 1).drop("_rn")
    return apply


def cap_per_category(max_per_category: int) -> Transform:
    """At most ``max_per_category`` items of one category per list (0 = no cap); the best ones are kept."""
    def apply(cands: DataFrame) -> DataFrame:
        if max_per_category <= 0:
            return cands
        w = Window.partitionBy(C.CAMPAIGN_ID, C.USER_ID, C.CATEGORY).orderBy(*_order())
        return (cands.withColumn("_rn", F.row_number().over(w)).where(F.col("_rn") <= max_per_category)
                .drop("_rn"))
    return apply


def top_k(k_by_campaign: Mapping[str, int]) -> Transform:
    """Cut each (campaign, user) list to its campaign's ``top_k``; ``rank`` is 1-based."""
    def apply(cands: DataFrame) -> DataFrame:
        w = Window.partitionBy(C.CAMPAIGN_ID, C.USER_ID).orderBy(*_order())
        return (cands.withColumn(C.RANK, F.row_number().over(w))
                .where(F.col(C.RANK) <= _by_campaign(k_by_campaign)))
    return apply


def select_items(eligible: DataFrame, purchases: DataFrame, excluded: DataFrame | None,
                 repeatable_categories: Sequence[str], max_per_category: int,
                 k_by_campaign: Mapping[str, int]) -> Transform:
    """The whole per-list step: eligibility and exclusions first, then dedupe, category cap and the top-K cut."""
    def apply(cands: DataFrame) -> DataFrame:
        # Every window below (and the contact cap and budget after) partitions by user_id plus other keys: one
        # shuffle by user serves them all.
        out = (cands.repartition(C.USER_ID).transform(keep_eligible(eligible))
               .transform(exclude_purchased(purchases, repeatable_categories)))
        if excluded is not None:
            out = out.transform(exclude_pairs(excluded))
        return (out.transform(dedupe_items()).transform(cap_per_category(max_per_category))
                .transform(top_k(k_by_campaign)))
    return apply


# ----------------------------------------------------------------------------------------------------------------
# Across campaigns: contact cap, budget, control group, stock
# ----------------------------------------------------------------------------------------------------------------
def contact_cap(max_offers_per_user: int, priorities: Mapping[str, int]) -> Transform:
    """Keep each user's ``max_offers_per_user`` campaigns (with at least one row) of highest priority; ties go to
    the smaller campaign id. A window, not a self-join, so the plan stays linear."""
    def apply(recs: DataFrame) -> DataFrame:
        w = Window.partitionBy(C.USER_ID).orderBy(F.desc(_by_campaign(priorities)), F.asc(C.CAMPAIGN_ID))
        return (recs.withColumn("_n", F.dense_rank().over(w)).where(F.col("_n") <= max_offers_per_user)
                .drop("_n"))
    return apply


def apply_budget(budgets: Mapping[str, int]) -> Transform:
    """Keep at most ``budget`` users per campaign (0 = unlimited), chosen by their list's best level, then the best
    score at that level, then ``xxhash64("budget", campaign_id, user_id)`` and user id (deterministic). The stage
    scores only a :func:`budget_shortlist` of the audience, so the choice is among the shortlisted users."""
    def apply(recs: DataFrame) -> DataFrame:
        lst = Window.partitionBy(C.CAMPAIGN_ID, C.USER_ID)
        tie = F.xxhash64(F.lit("budget"), F.col(C.CAMPAIGN_ID), F.col(C.USER_ID))
        w = Window.partitionBy(C.CAMPAIGN_ID).orderBy(F.asc("_lvl"), F.desc("_s"), tie, F.asc(C.USER_ID))
        budget = _by_campaign(budgets)
        return (recs.withColumn("_lvl", F.min(C.LEVEL).over(lst))
                .withColumn("_s", F.max(F.when(F.col(C.LEVEL) == F.col("_lvl"), F.col(C.SCORE))).over(lst))
                .withColumn("_n", F.dense_rank().over(w))
                .where((budget <= 0) | (F.col("_n") <= budget))
                .drop("_lvl", "_s", "_n"))
    return apply


def campaign_affinity(model: ALSModel, id_map: DataFrame, eligible: DataFrame) -> Transform:
    """Audience rows ``(campaign_id, user_id, ..)`` -> the same rows plus ``affinity``: the user's mean ALS score
    over the campaign's eligible items ``(campaign_id, item_id)``, i.e. the user factor dotted with the mean item
    factor. Null for a user or campaign the model does not know. No top-K: one dot product per row."""
    def apply(audience: DataFrame) -> DataFrame:
        factors = model.itemFactors.select(F.col("id").alias(C.ITEM_IDX), F.col("features").alias("_f"))
        centroid = (eligible.select(C.CAMPAIGN_ID, C.ITEM_ID)
                    .join(_ids(id_map, "item", C.ITEM_ID, C.ITEM_IDX), C.ITEM_ID).join(factors, C.ITEM_IDX)
                    .groupBy(C.CAMPAIGN_ID).agg(Summarizer.mean(array_to_vector(F.col("_f"))).alias("_c"))
                    .select(C.CAMPAIGN_ID, vector_to_array(F.col("_c")).alias("_centroid")))
        users = (_ids(id_map, "user", C.USER_ID, C.USER_IDX)
                 .join(model.userFactors.select(F.col("id").alias(C.USER_IDX), F.col("features").alias("_u")),
                       C.USER_IDX).drop(C.USER_IDX))
        return (audience.join(users, C.USER_ID, "left").join(F.broadcast(centroid), C.CAMPAIGN_ID, "left")
                .withColumn(C.AFFINITY, _dot(F.col("_u"), F.col("_centroid"))).drop("_u", "_centroid"))
    return apply


def budget_shortlist(budgets: Mapping[str, int], factor: int, affinity: Transform | None = None) -> Transform:
    """Audience rows -> for each campaign with a budget (> 0), only its ``budget * factor`` users of highest
    ``affinity`` (a :func:`campaign_affinity` transform; nulls last, then ``xxhash64("shortlist", campaign_id,
    user_id)`` and user id). Other campaigns' rows pass unchanged; ``factor`` 0 keeps every row.

    A budget serves few users, so its campaign need not score its whole audience: :func:`apply_budget` then picks
    from the shortlist by the users' actual lists.
    """
    def apply(audience: DataFrame) -> DataFrame:
        limits = {k: v * factor for k, v in budgets.items() if v > 0}
        if factor <= 0 or not limits:
            return audience
        budgeted = F.col(C.CAMPAIGN_ID).isin(*limits)
        rows = audience.where(budgeted)
        rows = rows.transform(affinity) if affinity is not None else rows.withColumn(C.AFFINITY, F.lit(None))
        w = Window.partitionBy(C.CAMPAIGN_ID).orderBy(
            F.desc_nulls_last(C.AFFINITY), F.xxhash64(F.lit("shortlist"), F.col(C.CAMPAIGN_ID), F.col(C.USER_ID)),
            F.asc(C.USER_ID))
        kept = (rows.withColumn("_rn", F.row_number().over(w)).where(F.col("_rn") <= _by_campaign(limits))
                .select(*audience.columns))
        return audience.where(~budgeted).unionByName(kept)
    return apply


def control_bucket() -> Column:
    """The user's bucket in [0, 1) for a campaign: ``pmod(xxhash64(campaign_id, user_id), 1e6) / 1e6``."""
    h = F.xxhash64(F.col(C.CAMPAIGN_ID), F.col(C.USER_ID))
    return F.pmod(h, F.lit(CONTROL_BUCKETS)).cast(DoubleType()) / F.lit(float(CONTROL_BUCKETS))


def flag_control(control_shares: Mapping[str, float]) -> Transform:
    """``is_control`` when the user's bucket is below the campaign's ``control_share``; ``delivered`` is its
    negation (control rows stay in the table so uplift can be measured, but are never sent)."""
    def apply(recs: DataFrame) -> DataFrame:
        is_control = control_bucket() < _by_campaign({k: float(v) for k, v in control_shares.items()})
        return recs.withColumn(C.IS_CONTROL, is_control).withColumn(C.DELIVERED, ~F.col(C.IS_CONTROL))
    return apply


def cap_to_stock(items: DataFrame, priorities: Mapping[str, int]) -> Transform:
    """Offer an item to at most ``stock`` delivered users in this run (null stock = untracked, unlimited).

    Higher-priority campaigns and better ranks claim stock first; control rows use none. Lists are re-ranked.
    """
    def apply(recs: DataFrame) -> DataFrame:
        stock = items.select(C.ITEM_ID, F.col(C.STOCK).alias("_stock"))
        w = Window.partitionBy(C.ITEM_ID, C.DELIVERED).orderBy(
            F.desc(_by_campaign(priorities)), F.asc(C.CAMPAIGN_ID), F.asc(C.RANK),
            F.xxhash64(F.col(C.CAMPAIGN_ID), F.col(C.USER_ID)), F.asc(C.USER_ID))
        kept = (recs.join(stock, C.ITEM_ID, "left").withColumn("_n", F.row_number().over(w))
                .where(~F.col(C.DELIVERED) | F.col("_stock").isNull() | (F.col("_n") <= F.col("_stock")))
                .drop("_n", "_stock"))
        rerank = Window.partitionBy(C.CAMPAIGN_ID, C.USER_ID).orderBy(F.asc(C.RANK))
        return kept.withColumn(C.RANK, F.row_number().over(rerank)).select(*recs.columns)
    return apply


# ----------------------------------------------------------------------------------------------------------------
# Reasons and offers
# ----------------------------------------------------------------------------------------------------------------
def item_vectors(model: ALSModel, id_map: DataFrame) -> DataFrame:
    """``(item_id, vec)``: the model's item factors, L2-normalised, keyed by original item id."""
    norm = F.sqrt(F.aggregate(F.col("features"), F.lit(0.0), lambda acc, x: acc + x * x))
    vec = F.transform(F.col("features"), lambda x: x / F.greatest(norm, F.lit(1e-12)))
    return (model.itemFactors.select(F.col("id").alias(C.ITEM_IDX), vec.alias("vec"))
            .join(_ids(id_map, "item", C.ITEM_ID, C.ITEM_IDX), C.ITEM_IDX).select(C.ITEM_ID, "vec"))


def user_history(id_map: DataFrame, max_items: int = HISTORY_ITEMS) -> Transform:
    """Interactions ``(user_idx, item_idx, confidence)`` -> each user's ``max_items`` strongest
    ``(user_id, item_id, confidence)``."""
    def apply(interactions: DataFrame) -> DataFrame:
        w = Window.partitionBy(C.USER_IDX).orderBy(F.desc(C.CONFIDENCE), F.asc(C.ITEM_IDX))
        top = (interactions.select(C.USER_IDX, C.ITEM_IDX, C.CONFIDENCE)
               .withColumn("_rn", F.row_number().over(w)).where(F.col("_rn") <= max_items).drop("_rn"))
        return top.transform(to_original_ids(id_map))
    return apply


def _dot(a: Column, b: Column) -> Column:
    return F.aggregate(F.zip_with(a, b, lambda x, y: x * y), F.lit(0.0), lambda acc, x: acc + x)


def with_als_reasons(vectors: DataFrame, history: DataFrame, n_reasons: int) -> Transform:
    """For ``source = als`` rows, ``reason`` = up to ``n_reasons`` of the user's past items (other than the one
    recommended) whose item factors are most cosine-similar to the recommended item's (positive similarity only).
    Computed with higher-order functions; other rows keep their reason."""
    def apply(recs: DataFrame) -> DataFrame:
        if n_reasons <= 0:
            return recs
        hist = (history.join(vectors, C.ITEM_ID)
                .groupBy(C.USER_ID)
                .agg(F.collect_list(F.struct(F.col(C.ITEM_ID).alias("i"), F.col("vec").alias("v"))).alias("_hist")))
        target = vectors.withColumnRenamed("vec", "_tv")
        joined = recs.join(hist, C.USER_ID, "left").join(target, C.ITEM_ID, "left")
        past = F.filter(F.col("_hist"), lambda h: h["i"] != F.col(C.ITEM_ID))
        sims = F.transform(past, lambda h: F.struct((-_dot(h["v"], F.col("_tv"))).alias("s"), h["i"].alias("i")))
        best = F.slice(F.sort_array(F.filter(sims, lambda x: x["s"] < 0)), 1, n_reasons)
        reason = F.coalesce(F.transform(best, lambda x: F.concat(F.lit(REASON_SIMILAR), x["i"])),
                            F.array().cast(ArrayType(StringType())))
        return (joined.withColumn(C.REASON, F.when((F.col(C.SOURCE) == ALS) & F.col("_tv").isNotNull(), reason)
                                  .otherwise(F.col(C.REASON)))
                .drop("_hist", "_tv"))
    return apply


def coupon_template(camp: Campaign) -> str:
    """The campaign's coupon template: its own, else ``<CAMPAIGN-ID>-{code}`` when the offer has a discount, else
    "" (no coupon)."""
    if camp.offer.coupon_template:
        return camp.offer.coupon_template
    return f"{camp.id.upper()}-{{code}}" if camp.offer.discount_pct > 0 else ""


def offer_text_template(camp: Campaign) -> str:
    """The campaign's offer text template: its own, else its type's default (:data:`DEFAULT_OFFER_TEXT`)."""
    if camp.offer.text:
        return camp.offer.text
    return DEFAULT_OFFER_TEXT[camp.type if coupon_template(camp) else "plain"]


def coupon_code(run_id: str) -> Column:
    """A row's coupon code body: the first 10 hex digits (upper case) of ``sha2(campaign_id | run_id | user_id)``.
    Deterministic per campaign, run and user, and never the user id (a pseudonym in privacy mode) itself."""
    digest = F.sha2(F.concat_ws("|", F.col(C.CAMPAIGN_ID), F.lit(run_id), F.col(C.USER_ID)), 256)
    return F.upper(F.substring(digest, 1, COUPON_CODE_LENGTH))


def _render(template: Column, values: Mapping[str, Column]) -> Column:
    return reduce(lambda acc, kv: F.replace(acc, F.lit("{" + kv[0] + "}"), F.coalesce(kv[1], F.lit(""))),
                  values.items(), template)


def with_offer(active: Sequence[Campaign], run_id: str, item_names: DataFrame | None = None) -> Transform:
    """``offer``: the campaign's ``discount_pct``, ``campaign_name``, a ``coupon_code`` (see :func:`coupon_code`,
    rendered into :func:`coupon_template`) and the offer ``text`` rendered from :func:`offer_text_template`
    (``{campaign}`` the campaign name, ``{discount}``, ``{item_name}`` (the item's ``name``, else its id),
    ``{coupon}``). Control rows (``delivered`` false) are never sent: no coupon and no text."""
    def apply(recs: DataFrame) -> DataFrame:
        df = recs
        if item_names is not None:
            df = df.join(item_names.select(C.ITEM_ID, F.col(C.ITEM_NAME).alias("_name")), C.ITEM_ID, "left")
        name = F.col("_name") if item_names is not None else F.lit(None).cast(StringType())
        discount = _by_campaign({c.id: float(c.offer.discount_pct) for c in active})
        campaign_name = _by_campaign({c.id: c.name or c.id for c in active})
        template = _by_campaign({c.id: coupon_template(c) for c in active})
        code = _render(template, {"code": coupon_code(run_id), "campaign": F.col(C.CAMPAIGN_ID)})
        coupon = F.when(F.col(C.DELIVERED) & (template != F.lit("")), code)
        discount_text = F.regexp_replace(F.format_number(discount, 2), r"\.?0+$", "")
        text = _render(_by_campaign({c.id: offer_text_template(c) for c in active}),
                       {"campaign": campaign_name, "discount": discount_text,
                        "item_name": F.coalesce(name, F.col(C.ITEM_ID)), "coupon": coupon})
        offer = F.struct(discount.alias(C.DISCOUNT_PCT), coupon.alias(C.COUPON_CODE),
                         campaign_name.alias(C.CAMPAIGN_NAME), F.when(F.col(C.DELIVERED), text).alias(C.OFFER_TEXT))
        return df.withColumn(C.OFFER, offer).drop("_name")
    return apply


def calibrate_scores() -> Transform:
    """``raw_score`` keeps the source's own score; ``score`` becomes a relevance in [0, 1] on one scale for every
    source: ``(MAX_LEVEL - level + p) / (MAX_LEVEL + 1)`` with ``p`` the raw score min-max scaled within its
    (campaign, source) in this run (1 when they are all equal, 0 when null). Model and bundle rows (level 0) lie in
    [2/3, 1], segment popularity in [1/3, 2/3], global popularity in [0, 1/3], so sorting a user's list by
    ``score`` gives its ``rank`` order and no fallback outranks a primary candidate. A grouped aggregate and a
    broadcast join, not a window: each (campaign, source) may hold millions of rows."""
    def apply(recs: DataFrame) -> DataFrame:
        bounds = recs.groupBy(C.CAMPAIGN_ID, C.SOURCE).agg(F.min(C.SCORE).alias("_lo"), F.max(C.SCORE).alias("_hi"))
        span = F.col("_hi") - F.col("_lo")
        p = F.coalesce(F.when(span > 0, (F.col(C.SCORE) - F.col("_lo")) / span)
                       .when(F.col(C.SCORE).isNotNull(), F.lit(1.0)), F.lit(0.0))
        level = F.least(F.greatest(F.col(C.LEVEL), F.lit(0)), F.lit(MAX_LEVEL)).cast(DoubleType())
        score = (F.lit(float(MAX_LEVEL)) - level + p) / F.lit(float(MAX_LEVEL + 1))
        return (recs.join(F.broadcast(bounds), [C.CAMPAIGN_ID, C.SOURCE], "left")
                .withColumn(C.RAW_SCORE, F.col(C.SCORE)).withColumn(C.SCORE, score)
                .drop("_lo", "_hi"))
    return apply


def conform(run_date: dt.date, model_run_id: str | None, run_id: str) -> Transform:
    """Select :data:`RECOMMENDATIONS`' columns in order, with the run's constants."""
    def apply(recs: DataFrame) -> DataFrame:
        consts = {C.RUN_DATE: F.lit(run_date), C.MODEL_RUN_ID: F.lit(model_run_id), C.RUN_ID: F.lit(run_id)}
        return recs.select(*((consts.get(f.name, F.col(f.name) if f.name in recs.columns else F.lit(None)))
                             .cast(f.dataType).alias(f.name) for f in RECOMMENDATIONS.fields))
    return apply


# ----------------------------------------------------------------------------------------------------------------
# Summary metrics
# ----------------------------------------------------------------------------------------------------------------
def exposure_gini(catalog_size: int) -> Transform:
    """Delivered rows -> ``(campaign_id, gini)`` of the per-item exposure counts over the whole catalogue (items
    never shown count as 0): 0 = every item shown equally, close to 1 = one item shown to everyone."""
    def apply(recs: DataFrame) -> DataFrame:
        counts = recs.groupBy(C.CAMPAIGN_ID, C.ITEM_ID).agg(F.count("*").cast(DoubleType()).alias("_x"))
        w = Window.partitionBy(C.CAMPAIGN_ID).orderBy(F.asc("_x"), F.asc(C.ITEM_ID))
        ranked = (counts.withColumn("_j", F.row_number().over(w).cast(DoubleType()))
                  .withColumn("_m", F.count("*").over(Window.partitionBy(C.CAMPAIGN_ID)).cast(DoubleType())))
        n = F.greatest(F.lit(float(catalog_size)), F.col("_m"))
        i = n - F.col("_m") + F.col("_j")  # the item's 1-based position among all n items sorted ascending
        return (ranked.groupBy(C.CAMPAIGN_ID)
                .agg((F.sum((F.lit(2.0) * i - n - F.lit(1.0)) * F.col("_x")) / (F.max(n) * F.sum("_x")))
                     .alias("gini")))
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
        w = Window.partitionBy(C.CAMPAIGN_ID).orderBy(F.desc(C.POPULARITY), F.asc(C.ITEM_ID))
        ranked = eligible.select(C.CAMPAIGN_ID, C.ITEM_ID, F.row_number().over(w).alias(C.RANK))
        return delivered.select(C.CAMPAIGN_ID, C.USER_ID, C.RANK).join(ranked, [C.CAMPAIGN_ID, C.RANK])
    return apply


def campaign_metrics(catalog_size: int, head: DataFrame | None = None, eligible: DataFrame | None = None) -> Transform:
    """Recommendations -> one row per campaign: rows, users listed, served (delivered users), control users,
    fallback share (delivered rows from popularity sources), catalogue coverage and exposure Gini over delivered rows.

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
            F.count(F.when(delivered & F.col(C.SOURCE).isin(*FALLBACK_SOURCES), 1)).alias("_fallback_rows"),
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


# ----------------------------------------------------------------------------------------------------------------
# Orchestration
# ----------------------------------------------------------------------------------------------------------------
def table_uri(cfg: AppConfig) -> str:
    return cfg.table(TABLE_LAYER, TABLE_NAME)


def _with_campaign(df: DataFrame, campaign_id: str) -> DataFrame:
    return df.select(F.lit(campaign_id).alias(C.CAMPAIGN_ID), *df.columns)


def _union(frames: Sequence[DataFrame]) -> DataFrame | None:
    return reduce(lambda a, b: a.unionByName(b), frames) if frames else None


def _campaign_audience(camp: Campaign, run_date: dt.date, users: DataFrame, items: DataFrame, events: DataFrame,
                       n_reasons: int, n_candidates: int | None = None, activity_date: dt.date | None = None
                       ) -> tuple[DataFrame, DataFrame | None, DataFrame | None]:
    """``(audience, bundle candidates or None, excluded (user_id, item_id) or None)`` for one campaign. Lookback
    windows over events (open carts, bundle anchors) end on ``activity_date`` (default ``run_date``)."""
    recent = activity_date or run_date
    if camp.type == "welcome":
        return users.transform(K.welcome_audience(run_date, camp.signup_within_days)), None, None
    if camp.type == "birthday":
        window = K.birthday_window(camp, run_date)
        if window is None:  # not active on run_date
            return users.limit(0).transform(K.generic_audience(None)), None, None
        return users.transform(K.birthday_audience(*window)), None, None
    if camp.type == "cart_threshold":
        lines = events.transform(K.open_cart_lines(items, recent, camp.lookback_days))
        audience = users.transform(K.cart_threshold_audience(lines, camp.cart_threshold, camp.cart_slack))
        return audience, None, lines.select(C.USER_ID, C.ITEM_ID)
    if camp.type == "bundle":
        pairs = events.transform(K.basket_items(run_date)).transform(K.co_occurrence(camp.min_co_occurrence))
        anchors = events.transform(K.basket_items(recent, camp.lookback_days))
        cands = anchors.transform(K.bundle_candidates(pairs, n_reasons, max_candidates=n_candidates))
        return users.transform(K.bundle_audience(cands)), cands, None
    # generic
    if C.CART_VALUE in K.rule_fields(camp.audience) and C.CART_VALUE not in users.columns:
        users = users.transform(K.with_cart_value(
            events.transform(K.open_cart_lines(items, recent, camp.lookback_days))))
    return users.transform(K.generic_audience(camp.audience)), None, None


@dataclasses.dataclass(frozen=True)
class CampaignFrames:
    """What the active campaigns select, all keyed by ``campaign_id``."""

    audience: DataFrame  # campaign_id, user_id, min_price, max_price, segment
    eligible: DataFrame  # campaign_id, item_id, category, price, popularity
    bundle: DataFrame | None  # campaign_id, user_id, item_id, score, reason
    excluded: DataFrame | None  # campaign_id, user_id, item_id (open cart lines of cart campaigns)


def campaign_frames(active: Sequence[Campaign], run_date: dt.date, users: DataFrame, items: DataFrame,
                    events: DataFrame, segment: str, n_reasons: int, n_candidates: int | None = None,
                    activity_date: dt.date | None = None) -> CampaignFrames:
    """Audiences, eligible items, bundle candidates (at most ``n_candidates`` per user) and exclusions of the
    ``active`` campaigns (lazy). ``activity_date`` ends the campaigns' lookback windows (see
    :func:`sparkpromo.features.decay_reference`: a replayed old log looks back from its own last day)."""
    if not active:
        raise ValueError("campaign_frames needs at least one active campaign")
    events = events.where(F.col(C.EVENT_DATE) <= F.lit(run_date))
    audiences, bundles, excluded, eligible = [], [], [], []
    for camp in active:
        aud, cands, excl = _campaign_audience(camp, run_date, users, items, events, n_reasons, n_candidates,
                                              activity_date)
        audiences.append(_with_campaign(aud, camp.id))
        if cands is not None:
            bundles.append(_with_campaign(cands, camp.id))
        if excl is not None:
            excluded.append(_with_campaign(excl, camp.id))
        rule = camp.items if camp.type == "generic" else None
        eligible.append(_with_campaign(items.transform(K.eligible_items(rule))
                                       .select(C.ITEM_ID, C.CATEGORY, C.PRICE, C.POPULARITY), camp.id))
    segments = users.select(C.USER_ID, F.col(segment).alias(C.SEGMENT))
    audience = _union(audiences).join(segments, C.USER_ID, "left")  # type: ignore[union-attr]
    return CampaignFrames(audience.select(C.CAMPAIGN_ID, C.USER_ID, C.MIN_PRICE, C.MAX_PRICE, C.SEGMENT),
                          _union(eligible), _union(bundles), _union(excluded))  # type: ignore[arg-type]


def candidate_pool(frames: CampaignFrames, active: Sequence[Campaign], run_date: dt.date, users: DataFrame,
                   events: DataFrame, id_map: DataFrame, model: ALSModel | None, r: RecommendConfig) -> DataFrame:
    """Every campaign's candidates before any policy (lazy): ALS (or popularity) lists for the budget shortlist,
    segment and global popularity fills, and bundle candidates, tagged with their source and level."""
    events = events.where(F.col(C.EVENT_DATE) <= F.lit(run_date))
    bundle_ids = [c.id for c in active if c.type == "bundle"]
    not_bundle = ~F.col(C.CAMPAIGN_ID).isin(*bundle_ids) if bundle_ids else F.lit(True)
    affinity = None if model is None else campaign_affinity(model, id_map, frames.eligible)
    audience = frames.audience.transform(budget_shortlist({c.id: c.budget for c in active}, r.budget_shortlist,
                                                          affinity))
    fill_eligible = frames.eligible.where(not_bundle)
    fill_audience = audience.where(not_bundle)
    n = r.candidates

    global_top = fill_eligible.transform(popularity_lists(n))
    seg_pop = events.transform(segment_item_popularity(users, r.segment))
    segment_top = fill_eligible.transform(segment_lists(n, seg_pop))
    if model is not None:
        als = (fill_audience.transform(with_user_idx(id_map)).transform(als_candidates(model, n))
               .transform(to_original_ids(id_map)))
        primary = fill_audience.transform(user_candidates(als, ALS))
    else:
        primary = fill_audience.transform(list_candidates(global_top, POPULARITY, 0, F.array(F.lit(REASON_POPULAR))))
    parts = [primary, fill_audience.transform(fill_candidates(segment_top, global_top))]
    if frames.bundle is not None:
        bundle = frames.bundle.select(C.CAMPAIGN_ID, C.USER_ID, C.ITEM_ID, C.SCORE, C.REASON)
        parts.append(_tag(audience.join(bundle, [C.CAMPAIGN_ID, C.USER_ID]), BUNDLE, 0, F.col(C.REASON)))
    return reduce(lambda a, b: a.unionByName(b), parts)


def ranked_offers(candidates: DataFrame, frames: CampaignFrames, active: Sequence[Campaign], run_date: dt.date,
                  events: DataFrame, id_map: DataFrame, interactions: DataFrame, model: ALSModel | None,
                  r: RecommendConfig) -> DataFrame:
    """The policy over :func:`candidate_pool`'s candidates: eligible, unbought items ranked and capped per campaign,
    the contact cap, budgets, the control flag and (for ALS) reasons (lazy)."""
    events = events.where(F.col(C.EVENT_DATE) <= F.lit(run_date))
    purchases = events.where(F.col(C.EVENT_TYPE).isin(*C.CONSUMED_EVENT_TYPES)).select(C.USER_ID, C.ITEM_ID)
    priorities = {c.id: c.priority for c in active}
    recs = (candidates
            .transform(select_items(frames.eligible, purchases, frames.excluded, r.repeatable_categories,
                                    r.max_per_category, {c.id: c.top_k for c in active}))
            .transform(contact_cap(r.max_offers_per_user, priorities))
            .transform(apply_budget({c.id: c.budget for c in active}))
            .transform(flag_control({c.id: c.control_share for c in active})))
    if model is not None:
        recs = recs.transform(with_als_reasons(item_vectors(model, id_map),
                                               interactions.transform(user_history(id_map)), r.reasons))
    return recs


def recommendations(frames: CampaignFrames, active: Sequence[Campaign], run_date: dt.date, users: DataFrame,
                    events: DataFrame, id_map: DataFrame, interactions: DataFrame, model: ALSModel | None,
                    r: RecommendConfig) -> DataFrame:
    """Ranked, capped, control-flagged recommendations with reasons (lazy), with the sources' raw ``score`` and
    ``level``; :func:`recommendation_plan` adds the calibrated score, the offers and the run constants.
    """
    candidates = candidate_pool(frames, active, run_date, users, events, id_map, model, r)
    return ranked_offers(candidates, frames, active, run_date, events, id_map, interactions, model, r)


@dataclasses.dataclass(frozen=True)
class RecommendationPlan:
    """The run's recommendations (lazy, :data:`RECOMMENDATIONS`' shape) and the frames the summary needs."""

    recs: DataFrame
    frames: CampaignFrames
    items: DataFrame


@contextlib.contextmanager
def recommendation_plan(spark: SparkSession, cfg: AppConfig, active: Sequence[Campaign], run_date: dt.date,
                        run_id: str, model_run_id: str | None, model: ALSModel | None,
                        stock_cap: bool = False) -> Iterator[RecommendationPlan]:
    """Read the gold and silver inputs, cache the ones many branches scan, and yield the lazy plan of
    :func:`recommendations` for the ``active`` campaigns; the caches are released on exit."""
    def gold(name: str) -> DataFrame:
        return io.read(spark, cfg.table("gold", name))

    r = cfg.recommend
    # Inputs are read by many branches of the plan: cache them once (this also keeps Delta's per-scan planning
    # out of every branch).
    cached: list[DataFrame] = []

    def keep(df: DataFrame) -> DataFrame:
        cached.append(df.persist(StorageLevel.MEMORY_AND_DISK))
        return cached[-1]

    try:
        users, items, id_map = keep(gold("user_features")), keep(gold("item_features")), keep(gold("id_map"))
        events = keep(io.read(spark, cfg.table("silver", "events")).where(F.col(C.EVENT_DATE) <= F.lit(run_date))
                      .select(*EVENT_COLUMNS))
        last = events.agg(F.max(C.EVENT_DATE)).first()
        activity_date = decay_reference(run_date, last[0] if last else None)
        frames = campaign_frames(active, run_date, users, items, events, r.segment, r.reasons, r.candidates,
                                 activity_date)
        frames = dataclasses.replace(frames, audience=keep(frames.audience),
                                     bundle=None if frames.bundle is None else keep(frames.bundle),
                                     excluded=None if frames.excluded is None else keep(frames.excluded))
        # Computed once and cut from the plan: the policy's windows and joins over a plan that also held every
        # candidate source gave adaptive execution one plan of ~160 stages to re-plan after each (BENCHMARKS.md).
        t0 = time.perf_counter()
        candidates = candidate_pool(frames, active, run_date, users, events, id_map, model, r).localCheckpoint(
            eager=True)
        log.info("candidates of %d campaign(s) from %s in %.1fs", len(active),
                 "ALS, popularity and bundles" if model is not None else "popularity and bundles",
                 time.perf_counter() - t0)
        recs = ranked_offers(candidates, frames, active, run_date, events, id_map, gold("interactions"), model, r)
        if stock_cap:
            recs = recs.transform(cap_to_stock(items, {c.id: c.priority for c in active}))
        recs = (recs.transform(calibrate_scores())
                .transform(with_offer(active, run_id, items.select(C.ITEM_ID, C.ITEM_NAME)
                                      if C.ITEM_NAME in items.columns else None))
                .transform(conform(run_date, model_run_id, run_id)))
        yield RecommendationPlan(recs, frames, items)
    finally:
        for df in cached:
            df.unpersist()


def run_recommend(spark: SparkSession, cfg: AppConfig, run_id: str, run_date: dt.date,
                  stock_cap: bool = False) -> dict[str, Any]:
    """Compute and write the recommendations of every campaign active on ``run_date``; return a summary.

    The summary has the run's scalars (``rows``, ``users_served`` summed over campaigns, ``campaigns_active``,
    ``champion``, ``model_run_id``, ``table``), ``campaigns_inactive`` and, per active campaign: ``status``
    (ok / empty_audience / no_recommendations), ``audience`` (consenting users selected by the campaign rule),
    ``users_listed`` (users with at least one row after caps and budget: served + control), ``served``
    (delivered users), ``control``, ``rows``, ``fallback_share``
    (delivered rows from popularity sources), ``coverage`` (distinct delivered items / catalogue size) and ``gini``
    (exposure of delivered rows over the whole catalogue). ``stock_cap`` additionally limits each item to
    ``stock`` delivered offers in this run.
    """
    uri = table_uri(cfg)
    active = K.active_campaigns(cfg.campaigns, run_date)
    inactive = [c.id for c in cfg.campaigns if c not in active]
    changes: list[str] = []
    if cfg.measure.pause_negative or cfg.measure.reallocate_budgets:
        from sparkpromo.measure import apply_actions, read_actions

        active, changes = apply_actions(active, read_actions(spark, cfg, run_date))
        for line in changes:
            log.warning("automatic change from measured outcomes: %s", line)
    summary: dict[str, Any] = {"run_id": run_id, "run_date": run_date.isoformat(), "table": uri,
                               "campaigns_active": len(active), "campaigns_inactive": inactive}
    if changes:
        summary["automatic_changes"] = "; ".join(changes)
    if not active:
        log.warning("no campaign is active on %s: nothing to write", run_date)
        summary.update(rows=0, users_served=0, campaigns={})
        return summary

    model_run_id, model, champion = load_champion(spark, cfg)
    summary.update(model_run_id=model_run_id, champion=champion)
    r = cfg.recommend
    with recommendation_plan(spark, cfg, active, run_date, run_id, model_run_id, model, stock_cap) as plan:
        frames, items = plan.frames, plan.items
        # Materialised once, with a short lineage, for the summary and the write. (Local checkpoint blocks are
        # released when the DataFrame is garbage-collected.)
        t0 = time.perf_counter()
        log.info("ranking %d campaign(s), %d candidates per user", len(active), r.candidates)
        with spark_progress(spark, "scoring"):
            final = plan.recs.localCheckpoint(eager=True)
        log.info("ranked in %.1fs", time.perf_counter() - t0)
        catalog_size = items.count()
        sizes = frames.audience.groupBy(C.CAMPAIGN_ID).agg(F.count("*").alias("audience"))
        metrics = {row[C.CAMPAIGN_ID]: {k: v for k, v in row.asDict().items() if v is not None} for row in
                   sizes.join(final.transform(campaign_metrics(catalog_size, most_popular(items, catalog_size),
                                                    frames.eligible)), C.CAMPAIGN_ID, "full").collect()}
        per_campaign: dict[str, dict[str, Any]] = {}
        for camp in active:
            m = metrics.get(camp.id, {})
            audience_size = int(m.get("audience", 0))
            status = ("ok" if m.get("rows") else "empty_audience" if audience_size == 0
                      else "no_recommendations")
            if status == "empty_audience":
                log.info("campaign %s: empty audience", camp.id)
            elif status == "no_recommendations":
                log.info("campaign %s: %d users in the audience but no eligible items", camp.id, audience_size)
            per_campaign[camp.id] = {
                "type": camp.type, "priority": camp.priority, "status": status, "audience": audience_size,
                "users_listed": int(m.get("users_listed", 0)), "served": int(m.get("served", 0)),
                "control": int(m.get("control", 0)), "rows": int(m.get("rows", 0)),
                "fallback_share": round(float(m.get("fallback_share", 0.0)), 4),
                "coverage": round(float(m.get("coverage", 0.0)), 4), "gini": round(float(m.get("gini", 0.0)), 4),
                **{k: round(float(m.get(k) or 0.0), 4) for k in FAIRNESS_METRICS}}
        with stage("recommend.write", campaigns=len(active)) as counts:
            # One commit replaces the run date's partition of every active campaign (an empty audience leaves
            # its partition empty); inactive campaigns and other dates are untouched.
            io.replace_partition(final, uri, {C.CAMPAIGN_ID: [c.id for c in active], C.RUN_DATE: run_date},
                                 partition_by=PARTITION_COLUMNS, name="gold.recommendations",
                                 merge_schema=True)  # a table written before raw_score and the offer text
            # Control rows are kept to measure uplift, never to be sent: the table itself refuses one marked both.
            io.add_constraints(spark, uri, CONTROL_CONSTRAINTS)
            counts["rows"] = sum(v["rows"] for v in per_campaign.values())
    for cid, v in per_campaign.items():
        log.info("campaign %s: audience=%d served=%d control=%d rows=%d fallback_share=%.3f coverage=%.4f gini=%.3f",
                 cid, v["audience"], v["served"], v["control"], v["rows"], v["fallback_share"], v["coverage"],
                 v["gini"])
    summary.update(rows=sum(v["rows"] for v in per_campaign.values()),
                   users_served=sum(v["served"] for v in per_campaign.values()), campaigns=per_campaign)
    if not summary["rows"]:
        summary["warning"] = no_offers_warning(per_campaign)
        log.warning("%s", summary["warning"])
    return summary


def no_offers_warning(per_campaign: dict[str, dict[str, Any]]) -> str:
    """One line for a run whose active campaigns all served nothing, with the likeliest cause."""
    statuses = ", ".join(f"{cid}: {v['status']}" for cid, v in per_campaign.items())
    hint = (" (no user has marketing consent? see privacy.consent_without_users)"
            if all(v["status"] == "empty_audience" for v in per_campaign.values()) else "")
    return f"no offers served: every active campaign ended empty ({statuses}){hint}"
