"""Every cleaning rule on a small hand-written bronze frame, plus the balance and typing of silver."""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
from typing import Any

import pytest
from chispa import assert_df_equality
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from sparkpromo import clean
from sparkpromo import columns as C
from sparkpromo.config import AppConfig
from sparkpromo.ingest import CORRUPT, FILE_MTIME, FILE_SIZE
from tests.conftest import make_config

NOW = dt.datetime(2026, 11, 2)
EVENT_COLS = ["event_id", "user_id", "product_id", "event_type", "event_time", "price", "quantity", "session_id"]


def bronze(spark: SparkSession, cols: list[str], rows: list[tuple[Any, ...]], corrupt: list[str | None] | None = None,
           ingest_ts: list[dt.datetime] | None = None) -> DataFrame:
    """A bronze-shaped frame: source columns as strings + corrupt record + ingestion metadata."""
    n = len(rows)
    corrupt = corrupt or [None] * n
    ingest_ts = ingest_ts or [NOW] * n  # rows arrive when the clean runs (after every event they hold)
    data = [(*r, corrupt[i], "file:/landing/f.csv", 10, dt.datetime(2026, 11, 1), ingest_ts[i], "r0")
            for i, r in enumerate(rows)]
    schema = ", ".join(f"`{c}` string" for c in cols) + (
        f", {CORRUPT} string, {C.SOURCE_FILE} string, {FILE_SIZE} long, {FILE_MTIME} timestamp, "
        f"{C.INGEST_TS} timestamp, {C.RUN_ID} string")
    return spark.createDataFrame(data, schema)


@pytest.fixture
def cfg(tmp_path: Any) -> AppConfig:
    return make_config(tmp_path, clean={"bot_max_events_per_day": 3, "max_string_length": 20},
                       sources={
                           "events": {"path": "x", "columns": {"item_id": "product_id", "event_ts": "event_time"},
                                      "event_type_map": {"cart": "add_to_cart"}},
                           "users": {"path": "u", "format": "json"},
                           "items": {"path": "i", "columns": {"item_id": "product_id"}},
                       })


def ev(eid: str | None, user: str | None = "u1", item: str | None = "p1", et: str | None = "view",
       ts: str | None = "2026-11-01T10:00:00Z", price: str | None = None, qty: str | None = None) -> tuple[Any, ...]:
    return (eid, user, item, et, ts, price, qty, "s1")


def rules_of(spark: SparkSession, cfg: AppConfig, rows: list[tuple[Any, ...]], users: list[str] | None = None,
             items: list[str] | None = None, corrupt: list[str | None] | None = None) -> dict[str, str | None]:
    b = bronze(spark, EVENT_COLS, rows, corrupt)
    uids = spark.createDataFrame([(u,) for u in (users or ["u1", "u2"])], "user_id string")
    iids = spark.createDataFrame([(i,) for i in (items or ["p1", "p2"])], "item_id string")
    out = clean.classify_events_frame(b, cfg, NOW, uids, iids)
    return {r[C.EVENT_ID]: r[C.Q_RULE] for r in out.where(~F.col(clean.DUP)).select(C.EVENT_ID, C.Q_RULE).collect()}



def test_future_timestamp_is_judged_against_the_rows_arrival_not_the_judging_run(spark: SparkSession,
                                                                                   cfg: AppConfig) -> None:
    """A row that reached bronze at 12:00 may say 12:30 (tolerance 60 min) but not 13:30, whichever day the clean
    runs: an earlier run (a backfill) and a later one (a full refresh) give the same outcome."""
    arrived = dt.datetime(2026, 11, 5, 12)
    rows = [ev("early", ts="2026-11-05T12:30:00Z"), ev("late", ts="2026-11-05T13:30:00Z"),
            ev("past_run", ts="2026-11-04T09:00:00Z")]
    b = bronze(spark, EVENT_COLS, rows, ingest_ts=[arrived] * len(rows))
    expected = spark.createDataFrame([("early", None), ("late", clean.FUTURE_TIMESTAMP), ("past_run", None)],
                                     "event_id string, rule string")
    for now in (dt.datetime(2026, 11, 2), dt.datetime(2026, 11, 30)):
        got = clean.classify_events_frame(b, cfg, now, None, None).select(C.EVENT_ID, C.Q_RULE)
        assert_df_equality(got, expected, ignore_row_order=True, ignore_nullable=True)

