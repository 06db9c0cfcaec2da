"""The clean stage's shared vocabulary and steps: rule names in precedence order, canonical columns, duplicate
marking, quarantine rows and value parsers. Pure ``DataFrame -> DataFrame`` transforms."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from sparkpromo import columns as C
from sparkpromo.config import AppConfig, FileSource
from sparkpromo.frame import Transform
from sparkpromo.ingest import CORRUPT, METADATA_COLUMNS, mappable

__all__ = [
    "MALFORMED_RECORD", "EXCLUDED", "MISSING_FIELD", "OVERSIZED_FIELD", "UNKNOWN_EVENT_TYPE", "MALFORMED_TIMESTAMP",
    "FUTURE_TIMESTAMP", "MALFORMED_NUMBER", "NEGATIVE_PRICE", "INVALID_QUANTITY", "INVALID_RATING", "INVALID_STOCK",
    "MALFORMED_DATE", "MALFORMED_VALUE", "UNKNOWN_USER", "UNKNOWN_ITEM", "BOT_ACTIVITY", "DUP", "NEW", "COPIES",
    "RAW", "DIMENSION_KEYS", "RULE_COLUMNS", "EXAMPLE", "EXAMPLE_CHARS", "REQUIRED", "canonicalise", "canonical",
    "first_rule", "missing_any", "oversized_any", "excluded", "malformed", "duplicate_keys", "ranked_copies",
    "single_copies", "mark_duplicates", "MASK", "personal_columns", "identifying_personal", "masked_line", "payload",
    "quarantine_rows",
    "accepted", "parse_timestamp", "parse_double", "parse_bool"
]


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

REQUIRED = {
    "events": (C.EVENT_ID, C.USER_ID, C.ITEM_ID, C.EVENT_TYPE, C.EVENT_TS),
    "users": (C.USER_ID,),
    "items": (C.ITEM_ID,),
}


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


# Every pattern runs in time linear in the line (a corrupt line may hold anything, megabytes without a separator):
# an address starts only where a run of its characters starts, and that run is taken whole (possessive), so no
# start inside a long word is tried again.
_EMAIL_RE = r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]++@[A-Za-z0-9.-]+\.[A-Za-z]{2,}"
_DATE_RE = r"\b(\d{4}[-/.]\d{1,2}[-/.]\d{1,2}|\d{1,2}[-/.]\d{1,2}[-/.]\d{2,4})\b"
_PHONE_RE = r"\+?\d[\d ()/-]{6,}\d"
MASK = "***"
_HELD_BACKSLASHES, _HELD_QUOTE = "\ue000", "\ue001"  # private-use characters: stand-ins for \\ and \" while masking


def personal_columns(cfg: AppConfig, source: str) -> tuple[str, ...]:
    """The configured personal columns of ``source`` (events, users): canonical names and the source's own names
    for them. Items hold none."""
    src = getattr(cfg.sources, source, None)
    if source == "items" or src is None:
        return ()
    names = [*cfg.privacy.personal_columns, *(src.columns.get(c, c) for c in cfg.privacy.personal_columns)]
    return tuple(dict.fromkeys(names))


# The columns whose values tell a source's rows apart for the rules: the ids, and what an event id is derived from.
_IDENTIFYING = {"events": (C.EVENT_ID, C.USER_ID, C.ITEM_ID, C.EVENT_TYPE, C.EVENT_TS, C.PRICE, C.QUANTITY, C.RATING),
                "users": (C.USER_ID,)}


def identifying_personal(cfg: AppConfig, source: str) -> tuple[tuple[str, str], ...]:
    """The (canonical, source) names of ``source``'s identifying columns that are personal, so quarantine payloads
    leave them out: rows that differ only there (two unknown users' equal events) share a payload."""
    src = getattr(cfg.sources, source, None)
    if src is None or source not in _IDENTIFYING:
        return ()
    personal = set(personal_columns(cfg, source))
    return tuple((c, src.columns.get(c, c)) for c in _IDENTIFYING[source] if src.columns.get(c, c) in personal)


def masked_line(line: Column, personal: Sequence[str], dates_and_phones: bool) -> Column:
    """An unparsable line with personal values masked: the values of JSON keys naming a personal column, e-mail
    addresses and, for a source with dates of birth or phone numbers (``dates_and_phones``; the line's fields can't
    be told apart), every date and phone-like number."""
    if not personal:
        return line
    keys = "|".join(re.escape(c) for c in personal)
    # A quoted value is matched as one run of non-quote characters once its escaped backslashes and quotes are set
    # aside: Java's regex recurses once per repetition of a group, and "(?:[^"\\]|\\.)*" over a long value
    # overflowed the task thread's stack, which ends a local Spark's JVM.
    out = F.regexp_replace(F.regexp_replace(line, r"\\\\", _HELD_BACKSLASHES), r'\\"', _HELD_QUOTE)
    out = F.regexp_replace(out, rf'(?i)("(?:{keys})"\s*:\s*)("[^"]*+"|[^,}}\]\s]++)', f'$1"{MASK}"')
    out = F.regexp_replace(F.regexp_replace(out, _HELD_QUOTE, r'\\"'), _HELD_BACKSLASHES, r"\\\\")
    out = F.regexp_replace(out, _EMAIL_RE, MASK)
    if dates_and_phones:
        out = F.regexp_replace(F.regexp_replace(out, _DATE_RE, MASK), _PHONE_RE, MASK)
    return out


def payload(personal: Sequence[str] = (), dates_and_phones: bool = False) -> Column:
    """The raw bronze row as JSON without the ``personal`` columns: the corrupt record's text (personal values
    masked, :func:`masked_line`), or the source columns as they arrived."""
    # A name the row lacks is ignored. Each is quoted: dropFields parses its arguments as SQL identifiers, so a
    # source column named "Date of Birth" or "e-mail" would fail to parse (and "a.b" would name a nested field).
    quoted = ["`" + name.replace("`", "``") + "`" for name in personal]
    raw = F.col(RAW).dropFields(*quoted) if personal else F.col(RAW)
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
        # timestamp_millis raises on overflow (a nanosecond epoch) whatever the ANSI setting: the same ~3,000-year
        # bound as seconds keeps such a value a malformed timestamp instead of a failed clean
        ms = col.try_cast("long")
        return F.when(ms.isNotNull() & (F.abs(ms) < 1e14), F.timestamp_millis(ms))
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
