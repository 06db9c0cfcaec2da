"""The ingest stage: :func:`ingest_source` per source, :func:`run_ingest` for all of them."""

from __future__ import annotations

import logging

from pyspark.errors import StreamingQueryException
from pyspark.sql import SparkSession

from sparkpromo.config import AppConfig, FileSource
from sparkpromo.ingest.read import SOURCES, user_col_of
from sparkpromo.ingest.stream import _Batches, _checkpoint_lock, _stream_error, new_files
from sparkpromo.landing import IngestError
from sparkpromo.session import is_connect

log = logging.getLogger(__name__)


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


def run_ingest(spark: SparkSession, cfg: AppConfig, run_id: str) -> dict[str, int]:
    # One source after another, not side by side: of two ingests racing on one lakehouse, the one that loses the
    # events checkpoint stops there, so the other finishes every source and at least one run succeeds.
    counts: dict[str, int] = {}
    for source in SOURCES:
        counts.update(ingest_source(spark, cfg, source, run_id))
    return counts


__all__ = [
    "ingest_source", "run_ingest",
]
