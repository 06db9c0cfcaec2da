"""Clean: bronze → silver (typed, trimmed, UTC, deduplicated, bot-filtered) + quarantine (every rejected row, with
the rule that rejected it).

Each bronze row ends in exactly one place, which is what the balance test checks::

    bronze rows = silver rows + quarantined rows + dropped duplicates

Rules are applied in a fixed precedence (the first that fails names the row's rule). Duplicates (a later copy of
an event id, or an older export of a user/item) are dropped and counted, not quarantined.

A full clean (:func:`full_clean`) recomputes silver from the whole bronze snapshot and overwrites each table in one
Delta commit; an incremental clean (:func:`incremental_clean`) judges the bronze rows added since the last clean,
with the rows they share a key with, and merges the difference. :func:`run_clean` picks one; every check runs
before the first write.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from delta.tables import DeltaTable
from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame, Row, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.util import inheritable_thread_target

from sparkpromo import columns as C
from sparkpromo import delta_io
from sparkpromo.config import CLEAN_PRIVACY_KEYS, AppConfig, FileSource
from sparkpromo.frame import Transform
from sparkpromo.ingest import CORRUPT, METADATA_COLUMNS, mappable

log = logging.getLogger(__name__)

# Rules, in precedence order. The names are stable: they are stored in quarantine and in the DQ metrics.
MALFORMED_RECORD = "malformed_record"
EXCLUDED = "excluded"  # a value matching the source's configured `exclude` pattern
MISSING_FIELD = "missing_field"
OVERSIZED_FIELD = "oversized_field"
UNKNOWN_EVENT_TYPE = "unknown_event_type"
MALFORMED_TIMESTAMP = "malformed_timestamp"
FUTURE_TIMESTAMP = "future_timestamp"
MALFORMED_NUMBER = "malformed_number"
NEGATIVE_PRICE = "negative_price"
INVALID_QUANTITY = "invalid_quantity"
INVALID_RATING = "invalid_rating"
INVALID_STOCK = "invalid_stock"
MALFORMED_DATE = "malformed_date"
MALFORMED_VALUE = "malformed_value"
UNKNOWN_USER = "unknown_user"
UNKNOWN_ITEM = "unknown_item"
BOT_ACTIVITY = "bot_activity"

DUP = "_dup"
NEW = "_new"  # incremental clean: the row arrived in bronze since the last successful clean
COPIES = "_copies"
RAW = "_raw"
_TS, _PRICE, _QTY, _RATING, _STOCK, _SIGNUP, _BIRTH = "_ts", "_price", "_qty", "_rating", "_stock", "_signup", "_birth"
_TRUE_WORDS = ("true", "t", "yes", "y", "1")
_FALSE_WORDS = ("false", "f", "no", "n", "0")

DIMENSION_KEYS = {"users": C.USER_ID, "items": C.ITEM_ID}
# The canonical column whose value shows why a row failed a rule (other rules show the raw row).
RULE_COLUMNS = {MALFORMED_TIMESTAMP: C.EVENT_TS, FUTURE_TIMESTAMP: C.EVENT_TS, UNKNOWN_EVENT_TYPE: C.EVENT_TYPE,
                NEGATIVE_PRICE: C.PRICE, INVALID_QUANTITY: C.QUANTITY, INVALID_RATING: C.RATING,
                INVALID_STOCK: C.STOCK, UNKNOWN_USER: C.USER_ID, UNKNOWN_ITEM: C.ITEM_ID, BOT_ACTIVITY: C.USER_ID}
EXAMPLE = "_example"
EXAMPLE_CHARS = 120
T = TypeVar("T")

REQUIRED = {
    "events": (C.EVENT_ID, C.USER_ID, C.ITEM_ID, C.EVENT_TYPE, C.EVENT_TS),
    "users": (C.USER_ID,),
    "items": (C.ITEM_ID,),
}


# --------------------------------------------------------------------------------------------------------------
# Shared steps
# --------------------------------------------------------------------------------------------------------------
def canonicalise(source: str, src: FileSource) -> Transform:
    """Rename mapped source columns to canonical names (strings, trimmed); keep the raw row as a struct (``_raw``)
    that only the quarantine turns into its JSON payload (serialising every row would cost more than the rules)."""
    def step(df: DataFrame) -> DataFrame:
        raw_cols = [c for c in df.columns if c not in METADATA_COLUMNS and c not in (CORRUPT, NEW)]
        out = [canonical(df, src, canon).alias(canon) for canon in mappable(source)]
        meta = [c for c in (*METADATA_COLUMNS, NEW) if c in df.columns]
        raw = F.struct(*[F.col(f"`{c}`") for c in raw_cols])
        # Bytes that are not valid UTF-8 reach Spark as U+FFFD: such a row no longer holds what the source sent
        # (two different ids can decode to the same text), so it is a malformed record, as the JSON reader
        # already reports it, never a silently altered id.
        garbled = F.greatest(*[F.col(f"`{c}`").contains("\ufffd") for c in raw_cols]) if len(raw_cols) > 1 \
            else F.col(f"`{raw_cols[0]}`").contains("\ufffd")
        corrupt = F.when(F.col(CORRUPT).isNull() & garbled, F.to_json(raw)).otherwise(F.col(CORRUPT))
        return df.select(*out, corrupt.alias(CORRUPT), raw.alias(RAW), *meta)
    return step


def canonical(df: DataFrame, src: FileSource, canon: str) -> Column:
    """The source column mapped to ``canon``, trimmed, as a string (null when the source has no such column)."""
    name = src.columns.get(canon, canon)
    col = F.trim(F.col(f"`{name}`")) if name in df.columns else F.lit(None).cast("string")
    # An empty string is a missing value in every export format we accept.
    return F.when(col == "", None).otherwise(col)


def first_rule(*checks: tuple[Column, str]) -> Column:
    """The name of the first failing check, or null when the row passes them all."""
    expr: Column = F.lit(None).cast("string")
    for cond, rule in reversed(checks):
        expr = F.when(F.coalesce(cond, F.lit(False)), F.lit(rule)).otherwise(expr)
    return expr


def missing_any(names: Sequence[str]) -> Column:
    return F.greatest(*[F.col(n).isNull() for n in names]) if len(names) > 1 else F.col(names[0]).isNull()


def oversized_any(names: Sequence[str], max_len: int) -> Column:
    return F.greatest(*[F.length(F.col(n)) > max_len for n in names])


def excluded(exclude: Mapping[str, str]) -> Column:
    """True when a canonical column's value wholly matches the source's ``exclude`` pattern for it."""
    hits = [F.col(c).rlike(f"^(?:{pattern})$") for c, pattern in sorted(exclude.items())]
    if not hits:
        return F.lit(False)
    return F.greatest(*hits) if len(hits) > 1 else hits[0]


def malformed(raw: str, parsed: str) -> Column:
    """The source had a value but it did not parse."""
    return F.col(raw).isNotNull() & F.col(parsed).isNull()


def duplicate_keys(key: str) -> Transform:
    """Keys that occur more than once, with their number of copies (``_copies``).

    Only the key column is shuffled, and the result is small for any sane export (duplicates are the exception),
    so the caller can cache it and let Spark broadcast it.
    """
    def step(df: DataFrame) -> DataFrame:
        return (df.where(F.col(key).isNotNull()).groupBy(key).agg(F.count(F.lit(1)).alias(COPIES))
                .where(F.col(COPIES) > 1))
    return step


def ranked_copies(key: str, newest_first: bool, dup_keys: DataFrame, sum_quantity: bool = False) -> Transform:
    """The rows whose key is in ``dup_keys``, with every copy but the kept one flagged ``_dup``.

    Events keep the first copy ingested; users and items keep the newest export (``newest_first``: the latest
    ingest, then the last file name). Ties are broken by source file and the raw row, so the choice is
    deterministic; rows equal in all of those are the same record, and which of them is kept makes no difference.

    ``sum_quantity`` (events without an id, ``dedupe: sum_quantity``): copies in the kept row's file, from the same
    ingest, are repeated lines of one order (the same item bought twice), so the kept row's quantity becomes their
    summed quantity (a missing quantity counts 1); copies from other files are re-sent rows, dropped as before. The
    merged lines count as duplicates.
    """
    def step(df: DataFrame) -> DataFrame:
        ts = F.col(C.INGEST_TS).desc() if newest_first else F.col(C.INGEST_TS).asc()
        # Several exports loaded by one ingest share its time; dated export names sort oldest first, so the newest
        # export is the last file name.
        source = F.col(C.SOURCE_FILE).desc() if newest_first else F.col(C.SOURCE_FILE).asc()
        w = Window.partitionBy(key).orderBy(ts, source, F.col(RAW), F.col(CORRUPT))
        out = df.join(dup_keys.select(key), key, "left_semi").withColumn(DUP, F.row_number().over(w) > 1)
        if not sum_quantity:
            return out
        group = Window.partitionBy(key)
        first = w.rowsBetween(Window.unboundedPreceding, Window.unboundedFollowing)
        same_load = ((F.col(C.SOURCE_FILE) == F.first(C.SOURCE_FILE).over(first))
                     & (F.col(C.INGEST_TS) == F.first(C.INGEST_TS).over(first)))
        qty = parse_double(F.col(C.QUANTITY))
        total = F.sum(F.when(same_load, F.coalesce(qty, F.lit(1.0)))).over(group)
        unparsable = F.max(F.when(same_load, F.col(C.QUANTITY).isNotNull() & qty.isNull())).over(group)
        summed = F.when(total == F.floor(total), total.cast("long").cast("string")).otherwise(total.cast("string"))
        return out.withColumn(C.QUANTITY, F.when(~F.col(DUP) & ~F.coalesce(unparsable, F.lit(False)), summed)
                              .otherwise(F.col(C.QUANTITY)))
    return step


def single_copies(key: str, dup_keys: DataFrame) -> Transform:
    """The rows whose key occurs once (or is null: those fail ``missing_field`` instead), none a duplicate."""
    def step(df: DataFrame) -> DataFrame:
        return df.join(dup_keys.select(key), key, "left_anti").withColumn(DUP, F.lit(False))
    return step


def mark_duplicates(key: str, newest_first: bool, dup_keys: DataFrame | None = None,
                    sum_quantity: bool = False) -> Transform:
    """Flag every row but one per ``key`` as a duplicate (``_dup``), see :func:`ranked_copies`.

    Only the rows with a repeated key go through the ordering window, so the bulk of the rows is never shuffled.
    """
    def step(df: DataFrame) -> DataFrame:
        keys = dup_keys if dup_keys is not None else df.transform(duplicate_keys(key))
        return (df.transform(single_copies(key, keys))
                .unionByName(df.transform(ranked_copies(key, newest_first, keys, sum_quantity))))
    return step


_EMAIL_RE = r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}"
_DATE_RE = r"\b(\d{4}[-/.]\d{1,2}[-/.]\d{1,2}|\d{1,2}[-/.]\d{1,2}[-/.]\d{2,4})\b"
_PHONE_RE = r"\+?\d[\d ()/-]{6,}\d"
MASK = "***"


def personal_columns(cfg: AppConfig, source: str) -> tuple[str, ...]:
    """The configured personal columns of ``source`` (events, users): canonical names and the source's own names
    for them. Items hold none."""
    src = getattr(cfg.sources, source, None)
    if source == "items" or src is None:
        return ()
    names = [*cfg.privacy.personal_columns, *(src.columns.get(c, c) for c in cfg.privacy.personal_columns)]
    return tuple(dict.fromkeys(names))


def masked_line(line: Column, personal: Sequence[str], dates_and_phones: bool) -> Column:
    """An unparsable line with personal values masked: the values of JSON keys naming a personal column, e-mail
    addresses and, for a source with dates of birth or phone numbers (``dates_and_phones``; the line's fields can't
    be told apart), every date and phone-like number."""
    if not personal:
        return line
    keys = "|".join(re.escape(c) for c in personal)
    out = F.regexp_replace(line, rf'(?i)("(?:{keys})"\s*:\s*)("(?:[^"\\]|\\.)*"|[^,}}\]\s]+)', f'$1"{MASK}"')
    out = F.regexp_replace(out, _EMAIL_RE, MASK)
    if dates_and_phones:
        out = F.regexp_replace(F.regexp_replace(out, _DATE_RE, MASK), _PHONE_RE, MASK)
    return out


def payload(personal: Sequence[str] = (), dates_and_phones: bool = False) -> Column:
    """The raw bronze row as JSON without the ``personal`` columns: the corrupt record's text (personal values
    masked, :func:`masked_line`), or the source columns as they arrived."""
    raw = F.col(RAW).dropFields(*personal) if personal else F.col(RAW)  # a name the row lacks is ignored
    return F.coalesce(masked_line(F.col(CORRUPT), personal, dates_and_phones), F.to_json(raw))


def quarantine_rows(source: str, run_id: str, personal: Sequence[str] = ()) -> Transform:
    """The rejected rows in the quarantine's shape, plus ``_example``: the value that shows why (the rule's column,
    else the start of the raw row), for the reject-share error. Writers drop it. ``personal`` columns are left out
    of the payload (:func:`payload`; in an unparsable users line, dates and phone-like numbers are masked too)."""
    def step(df: DataFrame) -> DataFrame:
        example = payload(personal, source == "users")
        for rule, col in RULE_COLUMNS.items():
            if col in df.columns:
                quoted = F.regexp_extract(F.to_json(F.array(F.col(col))), r"^\[(.*)\]$", 1)  # "text" or null
                example = F.when(F.col(C.Q_RULE) == rule, F.concat(F.lit(f"{col}="), quoted)).otherwise(example)
        return df.where(~F.col(DUP) & F.col(C.Q_RULE).isNotNull()).select(
            F.lit(source).alias(C.Q_SOURCE), F.col(C.Q_RULE), payload(personal, source == "users").alias(C.Q_PAYLOAD),
            F.col(C.SOURCE_FILE), F.lit(run_id).alias(C.RUN_ID), example.substr(1, EXAMPLE_CHARS).alias(EXAMPLE))
    return step


def accepted(df: DataFrame) -> DataFrame:
    return df.where(~F.col(DUP) & F.col(C.Q_RULE).isNull())


def parse_timestamp(col: Column, fmt: str) -> Column:
    """Parse to a UTC timestamp; null when malformed (Spark's ANSI mode would otherwise raise)."""
    if fmt == "unix":
        secs = col.try_cast("double")
        return F.when(secs.isNotNull() & (F.abs(secs) < 1e11), F.timestamp_seconds(secs.cast("long")))
    if fmt == "unix_ms":
        return F.timestamp_millis(col.try_cast("long"))
    if fmt:
        return F.try_to_timestamp(col, F.lit(fmt))
    return F.try_to_timestamp(col)


def parse_double(col: Column) -> Column:
    """A finite double, or null when malformed. Spark's cast also accepts "NaN", "Infinity" and overflowing
    literals such as "1e999" (as infinity); none of those is a usable price, quantity or rating."""
    x = col.try_cast("double")
    return F.when(~F.isnan(x) & (F.abs(x) < F.lit(float("inf"))), x)


def parse_bool(col: Column) -> Column:
    low = F.lower(col)
    return F.when(low.isin(*_TRUE_WORDS), True).when(low.isin(*_FALSE_WORDS), False)


# --------------------------------------------------------------------------------------------------------------
# Events
# --------------------------------------------------------------------------------------------------------------
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
    """Attach the first failing row-level rule (referential and bot checks come later)."""
    cutoff = now + dt.timedelta(minutes=future_tolerance_minutes)
    allowed = (C.RATING_EVENT,) if kind == "ratings" else C.EVENT_TYPES
    ids = [C.EVENT_ID, C.USER_ID, C.ITEM_ID, C.EVENT_TYPE, C.SESSION_ID]

    def step(df: DataFrame) -> DataFrame:
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
            (F.col(_TS) > F.lit(cutoff), FUTURE_TIMESTAMP),
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


def classify_event_rows(bronze: DataFrame, cfg: AppConfig, now: dt.datetime) -> DataFrame:
    """Bronze events canonicalised, typed and given their first failing row-level rule (no duplicates yet)."""
    return bronze.transform(keyed_events(cfg)).transform(event_rules(cfg, now))


def classify_events_frame(bronze: DataFrame, cfg: AppConfig, now: dt.datetime, user_ids: DataFrame | None,
                          item_ids: DataFrame | None) -> DataFrame:
    """Bronze events with ``rule`` and ``_dup`` attached: the single frame that silver, quarantine and the DQ
    counts are all derived from. (``run_clean`` builds the same frame with its small side frames cached.)"""
    marked = (classify_event_rows(bronze, cfg, now)
              .transform(mark_duplicates(C.EVENT_ID, newest_first=False, sum_quantity=sums_quantity(cfg, bronze)))
              .transform(check_references(user_ids, item_ids)))
    limit = bot_threshold(cfg)
    return marked.transform(flag_bots(marked.transform(bot_users(limit)))) if limit else marked


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


# --------------------------------------------------------------------------------------------------------------
# Users and items
# --------------------------------------------------------------------------------------------------------------
def age_band(birth: Column, as_of: dt.date) -> Column:
    years = F.floor(F.months_between(F.lit(as_of), birth) / 12)
    return (F.when(birth.isNull() | (years < 0), F.lit("unknown"))
            .when(years < 18, "<18").when(years < 25, "18-24").when(years < 35, "25-34")
            .when(years < 45, "35-44").when(years < 55, "45-54").when(years < 65, "55-64").otherwise("65+"))


def band_changed(silver_users: DataFrame, as_of: dt.date) -> Transform:
    """Canonical bronze users rows -> the ids (distinct) whose age band as of ``as_of`` is not the one
    ``silver_users`` holds: a birthday has moved them to the next band since the clean that judged them."""
    def step(canon: DataFrame) -> DataFrame:
        born = canon.select(C.USER_ID, F.try_to_timestamp(F.col(C.BIRTH_DATE)).cast("date").alias(_BIRTH))
        return (born.where(F.col(_BIRTH).isNotNull())
                .join(silver_users.select(C.USER_ID, C.AGE_BAND), C.USER_ID)
                .where(age_band(F.col(_BIRTH), as_of) != F.col(C.AGE_BAND)).select(C.USER_ID).distinct())
    return step


def age_band_movers(spark: SparkSession, cfg: AppConfig, now: dt.datetime, version: int | None = None) -> DataFrame:
    """:func:`band_changed` over bronze users (at ``version``) and silver users: the users an incremental clean
    as of ``now`` re-judges although no new row of theirs arrived, so that silver equals a rebuild as of ``now``."""
    src = cfg.sources.users
    if src is None:
        raise ValueError("age_band_movers needs a users source (sources.users)")
    canon = delta_io.read(spark, cfg.table("bronze", "users"), version=version).transform(canonicalise("users", src))
    return canon.transform(band_changed(delta_io.read(spark, cfg.table("silver", "users")), now.date()))


def classify_users(max_len: int, exclude: Mapping[str, str] | None = None) -> Transform:
    def step(df: DataFrame) -> DataFrame:
        df = (df.withColumn(_SIGNUP, F.try_to_timestamp(F.col(C.SIGNUP_DATE)).cast("date"))
              .withColumn(_BIRTH, F.try_to_timestamp(F.col(C.BIRTH_DATE)).cast("date"))
              .withColumn(C.COUNTRY, F.upper(F.col(C.COUNTRY)))
              .withColumn("_consent", parse_bool(F.col(C.MARKETING_CONSENT))))
        rule = first_rule(
            (F.col(CORRUPT).isNotNull(), MALFORMED_RECORD),
            (excluded(exclude or {}), EXCLUDED),
            (missing_any(REQUIRED["users"]), MISSING_FIELD),
            (oversized_any([C.USER_ID, C.COUNTRY], max_len), OVERSIZED_FIELD),
            (malformed(C.SIGNUP_DATE, _SIGNUP) | malformed(C.BIRTH_DATE, _BIRTH), MALFORMED_DATE),
            (malformed(C.MARKETING_CONSENT, "_consent"), MALFORMED_VALUE),
        )
        return df.withColumn(C.Q_RULE, rule)
    return step


def silver_users(as_of: dt.date, consent_without_column: bool | None = None) -> Transform:
    """Typed users. The birth date is reduced to month and day (plus a coarse age band) at this boundary, and a
    missing consent means no consent. ``consent_without_column`` (``privacy.consent_without_users``) is every
    user's consent when the source has no consent column at all."""
    consent = (F.lit(consent_without_column) if consent_without_column is not None
               else F.coalesce(F.col("_consent"), F.lit(False)))

    def step(df: DataFrame) -> DataFrame:
        return accepted(df).select(
            F.col(C.USER_ID), F.col(_SIGNUP).alias(C.SIGNUP_DATE),
            F.month(_BIRTH).alias(C.BIRTH_MONTH), F.dayofmonth(_BIRTH).alias(C.BIRTH_DAY),
            age_band(F.col(_BIRTH), as_of).alias(C.AGE_BAND), F.col(C.COUNTRY),
            consent.alias(C.MARKETING_CONSENT))
    return step


def users_consent(cfg: AppConfig, bronze_columns: Sequence[str]) -> bool | None:
    """The consent every user gets when the users source has no consent column (None: the column is there).
    Raises :class:`CleanError` when it has none and the configuration does not say."""
    src = cfg.sources.users
    if src is None or src.columns.get(C.MARKETING_CONSENT, C.MARKETING_CONSENT) in bronze_columns:
        return None
    stated = cfg.privacy.consent_default()
    if stated is None:
        raise CleanError(f"sources.users: {src.path} has no {C.MARKETING_CONSENT} column; say whether these users "
                         "consented to marketing with privacy.consent_without_users: granted or denied")
    return stated


def classify_items(max_len: int, exclude: Mapping[str, str] | None = None) -> Transform:
    def step(df: DataFrame) -> DataFrame:
        df = (df.withColumn(_PRICE, parse_double(F.col(C.PRICE)))
              .withColumn(_STOCK, parse_double(F.col(C.STOCK)))
              .withColumn(C.CATEGORY, F.lower(F.col(C.CATEGORY))))
        rule = first_rule(
            (F.col(CORRUPT).isNotNull(), MALFORMED_RECORD),
            (excluded(exclude or {}), EXCLUDED),
            (missing_any(REQUIRED["items"]), MISSING_FIELD),
            (oversized_any([C.ITEM_ID, C.CATEGORY, C.BRAND, C.ITEM_NAME], max_len), OVERSIZED_FIELD),
            (malformed(C.PRICE, _PRICE) | malformed(C.STOCK, _STOCK), MALFORMED_NUMBER),
            (F.col(_PRICE) < 0, NEGATIVE_PRICE),
            ((F.col(_STOCK) < 0) | (F.col(_STOCK) > 2_147_483_647) | (F.col(_STOCK) != F.floor(F.col(_STOCK))),
             INVALID_STOCK),
        )
        return df.withColumn(C.Q_RULE, rule)
    return step


def silver_items(df: DataFrame) -> DataFrame:
    return accepted(df).select(F.col(C.ITEM_ID), F.col(C.CATEGORY), F.col(C.BRAND),
                               F.col(_PRICE).alias(C.PRICE), F.col(_STOCK).cast("int").alias(C.STOCK),
                               F.col(C.ITEM_NAME))


# --------------------------------------------------------------------------------------------------------------
# Counts and the stage
# --------------------------------------------------------------------------------------------------------------
def outcome() -> Column:
    """A marked row's outcome: ``silver``, ``duplicate`` or ``quarantine:<rule>``."""
    return (F.when(F.col(DUP), F.lit("duplicate"))
            .when(F.col(C.Q_RULE).isNull(), F.lit("silver"))
            .otherwise(F.concat(F.lit("quarantine:"), F.col(C.Q_RULE))))


def outcome_counts(df: DataFrame) -> DataFrame:
    """Rows per outcome (a handful of rows), see :func:`outcome`."""
    return df.groupBy(outcome().alias("metric")).count()


def summarise(source: str, counts: Mapping[str, int]) -> dict[str, int]:
    total = sum(counts.values())
    out = {f"{source}.bronze_rows": total, f"{source}.silver_rows": counts.get("silver", 0),
           f"{source}.duplicates": counts.get("duplicate", 0),
           f"{source}.quarantined": sum(v for k, v in counts.items() if k.startswith("quarantine:"))}
    for k, v in sorted(counts.items()):
        if k.startswith("quarantine:"):
            out[f"{source}.{k}"] = v
    return out


SILVER_CONSTRAINTS = {
    "events": ({"valid_event_type": f"event_type IN ({', '.join(repr(t) for t in C.ALL_EVENT_TYPES)})",
                "non_negative_price": "price IS NULL OR price >= 0",
                "positive_quantity": "quantity IS NULL OR quantity >= 1"},
               (C.EVENT_ID, C.USER_ID, C.ITEM_ID, C.EVENT_TYPE, C.EVENT_TS)),
    "users": ({}, (C.USER_ID, C.MARKETING_CONSENT)),
    "items": ({"non_negative_item_price": "price IS NULL OR price >= 0",
               "non_negative_stock": "stock IS NULL OR stock >= 0"}, (C.ITEM_ID,)),
}


# Delta collects min/max statistics for the first 32 columns by default; on silver events only the time columns
# and the type ever prune files (ids are spread over every file), and skipping the rest makes the write ~20% cheaper.
SILVER_PROPERTIES = {"events": {"delta.dataSkippingStatsColumns": f"{C.EVENT_DATE},{C.EVENT_TS},{C.EVENT_TYPE}"}}


class CleanError(RuntimeError):
    """The clean stage's own invariant failed (a row would have vanished): never expected, always loud."""


class RejectShareError(CleanError):
    """A source whose rows mostly fail one rule: a wrong format or mapping, not bad rows. Nothing was written."""


def check_reject_shares(quarantined: DataFrame, bronze_rows: Mapping[str, int], max_share: float) -> None:
    """Raise :class:`RejectShareError` (one line: source, rule, share, an example value) when the rows of one source
    that fail one rule are more than ``max_share`` of its bronze rows. ``quarantined`` is in
    :func:`quarantine_rows`' shape; one small aggregate reaches the driver."""
    stats = (quarantined.groupBy(C.Q_SOURCE, C.Q_RULE)
             .agg(F.count(F.lit(1)).alias("n"), F.min(EXAMPLE).alias(EXAMPLE)).collect())
    worst = sorted(((r["n"] / bronze_rows[r[C.Q_SOURCE]], r) for r in stats if bronze_rows.get(r[C.Q_SOURCE])),
                   key=lambda pair: -pair[0])
    if worst and worst[0][0] > max_share:
        share, r = worst[0]
        total = bronze_rows[r[C.Q_SOURCE]]
        raise RejectShareError(
            f"sources.{r[C.Q_SOURCE]}: {r['n']} of {total} rows ({share:.1%}) fail rule {r[C.Q_RULE]}, above "
            f"clean.max_reject_share {max_share:g}; e.g. {r[EXAMPLE]} (check the source's format and column mapping; "
            "nothing was written)")


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
        uri = cfg.table("bronze", source)
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
        raise FileNotFoundError(f"bronze events table not found at {cfg.table('bronze', 'events')}: "
                                "run `sparkpromo ingest` first")
    try:
        with ThreadPoolExecutor(max_workers=3, thread_name_prefix="sparkpromo-clean") as pool:
            dims = {source: _submit(pool, spark, dimension, source) for source in DIMENSION_KEYS}
            events_rows = _submit(pool, spark, raw.count)
            keyed = raw.transform(keyed_events(cfg))
            rules = event_rules(cfg, now)
            bot_limit = bot_threshold(cfg)
            suspects_job = (_submit(pool, spark, small, keyed.transform(bot_candidates(bot_limit, cfg.sources.events)))
                            if bot_limit else None)
            keys = small(keyed.transform(duplicate_keys(C.EVENT_ID)))
            dropped = _submit(pool, spark, lambda: int(keys.agg(F.sum(F.col(COPIES) - 1)).first()[0] or 0))
            # Only the few rows with a repeated key are ranked (before the row-wise rules) and cached, so every
            # later pass streams bronze once.
            ranked = small(raw.transform(keyed_repeats(cfg, keys))
                           .transform(ranked_copies(C.EVENT_ID, False, keys, sums_quantity(cfg, raw))).transform(rules))
            dim_frames = {source: job.result() for source, job in dims.items()}
            suspects = suspects_job.result() if suspects_job is not None else None
            bronze_rows["events"], duplicates["events"] = events_rows.result(), dropped.result()

        known: dict[str, DataFrame] = {}
        for source, dim in dim_frames.items():
            if dim is not None:
                silver[source], rejected, known[DIMENSION_KEYS[source]] = dim
                quarantine.append(rejected)

        def marked(rows: DataFrame, repeated: DataFrame) -> DataFrame:
            return (rows.transform(single_copies(C.EVENT_ID, keys)).transform(rules).unionByName(repeated)
                    .transform(check_references(known.get(C.USER_ID), known.get(C.ITEM_ID))))

        ev = marked(keyed, ranked)
        if suspects is not None:
            # Bots are counted exactly, but only over the rows of users with enough rows of any kind to be one.
            bots = small(marked(keyed.join(suspects, C.USER_ID, "left_semi"),
                                ranked.join(suspects, C.USER_ID, "left_semi")).transform(bot_users(bot_limit)))
            ev = ev.transform(flag_bots(bots))
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
            jobs = {name: _submit(pool, spark, df.count) for name, df in silver.items()}
            silver_rows = {name: job.result() for name, job in jobs.items()}
        results, dq_rows = balance(run_id, bronze_rows, duplicates, silver_rows, per_rule)

        if cfg.privacy.pseudonymise:
            silver = pseudonymise_users(silver, cfg.privacy.key_env)

        # One table after another, in a fixed order: two cleans racing on one lakehouse then conflict on the same
        # table first, and one of them wins every table.
        for name in (*DIMENSION_KEYS, "events"):
            if name in silver:
                uri = cfg.table("silver", name)
                checks, not_null = SILVER_CONSTRAINTS[name]
                delta_io.overwrite(silver[name], uri, name=f"silver.{name}",
                                   constraints=delta_io.constraint_checks(checks, not_null),
                                   properties=SILVER_PROPERTIES.get(name))
                delta_io.add_constraints(spark, uri, checks, not_null)  # a table from before these constraints
        delta_io.overwrite(q.drop(EXAMPLE), cfg.table("quarantine", "rows"), partition_by=(C.Q_SOURCE,),
                           name="quarantine")
        dq = spark.createDataFrame(dq_rows, "_run_id string, source string, metric string, value long")
        delta_io.replace_partition(dq, cfg.table("metrics", "data_quality"), {C.RUN_ID: run_id},
                                   name="metrics.data_quality")
    finally:
        for df in cached:
            df.unpersist()
    for k, v in results.items():
        if ".quarantine:" in k:
            log.info("quarantine %s = %d", k, v)
    return results


def balance(run_id: str, bronze_rows: Mapping[str, int], duplicates: Mapping[str, int], silver_rows: Mapping[str, int],
            per_rule: Sequence[Row]) -> tuple[dict[str, int], list[tuple[str, str, str, int]]]:
    """Per-source outcome counts (``per_rule``: quarantine rows per source and rule), checked against the bronze
    snapshot (``bronze_rows``, per source at the version that was read): raises :class:`CleanError` when a row would
    vanish or appear twice. Returns the results and the ``metrics/data_quality`` rows."""
    results: dict[str, int] = {}
    dq_rows: list[tuple[str, str, str, int]] = []
    for source, total in bronze_rows.items():
        counts = {f"quarantine:{r[C.Q_RULE]}": int(r["count"]) for r in per_rule if r[C.Q_SOURCE] == source}
        counts["silver"] = silver_rows[source]
        counts["duplicate"] = duplicates[source]
        if sum(counts.values()) != total:
            raise CleanError(f"{source}: bronze has {total} rows but silver + quarantine + duplicates = "
                             f"{sum(counts.values())} ({counts}); nothing was written")
        results.update(summarise(source, counts))
        dq_rows += [(run_id, source, k, v) for k, v in counts.items()]
    return results, dq_rows


def _submit(pool: ThreadPoolExecutor, spark: SparkSession, fn: Callable[..., T], *args: object) -> Future[T]:
    """Run ``fn`` on ``pool`` with the caller's Spark local properties (job group, scheduler pool, description)."""
    return pool.submit(inheritable_thread_target(spark)(fn), *args)


# --------------------------------------------------------------------------------------------------------------
# Incremental clean
# --------------------------------------------------------------------------------------------------------------
SOURCES = ("users", "items", "events")
STATE_TABLE = ("metrics", "clean_state")
Q_KEY = (C.Q_SOURCE, C.Q_RULE, C.Q_PAYLOAD, C.SOURCE_FILE)
OP = "_op"
_AU, _IN = "_affected", "_in_slice"
# Commits that only add rows (or rewrite files without changing data): anything else in a bronze version range
# (a forget's DELETE, a RESTORE) makes the next clean a full refresh.
_APPEND_MODES = {"WRITE": ("mode", "Append"), "STREAMING UPDATE": ("outputMode", "Append")}
_NO_DATA_CHANGE = {"OPTIMIZE", "SET TBLPROPERTIES", "ADD CONSTRAINT", "VACUUM START", "VACUUM END"}


@dataclass(frozen=True)
class CleanState:
    """What the last successful clean consumed and left: bronze versions, its output tables' versions, the
    fingerprint of the settings it cleaned with and its result (the totals the next run continues from)."""
    bronze: dict[str, int | None]
    outputs: dict[str, int | None]
    settings: str
    result: dict[str, Any]


def settings_fingerprint(cfg: AppConfig) -> str:
    """The settings that decide a row's outcome; a change between runs makes the next clean a full refresh."""
    privacy = {k: _plain(getattr(cfg.privacy, k)) for k in CLEAN_PRIVACY_KEYS}
    blob = json.dumps(_plain({"sources": cfg.sources, "clean": cfg.clean, "privacy": privacy}), sort_keys=True,
                      default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def _plain(value: object) -> object:
    """Frozen config values (dataclasses, read-only mappings, tuples) as JSON-able data."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def output_versions(spark: SparkSession, cfg: AppConfig) -> dict[str, int | None]:
    tables = {f"silver.{s}": cfg.table("silver", s) for s in SOURCES}
    tables["quarantine.rows"] = cfg.table("quarantine", "rows")
    return {name: delta_io.version(spark, uri) for name, uri in tables.items()}


def last_state(spark: SparkSession, cfg: AppConfig) -> CleanState | None:
    uri = cfg.table(*STATE_TABLE)
    if not delta_io.is_delta(spark, uri):
        return None
    row = delta_io.read(spark, uri).orderBy(F.col("finished_at").desc()).first()
    if row is None:
        return None
    return CleanState(json.loads(row["bronze_versions"]), json.loads(row["output_versions"]), row["settings"],
                      json.loads(row["result"]))


def record_state(spark: SparkSession, cfg: AppConfig, run_id: str, mode: str, bronze: Mapping[str, int | None],
                 result: Mapping[str, Any]) -> None:
    """Append the run's state row: the last commit of a clean, so only a clean that wrote everything records one."""
    row = [(run_id, dt.datetime.now(dt.UTC).replace(tzinfo=None), mode, json.dumps(dict(bronze), sort_keys=True),
            json.dumps(output_versions(spark, cfg), sort_keys=True), settings_fingerprint(cfg),
            json.dumps(dict(result), sort_keys=True, default=str))]
    df = spark.createDataFrame(row, f"{C.RUN_ID} string, finished_at timestamp, mode string, bronze_versions string, "
                                    "output_versions string, settings string, result string")
    delta_io.append(df, cfg.table(*STATE_TABLE), name="metrics.clean_state")


def appends_only(spark: SparkSession, uri: str, start: int, end: int) -> bool:
    """Whether every commit of ``uri`` after ``start`` up to ``end`` only added rows."""
    rows = (DeltaTable.forPath(spark, uri).history()
            .where((F.col("version") > start) & (F.col("version") <= end))
            .select("version", "operation", "operationParameters").collect())
    if len(rows) != end - start:
        return False
    for r in rows:
        params = r["operationParameters"] or {}
        wanted = _APPEND_MODES.get(r["operation"])
        if wanted is not None and params.get(wanted[0]) == wanted[1]:
            continue
        if r["operation"] not in _NO_DATA_CHANGE:
            return False
    return True


def full_refresh_reason(spark: SparkSession, cfg: AppConfig, state: CleanState | None,
                        versions: Mapping[str, int | None]) -> str | None:
    """Why this clean must rebuild silver and quarantine from the whole of bronze (None: it can run
    incrementally from ``state``)."""
    if state is None:
        return "no earlier clean recorded"
    if cfg.privacy.pseudonymise:
        return "privacy.pseudonymise is on (silver holds pseudonyms, bronze the raw ids)"
    if state.settings != settings_fingerprint(cfg):
        return "the sources, clean or privacy settings changed since the last clean"
    for name, v in output_versions(spark, cfg).items():
        if v != state.outputs.get(name):
            return f"{name} changed since the last clean (a clean that failed part-way, or forget)"
    for source in SOURCES:
        start, end = state.bronze.get(source), versions.get(source)
        if start == end:
            continue
        if start is None or end is None or end < start:
            return f"bronze.{source} was created, dropped or rolled back since the last clean"
        if not appends_only(spark, cfg.table("bronze", source), start, end):
            return f"bronze.{source} changed by more than appends since the last clean"
    return None


def run_clean(spark: SparkSession, cfg: AppConfig, run_id: str, now: dt.datetime,
              full_refresh: bool = False) -> dict[str, Any]:
    """Clean the bronze rows added since the last successful clean into silver and quarantine (see
    :func:`incremental_clean`), or rebuild both from the whole of bronze (:func:`full_clean`): on
    ``full_refresh``, on the first run, and whenever the incremental result could differ from a rebuild (see
    :func:`full_refresh_reason`). A clean that finds no new bronze rows writes nothing, and reports the totals the
    last clean left. Every run records its bronze versions and totals in ``metrics/clean_state``, last."""
    versions = {s: delta_io.version(spark, cfg.table("bronze", s)) if getattr(cfg.sources, s) is not None else None
                for s in SOURCES}
    state = None if full_refresh else last_state(spark, cfg)
    reason = "--full-refresh" if full_refresh else full_refresh_reason(spark, cfg, state, versions)
    if reason is None and state is not None and all(state.bronze.get(s) == versions[s] for s in SOURCES) \
            and (versions["users"] is None or age_band_movers(spark, cfg, now, versions["users"]).isEmpty()):
        log.info("clean: no bronze rows since the last clean and no age band moved; nothing to write")
        return {**state.result, **{f"{s}.{k}": 0 for s in SOURCES if versions[s] is not None for k in RUN_KEYS},
                "mode": "unchanged"}
    if reason is not None or state is None:
        log.info("clean: full refresh (%s)", reason)
        totals = full_clean(spark, cfg, run_id, now, versions)
        result: dict[str, Any] = {**totals, "mode": "full"}
        for s in SOURCES:
            if f"{s}.bronze_rows" in totals:
                result.update({f"{s}.run_bronze_rows": totals[f"{s}.bronze_rows"],
                               f"{s}.run_inserted": totals[f"{s}.silver_rows"], f"{s}.run_updated": 0,
                               f"{s}.run_quarantined": totals[f"{s}.quarantined"],
                               f"{s}.run_duplicates": totals[f"{s}.duplicates"],
                               f"{s}.rejudged_to_silver": 0, f"{s}.rejudged_to_quarantine": 0})
    else:
        result = {**incremental_clean(spark, cfg, run_id, now, state, versions), "mode": "incremental"}
    record_state(spark, cfg, run_id, result["mode"], versions, result)
    return result


# The per-run balance of one source: run_bronze_rows = run_inserted + run_updated + run_quarantined +
# run_duplicates (what became of this run's new bronze rows), plus the earlier rows whose outcome the new rows
# changed (rejudged_*).
RUN_KEYS = ("run_bronze_rows", "run_inserted", "run_updated", "run_quarantined", "run_duplicates",
            "rejudged_to_silver", "rejudged_to_quarantine")


@dataclass
class SourceChanges:
    """One source's changes, computed before anything is written."""
    key: str
    upserts: DataFrame  # silver rows to insert or update (by ``key``)
    deletes: DataFrame  # silver keys to delete
    q_inserts: DataFrame  # quarantine rows to add (quarantine's shape)
    q_deletes: DataFrame  # quarantine rows to remove (``Q_KEY`` columns, distinct)
    silver_rows: int = 0  # silver rows to upsert or delete
    quarantine_rows: int = 0  # quarantine rows to add or remove
    known: DataFrame | None = None  # users/items: every id silver holds after this run
    changed: DataFrame | None = None  # users/items: ids that became known or unknown


def tag_new(new_batches: DataFrame) -> Transform:
    """``_new``: the row came with one of ``new_batches`` (source file, ingest time)."""
    def step(df: DataFrame) -> DataFrame:
        flags = new_batches.withColumn(NEW, F.lit(True))
        return (df.join(F.broadcast(flags), [C.SOURCE_FILE, C.INGEST_TS], "left")
                .withColumn(NEW, F.coalesce(F.col(NEW), F.lit(False))))
    return step


def in_slice(keys: DataFrame, key: str, flag: str) -> Transform:
    """``flag``: the row's ``key`` is in ``keys`` (distinct)."""
    def step(df: DataFrame) -> DataFrame:
        return (df.join(keys.select(key).withColumn(flag, F.lit(True)), key, "left")
                .withColumn(flag, F.coalesce(F.col(flag), F.lit(False))))
    return step


def silver_diff(now_rows: DataFrame, base_rows: DataFrame, key: str) -> tuple[DataFrame, DataFrame]:
    """Rows to upsert (new or changed) and keys to delete so that the slice ``base_rows`` becomes ``now_rows``."""
    base = base_rows.select(*now_rows.columns)
    return now_rows.exceptAll(base), base.select(key).subtract(now_rows.select(key))


def incremental_clean(spark: SparkSession, cfg: AppConfig, run_id: str, now: dt.datetime, state: CleanState,
                      versions: Mapping[str, int | None]) -> dict[str, Any]:
    """Clean the bronze rows added since ``state`` and merge the outcome into silver and quarantine.

    The rules that look across rows stay exact by re-judging a *slice*: every bronze row sharing a key with a new
    row (users, items: the id; events: the user, and the event id), with the rules of a full clean. For events
    the slice's users are those of the new events, those whose user record became known or unknown, and those
    with events of an item that did; so a late event is judged with the user's earlier days (bot rule), an
    event quarantined as ``unknown_user`` moves to silver when its user arrives, and a user that becomes a bot has
    its earlier silver events moved to quarantine. The slice's outcome is diffed against what silver and
    quarantine hold for it, and only the differences are merged. Every check (the run's balance, reject shares,
    the totals) runs before the first write.

    The users slice also holds every user whose age band as of ``now`` is not the one silver holds
    (:func:`age_band_movers`), so the band is as of this run for everyone. Other rows outside the slices keep the
    outcome of the run that judged them: ``future_timestamp`` is as of that run. Apart from that rule, the result
    is the one :func:`full_clean` gives for the same bronze as of ``now``.
    """
    from sparkpromo.forget import forgotten_set, without_forgotten

    cached: list[DataFrame] = []

    def keep(df: DataFrame) -> DataFrame:
        # Computed now and cut from its lineage: each frame here builds on the ones before, and with their whole
        # plans inlined the last merges planned trees of ~10^6 nodes (a 2 GiB driver ran out of heap).
        cached.append(df.localCheckpoint(eager=True))
        return cached[-1]

    forgotten = forgotten_set(spark, cfg)
    quarantine = delta_io.read(spark, cfg.table("quarantine", "rows"))

    def bronze(source: str) -> DataFrame:
        uri, end, start = cfg.table("bronze", source), versions[source], state.bronze.get(source)
        rows = delta_io.read(spark, uri, version=end)
        pairs = rows.select(C.SOURCE_FILE, C.INGEST_TS).distinct()
        if start != end:
            pairs = pairs.subtract(delta_io.read(spark, uri, version=start).select(C.SOURCE_FILE, C.INGEST_TS))
        else:
            pairs = pairs.limit(0)
        df = rows.transform(tag_new(keep(pairs)))
        src = getattr(cfg.sources, source)
        if source in ("events", "users"):
            df = df.transform(without_forgotten(forgotten, src.columns.get(C.USER_ID, C.USER_ID), CORRUPT))
        return df

    def diff(source: str, key: str, emitted: DataFrame, silver_now: DataFrame, silver_base: DataFrame
             ) -> tuple[SourceChanges, dict[str, int]]:
        """The changes of one source's slice and its counts; ``emitted`` holds the slice's marked rows."""
        personal = personal_columns(cfg, source)
        upserts, deletes = silver_diff(silver_now, silver_base, key)
        upserts, deletes = keep(upserts), keep(deletes)
        q_now = keep(emitted.transform(quarantine_rows(source, run_id, personal)))
        olds = (emitted.where(~F.col(NEW))
                .select(payload(personal, source == "users").alias(C.Q_PAYLOAD), F.col(C.SOURCE_FILE)).distinct())
        q_base = keep(quarantine.where(F.col(C.Q_SOURCE) == source)
                      .join(olds, [C.Q_PAYLOAD, C.SOURCE_FILE], "left_semi").select(*Q_KEY))
        q_ins = keep(q_now.select(*Q_KEY).exceptAll(q_base).withColumn(C.RUN_ID, F.lit(run_id)))
        q_gone = keep(q_base.exceptAll(q_now.select(*Q_KEY)))
        new_rows = emitted.where(F.col(NEW))
        # Three small aggregates: outcomes of the slice's new and earlier rows, quarantine and silver changes.
        by_age = emitted.groupBy(F.col(NEW), outcome().alias("metric")).count().collect()
        outcomes = {r["metric"]: int(r["count"]) for r in by_age if r[NEW]}
        tag = "_change"
        q_stats = {(r[tag], r[C.Q_RULE]): int(r["count"]) for r in
                   q_ins.select(F.lit("+").alias(tag), C.Q_RULE)
                   .unionByName(q_gone.select(F.lit("-").alias(tag), C.Q_RULE))
                   .unionByName(q_base.select(F.lit("base").alias(tag), C.Q_RULE))
                   .groupBy(tag, C.Q_RULE).count().collect()}
        in_base = silver_base.select(key).withColumn("_in_base", F.lit(True))
        s_stats = {r[tag]: int(r["count"]) for r in
                   upserts.select(key).join(in_base, key, "left")
                   .select(F.when(F.col("_in_base").isNull(), "inserted").otherwise("updated").alias(tag))
                   .unionByName(deletes.select(F.lit("deleted").alias(tag)))
                   .unionByName(silver_base.select(F.lit("base").alias(tag)))
                   .unionByName(accepted(new_rows).select(key).join(in_base, key, "left_semi")
                                .select(F.lit("run_updated").alias(tag)))
                   .groupBy(tag).count().collect()}
        run_updated, inserted_keys = s_stats.get("run_updated", 0), s_stats.get("inserted", 0)
        run_quarantined = sum(v for k, v in outcomes.items() if k.startswith("quarantine:"))
        q_inserted = sum(v for (t, _), v in q_stats.items() if t == "+")
        counts = {
            "run_bronze_rows": sum(outcomes.values()),
            "run_inserted": outcomes.get("silver", 0) - run_updated, "run_updated": run_updated,
            "run_quarantined": run_quarantined, "run_duplicates": outcomes.get("duplicate", 0),
            "rejudged_to_silver": max(inserted_keys - (outcomes.get("silver", 0) - run_updated), 0),
            "rejudged_to_quarantine": max(q_inserted - run_quarantined, 0),
            # for the totals
            "_silver_delta": inserted_keys - s_stats.get("deleted", 0),
            "_dup_now": sum(int(r["count"]) for r in by_age if r["metric"] == "duplicate"),
            "_dup_before": (sum(int(r["count"]) for r in by_age if not r[NEW]) - s_stats.get("base", 0)
                            - sum(v for (t, _), v in q_stats.items() if t == "base")),
        }
        for (t, rule), v in q_stats.items():
            if t in ("+", "-"):
                counts[f"_q{t}{rule}"] = v
        q_deletes = keep(q_gone.distinct())
        changes = SourceChanges(key, upserts, deletes, q_ins, q_deletes,
                                silver_rows=inserted_keys + s_stats.get("updated", 0) + s_stats.get("deleted", 0),
                                quarantine_rows=sum(v for (t, _), v in q_stats.items() if t != "base"))
        return changes, counts

    def dimension(source: str, movers: DataFrame | None) -> tuple[SourceChanges, dict[str, int]]:
        """``movers``: ids to re-judge besides those of the new rows (users whose age band moved)."""
        src = getattr(cfg.sources, source)
        key, max_len = DIMENSION_KEYS[source], cfg.clean.max_string_length
        raw = bronze(source)
        classify, to_silver = ((classify_users(max_len, src.exclude),
                                silver_users(now.date(), users_consent(cfg, raw.columns)))
                               if source == "users" else (classify_items(max_len, src.exclude), silver_items))
        canon = raw.transform(canonicalise(source, src))
        keys = canon.where(F.col(NEW) & F.col(key).isNotNull()).select(key)
        keys = keep((keys if movers is None else keys.unionByName(movers)).distinct())
        emitted = keep(canon.transform(in_slice(keys, key, _IN)).where(F.col(NEW) | F.col(_IN))
                       .transform(mark_duplicates(key, True)).transform(classify))
        silver_table = delta_io.read(spark, cfg.table("silver", source))
        silver_base = keep(silver_table.join(keys, key, "left_semi"))
        silver_now = emitted.transform(to_silver)
        changes, counts = diff(source, key, emitted, silver_now, silver_base)
        now_keys, base_keys = silver_now.select(key), silver_base.select(key)
        changes.known = keep(silver_table.select(key).join(keys, key, "left_anti").unionByName(now_keys))
        changes.changed = keep(now_keys.subtract(base_keys).unionByName(base_keys.subtract(now_keys)))
        counts["_bronze_total"] = raw.count()
        return changes, counts

    def events(known: Mapping[str, DataFrame | None], changed: Mapping[str, DataFrame]
               ) -> tuple[SourceChanges, dict[str, int]]:
        """The events slice: the new events, and every event of their users and of the users whose events
        name a user or item that became known or unknown."""
        raw = bronze("events")
        keyed = raw.transform(keyed_events(cfg))
        affected = keyed.where(F.col(NEW)).select(C.USER_ID)
        if "users" in changed:
            affected = affected.unionByName(changed["users"].select(C.USER_ID))
        if "items" in changed:
            affected = affected.unionByName(keyed.join(changed["items"], C.ITEM_ID, "left_semi").select(C.USER_ID))
        users = keep(affected.where(F.col(C.USER_ID).isNotNull()).distinct())
        flagged = keyed.transform(in_slice(users, C.USER_ID, _AU))
        # Every copy of a slice event's id, whoever's it is: which copy is kept is decided among all of them.
        ids = keep(flagged.where(F.col(_AU) | F.col(NEW)).where(F.col(C.EVENT_ID).isNotNull())
                   .select(C.EVENT_ID).distinct())
        marked = (flagged.transform(in_slice(ids, C.EVENT_ID, _IN)).where(F.col(_AU) | F.col(NEW) | F.col(_IN))
                  .transform(mark_duplicates(C.EVENT_ID, False, sum_quantity=sums_quantity(cfg, raw)))
                  .transform(event_rules(cfg, now))
                  .transform(check_references(known["users"], known["items"])))
        bot_limit = bot_threshold(cfg)
        if bot_limit:
            marked = marked.transform(flag_bots(keep(marked.transform(bot_users(bot_limit)))))
        # Rows outside the slice's users came in only to rank copies; their outcome is not re-judged.
        emitted = keep(marked.where(F.col(_AU) | F.col(NEW)))
        silver_base = keep(delta_io.read(spark, cfg.table("silver", "events")).join(users, C.USER_ID, "left_semi"))
        change, count = diff("events", C.EVENT_ID, emitted, silver_events(emitted), silver_base)
        count["_bronze_total"] = raw.count()
        return change, count

    try:
        changes: dict[str, SourceChanges] = {}
        counts: dict[str, dict[str, int]] = {}
        known: dict[str, DataFrame | None] = {source: None for source in DIMENSION_KEYS}
        changed: dict[str, DataFrame] = {}
        for source, key in DIMENSION_KEYS.items():
            if versions.get(source) is None:
                continue
            movers = age_band_movers(spark, cfg, now, versions[source]) if source == "users" else None
            if state.bronze.get(source) == versions[source] and (movers is None or movers.isEmpty()):
                # nothing new, nobody to re-judge: silver's ids are the known ones
                known[source] = delta_io.read(spark, cfg.table("silver", source)).select(key)
                continue
            changes[source], counts[source] = dimension(source, movers)
            known[source] = changes[source].known
            if changes[source].changed is not None and not cast(DataFrame, changes[source].changed).isEmpty():
                changed[source] = cast(DataFrame, changes[source].changed)
        if state.bronze.get("events") != versions["events"] or changed:
            changes["events"], counts["events"] = events(known, changed)

        results, outcomes = incremental_totals(spark, cfg, state, counts)
        for k, v in results.items():
            if ".quarantine:" in k:
                log.info("quarantine %s = %d", k, v)

        for name in (*DIMENSION_KEYS, "events"):
            if name in changes:
                merge_silver(spark, cfg.table("silver", name), changes[name], f"silver.{name}")
        merge_quarantine(spark, cfg.table("quarantine", "rows"), [changes[s] for s in changes])
        dq_rows = [(run_id, source, metric, n) for source, per in outcomes.items() for metric, n in per.items()]
        dq = spark.createDataFrame(dq_rows, "_run_id string, source string, metric string, value long")
        delta_io.replace_partition(dq, cfg.table("metrics", "data_quality"), {C.RUN_ID: run_id},
                                   name="metrics.data_quality")
    finally:
        # Newest first: a frame is dropped after the frames built on it, so Spark never re-plans a cached frame
        # whose input left the cache (which costs minutes with this many).
        for df in reversed(cached):
            df.unpersist()
    return results


def incremental_totals(spark: SparkSession, cfg: AppConfig, state: CleanState,
                       counts: Mapping[str, Mapping[str, int]]) -> tuple[dict[str, int], dict[str, dict[str, int]]]:
    """The totals after this run's changes (the keys of :func:`summarise`, and per source the outcome counts as
    :func:`written_counts` stores them) and its per-run balance, checked before anything is written: the run's
    new rows all end somewhere, and the tables' totals still add up to bronze."""
    q_before = {(r[C.Q_SOURCE], r[C.Q_RULE]): int(r["count"]) for r in
                delta_io.read(spark, cfg.table("quarantine", "rows")).groupBy(C.Q_SOURCE, C.Q_RULE).count().collect()}
    results: dict[str, int] = {}
    outcomes: dict[str, dict[str, int]] = {}
    for source in SOURCES:
        if source in counts or f"{source}.bronze_rows" not in state.result:
            continue
        # No new rows and nothing re-judged: the source's totals are the last clean's.
        totals = {k.split(".", 1)[1]: int(v) for k, v in state.result.items() if k.startswith(f"{source}.")
                  and k.split(".", 1)[1] in ("silver_rows", "duplicates") or k.startswith(f"{source}.quarantine:")}
        per_rule = {"silver": totals.pop("silver_rows"), "duplicate": totals.pop("duplicates"), **totals}
        results.update(summarise(source, per_rule))
        results.update({f"{source}.{k}": 0 for k in RUN_KEYS})
        outcomes[source] = per_rule
    for source, c in counts.items():
        run = {k: c[k] for k in RUN_KEYS}
        new_rows = c["_bronze_total"] - int(state.result.get(f"{source}.bronze_rows", 0))
        if run["run_bronze_rows"] != new_rows:
            raise CleanError(f"{source}: bronze has {new_rows} new rows but {run['run_bronze_rows']} were judged "
                             f"({run}); nothing was written")
        silver_before = delta_io.read(spark, cfg.table("silver", source)).count()
        per_rule = {"silver": silver_before + c["_silver_delta"],
                    "duplicate": int(state.result.get(f"{source}.duplicates", 0)) + c["_dup_now"] - c["_dup_before"]}
        rules = {r for (s, r) in q_before if s == source} | {k[3:] for k in c if k.startswith(("_q+", "_q-"))}
        for rule in rules:
            n = q_before.get((source, rule), 0) + c.get(f"_q+{rule}", 0) - c.get(f"_q-{rule}", 0)
            if n:
                per_rule[f"quarantine:{rule}"] = n
        if sum(per_rule.values()) != c["_bronze_total"]:
            raise CleanError(f"{source}: bronze has {c['_bronze_total']} rows but silver + quarantine + duplicates "
                             f"would be {sum(per_rule.values())} ({per_rule}); nothing was written")
        # Shares of the whole bronze, as a full clean of it judges them: a small batch may be mostly one rule's
        # (a one-row users export that fails, a bot's next events) without saying anything about the format.
        check_total_shares(source, per_rule, c["_bronze_total"], cfg.clean.max_reject_share)
        results.update(summarise(source, per_rule))
        results.update({f"{source}.{k}": v for k, v in run.items()})
        outcomes[source] = per_rule
    return results, outcomes


def check_total_shares(source: str, per_rule: Mapping[str, int], total: int, max_share: float) -> None:
    """:func:`check_reject_shares` on the totals a clean leaves (``per_rule``: outcome -> rows of ``source``)."""
    worst = max(((n, k.split(":", 1)[1]) for k, n in per_rule.items() if k.startswith("quarantine:")), default=None)
    if worst is not None and total and worst[0] / total > max_share:
        raise RejectShareError(
            f"sources.{source}: {worst[0]} of {total} rows ({worst[0] / total:.1%}) fail rule {worst[1]}, above "
            f"clean.max_reject_share {max_share:g} (check the source's format and column mapping; nothing was "
            "written)")


def merge_silver(spark: SparkSession, uri: str, change: SourceChanges, name: str) -> None:
    """Upsert and delete one silver table's changed rows by key, in one commit (none when nothing changed)."""
    ups = change.upserts.withColumn(OP, F.lit("u"))
    dels = change.deletes.select(*[F.col(c) if c == change.key else F.lit(None).cast(t).alias(c)
                                   for c, t in change.upserts.dtypes]).withColumn(OP, F.lit("d"))
    source = ups.unionByName(dels)
    if not change.silver_rows:
        return
    cols = change.upserts.columns
    delta_io.fault_point(f"before_write:{name}")
    (DeltaTable.forPath(spark, uri).alias("t")
     .merge(source.alias("s"), f"t.`{change.key}` = s.`{change.key}`")
     .whenMatchedDelete(f"s.{OP} = 'd'")
     .whenMatchedUpdate(f"s.{OP} = 'u'", {f"`{c}`": f"s.`{c}`" for c in cols})
     .whenNotMatchedInsert(f"s.{OP} = 'u'", {f"`{c}`": f"s.`{c}`" for c in cols})
     .execute())
    delta_io.fault_point(f"after_write:{name}")


def merge_quarantine(spark: SparkSession, uri: str, changes: Sequence[SourceChanges]) -> None:
    """Remove the re-judged rows and add this run's rejects, in one commit (none when nothing changed)."""
    cols = [*Q_KEY, C.RUN_ID]
    source: DataFrame | None = None
    for change in changes:
        part = (change.q_inserts.select(*cols).withColumn(OP, F.lit("i"))
                .unionByName(change.q_deletes.withColumn(C.RUN_ID, F.lit(None).cast("string"))
                             .select(*cols).withColumn(OP, F.lit("d"))))
        source = part if source is None else source.unionByName(part)
    if source is None or not any(c.quarantine_rows for c in changes):
        return
    match = " AND ".join(f"t.`{c}` <=> s.`{c}`" for c in Q_KEY)
    delta_io.fault_point("before_write:quarantine")
    (DeltaTable.forPath(spark, uri).alias("t")
     .merge(source.alias("s"), f"s.{OP} = 'd' AND {match}")
     .whenMatchedDelete()
     .whenNotMatchedInsert(f"s.{OP} = 'i'", {f"`{c}`": f"s.`{c}`" for c in cols})
     .execute())
    delta_io.fault_point("after_write:quarantine")
