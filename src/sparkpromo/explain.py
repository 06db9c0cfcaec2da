"""Why did this user get these offers? One user's current offers, each with the past items behind it.

:func:`explain_user` reads the user's rows of ``gold/recommendations`` on the table's latest run date (optionally one
campaign) and, for offers that came from the ALS model, ranks the user's own past items (``gold/interactions``) by
cosine similarity of their ALS item factors to the offered item: the items that pull the recommendation most. The
model is the one named by the rows' ``model_run_id`` in the registry (falling back to the registered champion).
Similarities are computed in Spark with array higher-order functions, no Python UDF; only the user's few offers and
their top contributors come back to the driver.

In privacy mode (``privacy.pseudonymise``) the tables hold keyed pseudonyms, so the caller's original id is turned
into its pseudonym with the key from the environment before any look-up.
"""

from __future__ import annotations

import difflib
import logging
from typing import Any

from pyspark.ml.recommendation import ALSModel
from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from sparkpromo import columns as C
from sparkpromo import delta_io
from sparkpromo import recommend as R
from sparkpromo import tables as T
from sparkpromo.config import AppConfig, join_uri
from sparkpromo.frame import local_rows

log = logging.getLogger(__name__)

DEFAULT_TOP_N = 3
MAX_OFFERS = 1000  # safety bound on the rows collected for one user
SUGGESTIONS = 5  # campaign ids suggested for an unknown campaign (campaign ids are configuration, not people)
ITEM_DETAILS = (C.ITEM_NAME, C.CATEGORY, C.PRICE)


class ExplainError(ValueError):
    """Unknown user or campaign, or no recommendations yet; ``str()`` is one line."""


def stored_user_id(cfg: AppConfig, user_id: str) -> str:
    """The id the tables hold for ``user_id``: itself, or its keyed pseudonym in privacy mode."""
    if not cfg.privacy.pseudonymise:
        return user_id
    from sparkpromo.privacy import hmac_key, pseudonym

    return pseudonym(user_id, hmac_key(cfg.privacy.key_env))


def _read(spark: SparkSession, cfg: AppConfig, table: T.Table) -> DataFrame | None:
    uri = table.uri(cfg)
    return delta_io.read(spark, uri) if delta_io.is_delta(spark, uri) else None


def _unknown_user(cfg: AppConfig, user_id: str) -> ExplainError:
    # No "did you mean": the nearest ids are other people's ids (or, in privacy mode, their pseudonyms).
    hint = (f" (privacy mode: check the id, and that {cfg.privacy.key_env} holds the key clean used)"
            if cfg.privacy.pseudonymise else " (check the id as it appears in the source data)")
    return ExplainError(f"unknown user {user_id!r}: in neither gold/id_map nor gold/recommendations{hint}")


def item_details(spark: SparkSession, cfg: AppConfig, item_ids: list[str]) -> dict[str, dict[str, Any]]:
    """``item_id -> {name, category, price}`` for the offered items, from ``gold/item_features`` (only the columns
    it has; a filter on the ids, so only the files that can hold them are read)."""
    items = _read(spark, cfg, T.ITEM_FEATURES)
    if items is None or not item_ids:
        return {}
    cols = [c for c in ITEM_DETAILS if c in items.columns]
    rows = items.where(F.col(C.ITEM_ID).isin(*item_ids)).select(C.ITEM_ID, *cols).limit(MAX_OFFERS).collect()
    return {r[C.ITEM_ID]: {c: r[c] for c in cols} for r in rows}


def bought_before(spark: SparkSession, cfg: AppConfig, stored: str, item_ids: list[str]) -> set[str]:
    """The offered items the user has already bought (or rated): ``silver/events`` filtered on the user and the
    items, so Delta's data skipping reads only files whose id ranges can hold them."""
    events = _read(spark, cfg, T.SILVER_EVENTS)
    if events is None or not item_ids:
        return set()
    rows = (events.where((F.col(C.USER_ID) == F.lit(stored)) & F.col(C.ITEM_ID).isin(*item_ids)
                         & F.col(C.EVENT_TYPE).isin(*C.CONSUMED_EVENT_TYPES))
            .select(C.ITEM_ID).distinct().limit(MAX_OFFERS).collect())
    return {r[0] for r in rows}