def test_a_row_without_its_arrival_is_judged_against_the_run_in_utc_whatever_the_drivers_zone(
        spark: SparkSession, cfg: AppConfig, monkeypatch: pytest.MonkeyPatch) -> None:
    """The run's instant (the end of its run date, UTC) stands in for a missing arrival time; on a driver whose
    local zone is nine hours ahead it must still be midnight UTC, not 15:00 UTC the day before."""
    rows = [ev("within", ts="2026-11-02T00:30:00Z"), ev("beyond", ts="2026-11-02T01:30:00Z")]
    b = bronze(spark, EVENT_COLS, rows, ingest_ts=[None] * len(rows))  # type: ignore[list-item]
    expected = spark.createDataFrame([("within", None), ("beyond", clean.FUTURE_TIMESTAMP)],
                                     "event_id string, rule string")
    monkeypatch.setenv("TZ", "Asia/Tokyo")
    time.tzset()
    try:
        got = clean.classify_events_frame(b, cfg, NOW, None, None).select(C.EVENT_ID, C.Q_RULE)
        assert_df_equality(got, expected, ignore_row_order=True, ignore_nullable=True)
    finally:
        monkeypatch.undo()
        time.tzset()


EVENT_CASES = [
    (ev("a"), None),
    (ev("b", user=None), clean.MISSING_FIELD),
    (ev("c", item="  "), clean.MISSING_FIELD),
    (ev("d", user="u" * 30), clean.OVERSIZED_FIELD),
    (ev("e", et="click"), clean.UNKNOWN_EVENT_TYPE),
    (ev("f", ts="not-a-date"), clean.MALFORMED_TIMESTAMP),
    (ev("g", ts="2026-13-45T99:00:00Z"), clean.MALFORMED_TIMESTAMP),
    (ev("h", ts="2099-01-01T00:00:00Z"), clean.FUTURE_TIMESTAMP),
    (ev("i", et="purchase", price="abc", qty="1"), clean.MALFORMED_NUMBER),
    (ev("j", et="purchase", price="-1", qty="1"), clean.NEGATIVE_PRICE),
    (ev("k", et="purchase", price="1", qty="-2"), clean.INVALID_QUANTITY),
    (ev("l", et="purchase", price="1", qty="1.5"), clean.INVALID_QUANTITY),
    (ev("m", et="purchase", price="1", qty="99999999999"), clean.INVALID_QUANTITY),
    (ev("n", user="u9"), clean.UNKNOWN_USER),
    (ev("o", item="p9"), clean.UNKNOWN_ITEM),
    (ev("p", et=" VIEW "), None),
    (ev("q", et="Cart"), None),
    (ev("r", user=" u1 "), None),
    (ev("s", et="purchase", price="NaN", qty="1"), clean.MALFORMED_NUMBER),
    (ev("t", et="purchase", price="1e999", qty="1"), clean.MALFORMED_NUMBER),
    (ev("u", et="purchase", price="1", qty="Infinity"), clean.MALFORMED_NUMBER),
    (ev("v", user="u1\ufffd"), clean.MALFORMED_RECORD),  # invalid UTF-8 in the file, decoded as U+FFFD
]


def test_every_event_rule(spark: SparkSession, cfg: AppConfig) -> None:
    """One frame, one case per rule (batched: a Spark job per case would dominate the suite's time)."""
    cfg = dataclasses.replace(cfg, clean=dataclasses.replace(cfg.clean, bot_max_events_per_day=100))
    got = rules_of(spark, cfg, [row for row, _ in EVENT_CASES])
    assert got == {row[0]: rule for row, rule in EVENT_CASES}


def test_malformed_record(spark: SparkSession, cfg: AppConfig) -> None:
    got = rules_of(spark, cfg, [ev("z")], corrupt=["z,u1,p1,view,ts,,,s1,EXTRA"])
    assert got == {"z": clean.MALFORMED_RECORD}


def test_rule_precedence_first_failure_wins(spark: SparkSession, cfg: AppConfig) -> None:
    # Unknown type and a malformed timestamp and an unknown user: the earliest rule in precedence names it.
    assert rules_of(spark, cfg, [ev("x", user="u9", et="click", ts="bad")]) == {"x": clean.UNKNOWN_EVENT_TYPE}


def test_bot_filter(spark: SparkSession, cfg: AppConfig) -> None:
    rows = [ev(f"b{i}", user="u2", ts=f"2026-11-01T10:0{i}:00Z") for i in range(4)] + [ev("h1")]
    got = rules_of(spark, cfg, rows)
    assert got == {"b0": clean.BOT_ACTIVITY, "b1": clean.BOT_ACTIVITY, "b2": clean.BOT_ACTIVITY,
                   "b3": clean.BOT_ACTIVITY, "h1": None}


