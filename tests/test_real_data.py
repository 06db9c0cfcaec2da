"""Data nobody on the team wrote, by configuration alone: consent without a users table, decay on an old log, the
bot rule per source, summed repeat purchases, configured exclusions, and a source that is mostly bad stopping the
run. Each on a tiny hand-written bronze table run through the production ``run_clean`` / ``interactions``."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from chispa import assert_df_equality
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from sparkpromo import clean, delta_io
from sparkpromo import columns as C
from sparkpromo import features as FT
from sparkpromo.config import AppConfig, ConfigError, build_config
from sparkpromo.ingest import CORRUPT, FILE_MTIME, FILE_SIZE
from tests.conftest import make_config

NOW = dt.datetime(2026, 11, 2)
LOG_COLS = ["member", "day", "sku", "qty", "unit_price"]
PURCHASE_LOG = {"path": "x", "columns": {"user_id": "member", "event_ts": "day", "item_id": "sku",
                                         "quantity": "qty", "price": "unit_price"},
                "timestamp_format": "yyyy-MM-dd", "constant_event_type": "purchase"}


def write_bronze(spark: SparkSession, cfg: AppConfig, source: str, cols: list[str],
                 rows: list[tuple[Any, ...]], files: list[str] | None = None) -> None:
    """A bronze table as ingest leaves it: source columns as strings plus the ingestion metadata."""
    files = files or ["file:/landing/day1.csv"] * len(rows)
    data = [(*r, None, files[i], 10, dt.datetime(2026, 11, 1), dt.datetime(2026, 11, 1, 6), "r0")
            for i, r in enumerate(rows)]
    schema = ", ".join(f"`{c}` string" for c in cols) + (
        f", {CORRUPT} string, {C.SOURCE_FILE} string, {FILE_SIZE} long, {FILE_MTIME} timestamp, "
        f"{C.INGEST_TS} timestamp, {C.RUN_ID} string")
    delta_io.overwrite(spark.createDataFrame(data, schema), cfg.table("bronze", source))


def purchase_log_config(tmp_path: Path, **events: Any) -> AppConfig:
    return make_config(tmp_path, sources={"events": {**PURCHASE_LOG, **events}, "users": None, "items": None},
                       privacy={"consent_without_users": "granted"})


def silver_events(spark: SparkSession, cfg: AppConfig) -> DataFrame:
    return delta_io.read(spark, cfg.table("silver", "events"))


# ----------------------------------------------------------------------------------------------------------------
# Consent
# ----------------------------------------------------------------------------------------------------------------
def test_no_users_source_must_state_consent(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="privacy.consent_without_users: there is no users source"):
        build_config({"lakehouse": str(tmp_path), "sources": {"events": PURCHASE_LOG, "users": None}})
    with pytest.raises(ConfigError, match="privacy.consent_without_users: must be one of granted, denied"):
        make_config(tmp_path, sources={"events": PURCHASE_LOG, "users": None, "items": None},
                    privacy={"consent_without_users": "yes"})
    assert make_config(tmp_path, sources={"events": PURCHASE_LOG, "users": None, "items": None},
                       privacy={"consent_without_users": "denied"}).privacy.consent_default() is False


def test_stated_consent_reaches_user_features_without_a_users_table(spark: SparkSession) -> None:
    events = spark.createDataFrame(
        [("e1", "m1", "i1", C.PURCHASE, dt.datetime(2026, 1, 5, 10), dt.date(2026, 1, 5), 2.0, 1, None, None),
         ("e2", "m2", "i1", C.PURCHASE, dt.datetime(2026, 1, 6, 10), dt.date(2026, 1, 6), 2.0, 1, None, None)],
        "event_id string, user_id string, item_id string, event_type string, event_ts timestamp, "
        "event_date date, price double, quantity int, rating double, session_id string")
    for stated in (True, False):
        got = FT.user_features(events, None, None, dt.date(2026, 1, 10), consent_without_users=stated)
        expected = spark.createDataFrame([("m1", stated), ("m2", stated)], "user_id string, marketing_consent boolean")
        assert_df_equality(got.select(C.USER_ID, C.MARKETING_CONSENT), expected, ignore_row_order=True,
                           ignore_nullable=True)


def test_users_source_without_a_consent_column(spark: SparkSession, tmp_path: Path) -> None:
    """A users export with no consent column at all: the stated consent applies; unstated, clean stops first."""
    sources = {"events": PURCHASE_LOG, "users": {"path": "u", "format": "csv", "columns": {"user_id": "member"}},
               "items": None}
    cfg = make_config(tmp_path, sources=sources, privacy={"consent_without_users": "granted"})
    write_bronze(spark, cfg, "users", ["member", "country"], [("m1", "GB"), ("m2", "FR")])
    write_bronze(spark, cfg, "events", LOG_COLS, [("m1", "2026-01-05", "i1", "1", "2.0")])
    clean.run_clean(spark, cfg, "r1", NOW)
    expected = spark.createDataFrame([("m1", True), ("m2", True)], "user_id string, marketing_consent boolean")
    assert_df_equality(delta_io.read(spark, cfg.table("silver", "users")).select(C.USER_ID, C.MARKETING_CONSENT),
                       expected, ignore_row_order=True, ignore_nullable=True)

    unstated = make_config(tmp_path / "unstated", sources=sources)
    write_bronze(spark, unstated, "users", ["member", "country"], [("m1", "GB")])
    write_bronze(spark, unstated, "events", LOG_COLS, [("m1", "2026-01-05", "i1", "1", "2.0")])
    with pytest.raises(clean.CleanError, match="has no marketing_consent column; say whether"):
        clean.run_clean(spark, unstated, "r1", NOW)
    assert not delta_io.is_delta(spark, unstated.table("silver", "events"))


# ----------------------------------------------------------------------------------------------------------------
# Decay from the data
# ----------------------------------------------------------------------------------------------------------------
def test_decay_reference_is_the_earlier_of_run_and_data() -> None:
    assert FT.decay_reference(dt.date(2026, 12, 1), dt.date(2011, 12, 9)) == dt.date(2011, 12, 9)
    assert FT.decay_reference(dt.date(2011, 11, 30), dt.date(2011, 12, 9)) == dt.date(2011, 11, 30)
    assert FT.decay_reference(dt.date(2026, 12, 1), None) == dt.date(2026, 12, 1)


def test_ten_year_old_log_keeps_positive_float32_confidences(spark: SparkSession) -> None:
    """A log that ended ten years before the run: ages count from its last event, so its last day weighs fully,
    and an event 40 half-lives older still keeps the floor, never 0 after ALS's cast to float."""
    run = dt.date(2026, 12, 1)
    last = dt.date(2016, 11, 30)
    rows = [("e1", "u1", "i1", C.PURCHASE, last), ("e2", "u1", "i2", C.VIEW, last - dt.timedelta(days=30)),
            ("e3", "u2", "i1", C.VIEW, last - dt.timedelta(days=1200))]
    events = spark.createDataFrame(
        [(e, u, i, t, dt.datetime.combine(d, dt.time(12)), d, None, None, None, None) for e, u, i, t, d in rows],
        "event_id string, user_id string, item_id string, event_type string, event_ts timestamp, "
        "event_date date, price double, quantity int, rating double, session_id string")
    weights = {C.VIEW: 1.0, C.FAVORITE: 2.0, C.ADD_TO_CART: 4.0, C.PURCHASE: 8.0}
    got = events.transform(FT.interactions(run, "events", weights, 30.0, 10, FT.decay_reference(run, last)))
    expected = spark.createDataFrame([("u1", "i1", 8.0), ("u1", "i2", 0.5), ("u2", "i1", FT.MIN_DECAY)],
                                     "user_id string, item_id string, confidence double")
    assert_df_equality(got.select(C.USER_ID, C.ITEM_ID, C.CONFIDENCE), expected, ignore_row_order=True,
                       ignore_nullable=True)
    as_float = [r[0] for r in got.select(F.col(C.CONFIDENCE).cast("float")).collect()]
    assert min(as_float) >= np.finfo(np.float32).tiny

    # Decaying from the run date instead (the old behaviour) underflows float32: what the floor prevents.
    stale = events.transform(FT.interactions(run, "events", weights, 30.0, 10))
    assert all(r[0] >= FT.MIN_DECAY for r in stale.select(C.CONFIDENCE).collect())