# ----------------------------------------------------------------------------------------------------------------
# Contributions
# ----------------------------------------------------------------------------------------------------------------
def _cosine(a: Column, b: Column) -> Column:
    dot = F.aggregate(F.zip_with(a, b, lambda x, y: x * y), F.lit(0.0), lambda acc, x: acc + x)
    norm_a = F.sqrt(F.aggregate(a, F.lit(0.0), lambda acc, x: acc + x * x))
    norm_b = F.sqrt(F.aggregate(b, F.lit(0.0), lambda acc, x: acc + x * x))
    return dot / F.greatest(norm_a * norm_b, F.lit(1e-12))


def contributions(model: ALSModel, id_map: DataFrame, history: DataFrame, offered: DataFrame, top_n: int
                  ) -> DataFrame:
    """For each offered ``item_id`` (``offered``: one column), the ``top_n`` past items of the user
    (``history``: ``item_id, confidence``) with the highest cosine similarity of ALS item factors, the offered item
    itself excluded: ``(target, item_id, similarity, confidence, position)`` with position 1 = strongest."""
    items = id_map.where(F.col(C.ID_KIND) == "item").select(F.col(C.ORIGINAL_ID).alias(C.ITEM_ID),
                                                            F.col(C.IDX).alias("_idx"))
    factors = model.itemFactors.select(F.col("id").alias("_idx"), F.col("features").alias("_vec"))
    vec = items.join(factors, "_idx").select(C.ITEM_ID, "_vec")
    targets = offered.select(F.col(offered.columns[0]).alias("target")).distinct().join(
        vec.withColumnRenamed(C.ITEM_ID, "target").withColumnRenamed("_vec", "_tvec"), "target")
    past = history.join(vec, C.ITEM_ID)
    w = Window.partitionBy("target").orderBy(F.desc("similarity"), F.desc(C.CONFIDENCE), F.asc(C.ITEM_ID))
    return (targets.crossJoin(past).where(F.col(C.ITEM_ID) != F.col("target"))
            .select("target", C.ITEM_ID, _cosine(F.col("_vec"), F.col("_tvec")).alias("similarity"), C.CONFIDENCE)
            .withColumn("position", F.row_number().over(w)).where(F.col("position") <= top_n))


def _load_model(spark: SparkSession, cfg: AppConfig, model_run_id: str | None) -> ALSModel | None:
    """The ALS model of ``model_run_id`` from the registry; else the registered champion (if it is ALS)."""
    if model_run_id:
        try:
            return ALSModel.load(join_uri(cfg.lakehouse, "registry", model_run_id, "model"))
        except Exception as e:  # noqa: BLE001 - a missing or unreadable model only loses the explanation
            log.warning("cannot load the model of run %s (%s); trying the registered champion", model_run_id,
                        str(e).splitlines()[0] if str(e) else type(e).__name__)
    _, model, _ = R.load_champion(spark, cfg)
    return model


def _user_idx(id_map: DataFrame | None, stored: str) -> int | None:
    if id_map is None:
        return None
    row = (id_map.where((F.col(C.ID_KIND) == "user") & (F.col(C.ORIGINAL_ID) == F.lit(stored)))
           .select(C.IDX).limit(1).collect())
    return int(row[0][0]) if row else None


