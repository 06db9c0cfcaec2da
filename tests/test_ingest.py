"""Ingest: new landing files (Spark's streaming file source, availableNow) → append-only bronze with metadata;
each file read once; retried batches never doubled; clear errors; schema drift."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import pytest
from chispa import assert_df_equality
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from sparkpromo import columns as C
from sparkpromo import delta_io
from sparkpromo.config import AppConfig, FileSource
from sparkpromo.ingest import CORRUPT, ingest_source, required_columns
from sparkpromo.landing import (
    IngestError,
    batch_listing,
    csv_dialect,
    local_csv_header,
    safe_header,
    spark_csv_header,
)
from tests.conftest import make_config

HEADER = "event_id,user_id,product_id,event_type,event_time,price,quantity,session_id\n"


def counts(rows: int, files: int, new: int, skipped: int = 0, forgotten: int = 0, source: str = "events"
           ) -> dict[str, int]:
    """An ingest result: rows appended, files they came from, files Spark found new, new files skipped."""
    return {f"{source}_rows": rows, f"{source}_files": files, f"{source}_new_files": new,
            f"{source}_skipped_files": skipped, f"{source}_forgotten": forgotten}


def write_events(cfg: AppConfig, name: str, lines: list[str], header: str = HEADER) -> Path:
    p = Path(cfg.sources.events.path) / name
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(header + "".join(line + "\n" for line in lines))
    return p


def test_csv_to_bronze_with_metadata_and_idempotent(spark: SparkSession, cfg: AppConfig) -> None:
    write_events(cfg, "a.csv", ["e1,u1,p1,view,2026-11-01T10:00:00Z,,,s1", "e2,u1,p1,view,2026-11-01T10:00:00Z,,,s1"])
    assert ingest_source(spark, cfg, "events", "r1") == counts(2, 1, 1)
    uri = cfg.table("bronze", "events")
    v1 = delta_io.version(spark, uri)
    bronze = delta_io.read(spark, uri)
    assert {C.SOURCE_FILE, C.INGEST_TS, C.RUN_ID, CORRUPT, "product_id"} <= set(bronze.columns)
    assert dict(bronze.dtypes)["price"] == "string"  # bronze keeps raw text; clean does the typing
    row = bronze.where(F.col("event_id") == "e1").first()
    assert row[C.RUN_ID] == "r1" and row[C.SOURCE_FILE].endswith("/a.csv")
    assert "_file_size" not in bronze.columns  # the stream's checkpoint, not bronze, knows which files were read
    # The file stream's checkpoint lives under the lakehouse, not in the working directory.
    assert (Path(cfg.lakehouse) / "_checkpoints" / "ingest" / "events" / "commits" / "0").is_file()
    # Created with its change data feed: the next clean reads the rows appended since its last run from it.
    assert delta_io.table_properties(spark, uri).get(delta_io.CHANGE_FEED) == "true"

    # The same files again: nothing added, no new commit.
    assert ingest_source(spark, cfg, "events", "r2") == counts(0, 0, 0)
    assert delta_io.version(spark, uri) == v1 and delta_io.read(spark, uri).count() == 2

    # A new file: only its rows are appended.
    write_events(cfg, "b.csv", ["e3,u2,p1,view,2026-11-01T11:00:00Z,,,s2"])
    assert ingest_source(spark, cfg, "events", "r3") == counts(1, 1, 1)
    per_run = {r[0]: r[1] for r in delta_io.read(spark, uri).groupBy(C.RUN_ID).count().collect()}
    assert per_run == {"r1": 2, "r3": 1}


def test_malformed_csv_line_is_kept_raw(spark: SparkSession, cfg: AppConfig) -> None:
    write_events(cfg, "a.csv", ["e1,u1,p1,view,2026-11-01T10:00:00Z,,,s1", "e2,u1,\"p1,view"])
    ingest_source(spark, cfg, "events", "r1")
    corrupt = delta_io.read(spark, cfg.table("bronze", "events")).where(F.col(CORRUPT).isNotNull()).collect()
    assert len(corrupt) == 1 and corrupt[0][CORRUPT].startswith("e2,u1")


def test_json_lines_with_bad_line(spark: SparkSession, cfg: AppConfig) -> None:
    d = Path(cfg.sources.users.path)
    d.mkdir(parents=True)
    (d / "u.jsonl").write_text('{"user_id": "u1", "marketing_consent": true, "country": "DE"}\n{oops\n')
    assert ingest_source(spark, cfg, "users", "r1")["users_rows"] == 2
    rows = {r["user_id"]: (r["marketing_consent"], r[CORRUPT])
            for r in delta_io.read(spark, cfg.table("bronze", "users")).collect()}
    assert rows == {"u1": ("true", None), None: (None, "{oops")}


def test_parquet_source(spark: SparkSession, tmp_path: Path) -> None:
    columns = {"user_id": "member", "item_id": "sku", "event_ts": "ts"}
    cfg = make_config(tmp_path, sources={"events": {"path": str(tmp_path / "pq"), "format": "parquet",
                                                    "columns": columns, "constant_event_type": "purchase"}},
                      privacy={"consent_without_users": "granted"})
    spark.createDataFrame([(1, 2, 3.5, 1700000000)], "member int, sku int, amount double, ts long").write.parquet(
        str(tmp_path / "pq"))
    assert ingest_source(spark, cfg, "events", "r1")["events_rows"] == 1
    row = delta_io.read(spark, cfg.table("bronze", "events")).first()
    assert (row["member"], row["sku"], row["amount"], row["ts"]) == ("1", "2", "3.5", "1700000000")


def test_parquet_files_of_one_batch_are_read_with_every_files_columns(spark: SparkSession, tmp_path: Path) -> None:
    """Two Parquet files land together, one with a column the other lacks: bronze gets the column (null for the
    other file's row), where Spark's default would take the schema of one file's footer and drop it."""
    columns = {"user_id": "member", "item_id": "sku", "event_ts": "ts"}
    cfg = make_config(tmp_path, sources={"events": {"path": str(tmp_path / "pq"), "format": "parquet",
                                                    "columns": columns, "constant_event_type": "purchase"}},
                      privacy={"consent_without_users": "granted"})
    (tmp_path / "pq").mkdir()
    for name, df in (("a", spark.createDataFrame([(1, 2, 1700000000)], "member int, sku int, ts long")),
                     ("b", spark.createDataFrame([(3, 4, 5.5, 1700000001)], "member int, sku int, amount double, "
                                                                            "ts long"))):
        df.coalesce(1).write.parquet(str(tmp_path / name))
        next((tmp_path / name).glob("part-*.parquet")).rename(tmp_path / "pq" / f"{name}.parquet")
    assert ingest_source(spark, cfg, "events", "r1")["events_rows"] == 2
    got = delta_io.read(spark, cfg.table("bronze", "events")).select("member", "amount")
    assert_df_equality(got, spark.createDataFrame([("1", None), ("3", "5.5")], "member string, amount string"),
                       ignore_row_order=True)


def test_unknown_mapped_column(spark: SparkSession, tmp_path: Path) -> None:
    cfg = make_config(tmp_path)
    cfg = dataclasses.replace(cfg, sources=dataclasses.replace(cfg.sources, events=dataclasses.replace(
        cfg.sources.events, columns={"item_id": "sku", "event_ts": "event_time"})))
    write_events(cfg, "a.csv", ["e1,u1,p1,view,2026-11-01T10:00:00Z,,,s1"])
    with pytest.raises(IngestError, match=r"^sources\.events: \S+/a\.csv has no column 'sku' \(mapped from item_id; "
                                          r"found: event_id, user_id, product_id, "):
        ingest_source(spark, cfg, "events", "r1")
    assert not delta_io.is_delta(spark, cfg.table("bronze", "events"))


def test_schema_drift_extra_column_is_an_error_unless_opted_in(spark: SparkSession, cfg: AppConfig) -> None:
    write_events(cfg, "a.csv", ["e1,u1,p1,view,2026-11-01T10:00:00Z,,,s1"])
    ingest_source(spark, cfg, "events", "r1")
    uri = cfg.table("bronze", "events")
    v = delta_io.version(spark, uri)
    write_events(cfg, "b.csv", ["e2,u1,p1,view,2026-11-01T10:00:00Z,,,s1,web"], header=HEADER.strip() + ",channel\n")
    with pytest.raises(IngestError, match=r"schema drift: new column\(s\) channel"):
        ingest_source(spark, cfg, "events", "r2")
    assert delta_io.version(spark, uri) == v
    # The failed batch was not committed: opted in, the next run reads b.csv (and only b.csv) again.
    evolving = dataclasses.replace(cfg, clean=dataclasses.replace(cfg.clean, allow_schema_evolution=True))
    assert ingest_source(spark, evolving, "events", "r2") == counts(1, 1, 1)
    got = delta_io.read(spark, uri).select("event_id", "channel")
    expected = spark.createDataFrame([("e1", None), ("e2", "web")], "event_id string, channel string")
    assert_df_equality(got, expected, ignore_row_order=True)
    # Later files without the new column are still read (it is null for them).
    write_events(cfg, "c.csv", ["e3,u1,p1,view,2026-11-02T10:00:00Z,,,s1,"], header=HEADER.strip() + ",channel\n")
    assert ingest_source(spark, evolving, "events", "r3")["events_rows"] == 1


def test_schema_drift_missing_column_is_always_an_error(spark: SparkSession, cfg: AppConfig) -> None:
    write_events(cfg, "a.csv", ["e1,u1,p1,view,2026-11-01T10:00:00Z,,,s1"])
    ingest_source(spark, cfg, "events", "r1")
    uri = cfg.table("bronze", "events")
    v = delta_io.version(spark, uri)
    write_events(cfg, "b.csv", ["e2,u1,p1,view,2026-11-01T10:00:00Z,,"],
                 header="event_id,user_id,product_id,event_type,event_time,price,quantity\n")
    evolving = dataclasses.replace(cfg, clean=dataclasses.replace(cfg.clean, allow_schema_evolution=True))
    for c in (cfg, evolving):
        with pytest.raises(IngestError, match=r"column\(s\) session_id missing"):
            ingest_source(spark, c, "events", "r2")
    assert delta_io.version(spark, uri) == v


def test_a_file_without_a_bronze_column_is_an_error_next_to_one_that_has_it(spark: SparkSession,
                                                                             cfg: AppConfig) -> None:
    """Files of one batch are read by column name: one that lacks a column bronze has fails the batch, as it does
    alone, instead of getting nulls because the other file brings the column."""
    write_events(cfg, "a.csv", ["e1,u1,p1,view,2026-11-01T10:00:00Z,,,s1"])
    ingest_source(spark, cfg, "events", "r1")
    uri = cfg.table("bronze", "events")
    v = delta_io.version(spark, uri)
    write_events(cfg, "b.csv", ["e2,u1,p1,view,2026-11-01T10:00:00Z,,,s1"])
    write_events(cfg, "c.csv", ["e3,u1,p1,view,2026-11-01T10:00:00Z,,"],
                 header="event_id,user_id,product_id,event_type,event_time,price,quantity\n")
    with pytest.raises(IngestError, match=r"column\(s\) session_id missing"):
        ingest_source(spark, cfg, "events", "r2")
    assert delta_io.version(spark, uri) == v


def test_failed_write_leaves_table_untouched(spark: SparkSession, cfg: AppConfig,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    write_events(cfg, "a.csv", ["e1,u1,p1,view,2026-11-01T10:00:00Z,,,s1"])
    ingest_source(spark, cfg, "events", "r1")
    uri = cfg.table("bronze", "events")
    v = delta_io.version(spark, uri)
    write_events(cfg, "b.csv", ["e2,u1,p1,view,2026-11-01T10:00:00Z,,,s1"])
    monkeypatch.setenv(delta_io.FAULT_ENV, "before_write:bronze.events")
    with pytest.raises(delta_io.InjectedFault):
        ingest_source(spark, cfg, "events", "r2")
    assert delta_io.version(spark, uri) == v and delta_io.read(spark, uri).count() == 1
    monkeypatch.delenv(delta_io.FAULT_ENV)
    assert ingest_source(spark, cfg, "events", "r2")["events_rows"] == 1


def with_events(cfg: AppConfig, **changes: object) -> AppConfig:
    events = dataclasses.replace(cfg.sources.events, **changes)
    return dataclasses.replace(cfg, sources=dataclasses.replace(cfg.sources, events=events))


def test_csv_files_with_columns_in_another_order_are_read_by_name(spark: SparkSession, cfg: AppConfig) -> None:
    write_events(cfg, "a.csv", ["e1,u1,p1,purchase,2026-11-01T10:00:00Z,9.99,1,s1"])
    write_events(cfg, "b.csv", ["2,19.50,e2,u2,p2,purchase,2026-11-01T11:00:00Z"],
                 header="quantity,price,event_id,user_id,product_id,event_type,event_time\n")
    assert ingest_source(spark, cfg, "events", "r1") == counts(2, 2, 2)
    bronze = delta_io.read(spark, cfg.table("bronze", "events"))
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
    assert not delta_io.is_delta(spark, uri) and not Path(uri).exists()
    # The failed batch stays unread: with the bad file taken away, the next run reads a.csv alone.
    (Path(cfg.sources.events.path) / "b.csv").unlink()
    assert ingest_source(spark, cfg, "events", "r2") == counts(1, 1, 1)  # b.csv, gone, is not counted
    assert [r[0] for r in delta_io.read(spark, uri).select("event_id").collect()] == ["e1"]


def test_missing_file_fails_even_when_bronze_exists_and_commits_nothing(spark: SparkSession, cfg: AppConfig) -> None:
    write_events(cfg, "a.csv", ["e1,u1,p1,view,2026-11-01T10:00:00Z,,,s1"])
    ingest_source(spark, cfg, "events", "r1")
    uri = cfg.table("bronze", "events")
    v = delta_io.version(spark, uri)
    write_events(cfg, "b.csv", ["e2,p1,view,2026-11-01T10:00:00Z,,,s1"],
                 header="event_id,product_id,event_type,event_time,price,quantity,session_id\n")
    with pytest.raises(IngestError, match=r"b\.csv has no column 'user_id' \(required for user_id; map it with "
                                          r"sources\.events\.columns\.user_id; found: event_id, product_id"):
        ingest_source(spark, cfg, "events", "r2")
    assert delta_io.version(spark, uri) == v


def test_required_unmapped_column_absent_is_an_error(spark: SparkSession, cfg: AppConfig) -> None:
    # The export calls the customer "CustomerID" and the YAML does not map it: silver would get 0 rows.
    write_events(cfg, "a.csv", ["e1,u1,p1,view,2026-11-01T10:00:00Z"],
                 header="event_id,CustomerID,product_id,event_type,event_time\n")
    with pytest.raises(IngestError, match=r"a\.csv has no column 'user_id' \(required for user_id"):
        ingest_source(spark, cfg, "events", "r1")
    assert not delta_io.is_delta(spark, cfg.table("bronze", "events"))
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
    (d / "old").mkdir()
    (d / "old" / "b.csv").write_text(HEADER + "e9,u9,p9,view,2026-11-01T10:00:00Z,,,s9\n")  # not a partition dir
    with open(d / "dump.bin", "wb") as f:
        # Sparse, 2.2 GB: binaryFile fails on any file over 2 GB whose content it reads, so skipping it without
        # an error shows the discovery stream reads no file's bytes.
        f.truncate(2_200_000_000)
    with caplog.at_level(logging.WARNING, logger="sparkpromo.landing"):
        result = ingest_source(spark, cfg, "events", "r1")
    assert result == counts(1, 1, 4, skipped=3)  # a.csv and the three strays (Spark's scan passes no empty file)
    warning = next(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert "skipped 3 new file(s)" in warning and "dump.bin, meta.json, notes.png" in warning
    assert "_SUCCESS" not in warning
    files = {r[0].rsplit("/", 1)[-1] for r in delta_io.read(spark, cfg.table("bronze", "events"))
             .select(C.SOURCE_FILE).distinct().collect()}
    assert files == {"a.csv"}
    # Skipped files are reported by the run that first finds them, not by every later one.
    assert ingest_source(spark, cfg, "events", "r2") == counts(0, 0, 0)


def test_batch_listing_patterns_single_files_and_empty_files(tmp_path: Path) -> None:
    d = tmp_path / "landing"
    found = [(f"file:{d}/{name}", 3) for name in ("b.txt", "a.csv", "c.CSV", "e.json")] + [(f"file:{d}/z.csv", 0)]
    src = FileSource(path=str(d))
    listing = batch_listing("events", src, found)
    assert listing.files == (str(d / "a.csv"),) and listing.local and listing.base_path == str(d)
    assert [Path(f).name for f in listing.skipped] == ["b.txt", "c.CSV", "e.json"]  # z.csv is empty: neither

    custom = batch_listing("events", dataclasses.replace(src, patterns=("*.txt", "*.CSV")), found)
    assert [Path(f).name for f in custom.files] == ["b.txt", "c.CSV"] and len(custom.skipped) == 2

    globbed = batch_listing("events", dataclasses.replace(src, path=f"file://{d}/[ab].*"), found[:2])
    assert [Path(f).name for f in globbed.files] == ["a.csv"] and globbed.base_path is None

    remote = batch_listing("events", dataclasses.replace(src, path="s3a://bucket/events"),
                           [("s3a://bucket/events/a.csv", 3)])
    assert remote.files == ("s3a://bucket/events/a.csv",) and not remote.local

    d.mkdir()
    (d / "b.txt").write_text("x\n")
    single = batch_listing("events", dataclasses.replace(src, path=str(d / "b.txt")), found[:1])
    assert single.files == (str(d / "b.txt"),) and single.skipped == () and single.base_path is None


def test_only_strays_on_a_first_ingest_is_an_error_until_patterns_match(spark: SparkSession, cfg: AppConfig
                                                                        ) -> None:
    d = Path(cfg.sources.items.path)
    d.mkdir(parents=True)
    (d / "items.txt").write_text("product_id,category\np1,c1\n")
    with pytest.raises(IngestError, match=r"^sources\.items: no file under \S+ matches \*\.csv \(1 other file"):
        ingest_source(spark, cfg, "items", "r1")
    # The batch was not committed: with the right pattern the same file is read.
    fixed = dataclasses.replace(cfg, sources=dataclasses.replace(cfg.sources, items=dataclasses.replace(
        cfg.sources.items, patterns=("*.txt",))))
    result = ingest_source(spark, fixed, "items", "r1")
    assert (result["items_rows"], result["items_files"], result["items_new_files"]) == (1, 1, 1)


def test_glob_source_and_missing_path(spark: SparkSession, cfg: AppConfig) -> None:
    for name in ("a.csv", "b.csv", "c.csv"):
        write_events(cfg, name, [f"e-{name},u1,p1,view,2026-11-01T10:00:00Z,,,s1"])
    globbed = with_events(cfg, path=f"file://{cfg.sources.events.path}/[ab].csv")
    assert ingest_source(spark, globbed, "events", "r1") == counts(2, 2, 2)
    missing = with_events(cfg, path=str(Path(cfg.sources.events.path) / "nowhere"))
    with pytest.raises(IngestError, match=r"^sources\.events: path does not exist: \S+/nowhere$"):
        ingest_source(spark, missing, "events", "r2")


def test_next_day_reads_only_the_next_days_files(spark: SparkSession, cfg: AppConfig) -> None:
    day1 = [write_events(cfg, "2026-11-01-a.csv", ["e1,u1,p1,view,2026-11-01T10:00:00Z,,,s1",
                                                   "e2,u2,p1,view,2026-11-01T11:00:00Z,,,s1"]),
            write_events(cfg, "2026-11-01-b.csv", ["e3,u3,p1,view,2026-11-01T12:00:00Z,,,s1"])]
    assert ingest_source(spark, cfg, "events", "d1") == counts(3, 2, 2)
    # Day 1's files turn unreadable (a header without the mapped columns): a day-2 ingest that opened them again
    # would fail, as the old (path, size, mtime) anti-join did for any file it re-read.
    for p in day1:
        p.write_text("garbage\n1\n")
    write_events(cfg, "2026-11-02-a.csv", ["e4,u1,p2,view,2026-11-02T10:00:00Z,,,s2"])
    # new_files is Spark's count (the stream's progress: input rows = files); rows are what the batch read.
    assert ingest_source(spark, cfg, "events", "d2") == counts(1, 1, 1)
    bronze = delta_io.read(spark, cfg.table("bronze", "events"))
    got = bronze.where(F.col(C.RUN_ID) == "d2").select("event_id",
                                                        F.regexp_extract(C.SOURCE_FILE, r"[^/]+$", 0).alias("file"))
    expected = spark.createDataFrame([("e4", "2026-11-02-a.csv")], "event_id string, file string")
    assert_df_equality(got, expected, ignore_nullable=True)
    assert bronze.count() == 4


def test_retried_batch_is_not_appended_twice(spark: SparkSession, cfg: AppConfig,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    write_events(cfg, "a.csv", ["e1,u1,p1,view,2026-11-01T10:00:00Z,,,s1"])
    ingest_source(spark, cfg, "events", "r1")
    uri = cfg.table("bronze", "events")
    write_events(cfg, "b.csv", ["e2,u1,p1,view,2026-11-01T11:00:00Z,,,s1", "e3,u1,p1,view,2026-11-01T12:00:00Z,,,s1"])
    # A crash after bronze's commit, before the checkpoint records the batch.
    monkeypatch.setenv(delta_io.FAULT_ENV, "after_write:bronze.events")
    with pytest.raises(delta_io.InjectedFault):
        ingest_source(spark, cfg, "events", "r2")
    monkeypatch.delenv(delta_io.FAULT_ENV)
    checkpoint = Path(cfg.lakehouse) / "_checkpoints" / "ingest" / "events"
    assert (checkpoint / "offsets" / "1").is_file() and not (checkpoint / "commits" / "1").exists()
    v = delta_io.version(spark, uri)
    assert delta_io.read(spark, uri).count() == 3

    # The retry replays batch 1 (same files, same txnVersion): Delta skips the append it already holds, and the
    # result says so: no row appended by this run.
    assert ingest_source(spark, cfg, "events", "r3") == counts(0, 0, 1)
    assert (checkpoint / "commits" / "1").is_file()
    assert delta_io.version(spark, uri) == v
    got = delta_io.read(spark, uri).groupBy("event_id").count()
    assert_df_equality(got, spark.createDataFrame([("e1", 1), ("e2", 1), ("e3", 1)], "event_id string, count long"),
                       ignore_row_order=True, ignore_nullable=True)


def test_partition_directories_keep_their_columns(spark: SparkSession, cfg: AppConfig) -> None:
    """A key=value directory's column is text in bronze like every other ("08" stays "08"), and the next day's
    directory is no schema drift (its column came from the directory, not the file's header)."""
    write_events(cfg, "day=01/a.csv", ["e1,u1,p1,view,2026-11-01T10:00:00Z,,,s1"])
    write_events(cfg, "day=2/b.csv", ["u2,e2,p1,view,2026-11-02T10:00:00Z,,,s1"],
                 header="user_id,event_id,product_id,event_type,event_time,price,quantity,session_id\n")
    assert ingest_source(spark, cfg, "events", "r1") == counts(2, 2, 2)
    write_events(cfg, "day=03/c.csv", ["e3,u3,p1,view,2026-11-03T10:00:00Z,,,s1"])
    assert ingest_source(spark, cfg, "events", "r2") == counts(1, 1, 1)
    got = delta_io.read(spark, cfg.table("bronze", "events")).select("event_id", "user_id", "day")
    expected = spark.createDataFrame([("e1", "u1", "01"), ("e2", "u2", "2"), ("e3", "u3", "03")],
                                     "event_id string, user_id string, day string")
    assert_df_equality(got, expected, ignore_row_order=True, ignore_nullable=True)
    # A JSON source in such directories: text too (Spark's JSON reader once failed on to_json of the typed column)
    users = Path(cfg.sources.users.path) / "dt=2026-11-01"
    users.mkdir(parents=True)
    (users / "u.jsonl").write_text('{"user_id": "u1", "country": "DE"}\n')
    assert ingest_source(spark, cfg, "users", "r1")["users_rows"] == 1
    assert delta_io.read(spark, cfg.table("bronze", "users")).select("dt").first()[0] == "2026-11-01"


def test_a_file_written_under_a_hidden_name_is_read_once_renamed_into_place(spark: SparkSession,
                                                                             cfg: AppConfig) -> None:
    write_events(cfg, "a.csv", ["e1,u1,p1,view,2026-11-01T10:00:00Z,,,s1"])
    partial = write_events(cfg, "_b.csv", ["e2,u2,p1,view,2026-11-01T10:00:00Z,,,s1"])
    write_events(cfg, ".c.csv", ["e3,u3,p1,view,2026-11-01T10:00:00Z,,,s1"])
    assert ingest_source(spark, cfg, "events", "r1") == counts(1, 1, 1)
    partial.rename(partial.with_name("b.csv"))
    assert ingest_source(spark, cfg, "events", "r2") == counts(1, 1, 1)
    got = delta_io.read(spark, cfg.table("bronze", "events")).select("event_id")
    assert_df_equality(got, spark.createDataFrame([("e1",), ("e2",)], "event_id string"), ignore_row_order=True,
                       ignore_nullable=True)


def test_a_column_name_delta_cannot_take_is_named_before_anything_is_written(spark: SparkSession,
                                                                              cfg: AppConfig) -> None:
    write_events(cfg, "a.csv", ["e1,u1,p1,view,2026-11-01T10:00:00Z,,,s1,3"], header=HEADER[:-1] + ",Unit Price\n")
    with pytest.raises(IngestError, match=r"a\.csv has a column named 'Unit Price': Delta tables take no space"):
        ingest_source(spark, cfg, "events", "r1")
    assert not delta_io.is_delta(spark, cfg.table("bronze", "events"))


def test_single_file_path_with_another_extension_is_read(spark: SparkSession, cfg: AppConfig) -> None:
    p = write_events(cfg, "export.dat", ["e1,u1,p1,view,2026-11-01T10:00:00Z,,,s1"])
    (p.parent / "notes.png").write_bytes(b"\x89PNG")
    one = with_events(cfg, path=str(p))
    assert ingest_source(spark, one, "events", "r1") == counts(1, 1, 1)
    assert delta_io.read(spark, cfg.table("bronze", "events")).first()[C.SOURCE_FILE].endswith("/export.dat")


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