def test_ratings_below_the_threshold_are_not_interactions(spark: SparkSession) -> None:
    day = dt.date(2020, 1, 1)
    events = spark.createDataFrame(
        [(f"e{n}", "u1", f"i{n}", C.RATING_EVENT, dt.datetime(2020, 1, 1), day, None, None, float(r), None)
         for n, r in enumerate((1, 3, 5))],
        "event_id string, user_id string, item_id string, event_type string, event_ts timestamp, "
        "event_date date, price double, quantity int, rating double, session_id string")
    got = events.transform(FT.interactions(day, "ratings", min_rating=3.0))
    expected = spark.createDataFrame([("u1", "i1", 3.0), ("u1", "i2", 5.0)],
                                     "user_id string, item_id string, confidence double")
    assert_df_equality(got.select(C.USER_ID, C.ITEM_ID, C.CONFIDENCE), expected, ignore_row_order=True,
                       ignore_nullable=True)


# ----------------------------------------------------------------------------------------------------------------
# Rules that fit the source
# ----------------------------------------------------------------------------------------------------------------
RATING_COLS = ["_c0", "_c1", "_c2", "_c3"]
RATINGS = {"path": "x", "format": "csv", "columns": {"user_id": "_c0", "item_id": "_c1", "rating": "_c2",
                                                      "event_ts": "_c3"}, "timestamp_format": "unix"}


