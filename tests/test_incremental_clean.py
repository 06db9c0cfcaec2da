"""Incremental clean (issue 18): ten bronze batches cleaned one by one give the silver tables and the quarantine a
full refresh of the same bronze gives, and a clean with nothing new writes nothing."""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path
from typing import Any

import pytest
from chispa import assert_df_equality
from delta.tables import DeltaTable
from pyspark.sql import DataFrame, SparkSession

from sparkpromo import clean, delta_io
from sparkpromo import columns as C
from sparkpromo import tables as T
from sparkpromo.config import AppConfig
from sparkpromo.ingest import CORRUPT, FILE_MTIME, FILE_SIZE
from tests.conftest import make_config

pytestmark = pytest.mark.slow

NOW = dt.datetime(2026, 11, 10)
EVENT_COLS = ["event_id", "user_id", "product_id", "event_type", "event_time", "price", "quantity", "session_id"]
USER_COLS = ["user_id", "signup_date", "birth_date", "country", "marketing_consent"]
ITEM_COLS = ["product_id", "category", "brand", "price", "stock"]
SOURCE_COLS = {"events": EVENT_COLS, "users": USER_COLS, "items": ITEM_COLS}


SOURCES_CONF = {"events": {"path": "x", "columns": {"item_id": "product_id", "event_ts": "event_time"}},
                "users": {"path": "u", "format": "json"},
                "items": {"path": "i", "columns": {"item_id": "product_id"}}}


def config(root: Path, **sections: Any) -> AppConfig:
    return make_config(root, clean={"bot_max_events_per_day": 3}, **sections, sources=SOURCES_CONF)


def ev(eid: str | None, user: str | None, item: str, day: int, hour: int = 10, et: str = "view",
       price: str | None = None) -> tuple[Any, ...]:
    return (eid, user, item, et, f"2026-11-{day:02d}T{hour:02d}:00:00Z", price, None, "s1")


def user(uid: str, country: str = "DE", signup: str = "2026-01-01") -> tuple[Any, ...]:
    return (uid, signup, "1990-05-17", country, "true")


def item(iid: str, price: str = "5") -> tuple[Any, ...]:
    return (iid, "books", "acme", price, "3")


# Each batch: what one ingest appends to each bronze table. Late events, duplicates across batches, a bot whose
# day spans two batches, a user and an item that arrive after their events, an updated and a broken user export.
BATCHES: list[dict[str, list[tuple[Any, ...]]]] = [
    {"users": [user("u1"), user("u2"), user("u4")], "items": [item("p1"), item("p2")],
     "events": [ev("e1", "u1", "p1", 1), ev("e2", "u2", "p2", 1), ev("e3", "u3", "p1", 1),
                ev("e4", "u1", "p3", 1), ev("e5", "u1", "p1", 1, et="purchase", price="-1"),
                ev("e20", "u4", "p1", 1)]},
    {"events": [ev("e1", "u1", "p1", 1), ev("e6", "u2", "p1", 2), ev("b1", "u2", "p1", 3, 8),
                ev("b2", "u2", "p2", 3, 9)]},
    {"events": [ev("b3", "u2", "p1", 3, 10), ev("b4", "u2", "p2", 3, 11), ev("e7", "u1", "p2", 3)]},
    {"users": [user("u3")]},
    {"items": [item("p3")], "events": [ev("e8", "u3", "p3", 4)]},
    {"users": [user("u1", country="FR")], "events": [ev("e9", "u1", "p1", 5)]},
    {"events": [ev("e10", "u1", "p2", 1, 7), ev(None, "u1", "p1", 6), ev("e11", "u1", "p1", 6, et="click"),
                ev("e3", "u3", "p2", 1, 12)]},
    {"users": [user("u4", signup="not-a-date")], "events": [ev("e12", "u4", "p2", 6)]},
    {"items": [item("p1", price="6"), item("p4")], "events": [ev("e13", "u5", "p4", 7), ev("e14", "u1", "p4", 7)]},
    {"events": [ev("e15", "u1", "p1", 8), ev("e16", "u1", "p1", 8), ev("e17", "u1", "p2", 8),
                ev("e6", "u2", "p1", 2)]},
]


def bronze(spark: SparkSession, source: str, rows: list[tuple[Any, ...]], batch: int) -> DataFrame:
    """Bronze-shaped rows of one ingest: source columns as strings, the corrupt record and ingestion metadata."""
    cols = SOURCE_COLS[source]
    ts = dt.datetime(2026, 11, 20) + dt.timedelta(hours=batch)  # each batch arrives after the events it holds
    data = [(*r, None, f"file:/landing/{source}/b{batch}.csv", 10, ts, ts, f"r{batch}") for r in rows]
    schema = ", ".join(f"`{c}` string" for c in cols) + (
        f", {CORRUPT} string, {C.SOURCE_FILE} string, {FILE_SIZE} long, {FILE_MTIME} timestamp, "
        f"{C.INGEST_TS} timestamp, {C.RUN_ID} string")
    return spark.createDataFrame(data, schema)


