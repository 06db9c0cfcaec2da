"""A full clean: silver and quarantine rebuilt from the whole bronze snapshot, one overwrite per table."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import cast

from pyspark import StorageLevel
from pyspark.sql import DataFrame, Row, SparkSession
from pyspark.sql import functions as F

from sparkpromo import columns as C
from sparkpromo import delta_io, schemas
from sparkpromo import tables as T
from sparkpromo.clean.checks import balance, check_reject_shares
from sparkpromo.clean.dimensions import classify_items, classify_users, silver_items, silver_users, users_consent
from sparkpromo.clean.events import (
    bot_candidates,
    bot_threshold,
    judged_events,
    keyed_events,
    repeated_events,
    silver_events,
    sums_quantity,
)
from sparkpromo.clean.rules import (
    COPIES,
    DIMENSION_KEYS,
    DUP,
    EXAMPLE,
    accepted,
    canonicalise,
    duplicate_keys,
    mark_duplicates,
    personal_columns,
    quarantine_rows,
)
from sparkpromo.config import AppConfig
from sparkpromo.frame import local_rows
from sparkpromo.ingest import CORRUPT
from sparkpromo.parallel import submit

log = logging.getLogger(__name__)

__all__ = ["full_clean"]

def _materialised(df: DataFrame) -> DataFrame:
    """Cache and compute a frame, so that joins against it are planned with its real size: Spark broadcasts it
    when it is small (the usual case for duplicate keys, bots and id sets) and shuffles it otherwise."""
    df = df.cache()
    df.count()
    return df


def full_clean(spark: SparkSession, cfg: AppConfig, run_id: str, now: dt.datetime,
               versions: Mapping[str, int | None]) -> dict[str, int]:
    """Clean every bronze table (at ``versions``) into silver and quarantine; store and return the per-rule counts.

    The bulk of the rows streams from bronze to silver (or quarantine) without a shuffle: only small side frames
    (duplicate keys, known ids, bot users) are computed first, cached and joined by broadcast. The outcome counts
    are checked against bronze before the first write, so a row can't vanish unnoticed.

    The side frames are independent small jobs, computed concurrently from driver threads so that one's scheduling,
    Delta log reads and small tasks overlap another's. Nothing is written until every side frame has been
    computed, so a failure there leaves every table as it was.
    """
    from sparkpromo.forget import forgotten_set, without_forgotten
    from sparkpromo.privacy import pseudonymise_users

    silver: dict[str, DataFrame] = {}
    quarantine: list[DataFrame] = []
    bronze_rows: dict[str, int] = {}  # rows of the bronze snapshot each source was read at
    duplicates: dict[str, int] = {}
    cached: list[DataFrame] = []

    def small(df: DataFrame) -> DataFrame:
        cached.append(_materialised(df))
        return cached[-1]

    forgotten = forgotten_set(spark, cfg)

    def bronze(source: str) -> DataFrame | None:
        uri = T.BRONZE[source].uri(cfg)
        version = versions.get(source)
        if version is None:
            return None
        # Every read of this run sees the same snapshot, whatever ingest does meanwhile.
        df = delta_io.read(spark, uri, version=version)
        src = getattr(cfg.sources, source)
        if source in ("events", "users") and src is not None:
            # Rows of forgotten users that reached bronze anyway (an ingest racing `forget`) never reach silver.
            df = df.transform(without_forgotten(forgotten, src.columns.get(C.USER_ID, C.USER_ID), CORRUPT))
        return df

    def dimension(source: str) -> tuple[DataFrame, DataFrame, DataFrame] | None:
        """Users or items (dimension-sized): one cached, fully marked frame feeds silver, quarantine, the known
        ids and the counts, so their bronze is read once. Returns the silver rows, the quarantined rows and the
        known ids (cached)."""
        src = getattr(cfg.sources, source)
        raw = bronze(source) if src is not None else None
        if raw is None:
            return None
        key, max_len = DIMENSION_KEYS[source], cfg.clean.max_string_length
        classify, to_silver = ((classify_users(max_len, src.exclude),
                                silver_users(now.date(), users_consent(cfg, raw.columns)))
                               if source == "users" else (classify_items(max_len, src.exclude), silver_items))
        bronze_rows[source] = raw.count()  # Delta answers a bare count from the snapshot's file statistics
        df = small(raw.transform(canonicalise(source, src)).transform(mark_duplicates(key, True)).transform(classify))
        duplicates[source] = df.where(F.col(DUP)).count()
        known_ids = small(accepted(df).select(key))  # before pseudonymisation: bronze events carry raw ids
        return (df.transform(to_silver), df.transform(quarantine_rows(source, run_id, personal_columns(cfg, source))),
                known_ids)

    raw = bronze("events")
    if raw is None:
        raise FileNotFoundError(f"bronze events table not found at {T.BRONZE_EVENTS.uri(cfg)}: "
                                "run `sparkpromo ingest` first")
    try:
        with ThreadPoolExecutor(max_workers=3, thread_name_prefix="sparkpromo-clean") as pool:
            dims = {source: submit(pool, spark, dimension, source) for source in DIMENSION_KEYS}
            events_rows = submit(pool, spark, raw.count)
            keyed = raw.transform(keyed_events(cfg))
            bot_limit = bot_threshold(cfg)
            suspects_job = (submit(pool, spark, small, keyed.transform(bot_candidates(bot_limit, cfg.sources.events)))
                            if bot_limit else None)
            keys = small(keyed.transform(duplicate_keys(C.EVENT_ID)))
            dropped = submit(pool, spark, lambda: int(keys.agg(F.sum(F.col(COPIES) - 1)).first()[0] or 0))
            # Only the few rows with a repeated key are ranked (before the row-wise rules) and cached, so every
            # later pass streams bronze once.
            repeated = small(raw.transform(repeated_events(cfg, now, keys, sums_quantity(cfg, raw))))
            dim_frames = {source: job.result() for source, job in dims.items()}
            suspects = suspects_job.result() if suspects_job is not None else None
            bronze_rows["events"], duplicates["events"] = events_rows.result(), dropped.result()

        known: dict[str, DataFrame] = {}
        for source, dim in dim_frames.items():
            if dim is not None:
                silver[source], rejected, known[DIMENSION_KEYS[source]] = dim
                quarantine.append(rejected)
        ev = keyed.transform(judged_events(cfg, now, keys, repeated, known.get(C.USER_ID), known.get(C.ITEM_ID),
                                           bot_limit, suspects, small))
        silver["events"] = silver_events(ev)
        quarantine.append(ev.transform(quarantine_rows("events", run_id, personal_columns(cfg, "events"))))
        q = quarantine[0]
        for other in quarantine[1:]:
            q = q.unionByName(other)
        # Computed once, before any write: the reject-share check reads it, and the quarantine write reuses it.
        q = q.persist(StorageLevel.MEMORY_AND_DISK)
        cached.append(q)
        check_reject_shares(q, bronze_rows, cfg.clean.max_reject_share)
        # The balance is checked before the first write too, on counts of the frames about to be written: silver
        # events costs one more pass over bronze, the price of never replacing a table with rows that don't add up.
        per_rule = cast(list[Row], q.groupBy(C.Q_SOURCE, C.Q_RULE).count().collect())
        with ThreadPoolExecutor(max_workers=len(silver), thread_name_prefix="sparkpromo-counts") as pool:
            jobs = {name: submit(pool, spark, df.count) for name, df in silver.items()}
            silver_rows = {name: job.result() for name, job in jobs.items()}
        results, dq_rows = balance(run_id, bronze_rows, duplicates, silver_rows, per_rule)

        if cfg.privacy.pseudonymise:
            silver = pseudonymise_users(silver, cfg.privacy.key_env)

        # One table after another, in a fixed order: two cleans racing on one lakehouse then conflict on the same
        # table first, and one of them wins every table.
        for name in (*DIMENSION_KEYS, "events"):
            if name in silver:
                table = T.SILVER[name]
                uri = table.uri(cfg)
                delta_io.overwrite(silver[name], uri, name=table.key,
                                   constraints=delta_io.constraint_checks(table.checks, table.not_null),
                                   properties=table.properties or None)
                # a table from before these constraints
                delta_io.add_constraints(spark, uri, table.checks, table.not_null)
        delta_io.overwrite(q.drop(EXAMPLE), T.QUARANTINE.uri(cfg), partition_by=T.QUARANTINE.partition_by,
                           name="quarantine")
        dq = local_rows(spark, dq_rows, schemas.DQ_STATS)
        delta_io.replace_partition(dq, T.DATA_QUALITY.uri(cfg), {C.RUN_ID: run_id},
                                   name=T.DATA_QUALITY.key)
    finally:
        for df in reversed(cached):  # newest first, as in the incremental clean
            df.unpersist()
    for k, v in results.items():
        if ".quarantine:" in k:
            log.info("quarantine %s = %d", k, v)
    return results