def test_bot_threshold_is_per_day(spark: SparkSession, cfg: AppConfig) -> None:
    rows = [ev(f"d{i}", user="u2", ts=f"2026-10-{10 + i // 3}T10:0{i % 3}:00Z") for i in range(6)]
    assert set(rules_of(spark, cfg, rows).values()) == {None}


def test_bot_candidates_cover_every_bot_and_the_exact_count_decides(spark: SparkSession, cfg: AppConfig) -> None:
    # u1: 4 valid events in a day (a bot at 3/day). u2: 4 rows that day too, but one is a second copy of an event
    # and one has an unknown type, so only 2 count: a candidate, not a bot.
    rows = ([ev(f"a{i}", user="u1", ts=f"2026-11-01T10:0{i}:00Z") for i in range(4)]
            + [ev("b0", user="u2"), ev("b0", user="u2"), ev("b1", user="u2", et="click"), ev("b2", user="u2")])
    b = bronze(spark, EVENT_COLS, rows)
    candidates = b.transform(clean.keyed_events(cfg)).transform(clean.bot_candidates(3, cfg.sources.events))
    bots = (b.transform(clean.keyed_events(cfg)).transform(clean.event_rules(cfg, NOW))
            .transform(clean.mark_duplicates(C.EVENT_ID, newest_first=False)).transform(clean.bot_users(3)))
    assert_df_equality(candidates, spark.createDataFrame([("u1",), ("u2",)], "user_id string"),
                       ignore_row_order=True, ignore_nullable=True)
    assert_df_equality(bots, spark.createDataFrame([("u1",)], "user_id string"), ignore_nullable=True)


def test_keyed_repeats_are_the_keyed_rows_with_a_repeated_id(spark: SparkSession, cfg: AppConfig,
                                                            tmp_path: Any) -> None:
    # " a" and "a" are one id once trimmed; "" is a missing id, never a key.
    b = bronze(spark, EVENT_COLS, [ev(" a"), ev("a", user="u2"), ev("b"), ev(""), ev("")])
    derived = make_config(tmp_path, sources={"kind": "events", "events": {
        "path": "x", "columns": {"item_id": "product_id", "event_ts": "event_time"}}})
    b2 = bronze(spark, EVENT_COLS[1:], [r[1:] for r in (ev("x"), ev("y"), ev("z", user="u2"))])
    for c, frame in ((cfg, b), (derived, b2)):
        keyed = frame.transform(clean.keyed_events(c))
        keys = keyed.transform(clean.duplicate_keys(C.EVENT_ID))
        assert keys.count() == 1
        expected = keyed.join(keys.select(C.EVENT_ID), C.EVENT_ID, "left_semi")
        assert_df_equality(frame.transform(clean.keyed_repeats(c, keys)), expected, ignore_row_order=True)


def test_duplicates_keep_first_ingested(spark: SparkSession, cfg: AppConfig) -> None:
    b = bronze(spark, EVENT_COLS, [ev("a", price=None), ev("a"), ev("b")],
               ingest_ts=[dt.datetime(2026, 11, 2), dt.datetime(2026, 11, 1, 12), dt.datetime(2026, 11, 1, 12)])
    out = clean.classify_events_frame(b, cfg, NOW, None, None)
    dups = out.select(C.EVENT_ID, clean.DUP, C.INGEST_TS).orderBy(C.EVENT_ID, C.INGEST_TS).collect()
    assert [(r[0], r[1]) for r in dups] == [("a", False), ("a", True), ("b", False)]


def test_silver_events_typed_utc(spark: SparkSession, cfg: AppConfig) -> None:
    b = bronze(spark, EVENT_COLS, [ev("a", et="Cart", ts="2026-11-01T12:00:00+02:00", price="9.5", qty="2")])
    got = clean.silver_events(clean.classify_events_frame(b, cfg, NOW, None, None))
    expected = spark.createDataFrame(
        [("a", "u1", "p1", "add_to_cart", dt.datetime(2026, 11, 1, 10), dt.date(2026, 11, 1), 9.5, 2, None, "s1")],
        "event_id string, user_id string, item_id string, event_type string, event_ts timestamp, "
        "event_date date, price double, quantity int, rating double, session_id string")
    assert_df_equality(got, expected, ignore_nullable=True)


