"""Candidates per (campaign, user): the campaigns' audiences and eligible items, ALS or popularity lists for
the budget shortlist, segment and global popularity fills, and bundle co-occurrence candidates."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping, Sequence
from functools import reduce

from pyspark.ml.functions import array_to_vector, vector_to_array
from pyspark.ml.recommendation import ALSModel
from pyspark.ml.stat import Summarizer
from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql.types import DoubleType

from sparkpromo import campaigns as K
from sparkpromo import columns as C
from sparkpromo.config import USER_RULE_FIELDS, Campaign, RecommendConfig
from sparkpromo.frame import POSITION, Transform, positions_within, top_within
from sparkpromo.recommend.common import (
    ALS,
    BUNDLE,
    GLOBAL_POPULARITY,
    POPULARITY,
    REASON_POPULAR,
    REASON_POPULAR_IN,
    SEGMENT_POPULARITY,
    _by_campaign,
    _dot,
    _empty_reason,
    _ids,
    _union,
    _with_campaign,
    to_original_ids,
    with_user_idx,
)


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


def popularity_lists(n: int) -> Transform:
    """Eligible items ``(campaign_id, item_id, popularity)`` -> each campaign's top ``n`` by popularity."""
    def apply(eligible: DataFrame) -> DataFrame:
        ranked = eligible.transform(positions_within([C.CAMPAIGN_ID], [F.desc(C.POPULARITY), F.asc(C.ITEM_ID)]))
        return (ranked.where(F.col(POSITION) < n)
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


SERVABLE = "_servable"


def servable(eligible: DataFrame, purchases: DataFrame, repeatable_categories: Sequence[str]) -> Transform:
    """Audience rows -> plus ``_servable``: the campaign has an eligible item ``(campaign_id, item_id, category)``
    the user has not bought ``(user_id, item_id)``, or one of a repeatable category (what
    :func:`~sparkpromo.recommend.policy.exclude_purchased` leaves). Counts per (campaign, user), no item lists."""
    def apply(audience: DataFrame) -> DataFrame:
        repeatable = (F.coalesce(F.col(C.CATEGORY).isin(*repeatable_categories), F.lit(False))
                      if repeatable_categories else F.lit(False))
        items = eligible.select(C.CAMPAIGN_ID, C.ITEM_ID, repeatable.alias("_repeatable")).distinct()
        n_items = items.groupBy(C.CAMPAIGN_ID).agg(F.count("*").alias("_items"))
        bought = (purchases.select(C.USER_ID, C.ITEM_ID).distinct()
                  .join(items.where(~F.col("_repeatable")).drop("_repeatable"), C.ITEM_ID)
                  .groupBy(C.CAMPAIGN_ID, C.USER_ID).agg(F.count("*").alias("_bought")))
        return (audience.join(F.broadcast(n_items), C.CAMPAIGN_ID, "left")
                .join(bought, [C.CAMPAIGN_ID, C.USER_ID], "left")
                .withColumn(SERVABLE, F.coalesce(F.col("_items"), F.lit(0)) > F.coalesce(F.col("_bought"), F.lit(0)))
                .drop("_items", "_bought"))
    return apply


def budget_shortlist(budgets: Mapping[str, int], factor: int, affinity: Transform | None = None,
                     can_serve: Transform | None = None) -> Transform:
    """Audience rows -> for each campaign with a budget (> 0), only its ``budget * factor`` users: first those the
    campaign can serve (``can_serve``, a :func:`servable` transform: an eligible item they have not bought), then
    by highest ``affinity`` (a :func:`campaign_affinity` transform; nulls last), then ``xxhash64("shortlist",
    campaign_id, user_id)`` and user id. Other campaigns' rows pass unchanged; ``factor`` 0 keeps every row.

    A budget serves few users, so its campaign need not score its whole audience: :func:`apply_budget` then picks
    from the shortlist by the users' actual lists. Affinity alone would favour the buyers of the campaign's items,
    whose lists then lack them.
    """
    def apply(audience: DataFrame) -> DataFrame:
        limits = {k: v * factor for k, v in budgets.items() if v > 0}
        if factor <= 0 or not limits:
            return audience
        budgeted = F.col(C.CAMPAIGN_ID).isin(*limits)
        rows = audience.where(budgeted)
        rows = rows.transform(affinity) if affinity is not None else rows.withColumn(C.AFFINITY, F.lit(None))
        rows = rows.transform(can_serve) if can_serve is not None else rows.withColumn(SERVABLE, F.lit(True))
        order = [F.desc(SERVABLE), F.desc_nulls_last(C.AFFINITY),
                 F.xxhash64(F.lit("shortlist"), F.col(C.CAMPAIGN_ID), F.col(C.USER_ID)), F.asc(C.USER_ID)]
        kept = (rows.transform(top_within([C.CAMPAIGN_ID], order, _by_campaign(limits), spread=F.col(C.USER_ID)))
                .select(*audience.columns))
        return audience.where(~budgeted).unionByName(kept)
    return apply


def recently_listed(periods: Mapping[str, int], run_date: dt.date) -> Transform:
    """Earlier recommendation rows (``campaign_id``, ``user_id``, ``run_date``) -> the distinct (campaign_id,
    user_id) pairs listed within the campaign's re-contact period before ``run_date`` (``periods``: campaign id ->
    days, see :func:`sparkpromo.campaigns.recontact_days`; other campaigns: none). Control rows count too, so both
    arms of a campaign are drawn from the same audience."""
    def apply(previous: DataFrame) -> DataFrame:
        days = F.datediff(F.lit(run_date), F.col(C.RUN_DATE))
        return (previous.where(F.col(C.CAMPAIGN_ID).isin(*periods))
                .where((days >= 1) & (days <= _by_campaign(periods)))
                .select(C.CAMPAIGN_ID, C.USER_ID).distinct())
    return apply


def _campaign_audience(camp: Campaign, run_date: dt.date, users: DataFrame, items: DataFrame, events: DataFrame,
                       n_reasons: int, n_candidates: int | None = None, activity_date: dt.date | None = None
                       ) -> tuple[DataFrame, DataFrame | None, DataFrame | None]:
    """``(audience, bundle candidates or None, excluded (user_id, item_id) or None)`` for one campaign. Lookback
    windows over events (open carts, bundle anchors) end on ``activity_date`` (default ``run_date``). The
    campaign's ``audience`` rule narrows every type's audience, not only a generic campaign's: two welcome
    campaigns for two countries reach each country's new users only."""
    recent = activity_date or run_date
    if C.CART_VALUE in K.rule_fields(camp.audience) and C.CART_VALUE not in users.columns:
        users = users.transform(K.with_cart_value(
            events.transform(K.open_cart_lines(items, recent, camp.lookback_days))))
    if camp.type != "generic" and camp.audience is not None:
        users = users.where(K.compile_rule(camp.audience, USER_RULE_FIELDS, users.schema))
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
        eligible.append(_with_campaign(items.transform(K.eligible_items(camp.items))
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
    budgets = {c.id: c.budget for c in active}
    purchases = events.where(F.col(C.EVENT_TYPE).isin(*C.CONSUMED_EVENT_TYPES))
    budgeted = [k for k, v in budgets.items() if v > 0]
    can_serve = servable(frames.eligible.where(F.col(C.CAMPAIGN_ID).isin(*budgeted)), purchases,
                         r.repeatable_categories)
    audience = frames.audience.transform(budget_shortlist(budgets, r.budget_shortlist, affinity, can_serve))
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

__all__ = ["CampaignFrames", "als_candidates", "budget_shortlist", "campaign_affinity", "campaign_frames",
    "candidate_pool", "fill_candidates", "list_candidates", "popularity_lists", "recently_listed",
    "segment_item_popularity", "segment_lists", "servable", "user_candidates"]
