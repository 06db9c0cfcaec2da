"""The features stage: :func:`run_features`, the only place that reads and writes tables."""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
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
from sparkpromo.features.incremental import (
    CDF_TYPES,
    PAIR,
    Dates,
    carried_interactions,
    carried_items,
    carried_users,
    clamped_events,
    keys_of,
    moved_events,
)
from sparkpromo.features.items import item_features
from sparkpromo.features.users import CART_LOOKBACK_DAYS, user_features
from sparkpromo.frame import broadcast_if_small, local_rows
from sparkpromo.parallel import run_all

log = logging.getLogger(__name__)

SILVER = (T.SILVER_EVENTS, T.SILVER_USERS, T.SILVER_ITEMS)
GOLD = (T.USER_FEATURES, T.ITEM_FEATURES, T.INTERACTIONS, T.ID_MAP)


def _read_optional(spark: SparkSession, uri: str) -> DataFrame | None:
    return delta_io.read(spark, uri) if delta_io.is_delta(spark, uri) else None


def _rows_written(spark: SparkSession, uri: str) -> int:
    """Rows written by the table's latest commit, from the Delta log (no data scan)."""
    return int(delta_io.last_commit_metrics(spark, uri).get("numOutputRows", 0))


@dataclass(frozen=True)
class Previous:
    """What the last successful features run read and left: its dates and its tables' versions."""
    dates: Dates
    versions: dict[str, int | None]


def incremental_base(spark: SparkSession, cfg: AppConfig, now: Dates) -> tuple[Previous | None, str]:
    """The last run this one can build on, or None and why it cannot (then it rebuilds gold from silver)."""
    # Imported here: the pipeline imports this module (its stage runner records what each run depended on).
    from sparkpromo.pipeline import record_to_build_on

    last, why = record_to_build_on(spark, cfg, "features")
    if last is None:
        return None, why
    try:
        before = Dates(dt.date.fromisoformat(last["result"]["as_of"]),
                       dt.date.fromisoformat(last["result"]["decay_from"]), now.lookback_days)
    except (KeyError, TypeError, ValueError):
        return None, "the last run recorded no dates"
    if now.as_of < before.as_of or now.ref < before.ref:
        return None, f"the run date {now.as_of} is before the last run's ({before.as_of})"
    versions: dict[str, int | None] = {}
    for table in GOLD:
        v = delta_io.version(spark, table.uri(cfg))
        if v is None or v != last["io"].get(table.key):
            return None, f"{table.key} changed since the last features run (forget, or a run that failed part-way)"
    for table in SILVER:
        start, end = last["io"].get(table.key), delta_io.version(spark, table.uri(cfg))
        if (start is None) != (end is None) or (end is not None and end < start):
            return None, f"{table.key} was created, dropped or rolled back since the last features run"
        if start is not None and end is not None and end > start \
                and not delta_io.row_changes_only(spark, table.uri(cfg), start, end):
            return None, f"{table.key} was rewritten since the last features run (or records no change feed)"
        versions[table.key] = start
    return Previous(before, versions), ""


def _changed(spark: SparkSession, cfg: AppConfig, prev: Previous, table: T.Table, cols: list[str]
             ) -> DataFrame | None:
    """``cols`` of the rows of silver ``table`` that changed since ``prev`` (as they were and as they are)."""
    start, end = prev.versions.get(table.key), delta_io.version(spark, table.uri(cfg))
    if start is None or end is None or end == start:
        return None
    return (delta_io.changes(spark, table.uri(cfg), start, end)
            .where(F.col("_change_type").isin(*CDF_TYPES)).select(*cols))