def _user_history(spark: SparkSession, cfg: AppConfig, id_map: DataFrame, user_idx: int) -> DataFrame | None:
    """``(item_id, confidence)`` of the user's past interactions (gold), keyed by original item id."""
    inter = _read(spark, cfg, T.INTERACTIONS)
    if inter is None:
        return None
    items = id_map.where(F.col(C.ID_KIND) == "item").select(F.col(C.ORIGINAL_ID).alias(C.ITEM_ID),
                                                            F.col(C.IDX).alias(C.ITEM_IDX))
    return (inter.where(F.col(C.USER_IDX) == F.lit(user_idx)).join(items, C.ITEM_IDX)
            .groupBy(C.ITEM_ID).agg(F.max(C.CONFIDENCE).alias(C.CONFIDENCE)))


# ----------------------------------------------------------------------------------------------------------------
# Entry point
# ----------------------------------------------------------------------------------------------------------------
def explain_user(spark: SparkSession, cfg: AppConfig, user_id: str, campaign: str | None = None,
                 top_n: int = DEFAULT_TOP_N) -> list[dict[str, Any]]:
    """The user's offers on the latest run date of ``gold/recommendations`` (optionally one ``campaign``), by
    campaign then rank. Each dict: ``campaign``, ``run_date``, ``rank``, ``item_id``, ``score``, ``source``,
    ``offer`` (discount_pct, coupon_code, campaign_name, text), ``item`` (name, category, price where
    ``gold/item_features`` has them), ``repeat_purchase`` (the user bought the item before), ``is_control``,
    ``delivered``, ``reason``, ``model_run_id`` and
    ``contributions``: for ALS offers, up to ``top_n`` of the user's past items ``{item_id, similarity,
    confidence}``, most similar first (empty for popularity, segment and bundle offers).

    A known user without offers on that date gets ``[]``. Raises :class:`ExplainError` for an unknown user (never
    naming other users), an unknown campaign, or a missing recommendations table.
    """
    recs_all = _read(spark, cfg, T.RECOMMENDATIONS)
    if recs_all is None:
        raise ExplainError(f"no recommendations table at {R.table_uri(cfg)}: run `sparkpromo recommend` first")
    recs = recs_all
    if campaign is not None:
        recs = recs.where(F.col(C.CAMPAIGN_ID) == F.lit(campaign))
    latest = recs.agg(F.max(C.RUN_DATE)).first()[0]
    if latest is None:
        if campaign is None:
            raise ExplainError(f"the recommendations table at {R.table_uri(cfg)} is empty")
        if campaign in {c.id for c in cfg.campaigns}:
            raise ExplainError(f"campaign {campaign!r} is configured but has no offers in {R.table_uri(cfg)} yet "
                               "(run `sparkpromo recommend`)")
        known = sorted(r[0] for r in recs_all.select(C.CAMPAIGN_ID).distinct().limit(MAX_OFFERS).collect())
        near = difflib.get_close_matches(campaign, known, n=SUGGESTIONS, cutoff=0.5)
        raise ExplainError(f"unknown campaign {campaign!r}; "
                           + (f"nearest: {', '.join(near)}" if near else f"known: {', '.join(known[:20]) or 'none'}"))

    stored = stored_user_id(cfg, user_id)
    rows = (recs.where((F.col(C.RUN_DATE) == F.lit(latest)) & (F.col(C.USER_ID) == F.lit(stored)))
            .select(C.CAMPAIGN_ID, C.RUN_DATE, C.RANK, C.ITEM_ID, C.SCORE, C.SOURCE, C.OFFER, C.IS_CONTROL,
                    C.DELIVERED, C.REASON, C.MODEL_RUN_ID)
            .orderBy(C.CAMPAIGN_ID, C.RANK).limit(MAX_OFFERS).collect())
    id_map = _read(spark, cfg, T.ID_MAP)
    if not rows:
        known = (_user_idx(id_map, stored) is not None
                 or bool(recs_all.where(F.col(C.USER_ID) == F.lit(stored)).limit(1).count()))
        if not known:
            raise _unknown_user(cfg, user_id)
        log.info("user %s has no offers on %s%s", user_id, latest, f" in campaign {campaign}" if campaign else "")
        return []

    offers = [{"campaign": r[C.CAMPAIGN_ID], "run_date": r[C.RUN_DATE].isoformat(), "rank": r[C.RANK],
               "item_id": r[C.ITEM_ID], "score": r[C.SCORE], "source": r[C.SOURCE],
               "offer": r[C.OFFER].asDict() if r[C.OFFER] is not None else None, "is_control": r[C.IS_CONTROL],
               "delivered": r[C.DELIVERED], "reason": list(r[C.REASON] or []), "model_run_id": r[C.MODEL_RUN_ID],
               "contributions": []} for r in rows]
    offered = sorted({o["item_id"] for o in offers})
    details, repeats = item_details(spark, cfg, offered), bought_before(spark, cfg, stored, offered)
    for o in offers:
        o["item"] = details.get(o["item_id"], {})
        o["repeat_purchase"] = o["item_id"] in repeats
    als = [o for o in offers if o["source"] == R.ALS]
    if not als or top_n <= 0:
        return offers
    user_idx = _user_idx(id_map, stored)
    history = None if id_map is None or user_idx is None else _user_history(spark, cfg, id_map, user_idx)
    by_model: dict[str | None, list[dict[str, Any]]] = {}
    for o in als:
        by_model.setdefault(o["model_run_id"], []).append(o)
    for model_run_id, group in by_model.items():
        model = _load_model(spark, cfg, model_run_id)
        if model is None or history is None or id_map is None:
            log.warning("no ALS model or no interactions to explain the offers of model run %s", model_run_id)
            continue
        offered = local_rows(spark, [(o["item_id"],) for o in group], "item_id string")
        found: dict[str, list[dict[str, Any]]] = {}
        for c in contributions(model, id_map, history, offered, top_n).orderBy("target", "position").collect():
            found.setdefault(c["target"], []).append({"item_id": c[C.ITEM_ID], "similarity": float(c["similarity"]),
                                                      "confidence": float(c[C.CONFIDENCE])})
        for o in group:
            o["contributions"] = found.get(o["item_id"], [])
    return offers