def append_batch(spark: SparkSession, cfg: AppConfig, n: int, feed: bool = True) -> int:
    """Append batch ``n`` to bronze (the first batch creates every table, with the properties ingest gives them, or
    without a change data feed, as an earlier version created them); the number of rows appended."""
    rows = 0
    for source in SOURCE_COLS:
        part = BATCHES[n].get(source, [])
        if part or n == 0:
            delta_io.append(bronze(spark, source, part, n), cfg.table("bronze", source),
                            properties=dict(T.BRONZE[source].properties) if feed else None)
            rows += len(part)
    return rows


def tables(spark: SparkSession, cfg: AppConfig, versions: dict[str, int | None] | None = None
           ) -> dict[str, DataFrame]:
    out = {s: delta_io.read(spark, cfg.table("silver", s), version=(versions or {}).get(f"silver.{s}"))
           for s in clean.SOURCES}
    out["quarantine"] = delta_io.read(spark, cfg.table("quarantine", "rows"),
                                      version=(versions or {}).get("quarantine.rows")).drop(C.RUN_ID)
    return out


def assert_equals_a_full_refresh(spark: SparkSession, cfg: AppConfig, now: dt.datetime) -> None:
    """The tables the last incremental clean left equal those a full refresh of the same bronze gives."""
    incremental = clean.last_state(spark, cfg)
    assert incremental is not None
    clean.run_clean(spark, cfg, "full", now, full_refresh=True)
    before, after = tables(spark, cfg, incremental.outputs), tables(spark, cfg)
    for name in before:
        assert_df_equality(before[name], after[name], ignore_row_order=True, ignore_nullable=True,
                           ignore_column_order=True)


FROM_FEED = "from the change data feed"


def test_ten_incremental_batches_equal_a_full_refresh_of_the_same_bronze(spark: SparkSession, tmp_path: Path,
                                                                          caplog: pytest.LogCaptureFixture) -> None:
    cfg = config(tmp_path)
    results = []
    caplog.set_level(logging.INFO, logger="sparkpromo.clean.incremental")
    for n in range(len(BATCHES)):
        appended = append_batch(spark, cfg, n)
        r = clean.run_clean(spark, cfg, f"r{n}", NOW)
        results.append(r)
        assert r["mode"] == ("full" if n == 0 else "incremental")
        for s in clean.SOURCES:
            assert r[f"{s}.run_bronze_rows"] == (r[f"{s}.run_inserted"] + r[f"{s}.run_updated"]
                                                 + r[f"{s}.run_quarantined"] + r[f"{s}.run_duplicates"])
            assert r[f"{s}.bronze_rows"] == (r[f"{s}.silver_rows"] + r[f"{s}.quarantined"]
                                             + r[f"{s}.duplicates"])
        assert sum(r[f"{s}.run_bronze_rows"] for s in clean.SOURCES) == appended
    # The bot's day crosses the limit in batch 2: its earlier silver events move to quarantine.
    assert results[2]["events.rejudged_to_quarantine"] == 4  # e2, e6, b1, b2 (b3, b4 are this run's rejects)
    # u3 arrives in batch 3: e3, quarantined as unknown_user in batch 0, moves to silver.
    assert results[3]["events.rejudged_to_silver"] == 1
    assert results[5]["users.run_updated"] == 1
    # Every source's new rows came from its change data feed (bronze was created as ingest creates it).
    fed = {r.getMessage().split(":")[0] for r in caplog.records if FROM_FEED in r.getMessage()}
    assert fed == {f"bronze.{s}" for s in clean.SOURCES}
    assert "by comparing it with version" not in caplog.text

    incremental = clean.last_state(spark, cfg)
    assert incremental is not None
    full = clean.run_clean(spark, cfg, "full", NOW, full_refresh=True)
    assert full["mode"] == "full"
    totals = {k: v for k, v in full.items() if not k.split(".")[-1].startswith(("run_", "rejudged_"))}
    assert {k: v for k, v in results[-1].items() if k in totals and k not in ("mode", "full_reason")} == \
        {k: v for k, v in totals.items() if k not in ("mode", "full_reason")}
    before, after = tables(spark, cfg, incremental.outputs), tables(spark, cfg)
    for name in before:
        assert_df_equality(before[name], after[name], ignore_row_order=True, ignore_nullable=True,
                           ignore_column_order=True)


