"""The features stage: :func:`run_features`, the only place that reads and writes tables."""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from sparkpromo import columns as C
from sparkpromo import delta_io, schemas
from sparkpromo import tables as T
from sparkpromo.config import AppConfig
from sparkpromo.features.common import FeatureError
from sparkpromo.features.confidence import decay_reference, interactions, within_lookback
from sparkpromo.features.id_map import ID_MAP_APP_ID, ITEM_KIND, USER_KIND, extend_id_map, index_interactions
from sparkpromo.features.items import item_features
from sparkpromo.features.users import user_features

log = logging.getLogger(__name__)


def _read_optional(spark: SparkSession, uri: str) -> DataFrame | None:
    return delta_io.read(spark, uri) if delta_io.is_delta(spark, uri) else None


def _rows_written(spark: SparkSession, uri: str) -> int:
    """Rows written by the table's latest commit, from the Delta log (no data scan)."""
    from delta.tables import DeltaTable

    row = DeltaTable.forPath(spark, uri).history(1).select("operationMetrics").first()
    metrics = (row[0] or {}) if row else {}
    return int(metrics.get("numOutputRows", 0))


def run_features(spark: SparkSession, cfg: AppConfig, run_id: str, as_of: dt.date | None = None) -> dict[str, Any]:
    """Read silver, write gold/{user_features,item_features,interactions} (overwrite) and append new ids to
    gold/id_map. ``as_of`` defaults to the latest silver event date (reproducible reruns). Only the events of the
    ``features.lookback_days`` window ending at the decay reference are read (see the module docstring for which
    features that bounds). Returns counts."""
    # run_stage logs the stage's start and end; a second pair here was noise.
    with contextlib.nullcontext({"run_id": run_id}) as counts:
        events_uri = T.SILVER_EVENTS.uri(cfg)
        if not delta_io.is_delta(spark, events_uri):
            raise FeatureError(f"no silver events table at {events_uri} (run clean first)")
        events = delta_io.read(spark, events_uri)
        users = _read_optional(spark, T.SILVER_USERS.uri(cfg))
        items = _read_optional(spark, T.SILVER_ITEMS.uri(cfg))
        last = events.agg(F.max(C.EVENT_DATE)).first()
        last_date: dt.date | None = last[0] if last else None
        if as_of is None:
            as_of = last_date or dt.datetime.now(dt.UTC).date()
        decay_from = decay_reference(as_of, last_date)
        counts.update(as_of=as_of.isoformat(), decay_from=decay_from.isoformat())
        if decay_from < as_of:
            log.info("the data ends %d day(s) before the run date: interactions decay from its last event, %s",
                     (as_of - decay_from).days, decay_from)
        f = cfg.features
        events = events.transform(within_lookback(decay_from, f.lookback_days))
        if f.lookback_days:
            log.info("features from the events of %s to %s (features.lookback_days=%d)",
                     decay_from - dt.timedelta(days=f.lookback_days - 1), as_of, f.lookback_days)
        raw = events.transform(interactions(as_of, cfg.sources.kind, f.event_weights, f.half_life_days,
                                            f.max_count_per_type, decay_from, f.min_rating)).persist()

        # Id map: new rows are computed against one pinned version of the map; the append carries that version
        # as its txnVersion, so a retried or concurrent run that read the same version cannot append twice, and a
        # rerun after a crash finds nothing new to append.
        map_uri = T.ID_MAP.uri(cfg)
        map_version = delta_io.version(spark, map_uri)
        existing = (delta_io.read(spark, map_uri, version=map_version) if map_version is not None
                    else spark.createDataFrame([], schemas.ID_MAP))
        user_ids = raw.select(C.USER_ID)
        if users is not None:
            user_ids = user_ids.unionByName(users.select(C.USER_ID))
        new_rows = (extend_id_map(existing, user_ids, USER_KIND)
                    .unionByName(extend_id_map(existing, raw.select(C.ITEM_ID), ITEM_KIND))).persist()
        new_counts = {r[0]: int(r[1]) for r in new_rows.groupBy(C.ID_KIND).count().collect()}  # <= 2 rows
        new_users, new_items = new_counts.get(USER_KIND, 0), new_counts.get(ITEM_KIND, 0)
        if new_users or new_items:
            delta_io.append(new_rows, map_uri, app_id=ID_MAP_APP_ID,
                            txn_version=(map_version if map_version is not None else -1) + 1, name=T.ID_MAP.key)
        new_rows.unpersist()
        id_map = delta_io.read(spark, map_uri) if delta_io.is_delta(spark, map_uri) else existing

        # Checked before the first gold write: a failed check leaves every gold table as the last run left it.
        indexed = index_interactions(raw, id_map).persist()
        n_inter, raw_count = indexed.count(), raw.count()
        if n_inter != raw_count:
            raise FeatureError(f"id map is missing ids: {raw_count - n_inter} interaction(s) unmapped "
                               "(a concurrent features run?); nothing was written to gold; rerun features")
        delta_io.overwrite(indexed, T.INTERACTIONS.uri(cfg), name=T.INTERACTIONS.key)
        indexed.unpersist()
        raw.unpersist()
        delta_io.overwrite(user_features(events, users, items, as_of, f.session_gap_minutes,
                                   consent_without_users=cfg.privacy.consent_default() is True),
                           T.USER_FEATURES.uri(cfg), name=T.USER_FEATURES.key)
        delta_io.overwrite(item_features(events, items, as_of, f.price_bands),
                           T.ITEM_FEATURES.uri(cfg), name=T.ITEM_FEATURES.key)
        counts.update(
            interactions=n_inter,
            users=_rows_written(spark, T.USER_FEATURES.uri(cfg)),
            items=_rows_written(spark, T.ITEM_FEATURES.uri(cfg)),
            new_user_ids=new_users,
            new_item_ids=new_items,
        )
    return counts


__all__ = [
    "run_features",
]
