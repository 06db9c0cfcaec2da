"""Crash and rerun, retry safety: a crashed run rerun gives exactly a clean run's tables; a retry changes nothing."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from chispa import assert_df_equality
from pyspark.sql import DataFrame, SparkSession

from sparkpromo import columns as C
from sparkpromo import delta_io
from sparkpromo import features as FT
from sparkpromo.config import AppConfig
from sparkpromo.generate import generate_shop
from sparkpromo.pipeline import RunContext, run_stage
from tests.conftest import make_config
from tests.measure import record

CTX = RunContext("20261101", dt.date(2026, 11, 1))
TABLES = (("bronze", "events"), ("silver", "events"), ("silver", "users"), ("silver", "items"), ("quarantine", "rows"))
META = ("_ingest_ts", "_run_id", "_file_mtime", "_source_file")

pytestmark = pytest.mark.slow


def shop(root: Path) -> AppConfig:
    cfg = make_config(root)
    generate_shop(Path(cfg.landing), n_events=3000, seed=5, days=20, end=CTX.run_date)
    return cfg


def snapshot(spark: SparkSession, cfg: AppConfig, layer: str, name: str) -> DataFrame:
    df = delta_io.read(spark, cfg.table(layer, name))
    return df.drop(*[c for c in META if c in df.columns])


def test_crash_after_commit_then_rerun_equals_clean_run(spark: SparkSession, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    clean_cfg = shop(tmp_path / "clean")
    for s in ("ingest", "clean"):
        run_stage(s, spark, clean_cfg, CTX)

    crash_cfg = shop(tmp_path / "crash")
    run_stage("ingest", spark, crash_cfg, CTX)
    # Crash right after silver.events commits, before quarantine and the run record are written.
    monkeypatch.setenv(delta_io.FAULT_ENV, "after_write:silver.events")
    with pytest.raises(delta_io.InjectedFault):
        run_stage("clean", spark, crash_cfg, CTX)
    assert not delta_io.is_delta(spark, crash_cfg.table("quarantine", "rows"))
    monkeypatch.delenv(delta_io.FAULT_ENV)
    # Crash mid-ingest on a retry: the file list is unchanged, so nothing more may be appended either.
    monkeypatch.setenv(delta_io.FAULT_ENV, "before_write:bronze.events")
    run_stage("ingest", spark, crash_cfg, CTX)  # nothing new to ingest: the fault point is never reached
    monkeypatch.delenv(delta_io.FAULT_ENV)

    result = run_stage("clean", spark, crash_cfg, CTX)
    assert not result.get("skipped")
    for layer, name in TABLES:
        assert_df_equality(snapshot(spark, crash_cfg, layer, name), snapshot(spark, clean_cfg, layer, name),
                           ignore_row_order=True, ignore_nullable=True)
    record("fault", "crash after_write:silver.events, then rerun clean", result["events.bronze_rows"],
           f"silver {result['events.silver_rows']} + quarantine {result['events.quarantined']} + duplicates "
           f"{result['events.duplicates']}", "equal to an uncrashed run (chispa, 5 tables)")
    record("fault", "crash before_write:bronze.events on an ingest retry", result["events.bronze_rows"],
           f"bronze {result['events.bronze_rows']}", "fault never reached: nothing new to append")


def test_retry_changes_nothing(spark: SparkSession, tmp_path: Path) -> None:
    cfg = shop(tmp_path)
    first = {s: run_stage(s, spark, cfg, CTX) for s in ("ingest", "clean")}
    versions = {t: delta_io.version(spark, cfg.table(*t)) for t in (*TABLES, ("metrics", "stages"))}
    counts = {t: delta_io.read(spark, cfg.table(*t)).count() for t in TABLES}

    again = {s: run_stage(s, spark, cfg, CTX) for s in ("ingest", "clean")}

    assert again["ingest"]["events_rows"] == 0
    assert again["clean"]["skipped"] is True
    assert again["clean"]["events.silver_rows"] == first["clean"]["events.silver_rows"]
    assert {t: delta_io.version(spark, cfg.table(*t)) for t in versions} == versions
    assert {t: delta_io.read(spark, cfg.table(*t)).count() for t in TABLES} == counts

    record("fault", "retry ingest + clean for the same run id", counts[("bronze", "events")],
           f"bronze {counts[('bronze', 'events')]}, silver {counts[('silver', 'events')]}",
           "skipped; no table version moved")
    forced = run_stage("clean", spark, cfg, CTX, force=True)
    assert forced["skipped"] is False  # every result says whether its stage ran
    # ... and an incremental clean that finds no new bronze rows writes nothing.
    assert forced["mode"] == "unchanged" and forced["events.run_bronze_rows"] == 0
    assert delta_io.version(spark, cfg.table("silver", "events")) == versions[("silver", "events")]
    rebuilt = run_stage("clean", spark, cfg, CTX, full_refresh=True)
    assert rebuilt["mode"] == "full"
    assert delta_io.version(spark, cfg.table("silver", "events")) == versions[("silver", "events")] + 1
    assert delta_io.read(spark, cfg.table("silver", "events")).count() == counts[("silver", "events")]


def test_crash_in_the_middle_of_a_write_leaves_the_table_as_it_was(spark: SparkSession, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = shop(tmp_path)
    for s in ("ingest", "clean"):
        run_stage(s, spark, cfg, CTX)
    uri = cfg.table("silver", "events")
    snap = snapshot(spark, cfg, "silver", "events")
    before_version, before, schema = delta_io.version(spark, uri), snap.collect(), snap.schema

    # Tasks of the silver write fail after it started: files may be written, but nothing is committed.
    monkeypatch.setenv(delta_io.FAULT_ENV, "during_write:silver.events")
    with pytest.raises(Exception, match="fault injected at during_write:silver.events"):
        run_stage("clean", spark, cfg, CTX, full_refresh=True)
    assert delta_io.version(spark, uri) == before_version
    assert_df_equality(snapshot(spark, cfg, "silver", "events"), spark.createDataFrame(before, schema),
                       ignore_row_order=True)
    monkeypatch.delenv(delta_io.FAULT_ENV)

    result = run_stage("clean", spark, cfg, CTX, full_refresh=True)
    assert delta_io.version(spark, uri) == before_version + 1
    assert result["events.silver_rows"] == len(before)
    record("fault", "crash during_write:silver.events (tasks fail mid-write), then rerun clean",
           result["events.bronze_rows"], f"silver {len(before)} before and after the crash, version unchanged",
           "no partial commit; the rerun commits the same rows")


def test_a_retried_append_commits_its_rows_once(spark: SparkSession, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """The appends a retry could repeat: a crash after the commit, before the stage records its success; the
    retry commits nothing more (Delta's txnAppId/txnVersion for the id map, the source file for bronze)."""
    cfg = shop(tmp_path)
    # Ingest crashes right after bronze.events commits; the retry finds every file already there.
    monkeypatch.setenv(delta_io.FAULT_ENV, "after_write:bronze.events")
    with pytest.raises(delta_io.InjectedFault):
        run_stage("ingest", spark, cfg, CTX)
    monkeypatch.delenv(delta_io.FAULT_ENV)
    bronze_uri = cfg.table("bronze", "events")
    bronze_version, bronze = delta_io.version(spark, bronze_uri), snapshot(spark, cfg, "bronze", "events").cache()
    assert run_stage("ingest", spark, cfg, CTX)["events_rows"] == 0
    assert delta_io.version(spark, bronze_uri) == bronze_version
    assert_df_equality(snapshot(spark, cfg, "bronze", "events"), bronze, ignore_row_order=True)
    bronze.unpersist()
    run_stage("clean", spark, cfg, CTX)

    # Features crashes right after its id map append commits, before the gold tables and its run record.
    monkeypatch.setenv(delta_io.FAULT_ENV, "after_write:gold.id_map")
    with pytest.raises(delta_io.InjectedFault):
        run_stage("features", spark, cfg, CTX)
    monkeypatch.delenv(delta_io.FAULT_ENV)
    map_uri = cfg.table("gold", "id_map")
    map_version, id_map = delta_io.version(spark, map_uri), delta_io.read(spark, map_uri).cache()
    assert map_version is not None
    n_ids = id_map.count()
    assert n_ids == id_map.select(C.ID_KIND, C.ORIGINAL_ID).distinct().count() > 0

    # The same append retried as a task retry would repeat it (same rows, same txnAppId/txnVersion): no commit.
    delta_io.append(id_map, map_uri, app_id=FT.ID_MAP_APP_ID, txn_version=map_version, name="gold.id_map")
    assert delta_io.version(spark, map_uri) == map_version
    # The stage retried: nothing new to map, so no append either; the gold tables are written once.
    result = run_stage("features", spark, cfg, CTX)
    assert delta_io.version(spark, map_uri) == map_version
    assert (result["new_user_ids"], result["new_item_ids"]) == (0, 0)
    assert_df_equality(delta_io.read(spark, map_uri), id_map, ignore_row_order=True)
    assert delta_io.read(spark, cfg.table("gold", "interactions")).count() == result["interactions"] > 0
    record("fault", "crash after_write:gold.id_map (and after_write:bronze.events), then retry", n_ids,
           f"id map {n_ids} ids, version {map_version} before and after the retries",
           "rows committed once (txnAppId/txnVersion; source-file idempotence)")
    id_map.unpersist()