def test_a_clean_with_no_new_bronze_rows_changes_no_table_version(spark: SparkSession, tmp_path: Path) -> None:
    cfg = config(tmp_path)
    append_batch(spark, cfg, 0)
    first = clean.run_clean(spark, cfg, "r0", NOW)
    append_batch(spark, cfg, 1)
    second = clean.run_clean(spark, cfg, "r1", NOW)
    assert second["mode"] == "incremental"
    uris = [t.uri(cfg) for t in (*T.SILVER.values(), T.QUARANTINE, T.DATA_QUALITY, T.CLEAN_STATE)]
    versions = [delta_io.version(spark, u) for u in uris]
    again = clean.run_clean(spark, cfg, "r2", NOW)
    assert [delta_io.version(spark, u) for u in uris] == versions
    assert again["mode"] == "unchanged" and again["events.run_bronze_rows"] == 0
    assert again["events.silver_rows"] == second["events.silver_rows"] != first["events.silver_rows"]


def test_a_birthday_between_two_runs_moves_the_age_band_as_a_rebuild_does(spark: SparkSession,
                                                                           tmp_path: Path) -> None:
    cfg = config(tmp_path)
    teen = ("u9", "2026-01-01", "2008-11-12", "DE", "true")  # 17 on NOW, 18 two days later
    batch = {"users": [user("u1"), teen], "items": [item("p1")], "events": [ev("e1", "u1", "p1", 1)]}
    delta_io.append(bronze(spark, "users", batch["users"], 0), cfg.table("bronze", "users"))
    delta_io.append(bronze(spark, "items", batch["items"], 0), cfg.table("bronze", "items"))
    delta_io.append(bronze(spark, "events", batch["events"], 0), cfg.table("bronze", "events"))
    clean.run_clean(spark, cfg, "r0", NOW)
    bands = {r[C.USER_ID]: r[C.AGE_BAND] for r in delta_io.read(spark, cfg.table("silver", "users")).collect()}
    assert bands["u9"] == "<18"

    later = NOW + dt.timedelta(days=3)
    # No new row at all: still not "unchanged", the band moved.
    moved = clean.run_clean(spark, cfg, "r1", later)
    assert moved["mode"] == "incremental"
    bands = {r[C.USER_ID]: r[C.AGE_BAND] for r in delta_io.read(spark, cfg.table("silver", "users")).collect()}
    assert bands["u9"] == "18-24"
    assert clean.run_clean(spark, cfg, "r2", later)["mode"] == "unchanged"  # nobody else moved
    # A new event on top: the incremental result equals a rebuild as of the later date.
    delta_io.append(bronze(spark, "events", [ev("e2", "u9", "p1", 9)], 1), cfg.table("bronze", "events"))
    assert clean.run_clean(spark, cfg, "r3", later)["mode"] == "incremental"
    assert_equals_a_full_refresh(spark, cfg, later)