def test_balance_bronze_equals_silver_quarantine_duplicates(spark: SparkSession, cfg: AppConfig) -> None:
    rows = [ev("a"), ev("a"), ev("b", et="click"), ev("c", user=None), ev("d", ts="x"), ev("e")]
    out = clean.classify_events_frame(bronze(spark, EVENT_COLS, rows), cfg, NOW, None, None)
    counts = {r["metric"]: r["count"] for r in clean.outcome_counts(out).collect()}
    silver = clean.silver_events(out).count()
    quarantined = out.transform(clean.quarantine_rows("events", "r1")).count()
    assert counts == {"silver": 2, "duplicate": 1, "quarantine:unknown_event_type": 1,
                      "quarantine:missing_field": 1, "quarantine:malformed_timestamp": 1}
    assert silver + quarantined + counts["duplicate"] == len(rows)


def test_derived_event_id_collapses_exact_resends(spark: SparkSession, tmp_path: Any) -> None:
    cfg = make_config(tmp_path, sources={"kind": "events", "events": {
        "path": "x", "columns": {"user_id": "member", "item_id": "item", "event_ts": "day"},
        "timestamp_format": "dd-MM-yyyy", "constant_event_type": "purchase"}})
    b = bronze(spark, ["member", "item", "day"], [("1", "milk", "21-07-2015"), ("1", "milk", "21-07-2015"),
                                                  ("2", "bread", "01-01-2015")])
    out = clean.classify_events_frame(b, cfg, NOW, None, None)
    got = clean.silver_events(out).select(C.USER_ID, C.ITEM_ID, C.EVENT_TYPE, C.EVENT_DATE)
    expected = spark.createDataFrame([("1", "milk", "purchase", dt.date(2015, 7, 21)),
                                      ("2", "bread", "purchase", dt.date(2015, 1, 1))],
                                     "user_id string, item_id string, event_type string, event_date date")
    assert_df_equality(got, expected, ignore_row_order=True, ignore_nullable=True)
    assert out.where(F.col(clean.DUP)).count() == 1


def test_ratings_unix_timestamps(spark: SparkSession, tmp_path: Any) -> None:
    cfg = make_config(tmp_path, sources={"kind": "ratings", "events": {
        "path": "x", "format": "csv", "columns": {"user_id": "_c0", "item_id": "_c1", "rating": "_c2",
                                                  "event_ts": "_c3"}, "timestamp_format": "unix"}})
    b = bronze(spark, ["_c0", "_c1", "_c2", "_c3"], [("196", "242", "3", "881250949"), ("1", "2", "x", "1"),
                                                     ("1", "3", "4", "99999999999999")])
    out = clean.classify_events_frame(b, cfg, NOW, None, None)
    got = {(r[C.USER_ID], r[C.ITEM_ID]): r[C.Q_RULE] for r in out.collect()}
    assert got == {("196", "242"): None, ("1", "2"): clean.MALFORMED_NUMBER, ("1", "3"): clean.MALFORMED_TIMESTAMP}
    row = clean.silver_events(out).first()
    assert row[C.EVENT_TYPE] == "rating" and row[C.RATING] == 3.0
    assert row[C.EVENT_TS] == dt.datetime(1997, 12, 4, 15, 55, 49)


def test_unix_ms_timestamps_out_of_range_are_malformed_not_a_failed_clean(spark: SparkSession, tmp_path: Any) -> None:
    cfg = make_config(tmp_path, sources={"kind": "ratings", "events": {
        "path": "x", "format": "csv", "columns": {"user_id": "_c0", "item_id": "_c1", "rating": "_c2",
                                                  "event_ts": "_c3"}, "timestamp_format": "unix_ms"}})
    # a millisecond epoch, and a nanosecond one (its milliseconds times 1000 overflow a long)
    b = bronze(spark, ["_c0", "_c1", "_c2", "_c3"], [("196", "242", "3", "881250949000"),
                                                     ("1", "3", "4", "1700000000000000000")])
    out = clean.classify_events_frame(b, cfg, NOW, None, None)
    got = {(r[C.USER_ID], r[C.ITEM_ID]): r[C.Q_RULE] for r in out.collect()}
    assert got == {("196", "242"): None, ("1", "3"): clean.MALFORMED_TIMESTAMP}
    assert clean.silver_events(out).first()[C.EVENT_TS] == dt.datetime(1997, 12, 4, 15, 55, 49)


USER_COLS = ["user_id", "signup_date", "birth_date", "country", "marketing_consent"]


