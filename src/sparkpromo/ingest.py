"""Ingest: new landing files (CSV, JSON lines, Parquet) → append-only bronze Delta tables.

Bronze keeps every source column as a string under its source name, plus ingestion metadata (source file,
ingest time, run id) and, for CSV/JSON, the raw text of any line the parser could not split
(``_corrupt_record``). Typing, mapping and validation happen in ``clean``, so nothing is lost here.

**New files only, found by Spark.** Each source is a Structured Streaming query run with
``trigger(availableNow=True)`` (the open-source code path under Databricks' Auto Loader), checkpointed at
``<lakehouse>/_checkpoints/ingest/<source>`` (:meth:`AppConfig.stream_checkpoint`). Its source is Spark's
``binaryFile`` file stream selecting only ``path``, ``modificationTime`` and ``length``: without the ``content``
column that source reads no byte of a file (``tests/test_ingest.py`` streams a 2.2 GB sparse file), so the stream
only *discovers* files; its checkpoint remembers every file it has handed out, and each run gets the files no
earlier run got. A ``foreachBatch`` function then reads exactly those files with the header-aware reader below and
appends them to bronze. Why not a CSV/JSON stream directly: a streaming CSV source applies one schema by
position to every file, so files with the same columns in another order would be read with values swapped, and a
missing column could not be reported per file before anything is written; the discovery stream keeps all of
that (header names, per-file column checks, patterns, skipped and empty files, JSON/Parquet, codecs) unchanged.

Which files (:mod:`sparkpromo.landing`): a path naming one local file is read whatever its name (streamed as its
directory filtered to that name); for a directory (or glob) Spark's listing applies (hidden names such as
``_SUCCESS`` or ``.x.crc`` and non-partition subdirectories are not files of the source), then only new files
whose name matches one of the source's ``patterns`` are read; the others are skipped, logged and counted
(``<source>_skipped_files``) in the run that first finds them, and remembered like every other file, so a file
skipped once is not read after ``patterns`` changes unless it is sent again under a new name. A remote URI must
name a directory or a glob. CSV files with a header are read by header name: files are grouped by identical
header, each group is read with its own schema and the groups are unioned by name.

Every file (CSV with a header) or the batch as a whole (JSON, Parquet, CSV without a header) must hold every
mapped and every required column, and the batch's columns must match bronze's (new columns only with
``clean.allow_schema_evolution``); otherwise ingest fails with a one-line :class:`IngestError` before anything is
written. A failed batch is not committed to the checkpoint: the next run retries the same files (read again, so
a corrected file sent under the same name is read in its corrected form, and a file deleted meanwhile is left out).

**Idempotence.** Each batch is appended with Delta's ``txnAppId`` (the source and the streaming query's id, which
a new checkpoint changes) and ``txnVersion`` (the batch id): a batch retried after its append committed but
before the checkpoint recorded it (a crash in between) is skipped by Delta, so no row is appended twice. A file
is identified by its path alone, as by Spark's file source: a file re-sent under a name already ingested, even
with new content or a new modification time, is not read again (Auto Loader's ``cloudFiles.allowOverwrites`` has
no counterpart in Spark's own source); send corrections under a new name. Two ingests of one source in one
driver take turns; in two processes the checkpoint's atomic batch log lets only one plan a batch.

**Cost per run.** No data file is read again and no bronze row is scanned (only bronze's schema, for the drift
check), so the data read grows with the new files only. What still grows with the landing directory is Spark's
listing of file names (each run lists the source path, as the batch reader did) and the restore of the
checkpoint's compacted list of files seen. ``maxFileAge`` is set to ten years: Spark ignores a file older than the
newest one seen by more than that, and the default (7 days) would silently skip a late file that kept an old
modification time (a copied backfill); it bounds the memory of the seen-file map, not the listing.
``latestFirst`` is off (files are read oldest first). To bound the listing, move ingested files out of the
landing directory or land each day under its own directory and point the source at a glob.

**Privacy.** Rows of users recorded in ``privacy/forgotten`` (:mod:`sparkpromo.forget`) are dropped before the
append, so no re-sent file brings a forgotten user back. Because the checkpoint remembers files, a file whose rows
all belonged to forgotten users is read once and not again by each later ingest (it used to be).
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from functools import partial, reduce
from pathlib import Path

from pyspark.errors import StreamingQueryException
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StringType, StructField, StructType

from sparkpromo import columns as C
from sparkpromo import delta_io
from sparkpromo import tables as T
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
    batch_listing,
    csv_dialect,
    local_csv_header,
    reader_flag,
    reader_option,
    safe_header,
    single_file,
    spark_csv_header,
    spark_path,
    without_options,
)
from sparkpromo.session import is_connect

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
# binaryFile's fixed schema; the stream selects all but ``content``, so no file is read.
FILE_STREAM_SCHEMA = "path string, modificationTime timestamp, length long, content binary"
# Spark ignores a new file older than the newest file seen by more than this (default 7d); see the docstring.
MAX_FILE_AGE = "3650d"
# How long a batch waits for the query id its txnAppId is made of (set as soon as start() returns).
QUERY_ID_WAIT_S = 120


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
def read_source(spark: SparkSession, source: str, src: FileSource, kind: str, listing: Listing) -> DataFrame | None:
    """Read the files of ``listing`` with every column as a string; unparsable lines are kept in
    ``_corrupt_record``, each row's file in ``_source_file``. None when no file holds a CSV header (only empty
    files).

    Every CSV file with a header, or else the files as a whole, is checked for the required columns
    (:func:`check_columns`) before any row is read.
    """
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
        return df.select(*[_as_string(df, c) for c in df.columns], _file_metadata())
    df = spark.read.options(**options).parquet(*files)
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
                        check: Callable[[str, Sequence[str]], None]) -> DataFrame | None:
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
    return (col if isinstance(dtype, StringType) else F.to_json(col)).alias(name)


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


def new_files(spark: SparkSession, src: FileSource) -> DataFrame:
    """A streaming frame of the files of ``src`` (``path``, ``modificationTime``, ``length``): each file once, in
    the first micro-batch after it appears. No file's content is read."""
    reader = (spark.readStream.format("binaryFile").schema(FILE_STREAM_SCHEMA).option("maxFileAge", MAX_FILE_AGE)
              # A file deleted between the batch's planning and its (re)reading is left out, not an error.
              .option("ignoreMissingFiles", "true"))
    one = single_file(src)
    if one is not None:
        # Spark's file stream needs a directory: stream the file's directory, filtered to the file's name.
        reader = reader.option("pathGlobFilter", spark_path(one.name))
    return reader.load(str(one.parent) if one is not None else src.path).select("path", "modificationTime",
                                                                                "length")


