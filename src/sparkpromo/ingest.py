"""Ingest: landing files (CSV, JSON lines, Parquet) → append-only bronze Delta tables.

Bronze keeps every source column as a string under its source name, plus ingestion metadata (source file,
ingest time, run id) and, for CSV/JSON, the raw text of any line the parser could not split
(``_corrupt_record``). Typing, mapping and validation happen in ``clean``, so nothing is lost here.

Idempotence: a file is identified by (path, size, modification time). Files already in bronze are skipped, so
ingesting the same files again adds nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

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
from sparkpromo.frame import Transform

log = logging.getLogger(__name__)

CORRUPT = "_corrupt_record"
FILE_SIZE = "_file_size"
FILE_MTIME = "_file_mtime"
METADATA_COLUMNS = (C.SOURCE_FILE, FILE_SIZE, FILE_MTIME, C.INGEST_TS, C.RUN_ID)
SOURCES = ("events", "users", "items")


class IngestError(ValueError):
    """A source that cannot be ingested as configured (missing mapped column, schema drift...)."""


def mappable(source: str) -> Sequence[str]:
    return {"events": MAPPABLE_EVENT_COLUMNS, "users": MAPPABLE_USER_COLUMNS, "items": MAPPABLE_ITEM_COLUMNS}[source]


def read_source(spark: SparkSession, src: FileSource) -> DataFrame:
    """Read a landing source with every column as a string; unparsable lines are kept in ``_corrupt_record``."""
    options = dict(src.options)
    if src.format == "csv":
        # Read the header once to learn the column names, then re-read with an all-string schema plus the
        # corrupt-record column: with an explicit schema Spark keeps lines that have the wrong field count.
        header = spark.read.options(**options).csv(src.path).columns
        schema = StructType([StructField(c, StringType()) for c in header] + [StructField(CORRUPT, StringType())])
        df = (spark.read.options(**options).option("mode", "PERMISSIVE")
              .option("columnNameOfCorruptRecord", CORRUPT).schema(schema).csv(src.path))
    elif src.format == "json":
        df = (spark.read.options(**options).option("mode", "PERMISSIVE").option("primitivesAsString", "true")
              .option("columnNameOfCorruptRecord", CORRUPT).json(src.path))
        if CORRUPT not in df.columns:
            df = df.withColumn(CORRUPT, F.lit(None).cast(StringType()))
        # JSON nests objects; bronze wants flat strings, so nested values are kept as their JSON text.
        df = df.select(*[_as_string(df, c) for c in df.columns])
    else:
        df = spark.read.options(**options).parquet(src.path)
        df = df.select(*[F.col(f"`{c}`").cast(StringType()).alias(c) for c in df.columns])
        df = df.withColumn(CORRUPT, F.lit(None).cast(StringType()))
    return df


def _as_string(df: DataFrame, name: str) -> Column:
    dtype = df.schema[name].dataType
    col = F.col(f"`{name}`")
    return (col if isinstance(dtype, StringType) else F.to_json(col)).alias(name)


def check_mapping(source: str, src: FileSource, source_columns: Sequence[str]) -> None:
    """Every explicitly mapped column must exist in the source file."""
    present = set(source_columns)
    for canon, col in src.columns.items():
        if col not in present:
            raise IngestError(f"sources.{source}.columns.{canon}: column '{col}' not found in {src.path} "
                              f"(found: {', '.join(c for c in source_columns if c != CORRUPT)})")


def with_ingest_metadata(run_id: str, ingest_ts: Column | None = None) -> Transform:
    """Add source file, file size/mtime, ingest time and run id."""
    def add(df: DataFrame) -> DataFrame:
        return df.select(
            "*",
            F.col("_metadata.file_path").alias(C.SOURCE_FILE),
            F.col("_metadata.file_size").alias(FILE_SIZE),
            F.col("_metadata.file_modification_time").alias(FILE_MTIME),
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
    """Append the not-yet-ingested files of one source to ``bronze/<source>``; returns counts."""
    src: FileSource | None = getattr(cfg.sources, source)
    if src is None:
        return {}
    uri = cfg.table("bronze", source)
    raw = read_source(spark, src)
    check_mapping(source, src, raw.columns)
    exists = io.is_delta(spark, uri)
    bronze = io.read(spark, uri) if exists else None
    staged = raw.transform(with_ingest_metadata(run_id))
    if bronze is not None:
        check_drift(source, staged.columns, bronze.columns, cfg.clean.allow_schema_evolution)
    new = staged.transform(new_files_only(bronze))
    # One pass to count new rows and files; the append below re-reads the (small) landing delta.
    stats = new.agg(F.count(F.lit(1)).alias("rows"), F.countDistinct(C.SOURCE_FILE).alias("files")).first()
    rows, files = int(stats["rows"]), int(stats["files"])
    if rows == 0:
        log.info("bronze.%s: nothing new to ingest from %s", source, src.path)
        return {f"{source}_rows": 0, f"{source}_files": 0}
    writer_opts = {"mergeSchema": "true"} if cfg.clean.allow_schema_evolution else {}
    io.fault_point(f"before_write:bronze.{source}")
    w = new.write.format("delta").mode("append")
    for k, v in writer_opts.items():
        w = w.option(k, v)
    w.save(uri)
    io.fault_point(f"after_write:bronze.{source}")
    log.info("bronze.%s: appended %d rows from %d new file(s)", source, rows, files)
    return {f"{source}_rows": rows, f"{source}_files": files}


def run_ingest(spark: SparkSession, cfg: AppConfig, run_id: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for source in SOURCES:
        counts.update(ingest_source(spark, cfg, source, run_id))
    return counts
