"""Ingest: landing files → append-only bronze with metadata; idempotent; clear errors; schema drift."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from sparkpromo import columns as C
from sparkpromo import io
from sparkpromo.config import AppConfig
from sparkpromo.ingest import CORRUPT, IngestError, ingest_source
from tests.conftest import make_config

HEADER = "event_id,user_id,product_id,event_type,event_time,price,quantity,session_id\n"


def write_events(cfg: AppConfig, name: str, lines: list[str], header: str = HEADER) -> Path:
    d = Path(cfg.sources.events.path)
    d.mkdir(parents=True, exist_ok=True)
    p = d / name
    p.write_text(header + "".join(line + "\n" for line in lines))
    return p


def test_csv_to_bronze_with_metadata_and_idempotent(spark: SparkSession, cfg: AppConfig) -> None:
    write_events(cfg, "a.csv", ["e1,u1,p1,view,2026-11-01T10:00:00Z,,,s1", "e2,u1,p1,view,2026-11-01T10:00:00Z,,,s1"])
    assert ingest_source(spark, cfg, "events", "r1") == {"events_rows": 2, "events_files": 1}
    uri = cfg.table("bronze", "events")
    v1 = io.version(spark, uri)
    bronze = io.read(spark, uri)
    assert {C.SOURCE_FILE, C.INGEST_TS, C.RUN_ID, CORRUPT, "product_id"} <= set(bronze.columns)
    assert dict(bronze.dtypes)["price"] == "string"  # bronze keeps raw text; clean does the typing
    row = bronze.where(F.col("event_id") == "e1").first()
    assert row[C.RUN_ID] == "r1" and row[C.SOURCE_FILE].endswith("/a.csv")

    # The same files again: nothing added, no new commit.
    assert ingest_source(spark, cfg, "events", "r2") == {"events_rows": 0, "events_files": 0}
    assert io.version(spark, uri) == v1 and io.read(spark, uri).count() == 2

    # A new file: only its rows are appended.
    write_events(cfg, "b.csv", ["e3,u2,p1,view,2026-11-01T11:00:00Z,,,s2"])
    assert ingest_source(spark, cfg, "events", "r3") == {"events_rows": 1, "events_files": 1}
    counts = {r[0]: r[1] for r in io.read(spark, uri).groupBy(C.RUN_ID).count().collect()}
    assert counts == {"r1": 2, "r3": 1}


def test_malformed_csv_line_is_kept_raw(spark: SparkSession, cfg: AppConfig) -> None:
    write_events(cfg, "a.csv", ["e1,u1,p1,view,2026-11-01T10:00:00Z,,,s1", "e2,u1,\"p1,view"])
    ingest_source(spark, cfg, "events", "r1")
    corrupt = io.read(spark, cfg.table("bronze", "events")).where(F.col(CORRUPT).isNotNull()).collect()
    assert len(corrupt) == 1 and corrupt[0][CORRUPT].startswith("e2,u1")


def test_json_lines_with_bad_line(spark: SparkSession, cfg: AppConfig) -> None:
    d = Path(cfg.sources.users.path)
    d.mkdir(parents=True)
    (d / "u.jsonl").write_text('{"user_id": "u1", "marketing_consent": true, "country": "DE"}\n{oops\n')
    assert ingest_source(spark, cfg, "users", "r1")["users_rows"] == 2
    rows = {r["user_id"]: (r["marketing_consent"], r[CORRUPT])
            for r in io.read(spark, cfg.table("bronze", "users")).collect()}
    assert rows == {"u1": ("true", None), None: (None, "{oops")}


def test_parquet_source(spark: SparkSession, tmp_path: Path) -> None:
    cfg = make_config(tmp_path, sources={"events": {"path": str(tmp_path / "pq"), "format": "parquet",
                                                    "columns": {"user_id": "member", "item_id": "sku"}}})
    spark.createDataFrame([(1, 2, 3.5)], "member int, sku int, amount double").write.parquet(str(tmp_path / "pq"))
    assert ingest_source(spark, cfg, "events", "r1")["events_rows"] == 1
    row = io.read(spark, cfg.table("bronze", "events")).first()
    assert (row["member"], row["sku"], row["amount"]) == ("1", "2", "3.5")


def test_unknown_mapped_column(spark: SparkSession, tmp_path: Path) -> None:
    cfg = make_config(tmp_path)
    cfg = dataclasses.replace(cfg, sources=dataclasses.replace(cfg.sources, events=dataclasses.replace(
        cfg.sources.events, columns={"item_id": "sku", "event_ts": "event_time"})))
    write_events(cfg, "a.csv", ["e1,u1,p1,view,2026-11-01T10:00:00Z,,,s1"])
    with pytest.raises(IngestError, match=r"sources\.events\.columns\.item_id: column 'sku' not found"):
        ingest_source(spark, cfg, "events", "r1")
    assert not io.is_delta(spark, cfg.table("bronze", "events"))


def test_schema_drift_extra_column_is_an_error_unless_opted_in(spark: SparkSession, cfg: AppConfig) -> None:
    write_events(cfg, "a.csv", ["e1,u1,p1,view,2026-11-01T10:00:00Z,,,s1"])
    ingest_source(spark, cfg, "events", "r1")
    uri = cfg.table("bronze", "events")
    v = io.version(spark, uri)
    write_events(cfg, "b.csv", ["e2,u1,p1,view,2026-11-01T10:00:00Z,,,s1,web"], header=HEADER.strip() + ",channel\n")
    with pytest.raises(IngestError, match=r"schema drift: new column\(s\) channel"):
        ingest_source(spark, cfg, "events", "r2")
    assert io.version(spark, uri) == v
    evolving = dataclasses.replace(cfg, clean=dataclasses.replace(cfg.clean, allow_schema_evolution=True))
    # CSV files with different headers can't be read as one source; evolution applies to the union schema.
    (Path(cfg.sources.events.path) / "a.csv").unlink()
    assert ingest_source(spark, evolving, "events", "r2")["events_rows"] == 1
    assert "channel" in io.read(spark, uri).columns


def test_schema_drift_missing_column_is_always_an_error(spark: SparkSession, cfg: AppConfig) -> None:
    write_events(cfg, "a.csv", ["e1,u1,p1,view,2026-11-01T10:00:00Z,,,s1"])
    ingest_source(spark, cfg, "events", "r1")
    (Path(cfg.sources.events.path) / "a.csv").unlink()
    write_events(cfg, "b.csv", ["e2,u1,p1,view,2026-11-01T10:00:00Z,,"],
                 header="event_id,user_id,product_id,event_type,event_time,price,quantity\n")
    with pytest.raises(IngestError, match=r"column\(s\) session_id missing"):
        ingest_source(spark, cfg, "events", "r2")


def test_failed_write_leaves_table_untouched(spark: SparkSession, cfg: AppConfig,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    write_events(cfg, "a.csv", ["e1,u1,p1,view,2026-11-01T10:00:00Z,,,s1"])
    ingest_source(spark, cfg, "events", "r1")
    uri = cfg.table("bronze", "events")
    v = io.version(spark, uri)
    write_events(cfg, "b.csv", ["e2,u1,p1,view,2026-11-01T10:00:00Z,,,s1"])
    monkeypatch.setenv(io.FAULT_ENV, "before_write:bronze.events")
    with pytest.raises(io.InjectedFault):
        ingest_source(spark, cfg, "events", "r2")
    assert io.version(spark, uri) == v and io.read(spark, uri).count() == 1
    monkeypatch.delenv(io.FAULT_ENV)
    assert ingest_source(spark, cfg, "events", "r2")["events_rows"] == 1