def append_files(spark: SparkSession, cfg: AppConfig, source: str, run_id: str, found: Sequence[tuple[str, int]],
                 txn: tuple[str, int]) -> dict[str, int]:
    """Read the files ``found`` (URI, length) of one micro-batch and append their rows to ``bronze/<source>``,
    once per ``txn`` (Delta's txnAppId, txnVersion); returns the batch's counts."""
    src: FileSource = getattr(cfg.sources, source)
    uri = T.BRONZE[source].uri(cfg)
    listing = batch_listing(source, src, found)
    skipped = {f"{source}_skipped_files": len(listing.skipped)}
    exists = delta_io.is_delta(spark, uri)
    if not listing.files and listing.skipped and not exists:
        # Nothing matches and nothing ever did: the patterns (or the format) are wrong. Failing leaves the batch
        # uncommitted, so the files are read once the patterns are fixed.
        raise IngestError(f"sources.{source}: no file under {src.path} matches {', '.join(src.file_patterns())} "
                          f"({len(listing.skipped)} other file(s); set sources.{source}.patterns to read them)")
    raw = read_source(spark, source, src, cfg.sources.kind, listing) if listing.files else None
    if raw is None:
        return {f"{source}_rows": 0, f"{source}_files": 0, **skipped}
    staged = raw.transform(with_ingest_metadata(run_id))
    if exists:
        check_drift(source, staged.columns, delta_io.read(spark, uri).columns, cfg.clean.allow_schema_evolution)
    # Rows of forgotten users (privacy/forgotten) are never loaded again, whatever file brings them.
    user_col = user_col_of(source, src)
    forgotten = forgotten_set(spark, cfg) if user_col is not None else None
    marked = staged.transform(mark_forgotten(forgotten, user_col, CORRUPT))
    kept = ~F.col(FORGOTTEN_HIT)
    # One pass to count new rows and files; the append below reads the (new) files again.
    stats = marked.agg(F.count(F.when(kept, 1)).alias("rows"),
                       F.countDistinct(F.when(kept, F.col(C.SOURCE_FILE))).alias("files"),
                       F.count(F.when(~kept, 1)).alias("forgotten")).first()
    rows, files = int(stats["rows"]), int(stats["files"])
    dropped = {f"{source}_forgotten": int(stats["forgotten"])} if forgotten is not None else {}
    if rows == 0:
        log.info("bronze.%s: no row to append from %d new file(s)", source, len(listing.files))
        return {f"{source}_rows": 0, f"{source}_files": 0, **dropped, **skipped}
    new = marked.where(kept).drop(FORGOTTEN_HIT)
    delta_io.fault_point(f"before_write:bronze.{source}")
    w = new.write.format("delta").mode("append").option("txnAppId", txn[0]).option("txnVersion", txn[1])
    if cfg.clean.allow_schema_evolution:
        w = w.option("mergeSchema", "true")
    w = delta_io.creating(w, new, uri, {delta_io.STATS_COLUMNS: delta_io.BRONZE_STATS_COLUMNS})
    before = delta_io.version(spark, uri) if exists else None
    w.save(uri)
    if before is not None and delta_io.version(spark, uri) == before:
        # Delta skipped the write: this batch's txnVersion is already committed (a retry after a crash between
        # the append and the checkpoint's commit). Nothing new reached bronze.
        log.info("bronze.%s: batch %d was appended before (a retry); nothing appended", source, txn[1])
        return {f"{source}_rows": 0, f"{source}_files": 0, **dropped, **skipped}
    delta_io.fault_point(f"after_write:bronze.{source}")
    log.info("bronze.%s: appended %d rows from %d new file(s) (batch %d)", source, rows, files, txn[1])
    return {f"{source}_rows": rows, f"{source}_files": files, **dropped, **skipped}


