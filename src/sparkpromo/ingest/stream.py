"""The discovery stream and its micro-batches: new files found by Spark's ``binaryFile`` stream, each batch read
and appended to bronze once (Delta's txnAppId/txnVersion), one ingest per checkpoint in this driver, and the
stream's failures as one-line errors."""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from sparkpromo import columns as C
from sparkpromo import delta_io
from sparkpromo import tables as T
from sparkpromo.config import AppConfig, FileSource
from sparkpromo.forget import FORGOTTEN_HIT, forgotten_set, forgotten_uri, mark_forgotten
from sparkpromo.ingest.read import CORRUPT, check_drift, read_source, user_col_of, with_ingest_metadata
from sparkpromo.landing import IngestError, batch_listing, single_file, spark_path
from sparkpromo.privacy import hmac_key

log = logging.getLogger(__name__)

# binaryFile's fixed schema; the stream selects all but ``content``, so no file is read.
FILE_STREAM_SCHEMA = "path string, modificationTime timestamp, length long, content binary"
# Spark ignores a new file older than the newest file seen by more than this (default 7d); see the docstring.
MAX_FILE_AGE = "3650d"
# How long a batch waits for the query id its txnAppId is made of (set as soon as start() returns).
QUERY_ID_WAIT_S = 120


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
                 txn: tuple[str, int], key: bytes | None = None) -> dict[str, int]:
    """Read the files ``found`` (URI, length) of one micro-batch and append their rows to ``bronze/<source>``,
    once per ``txn`` (Delta's txnAppId, txnVersion); returns the batch's counts. ``key``: the key forgotten ids are
    hashed with (default: from ``privacy.key_env``)."""
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
    existing = delta_io.read(spark, uri).columns if exists else None
    drift = (None if existing is None
             else lambda names: check_drift(source, names, existing, cfg.clean.allow_schema_evolution))
    raw = read_source(spark, source, src, cfg.sources.kind, listing, drift) if listing.files else None
    if raw is None:
        return {f"{source}_rows": 0, f"{source}_files": 0, **skipped}
    staged = raw.transform(with_ingest_metadata(run_id))
    if drift is not None:
        drift(staged.columns)
    # Rows of forgotten users (privacy/forgotten) are never loaded again, whatever file brings them.
    user_col = user_col_of(source, src)
    forgotten = forgotten_set(spark, cfg, key) if user_col is not None else None
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
    w = delta_io.creating(w, new, uri, {delta_io.STATS_COLUMNS: delta_io.BRONZE_STATS_COLUMNS,
                                         **T.BRONZE[source].properties})
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


def _found(batch: DataFrame) -> list[tuple[str, int]]:
    # One row per new file: bounded by what arrived, not by what was ingested before.
    return [(str(r["path"]), int(r["length"])) for r in batch.select("path", "length").collect()]


def _app_id(source: str, query_id: str) -> str:
    return f"sparkpromo.ingest.{source}.{query_id}"


class _Batches:
    """The ``foreachBatch`` function of one ingest query in a classic session: appends each micro-batch's files,
    sums the counts, and keeps the exception that failed a batch (Spark reports it wrapped in a
    StreamingQueryException)."""

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
            self.counts.update(append_files(self.spark, self.cfg, self.source, self.run_id, _found(batch),
                                            (_app_id(self.source, self.query_id), batch_id)))
        except BaseException as e:
            self.error = e
            raise

    def start(self, spark: SparkSession, query_id: str) -> None:
        self.query_id = query_id
        self.started.set()

    def failure(self, spark: SparkSession) -> BaseException | None:
        return self.error

    def totals(self, spark: SparkSession) -> dict[str, int]:
        return dict(self.counts)

    def close(self, spark: SparkSession) -> None:
        """Nothing to release in a classic session."""


@dataclass(frozen=True)
class _ServerBatches:
    """The ``foreachBatch`` function of one ingest query over Spark Connect. The server runs it in a Python worker
    of its own, attached to this session: it is pickled with data only (no session, lock or key lookup; ``key``
    hashes forgotten ids), and it hands the query id in, and its counts and error out, through the session's
    configuration, which both sides share. The server's Python needs sparkpromo installed."""

    cfg: AppConfig
    source: str
    run_id: str
    token: str  # this ingest's prefix in the session configuration
    key: bytes | None = field(default=None, repr=False)  # a secret: never in a log line or a traceback

    def __call__(self, batch: DataFrame, batch_id: int) -> None:
        spark = batch.sparkSession
        try:
            query_id = self._query_id(spark)
            counts = append_files(spark, self.cfg, self.source, self.run_id, _found(batch),
                                  (_app_id(self.source, query_id), batch_id), self.key)
            total = json.loads(spark.conf.get(f"{self.token}.counts", "{}") or "{}")
            for k, n in counts.items():
                total[k] = total.get(k, 0) + n
            spark.conf.set(f"{self.token}.counts", json.dumps(total))
        except BaseException as e:
            spark.conf.set(f"{self.token}.error", json.dumps([type(e).__name__, str(e)]))
            raise

    def _query_id(self, spark: SparkSession) -> str:
        deadline = time.monotonic() + QUERY_ID_WAIT_S
        while not (query_id := spark.conf.get(f"{self.token}.query_id", "")):
            if time.monotonic() > deadline:
                raise RuntimeError(f"bronze.{self.source}: the ingest query did not start")
            time.sleep(0.2)
        return query_id

    def start(self, spark: SparkSession, query_id: str) -> None:
        spark.conf.set(f"{self.token}.query_id", query_id)

    def failure(self, spark: SparkSession) -> BaseException | None:
        text = spark.conf.get(f"{self.token}.error", "")
        if not text:
            return None
        kind, message = json.loads(text)
        # The batch's own one-line errors keep their type; anything else says what it was.
        return IngestError(message) if kind == IngestError.__name__ else RuntimeError(f"{kind}: {message}")

    def totals(self, spark: SparkSession) -> dict[str, int]:
        return {k: int(n) for k, n in json.loads(spark.conf.get(f"{self.token}.counts", "{}") or "{}").items()}

    def close(self, spark: SparkSession) -> None:
        for name in ("query_id", "counts", "error"):
            spark.conf.unset(f"{self.token}.{name}")


def batch_function(spark: SparkSession, cfg: AppConfig, source: str, run_id: str,
                   remote: bool) -> _Batches | _ServerBatches:
    """The ``foreachBatch`` function for one ingest query: :class:`_ServerBatches` over Spark Connect
    (``remote``), :class:`_Batches` in a classic session."""
    if not remote:
        return _Batches(spark, cfg, source, run_id)
    # The server's worker cannot read this process's environment: the key travels with the function.
    key = hmac_key(cfg.privacy.key_env) if delta_io.is_delta(spark, forgotten_uri(cfg)) else None
    return _ServerBatches(cfg, source, run_id, f"sparkpromo.ingest.{uuid.uuid4().hex}", key)


# One ingest per checkpoint at a time in this driver (another process is kept out by the checkpoint's own log).
_running: dict[str, threading.Lock] = {}
_running_guard = threading.Lock()


def _checkpoint_lock(checkpoint: str) -> threading.Lock:
    with _running_guard:
        return _running.setdefault(checkpoint, threading.Lock())


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


__all__ = [
    "FILE_STREAM_SCHEMA", "MAX_FILE_AGE", "QUERY_ID_WAIT_S", "new_files", "append_files", "batch_function",
    "IngestConflict",
]
