"""Ingest: landing files → append-only bronze with metadata; idempotent; clear errors; schema drift."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from urllib.parse import urlparse

import pytest
from chispa import assert_df_equality
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from sparkpromo import columns as C
from sparkpromo import io
from sparkpromo.config import AppConfig, FileSource
from sparkpromo.ingest import CORRUPT, ingest_source, required_columns
from sparkpromo.landing import (
    IngestError,
    csv_dialect,
    list_files,
    local_csv_header,
    local_listing,
    safe_header,
    spark_csv_header,
    spark_listing,
)
from tests.conftest import make_config

HEADER = "event_id,user_id,product_id,event_type,event_time,price,quantity,session_id\n"


def write_events(cfg: AppConfig, name: str, lines: list[str], header: str = HEADER) -> Path:
    p = Path(cfg.sources.events.path) / name
    p.parent.mkdir(parents=True, exist_ok=True)
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
    columns = {"user_id": "member", "item_id": "sku", "event_ts": "ts"}
    cfg = make_config(tmp_path, sources={"events": {"path": str(tmp_path / "pq"), "format": "parquet",
                                                    "columns": columns, "constant_event_type": "purchase"}},
                      privacy={"consent_without_users": "granted"})
    spark.createDataFrame([(1, 2, 3.5, 1700000000)], "member int, sku int, amount double, ts long").write.parquet(
        str(tmp_path / "pq"))
    assert ingest_source(spark, cfg, "events", "r1")["events_rows"] == 1
    row = io.read(spark, cfg.table("bronze", "events")).first()
    assert (row["member"], row["sku"], row["amount"], row["ts"]) == ("1", "2", "3.5", "1700000000")


def test_unknown_mapped_column(spark: SparkSession, tmp_path: Path) -> None:
    cfg = make_config(tmp_path)
    cfg = dataclasses.replace(cfg, sources=dataclasses.replace(cfg.sources, events=dataclasses.replace(
        cfg.sources.events, columns={"item_id": "sku", "event_ts": "event_time"})))
    write_events(cfg, "a.csv", ["e1,u1,p1,view,2026-11-01T10:00:00Z,,,s1"])
    with pytest.raises(IngestError, match=r"^sources\.events: \S+/a\.csv has no column 'sku' \(mapped from item_id; "
                                          r"found: event_id, user_id, product_id, "):
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


def with_events(cfg: AppConfig, **changes: object) -> AppConfig:
    events = dataclasses.replace(cfg.sources.events, **changes)
    return dataclasses.replace(cfg, sources=dataclasses.replace(cfg.sources, events=events))


def test_csv_files_with_columns_in_another_order_are_read_by_name(spark: SparkSession, cfg: AppConfig) -> None:
    write_events(cfg, "a.csv", ["e1,u1,p1,purchase,2026-11-01T10:00:00Z,9.99,1,s1"])
    write_events(cfg, "b.csv", ["2,19.50,e2,u2,p2,purchase,2026-11-01T11:00:00Z"],
                 header="quantity,price,event_id,user_id,product_id,event_type,event_time\n")
    assert ingest_source(spark, cfg, "events", "r1") == {"events_rows": 2, "events_files": 2}
    bronze = io.read(spark, cfg.table("bronze", "events"))
    expected = spark.createDataFrame(
        [("e1", "u1", "p1", "9.99", "1", "s1"), ("e2", "u2", "p2", "19.50", "2", None)],
        "event_id string, user_id string, product_id string, price string, quantity string, session_id string")
    assert_df_equality(bronze.select(*expected.columns), expected, ignore_row_order=True)
    assert bronze.where(F.col(CORRUPT).isNotNull()).count() == 0


def test_file_missing_a_mapped_column_fails_before_writing(spark: SparkSession, cfg: AppConfig) -> None:
    write_events(cfg, "a.csv", ["e1,u1,p1,view,2026-11-01T10:00:00Z,,,s1"])
    write_events(cfg, "b.csv", ["e2,u1,p1,view,2026-11-01T10:00:00Z"],
                 header="event_id,user_id,sku,event_type,event_time\n")
    with pytest.raises(IngestError) as err:
        ingest_source(spark, cfg, "events", "r1")
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith(f"sources.events: {Path(cfg.sources.events.path) / 'b.csv'} has no column 'product_id' "
                          "(mapped from item_id; found: event_id, user_id, sku, event_type, event_time)")
    uri = cfg.table("bronze", "events")
    assert not io.is_delta(spark, uri) and not Path(uri).exists()


def test_missing_file_fails_even_when_bronze_exists_and_commits_nothing(spark: SparkSession, cfg: AppConfig) -> None:
    write_events(cfg, "a.csv", ["e1,u1,p1,view,2026-11-01T10:00:00Z,,,s1"])
    ingest_source(spark, cfg, "events", "r1")
    uri = cfg.table("bronze", "events")
    v = io.version(spark, uri)
    write_events(cfg, "b.csv", ["e2,p1,view,2026-11-01T10:00:00Z,,,s1"],
                 header="event_id,product_id,event_type,event_time,price,quantity,session_id\n")
    with pytest.raises(IngestError, match=r"b\.csv has no column 'user_id' \(required for user_id; map it with "
                                          r"sources\.events\.columns\.user_id; found: event_id, product_id"):
        ingest_source(spark, cfg, "events", "r2")
    assert io.version(spark, uri) == v


def test_required_unmapped_column_absent_is_an_error(spark: SparkSession, cfg: AppConfig) -> None:
    # The export calls the customer "CustomerID" and the YAML does not map it: silver would get 0 rows.
    write_events(cfg, "a.csv", ["e1,u1,p1,view,2026-11-01T10:00:00Z"],
                 header="event_id,CustomerID,product_id,event_type,event_time\n")
    with pytest.raises(IngestError, match=r"a\.csv has no column 'user_id' \(required for user_id"):
        ingest_source(spark, cfg, "events", "r1")
    assert not io.is_delta(spark, cfg.table("bronze", "events"))
    # Mapped, the same file is ingested.
    mapped = with_events(cfg, columns={**cfg.sources.events.columns, "user_id": "CustomerID"})
    assert ingest_source(spark, mapped, "events", "r1")["events_rows"] == 1


def test_required_columns() -> None:
    src = FileSource(path="x", columns={"item_id": "sku", "event_ts": "when", "price": "amount"})
    assert required_columns("events", src, "events") == {
        "user_id": "user_id", "item_id": "sku", "event_ts": "when", "event_type": "event_type", "price": "amount"}
    purchases = dataclasses.replace(src, constant_event_type="purchase")
    assert "event_type" not in required_columns("events", purchases, "events")
    ratings = required_columns("events", src, "ratings")
    assert "event_type" not in ratings and ratings["rating"] == "rating" and "event_id" not in ratings
    assert required_columns("users", FileSource(path="x", format="json"), "events") == {"user_id": "user_id"}
    assert required_columns("items", FileSource(path="x", columns={"item_id": "product_id"}), "ratings") == {
        "item_id": "product_id"}


def test_json_source_missing_required_column(spark: SparkSession, cfg: AppConfig) -> None:
    d = Path(cfg.sources.users.path)
    d.mkdir(parents=True)
    (d / "u.jsonl").write_text('{"id": "u1", "country": "DE"}\n')
    with pytest.raises(IngestError,
                       match=r"^sources\.users: \S+/users has no column 'user_id' .*found: country, id\)$"):
        ingest_source(spark, cfg, "users", "r1")


def test_stray_files_are_skipped_counted_and_logged(spark: SparkSession, cfg: AppConfig,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    write_events(cfg, "a.csv", ["e1,u1,p1,view,2026-11-01T10:00:00Z,,,s1"])
    d = Path(cfg.sources.events.path)
    (d / "notes.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    (d / "meta.json").write_text('{"exported": "2026-11-01"}\n')
    (d / "_SUCCESS").write_text("")
    (d / ".a.csv.crc").write_bytes(b"\x00\x01")
    (d / "empty.csv").write_text("")  # an export of an hour without events: nothing to read, not an error
    with caplog.at_level(logging.WARNING, logger="sparkpromo.ingest"):
        counts = ingest_source(spark, cfg, "events", "r1")
    assert counts == {"events_rows": 1, "events_files": 1, "events_skipped_files": 2}
    warning = next(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert "skipped 2 file(s)" in warning and "meta.json, notes.png" in warning and "_SUCCESS" not in warning
    files = {r[0].rsplit("/", 1)[-1] for r in io.read(spark, cfg.table("bronze", "events"))
             .select(C.SOURCE_FILE).distinct().collect()}
    assert files == {"a.csv"}


def test_listing_patterns_globs_and_single_files(spark: SparkSession, tmp_path: Path) -> None:
    d = tmp_path / "landing"
    (d / "old").mkdir(parents=True)
    for name in ("a.csv", "b.txt", "c.CSV", "e.json", "_SUCCESS", ".a.csv.crc", "old/d.csv"):
        (d / name).write_text("x\n")
    src = FileSource(path=str(d))
    listing = list_files(spark, "events", src)
    assert [Path(f).name for f in listing.files] == ["a.csv"] and listing.local and listing.base_path == str(d)
    assert [Path(f).name for f in listing.skipped] == ["b.txt", "c.CSV", "e.json"]

    custom = list_files(spark, "events", dataclasses.replace(src, patterns=("*.txt", "*.CSV")))
    assert [Path(f).name for f in custom.files] == ["b.txt", "c.CSV"] and len(custom.skipped) == 2

    globbed = list_files(spark, "events", dataclasses.replace(src, path=f"file://{d}/[ab].*"))
    assert [Path(f).name for f in globbed.files] == ["a.csv"] and [Path(f).name for f in globbed.skipped] == ["b.txt"]

    single = list_files(spark, "events", dataclasses.replace(src, path=str(d / "b.txt")))
    assert single.files == (str(d / "b.txt"),) and single.skipped == ()

    with pytest.raises(IngestError, match=r"^sources\.items: no file under \S+ matches \*\.parquet \(4 other file"):
        list_files(spark, "items", dataclasses.replace(src, format="parquet"))


def test_spark_listing_agrees_with_local_listing(spark: SparkSession, tmp_path: Path) -> None:
    # Remote URIs (s3a:, abfss:) are listed by Spark; on a local directory both listings must name the same files.
    flat, parts = tmp_path / "flat", tmp_path / "parts"
    for d, names in ((flat, ("a.csv", "b [1].csv", "notes.png", "_SUCCESS", ".a.csv.crc", "old/c.csv")),
                     (parts, ("day=1/a.csv", "day=2/b.csv", "day=2/_SUCCESS"))):
        for name in names:
            (d / name).parent.mkdir(parents=True, exist_ok=True)
            (d / name).write_text("x\n")
        local = local_listing(d)
        remote = spark_listing(spark, "events", f"file://{d}")
        assert local is not None and local[1] is False and remote[1] is False
        assert [urlparse(p).path for p in remote[0]] == local[0] and len(local[0]) in (2, 3)
    one = spark_listing(spark, "events", f"file://{flat}/notes.png")
    assert one[1] is True and len(one[0]) == 1
    with pytest.raises(IngestError, match="path does not exist"):
        spark_listing(spark, "events", f"file://{flat}/missing")


def test_partition_directories_keep_their_columns(spark: SparkSession, cfg: AppConfig) -> None:
    write_events(cfg, "day=1/a.csv", ["e1,u1,p1,view,2026-11-01T10:00:00Z,,,s1"])
    write_events(cfg, "day=2/b.csv", ["u2,e2,p1,view,2026-11-02T10:00:00Z,,,s1"],
                 header="user_id,event_id,product_id,event_type,event_time,price,quantity,session_id\n")
    assert ingest_source(spark, cfg, "events", "r1") == {"events_rows": 2, "events_files": 2}
    got = io.read(spark, cfg.table("bronze", "events")).select("event_id", "user_id", F.col("day").cast("int"))
    expected = spark.createDataFrame([("e1", "u1", 1), ("e2", "u2", 2)], "event_id string, user_id string, day int")
    assert_df_equality(got, expected, ignore_row_order=True)


def test_single_file_path_with_another_extension_is_read(spark: SparkSession, cfg: AppConfig) -> None:
    p = write_events(cfg, "export.dat", ["e1,u1,p1,view,2026-11-01T10:00:00Z,,,s1"])
    (p.parent / "notes.png").write_bytes(b"\x89PNG")
    one = with_events(cfg, path=str(p))
    assert ingest_source(spark, one, "events", "r1") == {"events_rows": 1, "events_files": 1}
    assert io.read(spark, cfg.table("bronze", "events")).first()[C.SOURCE_FILE].endswith("/export.dat")


def test_csv_header_is_split_like_spark(spark: SparkSession, tmp_path: Path) -> None:
    options = {"header": "true", "sep": ";"}
    p = tmp_path / "h.csv"
    p.write_text('\n"a;b";user_id;;Dup;dup\n1;2;3;4;5\n', encoding="utf-8")
    dialect = csv_dialect(options)
    assert dialect is not None
    fields = local_csv_header(p, dialect)
    assert fields is not None
    names = safe_header(fields, dialect.null_value)
    assert names == ["a;b", "user_id", "_c2", "Dup3", "dup4"]
    assert names == spark_csv_header(spark, options, str(p))
    bom = tmp_path / "bom.csv"
    bom.write_bytes("\ufeffuser_id\tv\n".encode())
    tabbed = csv_dialect({"header": "true", "delimiter": "\\t"})
    assert tabbed is not None and local_csv_header(bom, tabbed) == ["user_id", "v"]
    assert csv_dialect({"sep": "||"}) is None  # multi-character separators: Spark reads the header
