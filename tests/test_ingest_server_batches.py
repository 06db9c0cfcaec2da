"""Ingest's batch function for Spark Connect (``_ServerBatches``), called here in a classic session as the server's
Python worker calls it: it pickles with data only, appends each batch's files, hands the summed counts and a batch's
error back through the session's configuration, and leaves nothing there once closed. The Connect test runs it
through a real server."""

from __future__ import annotations

import dataclasses
import pickle
from pathlib import Path

import cloudpickle
import pytest
from pyspark.sql import DataFrame, SparkSession

from sparkpromo import delta_io
from sparkpromo.config import AppConfig
from sparkpromo.ingest.stream import _ServerBatches, batch_function
from sparkpromo.landing import IngestError
from tests.test_ingest import write_events


def found(spark: SparkSession, *paths: Path) -> DataFrame:
    """A micro-batch of the discovery stream: one row per new file."""
    return spark.createDataFrame([(p.resolve().as_uri(), p.stat().st_size) for p in paths],
                                 "path string, length long")


def test_server_batches_pickle_append_and_sum_counts_through_the_session(spark: SparkSession,
                                                                         cfg: AppConfig) -> None:
    batches = batch_function(spark, cfg, "events", "r1", remote=True)
    assert isinstance(batches, _ServerBatches) and batches.key is None  # nothing forgotten yet: no key travels
    shipped = pickle.loads(cloudpickle.dumps(batches))
    assert shipped == batches
    assert "key=" not in repr(dataclasses.replace(batches, key=b"0123456789abcdef"))  # a secret stays out of logs
    a = write_events(cfg, "a.csv", ["e1,u1,p1,view,2026-11-01T10:00:00Z,,,s1",
                                    "e2,u1,p1,view,2026-11-01T10:00:00Z,,,s1"])
    b = write_events(cfg, "b.csv", ["e3,u2,p1,view,2026-11-01T11:00:00Z,,,s1"])
    try:
        batches.start(spark, "query-1")
        shipped(found(spark, a), 0)
        shipped(found(spark, b), 1)
        assert batches.totals(spark) == {"events_rows": 3, "events_files": 2, "events_skipped_files": 0}
        assert batches.failure(spark) is None
        assert delta_io.read(spark, cfg.table("bronze", "events")).count() == 3
    finally:
        batches.close(spark)
    assert spark.conf.get(f"{batches.token}.counts", None) is None


def test_server_batches_hand_back_a_batchs_error(spark: SparkSession, cfg: AppConfig) -> None:
    batches = batch_function(spark, cfg, "events", "r1", remote=True)
    stray = write_events(cfg, "notes.txt", ["not an event"])
    try:
        batches.start(spark, "query-2")
        with pytest.raises(IngestError, match="no file under") as raised:
            batches(found(spark, stray), 0)
        error = batches.failure(spark)
        assert isinstance(error, IngestError) and str(error) == str(raised.value)
    finally:
        batches.close(spark)
    assert spark.conf.get(f"{batches.token}.error", None) is None
    assert not delta_io.is_delta(spark, cfg.table("bronze", "events"))