class _Batches:
    """The ``foreachBatch`` function of one ingest query: appends each micro-batch's files, sums the counts, and
    keeps the exception that failed a batch (Spark reports it wrapped in a StreamingQueryException)."""

    def __init__(self, spark: SparkSession, cfg: AppConfig, source: str, run_id: str) -> None:
        self.spark, self.cfg, self.source, self.run_id = spark, cfg, source, run_id
        self.counts: Counter[str] = Counter()
        self.error: BaseException | None = None
        self.query_id: str | None = None
        self.started = threading.Event()

    def __call__(self, batch: DataFrame, batch_id: int) -> None:
        try:
            if not self.started.wait(QUERY_ID_WAIT_S) or self.query_id is None:
                raise RuntimeError(f"bronze.{self.source}: the ingest query did not start")
            # One row per new file: bounded by what arrived, not by what was ingested before.
            found = [(str(r["path"]), int(r["length"])) for r in batch.select("path", "length").collect()]
            app_id = f"sparkpromo.ingest.{self.source}.{self.query_id}"
            self.counts.update(append_files(self.spark, self.cfg, self.source, self.run_id, found,
                                            (app_id, batch_id)))
        except BaseException as e:
            self.error = e
            raise


# One ingest per checkpoint at a time in this driver (another process is kept out by the checkpoint's own log).
_running: dict[str, threading.Lock] = {}
_running_guard = threading.Lock()


def _checkpoint_lock(checkpoint: str) -> threading.Lock:
    with _running_guard:
        return _running.setdefault(checkpoint, threading.Lock())


