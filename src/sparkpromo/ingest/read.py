"""Reading landing files into bronze rows: the columns every file must hold, the header-aware CSV reader, JSON
and Parquet, and the ingestion metadata and schema-drift check of bronze."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping, Sequence
from functools import partial, reduce
from pathlib import Path

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import ArrayType, MapType, StringType, StructField, StructType

from sparkpromo import columns as C
from sparkpromo.config import (
    MAPPABLE_EVENT_COLUMNS,
    MAPPABLE_ITEM_COLUMNS,
    MAPPABLE_USER_COLUMNS,
    FileSource,
)
from sparkpromo.frame import Transform
from sparkpromo.landing import (
    SPARK_ONLY_CODECS,
    IngestError,
    Listing,
    csv_dialect,
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
# File size and modification time: written by versions that identified files by them (before the streaming
# ingest); a bronze table created then still has the columns, which are metadata, never source columns.
FILE_SIZE = "_file_size"
FILE_MTIME = "_file_mtime"
METADATA_COLUMNS = (C.SOURCE_FILE, FILE_SIZE, FILE_MTIME, C.INGEST_TS, C.RUN_ID)
SOURCES = ("events", "users", "items")
# How many found columns an error lists before a count.
SHOWN_COLUMNS = 30
# What Delta refuses in a column name without column mapping.
_DELTA_FORBIDDEN = re.compile(r"[ ,;{}()\n\t=]")


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
    column, or hold a name bronze cannot take; this runs before anything is read or written, and clean would
    otherwise see the column as all nulls."""
    for name in columns:
        if _DELTA_FORBIDDEN.search(name):
            raise IngestError(f"sources.{source}: {where} has a column named {name!r}: Delta tables take no space, "
                              "tab, newline or any of ,;{}()= in a column name; rename it in the export")
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
def read_source(spark: SparkSession, source: str, src: FileSource, kind: str, listing: Listing,
                each_header: Callable[[Sequence[str]], None] | None = None) -> DataFrame | None:
    """Read the files of ``listing`` with every column as a string; unparsable lines are kept in
    ``_corrupt_record``, each row's file in ``_source_file``. None when no file holds a CSV header (only empty
    files).

    Every CSV file with a header, or else the files as a whole, is checked for the required columns
    (:func:`check_columns`) before any row is read; ``each_header`` is also given each distinct CSV header's
    columns (:func:`check_drift` against bronze: files of one batch are read as one frame by column name, where a
    file without a column another file has would get nulls for it).
    """
    check = partial(check_columns, source, src, kind)
    options = _read_options(src, listing)
    files = [spark_path(f) for f in listing.files]
    if src.format == "csv" and reader_flag(options, "header"):
        return _read_csv_by_header(spark, source, src, listing, check, each_header)
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
        return df.select(*[_as_string(df, c) for c in df.columns], _file_metadata())
    # Without mergeSchema Spark takes the schema of one file's footer, and another file's extra columns are lost.
    merge = {} if reader_option(options, "mergeschema") else {"mergeSchema": "true"}
    df = spark.read.options(**options, **merge).parquet(*files)
    check(src.path, df.columns)
    return df.select(*[F.col(f"`{c}`").cast(StringType()).alias(c) for c in df.columns],
                     F.lit(None).cast(StringType()).alias(CORRUPT), _file_metadata())


def _read_csv(spark: SparkSession, options: Mapping[str, str], names: Sequence[str], files: Sequence[str]
              ) -> DataFrame:
    # An explicit all-string schema plus the corrupt-record column: Spark then keeps lines with the wrong field
    # count instead of dropping them. The schema is applied by position, hence one read per distinct header.
    schema = StructType([StructField(c, StringType()) for c in names] + [StructField(CORRUPT, StringType())])
    df = (spark.read.options(**options).option("mode", "PERMISSIVE").option("columnNameOfCorruptRecord", CORRUPT)
          .schema(schema).csv(list(files)))
    return df.select("*", _file_metadata())


def _read_options(src: FileSource, listing: Listing) -> dict[str, str]:
    options = dict(src.options)
    if listing.base_path is not None and not reader_option(options, "basepath"):
        # Files given one by one lose the partition columns of their key=value directories unless Spark knows
        # the directory they were listed from.
        options["basePath"] = listing.base_path
    return options


def _read_csv_by_header(spark: SparkSession, source: str, src: FileSource, listing: Listing,
                        check: Callable[[str, Sequence[str]], None],
                        each_header: Callable[[Sequence[str]], None] | None = None) -> DataFrame | None:
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
        return None
    if each_header is not None:
        parts = partition_columns(listing)
        for names in groups:
            each_header([*names, *parts, CORRUPT])  # every CSV read adds the corrupt-record column
    frames = [_read_csv(spark, options, names, files) for names, files in groups.items()]
    df = reduce(lambda a, b: a.unionByName(b, allowMissingColumns=True), frames)
    if len(frames) > 1:
        log.info("sources.%s: %d distinct CSV headers under %s, read by column name", source, len(frames), src.path)
    tail = (CORRUPT, C.SOURCE_FILE)
    return df.select(*[F.col(f"`{c}`") for c in df.columns if c not in tail], *[F.col(c) for c in tail])


def _file_metadata() -> Column:
    # Taken per file scan: ``_metadata`` does not survive a union.
    return F.col("_metadata.file_path").alias(C.SOURCE_FILE)


def _as_string(df: DataFrame, name: str) -> Column:
    dtype = df.schema[name].dataType
    col = F.col(f"`{name}`")
    if isinstance(dtype, (StructType, ArrayType, MapType)):
        return F.to_json(col).alias(name)
    # A key=value directory's column is typed by Spark's partition inference unless the session turns it off.
    return col.cast(StringType()).alias(name)


def partition_columns(listing: Listing) -> list[str]:
    """The columns Spark adds from the key=value directories between ``listing.base_path`` and its files."""
    if listing.base_path is None:
        return []
    base = listing.base_path.rstrip("/") + "/"
    names: dict[str, None] = {}
    for f in listing.files:
        rel = f[len(base):] if f.startswith(base) else ""
        names.update((seg.split("=", 1)[0], None) for seg in rel.split("/")[:-1] if "=" in seg)
    return list(names)


# ----------------------------------------------------------------------------------------------------------------
# Bronze
# ----------------------------------------------------------------------------------------------------------------
def with_ingest_metadata(run_id: str, ingest_ts: Column | None = None) -> Transform:
    """Add the source file (unless the frame holds it already), ingest time and run id."""
    def add(df: DataFrame) -> DataFrame:
        files = [] if C.SOURCE_FILE in df.columns else [_file_metadata()]
        return df.select(
            "*",
            *files,
            (ingest_ts if ingest_ts is not None else F.current_timestamp()).alias(C.INGEST_TS),
            F.lit(run_id).alias(C.RUN_ID),
        )
    return add


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


def user_col_of(source: str, src: FileSource) -> str | None:
    return src.columns.get(C.USER_ID, C.USER_ID) if source in ("events", "users") else None


__all__ = [
    "CORRUPT", "FILE_SIZE", "FILE_MTIME", "METADATA_COLUMNS", "SOURCES", "SHOWN_COLUMNS", "mappable",
    "required_columns", "check_columns", "partition_columns", "read_source", "with_ingest_metadata", "check_drift",
    "user_col_of",
]
