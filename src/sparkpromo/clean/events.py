"""Events: typed values, row-level rules, duplicates, references and bots, composed as :func:`full_clean` runs
them (:func:`classify_events_frame`). Pure transforms."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from sparkpromo import columns as C
from sparkpromo.clean.rules import (
    _PRICE,
    _QTY,
    _RATING,
    _TS,
    BOT_ACTIVITY,
    DUP,
    EXCLUDED,
    FUTURE_TIMESTAMP,
    INVALID_QUANTITY,
    INVALID_RATING,
    MALFORMED_NUMBER,
    MALFORMED_RECORD,
    MALFORMED_TIMESTAMP,
    MISSING_FIELD,
    NEGATIVE_PRICE,
    OVERSIZED_FIELD,
    REQUIRED,
    UNKNOWN_EVENT_TYPE,
    UNKNOWN_ITEM,
    UNKNOWN_USER,
    accepted,
    canonical,
    canonicalise,
    duplicate_keys,
    excluded,
    first_rule,
    malformed,
    missing_any,
    oversized_any,
    parse_double,
    parse_timestamp,
    ranked_copies,
    single_copies,
)
from sparkpromo.config import AppConfig, FileSource
from sparkpromo.frame import Transform
from sparkpromo.ingest import CORRUPT

__all__ = [
    "normalise_events", "parse_events", "classify_events", "check_references", "bot_users", "bot_candidates",
    "flag_bots", "silver_events", "derives_event_id", "keyed_events", "keyed_repeats", "event_rules",
    "repeated_events", "marked_events", "of_users", "judged_events", "classify_events_frame",
    "bot_threshold", "sums_quantity"
]


def normalise_events(src: FileSource, kind: str, derive_id: bool) -> Transform:
    """Case-normalise and map event types; derive an event id when the source has none (``derive_id``): a hash of
    the row's content (without the quantity under ``dedupe: sum_quantity``, so repeated lines of one order share
    it), null when a required field is missing (such a row is quarantined, never a duplicate)."""
    mapping = {k.strip().lower(): v for k, v in src.event_type_map.items()}

    def step(df: DataFrame) -> DataFrame:
        low = F.lower(F.col(C.EVENT_TYPE))
        et = low
        if mapping:
            m = F.create_map(*[F.lit(x) for kv in mapping.items() for x in kv])
            et = F.coalesce(F.try_element_at(m, low), low)
        if src.constant_event_type:
            et = F.lit(src.constant_event_type)
        elif kind == "ratings":
            et = F.coalesce(et, F.lit(C.RATING_EVENT))
        out = df.withColumn(C.EVENT_TYPE, et)
        if derive_id:
            content = [C.USER_ID, C.ITEM_ID, C.EVENT_TYPE, C.EVENT_TS, C.PRICE, C.RATING]
            if src.dedupe_mode() != "sum_quantity":
                content.append(C.QUANTITY)
            key = F.concat_ws("\u0001", *[F.coalesce(F.col(c), F.lit("")) for c in content])
            complete = F.col(CORRUPT).isNull() & ~missing_any([C.USER_ID, C.ITEM_ID, C.EVENT_TS])
            out = out.withColumn(C.EVENT_ID, F.when(complete & F.col(C.EVENT_TYPE).isNotNull(), F.sha2(key, 256)))
        return out
    return step


def parse_events(src: FileSource) -> Transform:
    def step(df: DataFrame) -> DataFrame:
        return (df.withColumn(_TS, parse_timestamp(F.col(C.EVENT_TS), src.timestamp_format))
                .withColumn(_PRICE, parse_double(F.col(C.PRICE)))
                .withColumn(_QTY, parse_double(F.col(C.QUANTITY)))
                .withColumn(_RATING, parse_double(F.col(C.RATING))))
    return step


def classify_events(now: dt.datetime, future_tolerance_minutes: int, max_len: int, kind: str,
                    exclude: Mapping[str, str] | None = None) -> Transform:
    """Attach the first failing row-level rule (referential and bot checks come later).

    ``future_timestamp``: an event time later than the moment its row reached bronze (``_ingest_ts``; ``now`` for
    a row without one) plus the tolerance. It is a property of the row, not of the run judging it, so an
    incremental clean, a later full refresh and a backfill all judge it alike (features ignore events after their
    own date anyway)."""
    tolerance = F.make_dt_interval(mins=F.lit(future_tolerance_minutes))
    allowed = (C.RATING_EVENT,) if kind == "ratings" else C.EVENT_TYPES
    ids = [C.EVENT_ID, C.USER_ID, C.ITEM_ID, C.EVENT_TYPE, C.SESSION_ID]

    # ``now`` is UTC; a naive datetime literal would be read in the driver's local time zone.
    run_instant = F.lit(now if now.tzinfo else now.replace(tzinfo=dt.UTC))

    def step(df: DataFrame) -> DataFrame:
        arrived = F.coalesce(F.col(C.INGEST_TS), run_instant) if C.INGEST_TS in df.columns else run_instant
        qty_ok = F.col(_QTY).isNull() | ((F.col(_QTY) >= 1) & (F.col(_QTY) == F.floor(F.col(_QTY)))
                                         & (F.col(_QTY) <= 2_147_483_647))
        rating_bad = (F.col(_RATING).isNull() | F.isnan(F.col(_RATING))) if kind == "ratings" else F.lit(False)
        rule = first_rule(
            (F.col(CORRUPT).isNotNull(), MALFORMED_RECORD),
            (excluded(exclude or {}), EXCLUDED),
            (missing_any(REQUIRED["events"]), MISSING_FIELD),
            (oversized_any(ids, max_len), OVERSIZED_FIELD),
            (~F.col(C.EVENT_TYPE).isin(*allowed), UNKNOWN_EVENT_TYPE),
            (F.col(_TS).isNull(), MALFORMED_TIMESTAMP),
            (F.col(_TS) > arrived + tolerance, FUTURE_TIMESTAMP),
            (malformed(C.PRICE, _PRICE) | malformed(C.QUANTITY, _QTY) | malformed(C.RATING, _RATING),
             MALFORMED_NUMBER),
            (F.col(_PRICE) < 0, NEGATIVE_PRICE),
            (~qty_ok, INVALID_QUANTITY),
            (rating_bad, INVALID_RATING),
        )
        return df.withColumn(C.Q_RULE, rule)
    return step


def check_references(user_ids: DataFrame | None, item_ids: DataFrame | None) -> Transform:
    """Rows that pass so far but name a user or item missing from silver get ``unknown_user``/``unknown_item``.

    The id frames must hold distinct ids (silver's are, by construction).
    """
    def step(df: DataFrame) -> DataFrame:
        out = df
        for ids, col, rule in ((user_ids, C.USER_ID, UNKNOWN_USER), (item_ids, C.ITEM_ID, UNKNOWN_ITEM)):
            if ids is None:
                continue
            flag = f"_known_{col}"
            known = ids.select(F.col(col), F.lit(True).alias(flag))
            out = (out.join(known, col, "left")
                   .withColumn(C.Q_RULE, F.when(F.col(C.Q_RULE).isNull() & F.col(flag).isNull(), F.lit(rule))
                               .otherwise(F.col(C.Q_RULE)))
                   .drop(flag))
        return out
    return step


def bot_users(max_events_per_day: int) -> Transform:
    """Users with more than ``max_events_per_day`` valid, non-duplicate events on some day (a small frame)."""
    def step(df: DataFrame) -> DataFrame:
        return (df.where(~F.col(DUP) & F.col(C.Q_RULE).isNull())
                .groupBy(C.USER_ID, F.to_date(_TS).alias("_d")).count()
                .where(F.col("count") > max_events_per_day)
                .select(C.USER_ID).distinct())
    return step


def bot_candidates(max_events_per_day: int, src: FileSource) -> Transform:
    """Users with more than ``max_events_per_day`` rows of any kind on some day: a superset of :func:`bot_users`
    that needs no rule, dedupe or reference check (only the user and timestamp columns are read), so the exact
    count can be restricted to these users' rows."""
    def step(keyed: DataFrame) -> DataFrame:
        day = F.to_date(parse_timestamp(F.col(C.EVENT_TS), src.timestamp_format))
        return (keyed.where(day.isNotNull()).groupBy(C.USER_ID, day.alias("_d")).count()
                .where(F.col("count") > max_events_per_day)
                .select(C.USER_ID).distinct())
    return step


def flag_bots(bots: DataFrame) -> Transform:
    """All valid events of a user in ``bots`` (from :func:`bot_users`) get ``bot_activity``."""
    def step(df: DataFrame) -> DataFrame:
        return (df.join(bots.withColumn("_bot", F.lit(True)), C.USER_ID, "left")
                .withColumn(C.Q_RULE, F.when(F.col(C.Q_RULE).isNull() & ~F.col(DUP) & F.col("_bot"),
                                             F.lit(BOT_ACTIVITY)).otherwise(F.col(C.Q_RULE)))
                .drop("_bot"))
    return step


def silver_events(df: DataFrame) -> DataFrame:
    return accepted(df).select(
        F.col(C.EVENT_ID), F.col(C.USER_ID), F.col(C.ITEM_ID), F.col(C.EVENT_TYPE),
        F.col(_TS).alias(C.EVENT_TS), F.to_date(_TS).alias(C.EVENT_DATE),
        F.col(_PRICE).alias(C.PRICE), F.col(_QTY).cast("int").alias(C.QUANTITY),
        F.col(_RATING).alias(C.RATING), F.col(C.SESSION_ID))


def derives_event_id(src: FileSource, bronze: DataFrame) -> bool:
    return C.EVENT_ID not in src.columns and C.EVENT_ID not in bronze.columns


def keyed_events(cfg: AppConfig) -> Transform:
    """Bronze events canonicalised, with their event types mapped and an event id (the dedupe key) on every row."""
    src = cfg.sources.events

    def step(bronze: DataFrame) -> DataFrame:
        return (bronze.transform(canonicalise("events", src))
                .transform(normalise_events(src, cfg.sources.kind, derives_event_id(src, bronze))))
    return step


def keyed_repeats(cfg: AppConfig, dup_keys: DataFrame) -> Transform:
    """:func:`keyed_events` for the bronze rows whose event id is in ``dup_keys`` only. With an id in the source,
    the rows are picked by that one column first, so the other ~98% are never canonicalised."""
    src = cfg.sources.events

    def step(bronze: DataFrame) -> DataFrame:
        keys = dup_keys.select(F.col(C.EVENT_ID).alias("_key"))
        if derives_event_id(src, bronze):  # the id is a hash of the canonical row: key every row first
            return bronze.transform(keyed_events(cfg)).join(keys, F.col(C.EVENT_ID) == F.col("_key"), "left_semi")
        return (bronze.join(keys, canonical(bronze, src, C.EVENT_ID) == F.col("_key"), "left_semi")
                .transform(keyed_events(cfg)))
    return step


def event_rules(cfg: AppConfig, now: dt.datetime) -> Transform:
    """Typed values and the first failing row-level rule, row by row (so it commutes with dedupe's filters)."""
    src = cfg.sources.events

    def step(df: DataFrame) -> DataFrame:
        return (df.transform(parse_events(src))
                .transform(classify_events(now, cfg.clean.future_tolerance_minutes, cfg.clean.max_string_length,
                                           cfg.sources.kind, src.exclude)))
    return step


def repeated_events(cfg: AppConfig, now: dt.datetime, keys: DataFrame, sum_quantity: bool) -> Transform:
    """Bronze events whose event id is in ``keys`` (:func:`duplicate_keys`), ranked (the first copy kept, later
    copies marked ``_dup``; quantities summed when ``sum_quantity``) and through the row-level rules."""
    def step(bronze: DataFrame) -> DataFrame:
        return (bronze.transform(keyed_repeats(cfg, keys))
                .transform(ranked_copies(C.EVENT_ID, False, keys, sum_quantity)).transform(event_rules(cfg, now)))
    return step


def marked_events(cfg: AppConfig, now: dt.datetime, keys: DataFrame, repeated: DataFrame,
                  user_ids: DataFrame | None, item_ids: DataFrame | None) -> Transform:
    """Keyed events (:func:`keyed_events`) with ``rule`` and ``_dup``: the rows of a single copy through the
    row-level rules, plus ``repeated`` (:func:`repeated_events`), then the reference rules. Only the few repeated
    rows are ranked, so the bulk streams without a shuffle."""
    def step(keyed: DataFrame) -> DataFrame:
        return (keyed.transform(single_copies(C.EVENT_ID, keys)).transform(event_rules(cfg, now))
                .unionByName(repeated).transform(check_references(user_ids, item_ids)))
    return step


def of_users(users: DataFrame) -> Transform:
    """The rows of the users in ``users`` (a ``user_id`` column)."""
    def step(df: DataFrame) -> DataFrame:
        return df.join(users, C.USER_ID, "left_semi")
    return step


def judged_events(cfg: AppConfig, now: dt.datetime, keys: DataFrame, repeated: DataFrame,
                  user_ids: DataFrame | None, item_ids: DataFrame | None, bot_limit: int = 0,
                  suspects: DataFrame | None = None, small: Callable[[DataFrame], DataFrame] = lambda df: df
                  ) -> Transform:
    """Keyed events with ``rule`` and ``_dup`` attached (:func:`marked_events`), bots flagged when ``suspects``
    (:func:`bot_candidates`) is given. Bots are counted exactly, but only over the rows of users with enough rows
    of any kind to be one. ``small`` is applied to the bots frame (:func:`full_clean` caches it)."""
    def step(keyed: DataFrame) -> DataFrame:
        ev = keyed.transform(marked_events(cfg, now, keys, repeated, user_ids, item_ids))
        if suspects is None:
            return ev
        bots = small(keyed.transform(of_users(suspects))
                     .transform(marked_events(cfg, now, keys, repeated.transform(of_users(suspects)), user_ids,
                                              item_ids))
                     .transform(bot_users(bot_limit)))
        return ev.transform(flag_bots(bots))
    return step


def classify_events_frame(bronze: DataFrame, cfg: AppConfig, now: dt.datetime, user_ids: DataFrame | None,
                          item_ids: DataFrame | None) -> DataFrame:
    """Bronze events with ``rule`` and ``_dup`` attached: the single frame that silver, quarantine and the DQ
    counts are all derived from. :func:`full_clean` composes the same steps, with its side frames (duplicate
    keys, repeated rows, bot suspects) computed side by side and cached."""
    keyed = bronze.transform(keyed_events(cfg))
    keys = keyed.transform(duplicate_keys(C.EVENT_ID))
    repeated = bronze.transform(repeated_events(cfg, now, keys, sums_quantity(cfg, bronze)))
    limit = bot_threshold(cfg)
    suspects = keyed.transform(bot_candidates(limit, cfg.sources.events)) if limit else None
    return keyed.transform(judged_events(cfg, now, keys, repeated, user_ids, item_ids, limit, suspects))


def bot_threshold(cfg: AppConfig) -> int:
    """The events source's bot limit (valid events per user and day; 0 = no bot rule): its own
    ``bot_max_events_per_day``, else ``clean.bot_max_events_per_day`` for event logs and off for ratings (a
    rating export can hold a user's whole history on one day)."""
    own = cfg.sources.events.bot_max_events_per_day
    if own is not None:
        return own
    return cfg.clean.bot_max_events_per_day if cfg.sources.kind == "events" else 0


def sums_quantity(cfg: AppConfig, bronze: DataFrame) -> bool:
    """Whether repeated lines of one file add up their quantities (events without an id, ``sum_quantity``)."""
    src = cfg.sources.events
    return derives_event_id(src, bronze) and src.dedupe_mode() == "sum_quantity"