def ingest_source(spark: SparkSession, cfg: AppConfig, source: str, run_id: str) -> dict[str, int]:
    """Append the files of one source that no earlier ingest read to ``bronze/<source>``; returns counts: rows
    appended, files they came from, ``<source>_new_files`` (non-empty files Spark's stream found new, as its
    progress reports them), ``<source>_skipped_files`` (new files matching none of the patterns) and, with a
    users column, ``<source>_forgotten`` (rows of forgotten users dropped)."""
    src: FileSource | None = getattr(cfg.sources, source)
    if src is None:
        return {}
    if is_connect(spark):
        # Over Connect, foreachBatch runs in a server-side Python worker: the batch function can neither hold this
        # process's state (counts, the error it raised) nor be pickled with it.
        raise IngestError("ingest needs a classic Spark session: its streaming foreachBatch cannot run over Spark "
                          "Connect in Spark 4.0 (run ingest without --remote; clean and later stages may use it)")
    checkpoint = cfg.stream_checkpoint("ingest", source)
    batches = _Batches(spark, cfg, source, run_id)
    with _checkpoint_lock(checkpoint):
        try:
            query = (new_files(spark, src).writeStream.foreachBatch(batches)
                     .option("checkpointLocation", checkpoint).trigger(availableNow=True).start())
        except Exception as e:
            raise _stream_error(source, src, checkpoint, e) from None
        batches.query_id = str(query.id)
        batches.started.set()
        try:
            query.awaitTermination()
        except StreamingQueryException as e:
            if batches.error is not None:
                raise batches.error from None
            raise _stream_error(source, src, checkpoint, e) from None
        finally:
            if query.isActive:  # interrupted while waiting (Ctrl-C): no query may outlive its ingest
                query.stop()
    discovered = sum(int(p["numInputRows"]) for p in query.recentProgress)
    counts = {f"{source}_rows": 0, f"{source}_files": 0, f"{source}_new_files": discovered,
              f"{source}_skipped_files": 0, **batches.counts}
    if user_col_of(source, src) is not None:
        counts.setdefault(f"{source}_forgotten", 0)
    if counts[f"{source}_rows"] == 0:
        log.info("bronze.%s: nothing new to ingest from %s", source, src.path)
    return counts


def user_col_of(source: str, src: FileSource) -> str | None:
    return src.columns.get(C.USER_ID, C.USER_ID) if source in ("events", "users") else None


class IngestConflict(RuntimeError):
    """Another ingest (another process) is using the source's checkpoint; retrying later is safe."""


# How Spark reports a second query on one checkpoint: its batch log's atomic writes refuse the later writer.
_CHECKPOINT_CONFLICTS = ("CONCURRENT_STREAM_LOG_UPDATE", "Multiple streaming jobs detected",
                         "Multiple streaming queries are concurrently using", "ConcurrentModificationException",
                         "FileAlreadyExistsException")


def _stream_error(source: str, src: FileSource, checkpoint: str, e: Exception) -> Exception:
    """A one-line error for what failed the stream outside the batch function (which reports its own)."""
    text = str(e)
    if "PATH_NOT_FOUND" in text or "Path does not exist" in text:
        return IngestError(f"sources.{source}: path does not exist: {src.path}")
    if "'basePath' must be a directory" in text:
        return IngestError(f"sources.{source}: {src.path} names one file; a remote source must be a directory or "
                           "a glob (set path to its directory and patterns to the file's name)")
    if any(marker in text for marker in _CHECKPOINT_CONFLICTS):
        return IngestConflict(f"sources.{source}: another ingest is using {checkpoint}; run ingest again once it "
                              "has finished")
    return e


def run_ingest(spark: SparkSession, cfg: AppConfig, run_id: str) -> dict[str, int]:
    # One source after another, not side by side: of two ingests racing on one lakehouse, the one that loses the
    # events checkpoint stops there, so the other finishes every source and at least one run succeeds.
    counts: dict[str, int] = {}
    for source in SOURCES:
        counts.update(ingest_source(spark, cfg, source, run_id))
    return counts
