"""The policy over the candidates: eligibility before the per-list cut, then across campaigns the contact cap,
the budgets and the control group."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence

from pyspark.ml.recommendation import ALSModel
from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql.types import DoubleType

from sparkpromo import columns as C
from sparkpromo.config import Campaign, RecommendConfig
from sparkpromo.frame import Transform, top_within
from sparkpromo.recommend.candidates import CampaignFrames
from sparkpromo.recommend.common import (
    CONTROL_BUCKETS,
    _by_campaign,
    _order,
)
from sparkpromo.recommend.offers import (
    item_vectors,
    user_history,
    with_als_reasons,
)


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
    """At most ``max_per_category`` items of one category per list (0 = no cap); the best ones are kept. An item
    without a category is a category of its own (a catalogue without categories is not cut to the cap)."""
    def apply(cands: DataFrame) -> DataFrame:
        if max_per_category <= 0:
            return cands
        own = F.when(F.col(C.CATEGORY).isNull(), F.col(C.ITEM_ID))
        w = Window.partitionBy(F.col(C.CAMPAIGN_ID), F.col(C.USER_ID), F.col(C.CATEGORY), own).orderBy(*_order())
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
    limits = {k: v for k, v in budgets.items() if v > 0}

    def apply(recs: DataFrame) -> DataFrame:
        if not limits:
            return recs
        budgeted = F.col(C.CAMPAIGN_ID).isin(*limits)
        lst = Window.partitionBy(C.CAMPAIGN_ID, C.USER_ID)
        tie = F.xxhash64(F.lit("budget"), F.col(C.CAMPAIGN_ID), F.col(C.USER_ID))
        # Users are ranked, not rows: the order is constant over a user's list, and a user's rows share a bucket.
        order = [F.asc("_lvl"), F.desc("_s"), tie, F.asc(C.USER_ID)]
        kept = (recs.where(budgeted).withColumn("_lvl", F.min(C.LEVEL).over(lst))
                .withColumn("_s", F.max(F.when(F.col(C.LEVEL) == F.col("_lvl"), F.col(C.SCORE))).over(lst))
                .transform(top_within([C.CAMPAIGN_ID], order, _by_campaign(limits), spread=F.col(C.USER_ID),
                                      rank=F.dense_rank))
                .drop("_lvl", "_s"))
        return recs.where(~budgeted).unionByName(kept)
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

__all__ = ["apply_budget", "cap_per_category", "contact_cap", "control_bucket", "dedupe_items", "exclude_pairs",
    "exclude_purchased", "flag_control", "keep_eligible", "ranked_offers", "select_items", "top_k"]