def test_only_rows_whose_outcome_can_change_are_judged_again(spark: SparkSession, tmp_path: Path) -> None:
    """A new event of a user who cannot be a bot re-judges none of the user's earlier events, only the earlier
    copies of its own id; once the user has more rows on one day than the bot limit (3) allows, every earlier
    event of theirs is judged again, and moves to quarantine. Each step equals a full refresh."""
    cfg = config(tmp_path)
    first = {"users": [user("u1"), user("u2")], "items": [item("p1"), item("p2")],
             "events": [ev("e1", "u1", "p1", 1), ev("e2", "u1", "p2", 1), ev("e3", "u1", "p1", 2),
                        ev("e4", "u2", "p1", 2),
                        # u2's days keep the bot's share of all events under clean.max_reject_share
                        *(ev(f"f{i}", "u2", "p2", 5 + i // 2, 8 + i % 2) for i in range(8))]}
    steps = [({"events": [ev("e5", "u1", "p2", 3)]}, 0, 0),  # u1: at most 2 rows a day, no bot
             ({"events": [ev("e1", "u1", "p1", 1), ev("e6", "u1", "p1", 4)]}, 1, 0),  # a re-sent e1: its copy
             ({"events": [ev("b1", "u1", "p1", 2, 11), ev("b2", "u1", "p2", 2, 12), ev("b3", "u1", "p1", 2, 13)]},
              6, 5)]  # day 2 now holds 4 valid events of u1's: a bot; its 6 earlier rows judged again, the 5 in
    # silver move to quarantine (the re-sent e1 stays a duplicate)
    for source, rows in first.items():
        delta_io.append(bronze(spark, source, rows, 0), cfg.table("bronze", source))
    assert clean.run_clean(spark, cfg, "r0", NOW)["mode"] == "full"
    for n, (batch, rejudged, to_quarantine) in enumerate(steps, start=1):
        delta_io.append(bronze(spark, "events", batch["events"], n), cfg.table("bronze", "events"))
        r = clean.run_clean(spark, cfg, f"r{n}", NOW)
        assert r["mode"] == "incremental"
        assert (r["events.rejudged_rows"], r["events.rejudged_to_quarantine"]) == (rejudged, to_quarantine), n
        assert r["users.rejudged_rows"] == r["items.rejudged_rows"] == 0
    assert_equals_a_full_refresh(spark, cfg, NOW)


def test_a_clean_rebuilds_when_its_settings_or_bronze_changed_other_than_by_appends(spark: SparkSession,
                                                                                    tmp_path: Path) -> None:
    """Each reason to rebuild, named in the result: a changed clean rule, then a bronze row deleted by hand, then
    privacy mode; between them, a clean with nothing in its way is incremental again."""
    cfg = config(tmp_path)
    append_batch(spark, cfg, 0)
    assert clean.run_clean(spark, cfg, "r0", NOW)["full_reason"] == "no earlier clean recorded"
    append_batch(spark, cfg, 1)
    assert clean.run_clean(spark, cfg, "r1", NOW)["mode"] == "incremental"
    stricter = make_config(tmp_path, clean={"bot_max_events_per_day": 2}, sources=SOURCES_CONF)
    append_batch(spark, stricter, 2)
    r = clean.run_clean(spark, stricter, "r2", NOW)
    assert (r["mode"], r["full_reason"]) == ("full", "the sources, clean or privacy settings changed since the last "
                                                     "clean")
    DeltaTable.forPath(spark, stricter.table("bronze", "events")).delete("event_id = 'e6'")
    append_batch(spark, stricter, 3)
    r = clean.run_clean(spark, stricter, "r3", NOW)
    assert r["mode"] == "full" and r["full_reason"] == "bronze.events changed by more than appends since the last clean"
    append_batch(spark, stricter, 4)
    assert clean.run_clean(spark, stricter, "r4", NOW)["mode"] == "incremental"
    assert_equals_a_full_refresh(spark, stricter, NOW)


def test_a_clean_rebuilds_when_quarantine_rows_could_not_be_told_apart(spark: SparkSession, tmp_path: Path) -> None:
    """A shop whose user id is personal (an e-mail address) and whose events have no id: quarantine payloads leave
    the user out, so two unknown users' otherwise equal events share one payload, and a delete of one's row (its user
    arrived) would remove both. Such a clean rebuilds, with its reason, and the other user's row stays."""
    cfg = config(tmp_path, privacy={"personal_columns": ["user_id"]})
    first = {"users": [user("u1")], "items": [item("p1")],
             "events": [ev(None, "u8", "p1", 1), ev(None, "u9", "p1", 1),
                        *(ev(None, "u1", "p1", 2 + i) for i in range(3))]}
    for source, rows in first.items():
        df = bronze(spark, source, rows, 0)
        delta_io.append(df.drop("event_id") if source == "events" else df, cfg.table("bronze", source))
    clean.run_clean(spark, cfg, "r0", NOW)
    delta_io.append(bronze(spark, "users", [user("u8")], 1), cfg.table("bronze", "users"))
    r = clean.run_clean(spark, cfg, "r1", NOW)
    assert r["mode"] == "full" and "columns.user_id ('user_id') is a personal column" in r["full_reason"], r
    quarantined = delta_io.read(spark, cfg.table("quarantine", "rows")).where(f"{C.Q_RULE} = 'unknown_user'")
    assert [row[C.Q_PAYLOAD] for row in quarantined.collect()] == [
        '{"product_id":"p1","event_type":"view","event_time":"2026-11-01T10:00:00Z","session_id":"s1"}']


def test_a_bronze_without_a_change_feed_is_cleaned_by_comparing_its_versions(spark: SparkSession, tmp_path: Path,
                                                                          caplog: pytest.LogCaptureFixture) -> None:
    """Bronze tables created before ingest declared their change data feed: the rows appended since the last clean
    are found by comparing the two versions, with the same result as a full refresh (the bot's day spans the
    batches)."""
    cfg = config(tmp_path)
    caplog.set_level(logging.INFO, logger="sparkpromo.clean.incremental")
    for n in range(3):
        append_batch(spark, cfg, n, feed=False)
        assert clean.run_clean(spark, cfg, f"r{n}", NOW)["mode"] == ("full" if n == 0 else "incremental")
    assert "bronze.events: the rows appended after version 1 by comparing it with version 2" in caplog.text
    assert FROM_FEED not in caplog.text
    assert_equals_a_full_refresh(spark, cfg, NOW)
