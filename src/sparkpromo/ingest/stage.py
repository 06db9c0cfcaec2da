"""The ingest stage: :func:`ingest_source` per source, :func:`run_ingest` for all of them."""

from __future__ import annotations

import logging

from pyspark.errors import StreamingQueryException
from pyspark.sql import SparkSession

from sparkpromo.config import AppConfig, FileSource
from sparkpromo.ingest.read import SOURCES, user_col_of
from sparkpromo.ingest.stream import _checkpoint_lock, _stream_error, batch_function, new_files
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
    checkpoint = cfg.stream_checkpoint("ingest", source)
    batches = batch_function(spark, cfg, source, run_id, is_connect(spark))
    with _checkpoint_lock(checkpoint):
        try:
            query = (new_files(spark, src).writeStream.foreachBatch(batches)
                     .option("checkpointLocation", checkpoint).trigger(availableNow=True).start())
        except Exception as e:
            raise _stream_error(source, src, checkpoint, e) from None
        try:
            batches.start(spark, str(query.id))
            query.awaitTermination()
            counted = batches.totals(spark)
        except StreamingQueryException as e:
            error = batches.failure(spark)
            if error is not None:
                raise error from None
            raise _stream_error(source, src, checkpoint, e) from None
        finally:
            if query.isActive:  # interrupted while waiting (Ctrl-C): no query may outlive its ingest
                query.stop()
            batches.close(spark)
    # The source's count: a Connect client's progress leaves the query's total out (None).
    discovered = sum(int(s.numInputRows or 0) for p in query.recentProgress for s in p.sources)
    counts = {f"{source}_rows": 0, f"{source}_files": 0, f"{source}_new_files": discovered,
              f"{source}_skipped_files": 0, **counted}
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