def format_offers(user_id: str, offers: list[dict[str, Any]]) -> list[str]:
    """Human-readable lines for the CLI: one per offer, then one per contributing past item."""
    if not offers:
        return [f"user {user_id}: no offers on the latest run date"]
    lines = [f"user {user_id}: {len(offers)} offer(s) on {offers[0]['run_date']}"]
    for o in offers:
        offer = o["offer"] or {}
        discount = f" -{offer['discount_pct']:g}%" if offer.get("discount_pct") else ""
        coupon = f" coupon {offer['coupon_code']}" if offer.get("coupon_code") else ""
        control = " [control group: not sent]" if o["is_control"] else ""
        score = "n/a" if o["score"] is None else f"{o['score']:.3f}"
        item = o.get("item") or {}
        about = ", ".join(str(x) for x in (item.get(C.CATEGORY),
                                           None if item.get(C.PRICE) is None else f"{item[C.PRICE]:.2f}")
                          if x is not None)
        name = f" {item[C.ITEM_NAME]!r}" if item.get(C.ITEM_NAME) else ""
        repeat = " [bought before]" if o.get("repeat_purchase") else ""
        lines.append(f"{o['campaign']} #{o['rank']}: {o['item_id']}{name}{f' ({about})' if about else ''}"
                     f" source {o['source']}, score {score}{discount}{coupon}{repeat}{control}")
        if offer.get("text"):
            lines.append(f"    offer: {offer['text']}")
        for c in o["contributions"]:
            lines.append(f"    because of {c['item_id']}: similarity {c['similarity']:.3f}, "
                         f"past weight {c['confidence']:g}")
        if not o["contributions"] and o["reason"]:
            lines.append(f"    reason: {'; '.join(o['reason'])}")
    return lines
