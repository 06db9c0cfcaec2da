"""Reasons (ALS: the user's past items nearest in item-factor space), calibrated scores, offers and coupons, and
the output's conformed shape."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from functools import reduce

from pyspark.ml.recommendation import ALSModel
from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql.types import (
    ArrayType,
    DoubleType,
    StringType,
)

from sparkpromo import columns as C
from sparkpromo.config import Campaign
from sparkpromo.frame import Transform
from sparkpromo.privacy import PAD_IN, PAD_OUT, hmac_sha256, with_pads
from sparkpromo.recommend.common import (
    ALS,
    COUPON_CODE_LENGTH,
    DEFAULT_OFFER_TEXT,
    HISTORY_ITEMS,
    MAX_LEVEL,
    REASON_SIMILAR,
    RECOMMENDATIONS,
    SCORE_FLOOR,
    _by_campaign,
    _dot,
    _ids,
    to_original_ids,
)


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


def coupon_code(run_id: str, keyed: bool = False) -> Column:
    """A row's coupon code body: the first :data:`COUPON_CODE_LENGTH` hex digits (upper case) of the SHA-256 of
    ``campaign_id | run_id | user_id``, keyed (HMAC, over the pad columns of :func:`sparkpromo.privacy.with_pads`)
    when ``keyed``. Deterministic per campaign, run and user, and never the user id itself. Unkeyed, anyone who
    knows the scheme can compute a customer's code from an enumerable id; keyed, only the key's holder can."""
    text = F.concat_ws("|", F.col(C.CAMPAIGN_ID), F.lit(run_id), F.col(C.USER_ID))
    digest = hmac_sha256(text) if keyed else F.sha2(text, 256)
    return F.upper(F.substring(digest, 1, COUPON_CODE_LENGTH))


def _render(template: Column, values: Mapping[str, Column]) -> Column:
    return reduce(lambda acc, kv: F.replace(acc, F.lit("{" + kv[0] + "}"), F.coalesce(kv[1], F.lit(""))),
                  values.items(), template)


def with_offer(active: Sequence[Campaign], run_id: str, item_names: DataFrame | None = None,
               key: bytes | None = None) -> Transform:
    """``offer``: the campaign's ``discount_pct``, ``campaign_name``, a ``coupon_code`` (see :func:`coupon_code`,
    keyed with ``key`` when given, rendered into :func:`coupon_template`) and the offer ``text`` rendered from
    :func:`offer_text_template` (``{campaign}`` the campaign name, ``{discount}``, ``{item_name}`` (the item's
    ``name``, else its id), ``{coupon}``). Control rows (``delivered`` false) are never sent: no coupon and no text."""
    def apply(recs: DataFrame) -> DataFrame:
        df = recs if key is None else with_pads(recs, key)
        if item_names is not None:
            df = df.join(item_names.select(C.ITEM_ID, F.col(C.ITEM_NAME).alias("_name")), C.ITEM_ID, "left")
        name = F.col("_name") if item_names is not None else F.lit(None).cast(StringType())
        discount = _by_campaign({c.id: float(c.offer.discount_pct) for c in active})
        campaign_name = _by_campaign({c.id: c.name or c.id for c in active})
        template = _by_campaign({c.id: coupon_template(c) for c in active})
        code = _render(template, {"code": coupon_code(run_id, keyed=key is not None), "campaign": F.col(C.CAMPAIGN_ID)})
        coupon = F.when(F.col(C.DELIVERED) & (template != F.lit("")), code)
        discount_text = F.regexp_replace(F.format_number(discount, 2), r"\.?0+$", "")
        text = _render(_by_campaign({c.id: offer_text_template(c) for c in active}),
                       {"campaign": campaign_name, "discount": discount_text,
                        "item_name": F.coalesce(name, F.col(C.ITEM_ID)), "coupon": coupon})
        offer = F.struct(discount.alias(C.DISCOUNT_PCT), coupon.alias(C.COUPON_CODE),
                         campaign_name.alias(C.CAMPAIGN_NAME), F.when(F.col(C.DELIVERED), text).alias(C.OFFER_TEXT))
        return df.withColumn(C.OFFER, offer).drop("_name", PAD_IN, PAD_OUT)
    return apply


def calibrate_scores() -> Transform:
    """``raw_score`` keeps the source's own score; ``score`` becomes a relevance in (0, 1] on one scale for every
    source: ``(MAX_LEVEL - level + q) / (MAX_LEVEL + 1)`` with ``q = SCORE_FLOOR + (1 - SCORE_FLOOR) * p`` and ``p``
    the raw score min-max scaled within its (campaign, source) in this run (1 when they are all equal, 0 when null).
    Model and bundle rows (level 0) lie in (2/3, 1], segment popularity in (1/3, 2/3], global popularity in
    (0, 1/3], so sorting a user's list by ``score`` gives its ``rank`` order and no fallback reaches a primary
    candidate. A grouped aggregate and a broadcast join, not a window: each (campaign, source) may hold millions of
    rows."""
    def apply(recs: DataFrame) -> DataFrame:
        bounds = recs.groupBy(C.CAMPAIGN_ID, C.SOURCE).agg(F.min(C.SCORE).alias("_lo"), F.max(C.SCORE).alias("_hi"))
        span = F.col("_hi") - F.col("_lo")
        p = F.coalesce(F.when(span > 0, (F.col(C.SCORE) - F.col("_lo")) / span)
                       .when(F.col(C.SCORE).isNotNull(), F.lit(1.0)), F.lit(0.0))
        level = F.least(F.greatest(F.col(C.LEVEL), F.lit(0)), F.lit(MAX_LEVEL)).cast(DoubleType())
        q = F.lit(SCORE_FLOOR) + F.lit(1.0 - SCORE_FLOOR) * p
        score = (F.lit(float(MAX_LEVEL)) - level + q) / F.lit(float(MAX_LEVEL + 1))
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

__all__ = ["calibrate_scores", "conform", "coupon_code", "coupon_template", "item_vectors", "offer_text_template",
    "user_history", "with_als_reasons", "with_offer"]