def bulk_ratings(n: int) -> list[tuple[str, ...]]:
    """One user rating ``n`` items within one day (a bulk import), and another user rating two."""
    t0 = int(dt.datetime(2020, 3, 1, tzinfo=dt.UTC).timestamp())
    return [("7", str(i), "4", str(t0 + i)) for i in range(n)] + [("8", "1", "5", str(t0)), ("8", "2", "3", str(t0))]


def test_bot_rule_is_off_for_ratings_by_default(spark: SparkSession, tmp_path: Path) -> None:
    cfg = make_config(tmp_path, sources={"kind": "ratings", "events": RATINGS, "users": None, "items": None},
                      clean={"bot_max_events_per_day": 5}, privacy={"consent_without_users": "granted"})
    assert clean.bot_threshold(cfg) == 0
    write_bronze(spark, cfg, "events", RATING_COLS, bulk_ratings(12))
    out = clean.run_clean(spark, cfg, "r1", NOW)
    assert out["events.silver_rows"] == 14 and out["events.quarantined"] == 0


def test_bot_rule_per_source(spark: SparkSession, tmp_path: Path) -> None:
    """A ratings source may opt in with its own limit; an event log may switch the rule off with 0."""
    cfg = make_config(tmp_path, sources={"kind": "ratings", "events": {**RATINGS, "bot_max_events_per_day": 10},
                                         "users": None, "items": None},
                      privacy={"consent_without_users": "granted"}, clean={"max_reject_share": 1.0})
    write_bronze(spark, cfg, "events", RATING_COLS, bulk_ratings(12))
    out = clean.run_clean(spark, cfg, "r1", NOW)
    assert out["events.quarantine:bot_activity"] == 12 and out["events.silver_rows"] == 2

    log_cfg = purchase_log_config(tmp_path / "log", bot_max_events_per_day=0)
    assert clean.bot_threshold(log_cfg) == 0
    assert clean.bot_threshold(purchase_log_config(tmp_path / "default")) == 1000


def test_repeated_purchase_lines_sum_into_quantity(spark: SparkSession, tmp_path: Path) -> None:
    """A purchase log without event ids: the same member buying the same item twice on one day in one file is a
    quantity of 2 (lines of quantity 1, 1 and 3 make 5; a missing quantity counts 1), while the same line in a second
    file is a re-send, dropped as a duplicate."""
    cfg = purchase_log_config(tmp_path)
    assert cfg.sources.events.dedupe_mode() == "sum_quantity"
    rows = [("m1", "2026-01-05", "i1", "1", "2.0"), ("m1", "2026-01-05", "i1", "1", "2.0"),
            ("m1", "2026-01-05", "i1", "3", "2.0"), ("m2", "2026-01-05", "i1", None, "2.0"),
            ("m2", "2026-01-05", "i1", None, "2.0"), ("m1", "2026-01-05", "i1", "1", "2.0")]
    files = ["file:/landing/day1.csv"] * 5 + ["file:/landing/day2-resent.csv"]
    write_bronze(spark, cfg, "events", LOG_COLS, rows, files)
    out = clean.run_clean(spark, cfg, "r1", NOW)
    got = silver_events(spark, cfg).select(C.USER_ID, C.ITEM_ID, C.QUANTITY)
    expected = spark.createDataFrame([("m1", "i1", 5), ("m2", "i1", 2)], "user_id string, item_id string, quantity int")
    assert_df_equality(got, expected, ignore_row_order=True, ignore_nullable=True)
    assert out["events.duplicates"] == 4 and out["events.bronze_rows"] == 6

    exact = purchase_log_config(tmp_path / "exact", dedupe="exact")
    write_bronze(spark, exact, "events", LOG_COLS, rows, files)
    clean.run_clean(spark, exact, "r1", NOW)
    got = silver_events(spark, exact).select(C.USER_ID, C.ITEM_ID, C.QUANTITY)
    expected = spark.createDataFrame([("m1", "i1", 1), ("m1", "i1", 3), ("m2", "i1", None)],
                                     "user_id string, item_id string, quantity int")
    assert_df_equality(got, expected, ignore_row_order=True, ignore_nullable=True)


