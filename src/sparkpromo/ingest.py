"""Ingest: landing files (CSV, JSON lines, Parquet) → append-only bronze Delta tables.

Bronze keeps every source column as a string under its source name, plus ingestion metadata (source file,
ingest time, run id) and, for CSV/JSON, the raw text of any line the parser could not split
(``_corrupt_record``). Typing, mapping and validation happen in ``clean``, so nothing is lost here.

Which files (:mod:`sparkpromo.landing`): a path naming one file is read whatever its name; a directory (or glob) is
listed and only the files whose name matches one of the source's ``patterns`` are read, the others are skipped and
reported. CSV files with a header are read by header name: files are grouped by identical header, each group is
read with its own schema and the groups are unioned by name, so a file whose columns come in another order is not
read with values swapped.

Every file (CSV with a header) or the whole source (JSON, Parquet, CSV without a header) must hold every mapped and
every required column; otherwise ingest fails with a one-line :class:`IngestError` before anything is written.

Idempotence: a file is identified by (path, size, modification time). Files already in bronze are skipped, so
ingesting the same files again adds nothing. Rows of users recorded in ``privacy/forgotten`` (:mod:`sparkpromo.forget`)
are dropped before the append, so no re-sent or re-ingested file brings a forgotten user back (a file that held only
such rows is read again by each ingest and loads nothing).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from functools import partial, reduce
from pathlib import Path

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StringType, StructField, StructType

from sparkpromo import columns as C
from sparkpromo import io
from sparkpromo.config import (
    MAPPABLE_EVENT_COLUMNS,
    MAPPABLE_ITEM_COLUMNS,
    MAPPABLE_USER_COLUMNS,
    AppConfig,
    FileSource,
)
from sparkpromo.forget import FORGOTTEN_HIT, forgotten_set, mark_forgotten
from sparkpromo.frame import Transform
from sparkpromo.landing import (
    SPARK_ONLY_CODECS,
    IngestError,
    Listing,
    csv_dialect,
    list_files,
    local_csv_header,
    reader_flag,
    reader_option,
    safe_header,
    spark_csv_header,
    spark_path,
    without_options,
)

log = logging.getLogger(__name__)

CORRUPT = "_corrupt_record"
FILE_SIZE = "_file_size"
FILE_MTIME = "_file_mtime"
METADATA_COLUMNS = (C.SOURCE_FILE, FILE_SIZE, FILE_MTIME, C.INGEST_TS, C.RUN_ID)
FILE_METADATA_COLUMNS = (C.SOURCE_FILE, FILE_SIZE, FILE_MTIME)
SOURCES = ("events", "users", "items")
# How many found columns an error lists before a count.
SHOWN_COLUMNS = 30


def mappable(source: str) -> Sequence[str]:
    return {"events": MAPPABLE_EVENT_COLUMNS, "users": MAPPABLE_USER_COLUMNS, "items": MAPPABLE_ITEM_COLUMNS}[source]


# ----------------------------------------------------------------------------------------------------------------
# Required columns
# ----------------------------------------------------------------------------------------------------------------
def required_columns(source: str, src: FileSource, kind: str) -> dict[str, str]:
    """Canonical column → source column that every file must hold: every explicitly mapped column, and the
    canonical columns clean cannot do without (the event id is not one: clean derives it when absent)."""
    required = {"events": [C.USER_ID, C.ITEM_ID, C.EVENT_TS], "users": [C.USER_ID], "items": [C.ITEM_ID]}[source]
    if source == "events":
        if kind == "ratings":
            required.append(C.RATING)
        elif not src.constant_event_type:
            required.append(C.EVENT_TYPE)
    out = {canon: src.columns.get(canon, canon) for canon in required}
    out.update({canon: col for canon, col in src.columns.items() if canon not in out})
    return out


def check_columns(source: str, src: FileSource, kind: str, where: str, columns: Sequence[str]) -> None:
    """Raise :class:`IngestError` when ``columns`` (of the file or source ``where``) lack a mapped or required
    column; this runs before anything is read or written, and clean would otherwise see the column as all nulls."""
    present = set(columns)
    for canon, col in required_columns(source, src, kind).items():
        if col in present:
            continue
        how = (f"mapped from {canon}" if canon in src.columns
               else f"required for {canon}; map it with sources.{source}.columns.{canon}")
        found = [c for c in columns if c != CORRUPT]
        more = f" and {len(found) - SHOWN_COLUMNS} more" if len(found) > SHOWN_COLUMNS else ""
        shown = ", ".join(found[:SHOWN_COLUMNS]) + more
        raise IngestError(f"sources.{source}: {where} has no column '{col}' ({how}; found: {shown or 'none'})")


# ----------------------------------------------------------------------------------------------------------------
# Reading
# ----------------------------------------------------------------------------------------------------------------
def read_source(spark: SparkSession, source: str, src: FileSource, kind: str = "events",
                listing: Listing | None = None) -> DataFrame:
    """Read a landing source with every column as a string; unparsable lines are kept in ``_corrupt_record``.

    The frame also holds each row's file path, size and modification time (``FILE_METADATA_COLUMNS``). Every CSV
    file with a header, or else the source as a whole, is checked for the required columns
    (:func:`check_columns`) before any row is read.
    """
    if listing is None:
        listing = list_files(spark, source, src)
    check = partial(check_columns, source, src, kind)
    options = _read_options(src, listing)
    files = [spark_path(f) for f in listing.files]
    if src.format == "csv" and reader_flag(options, "header"):
        return _read_csv_by_header(spark, source, src, listing, check)
    if src.format == "csv":
        # Without a header the columns are positional (_c0, _c1...), as many as the first line has fields.
        names = spark.read.options(**without_options(options, "inferschema")).csv(files).columns
        check(src.path, names)
        return _read_csv(spark, options, names, files)
    if src.format == "json":
        df = (spark.read.options(**options).option("mode", "PERMISSIVE").option("primitivesAsString", "true")
              .option("columnNameOfCorruptRecord", CORRUPT).json(files))
        check(src.path, df.columns)
        if CORRUPT not in df.columns:
            df = df.withColumn(CORRUPT, F.lit(None).cast(StringType()))
        # JSON nests objects; bronze wants flat strings, so nested values are kept as their JSON text.
        return df.select(*[_as_string(df, c) for c in df.columns], *_file_metadata())
    df = spark.read.options(**options).parquet(*files)
    check(src.path, df.columns)
    return df.select(*[F.col(f"`{c}`").cast(StringType()).alias(c) for c in df.columns],
                     F.lit(None).cast(StringType()).alias(CORRUPT), *_file_metadata())


def _read_csv(spark: SparkSession, options: Mapping[str, str], names: Sequence[str], files: Sequence[str]
              ) -> DataFrame:
    # An explicit all-string schema plus the corrupt-record column: Spark then keeps lines with the wrong field
    # count instead of dropping them. The schema is applied by position, hence one read per distinct header.
    schema = StructType([StructField(c, StringType()) for c in names] + [StructField(CORRUPT, StringType())])
    df = (spark.read.options(**options).option("mode", "PERMISSIVE").option("columnNameOfCorruptRecord", CORRUPT)
          .schema(schema).csv(list(files)))
    return df.select("*", *_file_metadata())


def _read_options(src: FileSource, listing: Listing) -> dict[str, str]:
    options = dict(src.options)
    if listing.base_path is not None and not reader_option(options, "basepath"):
        # Files given one by one lose the partition columns of their key=value directories unless Spark knows
        # the directory they were listed from.
        options["basePath"] = listing.base_path
    return options


def _read_csv_by_header(spark: SparkSession, source: str, src: FileSource, listing: Listing,
                        check: Callable[[str, Sequence[str]], None]) -> DataFrame:
    options = _read_options(src, listing)
    case_sensitive = str(spark.conf.get("spark.sql.caseSensitive", "false")).lower() == "true"
    dialect = csv_dialect(options)
    groups: dict[tuple[str, ...], list[str]] = {}
    for f in listing.files:
        names: list[str] | None
        if listing.local and dialect is not None and not f.endswith(SPARK_ONLY_CODECS):
            fields = local_csv_header(Path(f), dialect)
            names = None if fields is None else safe_header(fields, dialect.null_value, case_sensitive)
        else:
            names = spark_csv_header(spark, options, f)
        if not names:
            # An empty file holds no rows: there is nothing to check or read in it.
            log.info("sources.%s: %s is empty (no header line); nothing to read in it", source, f)
            continue
        check(f, names)
        groups.setdefault(tuple(names), []).append(spark_path(f))
    if not groups:
        raise IngestError(f"sources.{source}: no file under {src.path} has a header line")
    frames = [_read_csv(spark, options, names, files) for names, files in groups.items()]
    df = reduce(lambda a, b: a.unionByName(b, allowMissingColumns=True), frames)
    if len(frames) > 1:
        log.info("sources.%s: %d distinct CSV headers under %s, read by column name", source, len(frames), src.path)
    tail = (CORRUPT, *FILE_METADATA_COLUMNS)
    return df.select(*[F.col(f"`{c}`") for c in df.columns if c not in tail], *[F.col(c) for c in tail])


def _file_metadata() -> list[Column]:
    # Taken per file scan: ``_metadata`` does not survive a union.
    return [F.col("_metadata.file_path").alias(C.SOURCE_FILE), F.col("_metadata.file_size").alias(FILE_SIZE),
            F.col("_metadata.file_modification_time").alias(FILE_MTIME)]


def _as_string(df: DataFrame, name: str) -> Column:
    dtype = df.schema[name].dataType
    col = F.col(f"`{name}`")
    return (col if isinstance(dtype, StringType) else F.to_json(col)).alias(name)


# ----------------------------------------------------------------------------------------------------------------
# Bronze
# ----------------------------------------------------------------------------------------------------------------
def with_ingest_metadata(run_id: str, ingest_ts: Column | None = None) -> Transform:
    """Add source file, file size/mtime (unless the frame holds them already), ingest time and run id."""
    def add(df: DataFrame) -> DataFrame:
        files = [] if C.SOURCE_FILE in df.columns else _file_metadata()
        return df.select(
            "*",
            *files,
            (ingest_ts if ingest_ts is not None else F.current_timestamp()).alias(C.INGEST_TS),
            F.lit(run_id).alias(C.RUN_ID),
        )
    return add


def new_files_only(already: DataFrame | None) -> Transform:
    """Drop rows from files that bronze already holds (same path, size and modification time)."""
    def keep_new(df: DataFrame) -> DataFrame:
        if already is None:
            return df
        seen = already.select(C.SOURCE_FILE, FILE_SIZE, FILE_MTIME).distinct()
        return df.join(F.broadcast(seen), [C.SOURCE_FILE, FILE_SIZE, FILE_MTIME], "left_anti")
    return keep_new


def check_drift(source: str, incoming: Sequence[str], existing: Sequence[str], allow_evolution: bool) -> None:
    """A changed set of source columns is an error unless evolution was explicitly enabled."""
    inc = [c for c in incoming if c not in METADATA_COLUMNS]
    old = [c for c in existing if c not in METADATA_COLUMNS]
    extra = sorted(set(inc) - set(old))
    missing = sorted(set(old) - set(inc))
    if missing:
        # Never silently null-fill a column that used to exist, even with evolution on.
        raise IngestError(f"sources.{source}: schema drift: column(s) {', '.join(missing)} missing from the new "
                          "files; fix the export or the mapping")
    if extra and not allow_evolution:
        raise IngestError(f"sources.{source}: schema drift: new column(s) {', '.join(extra)}; set "
                          "clean.allow_schema_evolution: true to add them to bronze")


def ingest_source(spark: SparkSession, cfg: AppConfig, source: str, run_id: str) -> dict[str, int]:
    """Append the not-yet-ingested files of one source to ``bronze/<source>``; returns counts (rows, files, and
    ``<source>_skipped_files`` when files not matching the source's patterns were left out)."""
    src: FileSource | None = getattr(cfg.sources, source)
    if src is None:
        return {}
    uri = cfg.table("bronze", source)
    listing = list_files(spark, source, src)
    skipped = {f"{source}_skipped_files": len(listing.skipped)} if listing.skipped else {}
    raw = read_source(spark, source, src, cfg.sources.kind, listing)
    exists = io.is_delta(spark, uri)
    bronze = io.read(spark, uri) if exists else None
    staged = raw.transform(with_ingest_metadata(run_id))
    if bronze is not None:
        check_drift(source, staged.columns, bronze.columns, cfg.clean.allow_schema_evolution)
    # Rows of forgotten users (privacy/forgotten) are never loaded again, whatever file brings them.
    user_col = src.columns.get(C.USER_ID, C.USER_ID) if source in ("events", "users") else None
    forgotten = forgotten_set(spark, cfg) if user_col is not None else None
    marked = staged.transform(new_files_only(bronze)).transform(mark_forgotten(forgotten, user_col, CORRUPT))
    kept = ~F.col(FORGOTTEN_HIT)
    # One pass to count new rows and files; the append below re-reads the (small) landing delta.
    stats = marked.agg(F.count(F.when(kept, 1)).alias("rows"),
                       F.countDistinct(F.when(kept, F.col(C.SOURCE_FILE))).alias("files"),
                       F.count(F.when(~kept, 1)).alias("forgotten")).first()
    rows, files = int(stats["rows"]), int(stats["files"])
    dropped = {f"{source}_forgotten": int(stats["forgotten"])} if forgotten is not None else {}
    new = marked.where(kept).drop(FORGOTTEN_HIT)
    if rows == 0:
        log.info("bronze.%s: nothing new to ingest from %s", source, src.path)
        return {f"{source}_rows": 0, f"{source}_files": 0, **dropped, **skipped}
    writer_opts = {"mergeSchema": "true"} if cfg.clean.allow_schema_evolution else {}
    io.fault_point(f"before_write:bronze.{source}")
    w = new.write.format("delta").mode("append")
    for k, v in writer_opts.items():
        w = w.option(k, v)
    w = io.creating(w, new, uri, {io.STATS_COLUMNS: io.BRONZE_STATS_COLUMNS})
    w.save(uri)
    io.fault_point(f"after_write:bronze.{source}")
    log.info("bronze.%s: appended %d rows from %d new file(s)", source, rows, files)
    return {f"{source}_rows": rows, f"{source}_files": files, **dropped, **skipped}


def run_ingest(spark: SparkSession, cfg: AppConfig, run_id: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for source in SOURCES:
        counts.update(ingest_source(spark, cfg, source, run_id))
    return counts