def test_users_rules_and_privacy_reduction(spark: SparkSession, cfg: AppConfig) -> None:
    rows = [("u1", "2026-01-01", "1990-05-17", " de ", "true"),
            ("u2", "2026-01-01", "2001-12-01", "FR", "no"),
            ("u3", "bad", "2001-12-01", "FR", "true"),
            (None, "2026-01-01", None, "FR", "true"),
            ("u4", "2026-01-01", None, "FR", "maybe"),
            ("u5", None, None, None, None)]
    b = bronze(spark, USER_COLS, rows).transform(clean.canonicalise("users", cfg.sources.users))
    out = b.transform(clean.mark_duplicates(C.USER_ID, True)).transform(clean.classify_users(20))
    rules = {r[C.USER_ID]: r[C.Q_RULE] for r in out.collect()}
    assert rules == {"u1": None, "u2": None, "u3": clean.MALFORMED_DATE, None: clean.MISSING_FIELD,
                     "u4": clean.MALFORMED_VALUE, "u5": None}
    got = out.transform(clean.silver_users(dt.date(2026, 11, 2)))
    expected = spark.createDataFrame(
        [("u1", dt.date(2026, 1, 1), 5, 17, "35-44", "DE", True),
         ("u2", dt.date(2026, 1, 1), 12, 1, "18-24", "FR", False),
         ("u5", None, None, None, "unknown", None, False)],
        "user_id string, signup_date date, birth_month int, birth_day int, age_band string, country string, "
        "marketing_consent boolean")
    assert_df_equality(got, expected, ignore_row_order=True, ignore_nullable=True)
    assert C.BIRTH_DATE not in got.columns


def test_users_newest_export_wins(spark: SparkSession, cfg: AppConfig) -> None:
    rows = [("u1", "2026-01-01", None, "DE", "true"), ("u1", "2026-01-01", None, "DE", "false")]
    b = bronze(spark, USER_COLS, rows, ingest_ts=[dt.datetime(2026, 1, 1), dt.datetime(2026, 2, 1)])
    out = (b.transform(clean.canonicalise("users", cfg.sources.users))
           .transform(clean.mark_duplicates(C.USER_ID, True)).transform(clean.classify_users(20)))
    silver = out.transform(clean.silver_users(dt.date(2026, 11, 2))).collect()
    assert [(r[C.USER_ID], r[C.MARKETING_CONSENT]) for r in silver] == [("u1", False)]


def test_users_newest_export_wins_within_one_ingest(spark: SparkSession, cfg: AppConfig) -> None:
    """Two dated exports loaded by one ingest share its time: the later file name is the newer export."""
    rows = [("u1", "2026-01-01", None, "DE", "false"), ("u1", "2026-01-01", None, "DE", "true")]
    b = bronze(spark, USER_COLS, rows).withColumn(
        C.SOURCE_FILE, F.when(F.col("marketing_consent") == "true",
                              "file:/landing/users/users-2026-11-02.jsonl")
        .otherwise("file:/landing/users/users-2026-11-01.jsonl"))
    out = (b.transform(clean.canonicalise("users", cfg.sources.users))
           .transform(clean.mark_duplicates(C.USER_ID, True)).transform(clean.classify_users(20)))
    silver = out.transform(clean.silver_users(dt.date(2026, 11, 2))).collect()
    assert [(r[C.USER_ID], r[C.MARKETING_CONSENT]) for r in silver] == [("u1", True)]


def test_items_rules(spark: SparkSession, cfg: AppConfig) -> None:
    rows = [("p1", " Books ", "acme", "10.5", "3"), ("p2", "toys", "acme", "-1", "1"),
            ("p3", "toys", "acme", "1", "-1"), ("p4", "toys", "acme", "1", "x"), (None, "toys", "a", "1", "1")]
    b = bronze(spark, ["product_id", "category", "brand", "price", "stock"], rows)
    out = (b.transform(clean.canonicalise("items", cfg.sources.items))
           .transform(clean.mark_duplicates(C.ITEM_ID, True)).transform(clean.classify_items(20)))
    assert {r[C.ITEM_ID]: r[C.Q_RULE] for r in out.collect()} == {
        "p1": None, "p2": clean.NEGATIVE_PRICE, "p3": clean.INVALID_STOCK, "p4": clean.MALFORMED_NUMBER,
        None: clean.MISSING_FIELD}
    got = clean.silver_items(out)
    expected = spark.createDataFrame([("p1", "books", "acme", 10.5, 3, None)],
                                     "item_id string, category string, brand string, price double, stock int, "
                                     "name string")
    assert_df_equality(got, expected, ignore_nullable=True)