def test_rows_missing_a_required_field_are_quarantined_not_duplicates(spark: SparkSession, tmp_path: Path) -> None:
    cfg = purchase_log_config(tmp_path)
    rows = [(None, "2026-01-05", "i1", "1", "2.0")] * 3 + [("m1", "2026-01-05", "i1", "1", "2.0")] * 3
    write_bronze(spark, cfg, "events", LOG_COLS, rows)
    out = clean.run_clean(spark, cfg, "r1", NOW)
    assert out["events.quarantine:missing_field"] == 3 and out["events.duplicates"] == 2


def test_configured_exclusions_are_quarantined_with_their_rule(spark: SparkSession, tmp_path: Path) -> None:
    cfg = purchase_log_config(tmp_path, columns={**PURCHASE_LOG["columns"], "session_id": "invoice"},
                              exclude={"item_id": "POST|BANK CHARGES", "session_id": "C.*"})
    rows = [("m1", "2026-01-05", "i1", "1", "2.0", "536365"), ("m1", "2026-01-05", "POST", "1", "18", "536365"),
            ("m1", "2026-01-06", "i1", "-1", "2.0", "C536379"), ("m2", "2026-01-06", "POSTCARD", "1", "1", "5")]
    write_bronze(spark, cfg, "events", [*LOG_COLS, "invoice"], rows)
    out = clean.run_clean(spark, cfg, "r1", NOW)
    assert out["events.quarantine:excluded"] == 2 and out["events.silver_rows"] == 2
    q = delta_io.read(spark, cfg.table("quarantine", "rows")).where(F.col(C.Q_RULE) == clean.EXCLUDED)
    assert sorted(r[C.Q_PAYLOAD] for r in q.collect())[0].startswith('{"member":"m1"')


# ----------------------------------------------------------------------------------------------------------------
# A source that is mostly bad stops the run
# ----------------------------------------------------------------------------------------------------------------
def test_wrong_date_format_stops_clean_before_silver(spark: SparkSession, tmp_path: Path) -> None:
    cfg = purchase_log_config(tmp_path, timestamp_format="dd-MM-yyyy")
    rows = [("m1", "2026-01-05", "i1", "1", "2.0"), ("m2", "2026-01-06", "i2", "1", "2.0"),
            ("m3", "2026-01-07", "i1", "1", "2.0")]
    write_bronze(spark, cfg, "events", LOG_COLS, rows)
    with pytest.raises(clean.RejectShareError) as err:
        clean.run_clean(spark, cfg, "r1", NOW)
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith("sources.events: 3 of 3 rows (100.0%) fail rule malformed_timestamp, above "
                          "clean.max_reject_share 0.5; e.g. event_ts=\"2026-01-0")
    for table in (("silver", "events"), ("quarantine", "rows"), ("metrics", "data_quality")):
        assert not delta_io.is_delta(spark, cfg.table(*table))

    # Under the limit, the same bad rows are quarantined and the run goes on.
    lenient = make_config(tmp_path / "lenient", sources={"events": {**PURCHASE_LOG, "timestamp_format": "dd-MM-yyyy"},
                                                        "users": None, "items": None},
                          privacy={"consent_without_users": "granted"}, clean={"max_reject_share": 1.0})
    write_bronze(spark, lenient, "events", LOG_COLS, rows)
    assert clean.run_clean(spark, lenient, "r1", NOW)["events.quarantine:malformed_timestamp"] == 3