def run_features(spark: SparkSession, cfg: AppConfig, run_id: str, as_of: dt.date | None = None,
                 full_refresh: bool = False) -> dict[str, Any]:
    """Read silver, write gold/{user_features,item_features,interactions} and append new ids to gold/id_map.
    ``as_of`` defaults to the latest silver event date (reproducible reruns). Only the events of the
    ``features.lookback_days`` window ending at the decay reference are read (see the module docstring for which
    features that bounds).

    When the last features run recorded by the pipeline can be built on (:func:`incremental_base`: same settings
    and package version, gold untouched since, silver changed only row by row), only the users, items and pairs
    whose rows can differ are computed again (:mod:`sparkpromo.features.incremental`); ``full_refresh``, or any
    other case, rebuilds gold from silver. Returns counts (``recomputed_*``: the pairs, users and items computed
    again, every row in a rebuild), ``mode`` and ``full_reason`` (None when incremental)."""
    counts: dict[str, Any] = {"run_id": run_id}
    events_uri = T.SILVER_EVENTS.uri(cfg)
    if not delta_io.is_delta(spark, events_uri):
        raise FeatureError(f"no silver events table at {events_uri} (run clean first)")
    all_events = delta_io.read(spark, events_uri)
    users = _read_optional(spark, T.SILVER_USERS.uri(cfg))
    items = _read_optional(spark, T.SILVER_ITEMS.uri(cfg))
    last = all_events.agg(F.max(C.EVENT_DATE)).first()
    last_date: dt.date | None = last[0] if last else None
    if as_of is None:
        as_of = last_date or dt.datetime.now(dt.UTC).date()
    decay_from = decay_reference(as_of, last_date)
    counts.update(as_of=as_of.isoformat(), decay_from=decay_from.isoformat())
    if decay_from < as_of:
        log.info("the data ends %d day(s) before the run date: interactions decay from its last event, %s",
                 (as_of - decay_from).days, decay_from)
    f = cfg.features
    now = Dates(as_of, decay_from, f.lookback_days)
    events = all_events.transform(within_lookback(decay_from, f.lookback_days))
    if f.lookback_days:
        log.info("features from the events of %s to %s (features.lookback_days=%d)",
                 decay_from - dt.timedelta(days=f.lookback_days - 1), as_of, f.lookback_days)
    prev, why = (None, "--full-refresh") if full_refresh else incremental_base(spark, cfg, now)
    to_interactions = interactions(as_of, cfg.sources.kind, f.event_weights, f.half_life_days,
                                   f.max_count_per_type, decay_from, f.min_rating)
    consent = cfg.privacy.consent_default() is True
    cached: list[DataFrame] = []

    def keep(df: DataFrame) -> DataFrame:
        cached.append(df.persist())
        return cached[-1]

    try:
        if prev is None:
            log.info("features rebuild gold from silver: %s", why)
            counts.update(mode="full", full_reason=why)
            raw = keep(events.transform(to_interactions))
            user_ids = raw.select(C.USER_ID) if users is None else \
                raw.select(C.USER_ID).unionByName(users.select(C.USER_ID))
            user_rows = user_features(events, users, items, as_of, f.session_gap_minutes,
                                      consent_without_users=consent)
            item_rows = item_features(events, items, as_of, f.price_bands)
            old_interactions = None
        else:
            counts.update(mode="incremental", full_reason=None)
            changed_events = _changed(spark, cfg, prev, T.SILVER_EVENTS, [C.USER_ID, C.ITEM_ID])
            changed_users = _changed(spark, cfg, prev, T.SILVER_USERS, [C.USER_ID])
            changed_items = _changed(spark, cfg, prev, T.SILVER_ITEMS, [C.ITEM_ID])
            moved = all_events.transform(moved_events(prev.dates, now, CART_LOOKBACK_DAYS))
            window_moved = moved.where(F.col("_pair"))
            pair_sources = [window_moved] + ([changed_events] if changed_events is not None else [])
            if cfg.sources.kind == "events":
                pair_sources.append(events.transform(clamped_events(now, f.half_life_days)))
            pairs = keep(keys_of(pair_sources, PAIR))
            user_sources = [moved, *(df for df in (changed_events, changed_users) if df is not None)]
            if changed_items is not None:
                user_sources.append(events.join(changed_items, C.ITEM_ID, "left_semi"))
            user_keys = keep(keys_of(user_sources, [C.USER_ID]))
            item_keys = keep(keys_of([window_moved, *(df for df in (changed_events, changed_items)
                                                      if df is not None)], [C.ITEM_ID]))
            counts.update(zip(("recomputed_pairs", "recomputed_users", "recomputed_items"),
                              run_all(spark, [pairs.count, user_keys.count, item_keys.count]), strict=True))
            # A day's keys are few: every task gets them all, so the window's events are never shuffled to meet them.
            pairs, user_keys, item_keys = (broadcast_if_small(df, counts[k]) for df, k in (
                (pairs, "recomputed_pairs"), (user_keys, "recomputed_users"), (item_keys, "recomputed_items")))
            raw = keep(events.join(pairs, list(PAIR), "left_semi").transform(to_interactions))
            user_ids = raw.select(C.USER_ID)
            if changed_users is not None:
                user_ids = user_ids.unionByName(changed_users)
            in_users = (lambda df: df.join(user_keys, C.USER_ID, "left_semi"))  # noqa: E731
            in_items = (lambda df: df.join(item_keys, C.ITEM_ID, "left_semi"))  # noqa: E731
            days = (as_of - prev.dates.as_of).days
            old = {t.key: delta_io.read(spark, t.uri(cfg), version=delta_io.version(spark, t.uri(cfg)))
                   for t in (T.USER_FEATURES, T.ITEM_FEATURES, T.INTERACTIONS)}
            user_rows = (old[T.USER_FEATURES.key].transform(carried_users(user_keys, days))
                         .unionByName(user_features(in_users(events), None if users is None else in_users(users),
                                                    items, as_of, f.session_gap_minutes,
                                                    consent_without_users=consent)))
            item_rows = (old[T.ITEM_FEATURES.key].transform(carried_items(item_keys))
                         .unionByName(item_features(in_items(events), None if items is None else in_items(items),
                                                    as_of, f.price_bands)))
            factor = (2.0 ** (-(decay_from - prev.dates.ref).days / f.half_life_days)
                      if cfg.sources.kind == "events" else 1.0)
            old_interactions = (old[T.INTERACTIONS.key], pairs, factor)
        new_users, new_items = _extend_id_map(spark, cfg, user_ids, raw.select(C.ITEM_ID))
        map_uri = T.ID_MAP.uri(cfg)
        map_version = delta_io.version(spark, map_uri)
        id_map = (delta_io.read(spark, map_uri, version=map_version) if map_version is not None
                  else local_rows(spark, [], schemas.ID_MAP))

        # Checked before the first gold write: a failed check leaves every gold table as the last run left it.
        indexed = keep(index_interactions(raw, id_map))
        n_inter, raw_count = indexed.count(), raw.count()
        if n_inter != raw_count:
            raise FeatureError(f"id map is missing ids: {raw_count - n_inter} interaction(s) unmapped "
                               "(a concurrent features run?); nothing was written to gold; rerun features")
        if old_interactions is not None:
            gold, pairs, factor = old_interactions
            indexed = gold.transform(carried_interactions(pairs, id_map, factor)).unionByName(indexed)
        # Three independent tables, written side by side.
        run_all(spark, [lambda df=df, t=t: delta_io.overwrite(df, t.uri(cfg), name=t.key) for df, t in (
            (indexed, T.INTERACTIONS), (user_rows, T.USER_FEATURES), (item_rows, T.ITEM_FEATURES))], "sparkpromo-gold")
    finally:
        for df in reversed(cached):
            df.unpersist()
    written = run_all(spark, [lambda t=t: _rows_written(spark, t.uri(cfg))
                              for t in (T.INTERACTIONS, T.USER_FEATURES, T.ITEM_FEATURES)])
    counts.update(
        interactions=written[0],
        users=written[1],
        items=written[2],
        new_user_ids=new_users,
        new_item_ids=new_items,
    )
    if counts["mode"] == "full":  # the same keys either way: a rebuild computes every row again
        counts.update(recomputed_pairs=counts["interactions"], recomputed_users=counts["users"],
                      recomputed_items=counts["items"])
    return counts


