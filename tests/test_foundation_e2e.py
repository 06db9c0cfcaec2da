"""Generated shop → ingest → clean on real Delta tables: every injected defect lands in quarantine under the right
rule, the balance holds, and reruns change nothing."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from delta.tables import DeltaTable
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from sparkpromo import columns as C
from sparkpromo import delta_io
from sparkpromo import tables as T
from sparkpromo.clean import run_clean
from sparkpromo.generate import generate_shop
from sparkpromo.ingest import run_ingest
from tests.conftest import make_config

RUN_DATE = dt.date(2026, 11, 1)
AS_OF = dt.datetime(2026, 11, 2)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def shop(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    root = tmp_path_factory.mktemp("shop")
    cfg = make_config(root, sources={
        "events": {"path": str(root / "landing" / "events"), "options": {"header": "true"},
                   "columns": {"item_id": "product_id", "event_ts": "event_time"}},
        "users": {"path": str(root / "landing" / "users"), "format": "json"},
        "items": {"path": str(root / "landing" / "items"), "options": {"header": "true"},
                  "columns": {"item_id": "product_id"}}})
    report = generate_shop(Path(cfg.landing), n_events=12_000, seed=3, days=30, end=RUN_DATE)
    ingested = run_ingest(spark, cfg, "r1")
    cleaned = run_clean(spark, cfg, "r1", AS_OF)
    return cfg, report, ingested, cleaned


def test_bronze_holds_every_landing_row(shop) -> None:  # type: ignore[no-untyped-def]
    cfg, report, ingested, _ = shop
    assert ingested["events_rows"] == report.events == 12_000
    assert ingested["users_rows"] == report.user_rows and ingested["items_rows"] == report.item_rows


def test_every_injected_defect_is_quarantined_under_its_rule(shop) -> None:  # type: ignore[no-untyped-def]
    _, report, _, c = shop
    d = report.dirt
    assert c["events.silver_rows"] == report.expected_clean_events
    assert c["events.duplicates"] == d["duplicate_event"]
    assert c.get("events.quarantine:missing_field", 0) == d["missing_required"]
    assert c.get("events.quarantine:unknown_event_type", 0) == d["unknown_event_type"]
    assert c.get("events.quarantine:malformed_timestamp", 0) == d["malformed_timestamp"]
    assert c.get("events.quarantine:future_timestamp", 0) == d["future_timestamp"]
    assert (c.get("events.quarantine:negative_price", 0) + c.get("events.quarantine:invalid_quantity", 0)
            == d["negative_value"])
    assert c.get("events.quarantine:unknown_user", 0) == d["unknown_user"]
    assert c.get("events.quarantine:unknown_item", 0) == d["unknown_item"]
    assert c.get("events.quarantine:bot_activity", 0) == d["bot_events"] > 1000
    assert c["users.duplicates"] == d["user_duplicate"]
    assert c.get("users.quarantine:malformed_date", 0) == d["user_bad_birth_date"]
    assert c.get("users.quarantine:missing_field", 0) == d["user_blank_id"]
    assert c.get("items.quarantine:negative_price", 0) == d["item_negative_price"]
    assert c.get("items.quarantine:missing_field", 0) == d["item_blank_id"]


def test_balance_per_table(spark: SparkSession, shop) -> None:  # type: ignore[no-untyped-def]
    cfg, _, _, c = shop
    q = delta_io.read(spark, cfg.table("quarantine", "rows"))
    for source in ("events", "users", "items"):
        bronze = delta_io.read(spark, cfg.table("bronze", source)).count()
        silver = delta_io.read(spark, cfg.table("silver", source)).count()
        quarantined = q.where(F.col(C.Q_SOURCE) == source).count()
        assert bronze == silver + quarantined + c[f"{source}.duplicates"], source
        assert c[f"{source}.bronze_rows"] == bronze


def test_dq_counts_stored_per_run(spark: SparkSession, shop) -> None:  # type: ignore[no-untyped-def]
    cfg, _, _, c = shop
    dq = delta_io.read(spark, cfg.table("metrics", "data_quality")).where(F.col(C.RUN_ID) == "r1")
    stored = {(r["source"], r["metric"]): r["value"] for r in dq.collect()}
    assert stored[("events", "silver")] == c["events.silver_rows"]
    assert stored[("events", "duplicate")] == c["events.duplicates"]


def test_silver_is_clean(spark: SparkSession, shop) -> None:  # type: ignore[no-untyped-def]
    cfg, _, _, _ = shop
    ev = delta_io.read(spark, cfg.table("silver", "events"))
    assert ev.groupBy(C.EVENT_ID).count().where("count > 1").count() == 0
    assert {r[0] for r in ev.select(C.EVENT_TYPE).distinct().collect()} <= set(C.EVENT_TYPES)
    assert ev.where(F.col(C.USER_ID) != F.trim(F.col(C.USER_ID))).count() == 0
    assert ev.where(F.col(C.EVENT_TS) >= F.lit(AS_OF)).count() == 0
    users = delta_io.read(spark, cfg.table("silver", "users"))
    assert C.BIRTH_DATE not in users.columns


def test_rerun_changes_nothing(spark: SparkSession, shop) -> None:  # type: ignore[no-untyped-def]
    cfg, _, _, cleaned = shop
    bronze_v = delta_io.version(spark, cfg.table("bronze", "events"))
    assert run_ingest(spark, cfg, "r1")["events_rows"] == 0
    assert delta_io.version(spark, cfg.table("bronze", "events")) == bronze_v
    before = delta_io.read(spark, cfg.table("silver", "events")).collect()
    again = run_clean(spark, cfg, "r1", AS_OF)
    assert again["mode"] == "unchanged" and again["events.run_bronze_rows"] == 0  # nothing new: nothing written
    totals = [k for k in cleaned if k not in ("mode", "full_reason") and ".run_" not in k and ".rejudged_" not in k]
    assert {k: again[k] for k in totals} == {k: cleaned[k] for k in totals}
    assert sorted(delta_io.read(spark, cfg.table("silver", "events")).collect()) == sorted(before)
    dq = delta_io.read(spark, cfg.table("metrics", "data_quality"))
    assert dq.where(F.col(C.RUN_ID) == "r1").count() == dq.count()  # replaced, not appended


def test_silver_tables_are_created_with_their_constraints(spark: SparkSession, shop) -> None:  # type: ignore[no-untyped-def]
    """The first clean writes each silver table with its constraints in the same commit: no ALTER TABLE after it."""
    cfg, _, _, _ = shop
    for declared in T.SILVER.values():
        table = DeltaTable.forPath(spark, declared.uri(cfg))
        props = table.detail().select("properties").first()[0]
        assert {k for k in props if k.startswith("delta.constraints.")} == {
            f"delta.constraints.{k}" for k in delta_io.constraint_checks(declared.checks, declared.not_null)}
        operations = [r["operation"] for r in table.history().collect()]
        assert "ADD CONSTRAINT" not in operations, (declared.key, operations)
        wanted = dict(declared.properties)
        assert {k: props.get(k) for k in wanted} == wanted


def test_overwrite_sets_table_properties_only_with_a_new_table(spark: SparkSession, tmp_path: Path) -> None:
    df = spark.createDataFrame([(1, 2.0)], "id int, price double")
    prop = {"delta.dataSkippingStatsColumns": "id"}
    new, old = str(tmp_path / "new"), str(tmp_path / "old")
    delta_io.overwrite(df, new, properties=prop)
    delta_io.overwrite(df, old)
    delta_io.overwrite(df, old, properties=prop)
    assert delta_io.table_properties(spark, new).get("delta.dataSkippingStatsColumns") == "id"
    # Without properties a new table gets the default list (its columns less id columns), kept on later writes.
    assert delta_io.table_properties(spark, old).get("delta.dataSkippingStatsColumns") == "id,price"


def test_new_tables_keep_no_statistics_of_id_columns(spark: SparkSession, tmp_path: Path) -> None:
    df = spark.createDataFrame([("u1", "x", 1, {"a": 1})], "user_id string, payload string, n int, m map<string,int>")
    delta_io.append(df, str(tmp_path / "t"))
    delta_io.overwrite(df.select("user_id"), str(tmp_path / "only_ids"))
    assert delta_io.table_properties(spark, str(tmp_path / "t"))["delta.dataSkippingStatsColumns"] == "n"
    assert delta_io.table_properties(spark, str(tmp_path / "only_ids"))["delta.dataSkippingNumIndexedCols"] == "0"
    log = "".join(f.read_text() for f in (tmp_path / "t" / "_delta_log").glob("*.json"))
    stats = [json.loads(json.loads(line)["add"]["stats"]) for line in log.splitlines() if '"add"' in line]
    assert stats == [{"numRecords": 1, "minValues": {"n": 1}, "maxValues": {"n": 1}, "nullCount": {"n": 0}}]
    assert "u1" not in log


def test_overwrite_creates_constraints_only_with_a_new_table(spark: SparkSession, tmp_path: Path) -> None:
    df = spark.createDataFrame([(1, 2.0)], "id int, price double")
    checks = {"non_negative_price": "price >= 0"}
    new, old = str(tmp_path / "new"), str(tmp_path / "old")
    delta_io.overwrite(df, new, constraints=checks)
    with pytest.raises(Exception, match="(?i)constraint|non_negative_price"):
        spark.createDataFrame([(2, -1.0)], "id int, price double").write.format("delta").mode("append").save(new)
    delta_io.overwrite(df, old)
    delta_io.overwrite(df, old, constraints=checks)   # an existing table: left to add_constraints
    spark.createDataFrame([(2, -1.0)], "id int, price double").write.format("delta").mode("append").save(old)
    assert delta_io.read(spark, old).count() == 2


def test_silver_constraints_reject_bad_writes(spark: SparkSession, shop) -> None:  # type: ignore[no-untyped-def]
    cfg, _, _, _ = shop
    bad = delta_io.read(spark, cfg.table("silver", "events")).limit(1).withColumn(C.EVENT_TYPE, F.lit("click"))
    with pytest.raises(Exception, match="(?i)constraint"):
        bad.write.format("delta").mode("append").save(cfg.table("silver", "events"))
