"""The Delta operations the stages run as SQL, so that they also run over Spark Connect without Delta's Connect
plugin: ``MERGE INTO`` from a temporary view (one commit, the view dropped after), the partition columns from
``DESCRIBE DETAIL`` and ``VACUUM``; column names that need quoting are quoted."""

from __future__ import annotations

from pathlib import Path

import pytest
from chispa import assert_df_equality
from pyspark.sql import SparkSession

from sparkpromo import delta_io

SCHEMA = "`id` INT, `odd-name` STRING, day STRING"


def test_merge_into_updates_deletes_and_inserts_in_one_commit(spark: SparkSession, tmp_path: Path) -> None:
    uri = str(tmp_path / "t")
    spark.createDataFrame([(1, "a", "d1"), (2, "b", "d1"), (3, "c", "d2")], SCHEMA).write.format("delta").save(uri)
    rows = [(1, "A", "d1", "u"), (2, None, None, "d"), (4, "d", "d2", "u"), (5, "e", "d2", "x")]
    source = spark.createDataFrame(rows, f"{SCHEMA}, op STRING")
    cols = ["id", "odd-name", "day"]
    views = {t.name for t in spark.catalog.listTables()}
    delta_io.merge_into(spark, uri, source, "t.`id` = s.`id`", [
        "WHEN MATCHED AND s.op = 'd' THEN DELETE",
        f"WHEN MATCHED AND s.op = 'u' THEN {delta_io.update_all(cols)}",
        f"WHEN NOT MATCHED AND s.op = 'u' THEN {delta_io.insert_all(cols)}"])
    expected = spark.createDataFrame([(1, "A", "d1"), (3, "c", "d2"), (4, "d", "d2")], SCHEMA)
    assert_df_equality(delta_io.read(spark, uri), expected, ignore_row_order=True)
    assert delta_io.version(spark, uri) == 1
    metrics = delta_io.last_commit_metrics(spark, uri)
    assert (metrics["numTargetRowsUpdated"], metrics["numTargetRowsDeleted"], metrics["numTargetRowsInserted"]) == (
        "1", "1", "1")
    assert {t.name for t in spark.catalog.listTables()} == views  # the temporary view is gone


def test_merge_into_drops_its_view_when_the_merge_fails(spark: SparkSession, tmp_path: Path) -> None:
    uri = str(tmp_path / "t")
    spark.createDataFrame([(1, "a", "d1")], SCHEMA).write.format("delta").save(uri)
    views = {t.name for t in spark.catalog.listTables()}
    with pytest.raises(Exception, match="MERGE_UNRESOLVED_EXPRESSION"):
        delta_io.merge_into(spark, uri, spark.createDataFrame([(1, "b", "d1")], SCHEMA), "t.id = s.no_such_column",
                            ["WHEN MATCHED THEN DELETE"])
    assert {t.name for t in spark.catalog.listTables()} == views
    assert delta_io.version(spark, uri) == 0


def test_partition_columns_and_vacuum(spark: SparkSession, tmp_path: Path) -> None:
    parted, flat = str(tmp_path / "p"), str(tmp_path / "f")
    df = spark.createDataFrame([(1, "a", "d1"), (2, "b", "d2")], SCHEMA)
    df.write.format("delta").partitionBy("day").save(parted)
    df.write.format("delta").save(flat)
    assert delta_io.partition_columns(spark, parted) == ("day",)
    assert delta_io.partition_columns(spark, flat) == ()
    df.write.format("delta").mode("overwrite").save(flat)  # the first version's files are no longer referenced
    files = {p.name for p in Path(flat).glob("*.parquet")}
    key = "spark.databricks.delta.retentionDurationCheck.enabled"
    spark.conf.set(key, "false")
    try:
        delta_io.vacuum(spark, flat, 0)
    finally:
        spark.conf.unset(key)
    left = {p.name for p in Path(flat).glob("*.parquet")}
    assert left and left < files
    assert_df_equality(delta_io.read(spark, flat), df, ignore_row_order=True)
