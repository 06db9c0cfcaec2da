"""The recommend stage itself: read the inputs once, compute the candidates once, rank them under the policy and
write each active campaign's partition in its own commit."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import logging
import time
from collections.abc import Iterator, Sequence
from typing import Any

from pyspark import StorageLevel
from pyspark.ml.recommendation import ALSModel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from sparkpromo import campaigns as K
from sparkpromo import columns as C
from sparkpromo import delta_io
from sparkpromo import tables as T
from sparkpromo.config import AppConfig, Campaign, RecommendConfig
from sparkpromo.evaluate.exposure import FAIRNESS_METRICS, campaign_metrics, most_popular
from sparkpromo.features import decay_reference
from sparkpromo.logs import spark_progress, stage
from sparkpromo.privacy import optional_key
from sparkpromo.recommend.candidates import (
    CampaignFrames,
    campaign_frames,
    candidate_pool,
    recently_listed,
)
from sparkpromo.recommend.common import EVENT_COLUMNS, FALLBACK_SOURCES
from sparkpromo.recommend.offers import (
    calibrate_scores,
    conform,
    coupon_template,
    with_offer,
)
from sparkpromo.recommend.policy import ranked_offers
from sparkpromo.recommend.registry import load_champion
from sparkpromo.session import is_connect

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------------------------------
# Orchestration
# ----------------------------------------------------------------------------------------------------------------
def table_uri(cfg: AppConfig) -> str:
    return T.RECOMMENDATIONS.uri(cfg)


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
    # (campaign_id, user_id) of the audiences left out as listed within the campaign's re-contact period
    recently_listed: DataFrame | None = None


@contextlib.contextmanager
def recommendation_plan(spark: SparkSession, cfg: AppConfig, active: Sequence[Campaign], run_date: dt.date,
                        run_id: str, model_run_id: str | None, model: ALSModel | None) -> Iterator[RecommendationPlan]:
    """Read the gold and silver inputs, cache the ones many branches scan, and yield the lazy plan of
    :func:`recommendations` for the ``active`` campaigns; the caches are released on exit."""
    def gold(table: T.Table) -> DataFrame:
        return delta_io.read(spark, table.uri(cfg))

    r = cfg.recommend
    # Inputs are read by many branches of the plan: cache them once (this also keeps Delta's per-scan planning
    # out of every branch).
    cached: list[DataFrame] = []

    def keep(df: DataFrame) -> DataFrame:
        cached.append(df.persist(StorageLevel.MEMORY_AND_DISK))
        return cached[-1]

    try:
        users, items, id_map = keep(gold(T.USER_FEATURES)), keep(gold(T.ITEM_FEATURES)), keep(gold(T.ID_MAP))
        events = keep(delta_io.read(spark, T.SILVER_EVENTS.uri(cfg)).where(F.col(C.EVENT_DATE) <= F.lit(run_date))
                      .select(*EVENT_COLUMNS))
        last = events.agg(F.max(C.EVENT_DATE)).first()
        activity_date = decay_reference(run_date, last[0] if last else None)
        frames = campaign_frames(active, run_date, users, items, events, r.segment, r.reasons, r.candidates,
                                 activity_date)
        # Users the campaign listed within its re-contact period are flagged, then left out after the cut below,
        # so that the summary counts them from the same rows.
        periods = {c.id: days for c in active if (days := K.recontact_days(c)) > 0}
        keys, flag = [C.CAMPAIGN_ID, C.USER_ID], "_recently_listed"
        audience = frames.audience
        recent = bool(periods) and delta_io.is_delta(spark, table_uri(cfg))
        if recent:
            since = run_date - dt.timedelta(days=max(periods.values()))
            previous = (gold(T.RECOMMENDATIONS).where(F.col(C.RUN_DATE).between(F.lit(since), F.lit(run_date)))
                        .select(C.CAMPAIGN_ID, C.USER_ID, C.RUN_DATE))
            audience = audience.join(previous.transform(recently_listed(periods, run_date))
                                     .withColumn(flag, F.lit(True)), keys, "left")
        # Over Spark Connect a cached frame is still sent as its whole plan, and the plans built on these nest
        # deeper than protobuf decodes in one message (its limit of 100 levels): here and after the policy, a
        # checkpoint leaves a reference to the rows instead.
        cut = (lambda df: df.localCheckpoint(eager=True)) if is_connect(spark) else keep
        audience, skipped = cut(audience), None
        if recent:
            skipped = audience.where(F.col(flag).isNotNull()).select(*keys)
            audience = audience.where(F.col(flag).isNull()).drop(flag)
        frames = dataclasses.replace(frames, audience=audience,
                                     bundle=None if frames.bundle is None else cut(frames.bundle),
                                     excluded=None if frames.excluded is None else cut(frames.excluded))
        # Computed once and cut from the plan: the policy's windows and joins over a plan that also held every
        # candidate source gave adaptive execution one plan of ~160 stages to re-plan after each (BENCHMARKS.md).
        t0 = time.perf_counter()
        candidates = candidate_pool(frames, active, run_date, users, events, id_map, model, r).localCheckpoint(
            eager=True)
        log.info("candidates of %d campaign(s) from %s in %.1fs", len(active),
                 "ALS, popularity and bundles" if model is not None else "popularity and bundles",
                 time.perf_counter() - t0)
        recs = ranked_offers(candidates, frames, active, run_date, events, id_map, gold(T.INTERACTIONS), model, r)
        if is_connect(spark):
            recs = recs.localCheckpoint(eager=True)
        key = optional_key(cfg.privacy.key_env)
        if key is None and any(coupon_template(c) for c in active):
            log.warning("coupon codes are hashed without a key: whoever knows a user id can compute its code; set "
                        "%s (privacy.key_env, 16+ characters) to key them", cfg.privacy.key_env)
        recs = (recs.transform(calibrate_scores())
                .transform(with_offer(active, run_id, items.select(C.ITEM_ID, C.ITEM_NAME)
                                      if C.ITEM_NAME in items.columns else None, key=key))
                .transform(conform(run_date, model_run_id, run_id)))
        yield RecommendationPlan(recs, frames, items, skipped)
    finally:
        # Newest first: a frame leaves the cache after the frames built on it, so Spark never re-plans a cached
        # frame whose input just left it (each re-plan lists the Delta files of every scan again).
        for df in reversed(cached):
            df.unpersist()


def run_recommend(spark: SparkSession, cfg: AppConfig, run_id: str, run_date: dt.date) -> dict[str, Any]:
    """Compute and write the recommendations of every campaign active on ``run_date``; return a summary.

    The summary has the run's scalars (``rows``, ``users_served`` summed over campaigns, ``campaigns_active``,
    ``champion``, ``model_run_id``, ``table``), ``campaigns_inactive`` and, per active campaign: ``status``
    (ok / empty_audience / no_recommendations), ``audience`` (consenting users selected by the campaign rule, less
    those it listed within its re-contact period), ``recently_listed`` (those left out for that),
    ``users_listed`` (users with at least one row after caps and budget: served + control), ``served``
    (delivered users), ``control``, ``rows``, ``fallback_share``
    (delivered rows from popularity sources), ``coverage`` (distinct delivered items / catalogue size) and ``gini``
    (exposure of delivered rows over the whole catalogue).
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
    with recommendation_plan(spark, cfg, active, run_date, run_id, model_run_id, model) as plan:
        frames, items = plan.frames, plan.items
        # Materialised once, with a short lineage, for the summary and the write. (Local checkpoint blocks are
        # released when the DataFrame is garbage-collected.)
        t0 = time.perf_counter()
        log.info("ranking %d campaign(s), %d candidates per user", len(active), r.candidates)
        with spark_progress(spark, "scoring"):
            final = plan.recs.localCheckpoint(eager=True)
        log.info("ranked in %.1fs", time.perf_counter() - t0)
        catalog_size = items.count()
        listed = frames.audience.select(C.CAMPAIGN_ID, F.lit(0).alias("_recent"))
        if plan.recently_listed is not None:
            listed = listed.unionByName(plan.recently_listed.select(C.CAMPAIGN_ID, F.lit(1).alias("_recent")))
        sizes = listed.groupBy(C.CAMPAIGN_ID).agg(F.count(F.when(F.col("_recent") == 0, 1)).alias("audience"),
                                                  F.sum("_recent").alias("recently_listed"))
        exposure = final.transform(campaign_metrics(catalog_size, FALLBACK_SOURCES, most_popular(items, catalog_size),
                                                    frames.eligible))
        metrics = {row[C.CAMPAIGN_ID]: {k: v for k, v in row.asDict().items() if v is not None}
                   for row in sizes.join(exposure, C.CAMPAIGN_ID, "full").collect()}
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
                "recently_listed": int(m.get("recently_listed", 0)),
                "users_listed": int(m.get("users_listed", 0)), "served": int(m.get("served", 0)),
                "control": int(m.get("control", 0)), "rows": int(m.get("rows", 0)),
                "fallback_share": round(float(m.get("fallback_share", 0.0)), 4),
                "coverage": round(float(m.get("coverage", 0.0)), 4), "gini": round(float(m.get("gini", 0.0)), 4),
                **{k: round(float(m.get(k) or 0.0), 4) for k in FAIRNESS_METRICS}}
        with stage("recommend.write", campaigns=len(active)) as counts:
            # One commit replaces the run date's partition of every active campaign (an empty audience leaves
            # its partition empty); inactive campaigns and other dates are untouched.
            delta_io.replace_partition(final, uri, {C.CAMPAIGN_ID: [c.id for c in active], C.RUN_DATE: run_date},
                                       partition_by=T.RECOMMENDATIONS.partition_by, name=T.RECOMMENDATIONS.key,
                                       merge_schema=True,  # a table written before raw_score and the offer text
                                       properties=T.RECOMMENDATIONS.properties)
            # Control rows are kept to measure uplift, never to be sent: the table itself refuses one marked both.
            delta_io.add_constraints(spark, uri, T.RECOMMENDATIONS.checks,
                                     properties=T.RECOMMENDATIONS.properties)
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

__all__ = ["RecommendationPlan", "no_offers_warning", "recommendation_plan", "recommendations", "run_recommend",
    "table_uri"]