def _extend_id_map(spark: SparkSession, cfg: AppConfig, user_ids: DataFrame, item_ids: DataFrame
                   ) -> tuple[int, int]:
    """Append the ids not mapped yet; returns how many users and items were new.

    New rows are computed against one pinned version of the map; the append carries that version as its
    txnVersion, so a retried or concurrent run that read the same version cannot append twice, and a rerun after a
    crash finds nothing new to append."""
    map_uri = T.ID_MAP.uri(cfg)
    map_version = delta_io.version(spark, map_uri)
    existing = (delta_io.read(spark, map_uri, version=map_version) if map_version is not None
                else local_rows(spark, [], schemas.ID_MAP))
    new_rows = (extend_id_map(existing, user_ids, USER_KIND)
                .unionByName(extend_id_map(existing, item_ids, ITEM_KIND))).persist()
    try:
        new_counts = {r[0]: int(r[1]) for r in new_rows.groupBy(C.ID_KIND).count().collect()}  # <= 2 rows
        new_users, new_items = new_counts.get(USER_KIND, 0), new_counts.get(ITEM_KIND, 0)
        if new_users or new_items:
            delta_io.append(new_rows, map_uri, app_id=ID_MAP_APP_ID,
                            txn_version=(map_version if map_version is not None else -1) + 1, name=T.ID_MAP.key)
    finally:
        new_rows.unpersist()
    return new_users, new_items


__all__ = [
    "run_features", "incremental_base", "Previous",
]
