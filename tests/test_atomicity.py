"""Pipeline-level atomicity (issue 21): clean killed between its commits leaves a new silver.events next to the old
quarantine; features and recommend still read the silver the last *successful* clean recorded in the run manifest
(``metrics/stages``), and a rerun of clean completes, balances and moves the manifest."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from chispa import assert_df_equality
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from sparkpromo import columns as C
from sparkpromo import delta_io
from sparkpromo.config import AppConfig
from sparkpromo.pipeline import RunContext, _pins, manifest_versions, run_stage
from tests.conftest import make_config
from tests.measure import record

pytestmark = pytest.mark.slow

DAY = dt.date(2026, 11, 1)
HEADER = "event_id,user_id,product_id,event_type,event_time,price,quantity,session_id\n"


def write_landing(root: Path) -> None:
    for d in ("events", "users", "items"):
        (root / "landing" / d).mkdir(parents=True)
    (root / "landing" / "events" / "e1.csv").write_text(HEADER + "".join(
        f"e{n},u{n % 3},p{n % 2},{'purchase' if n % 4 == 0 else 'view'},2026-11-01T10:{n:02d}:00Z,5,1,s{n % 3}\n"
        for n in range(12)) + "e99,u1,p1,click,2026-11-01T11:00:00Z,,,s1\n")  # one quarantined row
    (root / "landing" / "users" / "u.jsonl").write_text("".join(
        f'{{"user_id": "u{n}", "signup_date": "2026-01-01", "country": "DE", "marketing_consent": true}}\n'
        for n in range(3)))
    (root / "landing" / "items" / "i.csv").write_text("product_id,category,brand,price,stock\np0,books,a,5,3\n"
                                                       "p1,toys,b,7,2\n")


# One campaign open to every consenting user, so that recommend writes offers.
EVERYONE = {"id": "everyone", "name": "Everyone", "type": "generic", "valid_from": "2020-01-01",
            "valid_to": "2099-12-31", "priority": 10, "top_k": 2,
            "audience": {"all": [{"field": "purchases", "op": "ge", "value": 0}]},
            "offer": {"discount_pct": 5, "coupon_template": "", "text": ""}}


def reads(spark: SparkSession, cfg: AppConfig, run_id: str, stage: str) -> dict[str, int]:
    """The table versions the stage's run ``run_id`` read and wrote, as the run manifest records them (one row per
    run id and stage)."""
    row = delta_io.read(spark, cfg.table("metrics", "stages")).where(
        (F.col(C.RUN_ID) == run_id) & (F.col("stage") == stage)).first()
    assert row is not None, f"no {stage} row for {run_id}"
    return json.loads(row["io_versions"])


def test_a_crashed_clean_is_invisible_downstream_until_its_rerun_succeeds(
        spark: SparkSession, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_landing(tmp_path)
    cfg = make_config(tmp_path, campaigns=[EVERYONE])
    r1, r2 = RunContext("r1", DAY), RunContext("r2", DAY)
    for name in ("ingest", "clean", "features"):
        run_stage(name, spark, cfg, r1)
    silver_uri, quarantine_uri = cfg.table("silver", "events"), cfg.table("quarantine", "rows")
    good_silver = delta_io.version(spark, silver_uri)
    good_features = delta_io.read(spark, cfg.table("gold", "user_features")).cache()
    good_events = delta_io.read(spark, silver_uri).count()
    assert manifest_versions(spark, cfg)[silver_uri] == good_silver

    # New events arrive; clean crashes after its silver.events commit, before the quarantine and metrics commits.
    (tmp_path / "landing" / "events" / "e2.csv").write_text(HEADER + "".join(
        f"f{n},u{n % 3},p0,purchase,2026-11-01T12:{n:02d}:00Z,9,1,t{n}\n" for n in range(6))
        + "f99,u2,p0,click,2026-11-01T13:00:00Z,,,t9\n")
    run_stage("ingest", spark, cfg, r2)
    quarantine_before = delta_io.version(spark, quarantine_uri)
    monkeypatch.setenv(delta_io.FAULT_ENV, "after_write:silver.events")
    with pytest.raises(delta_io.InjectedFault):
        run_stage("clean", spark, cfg, r2)
    monkeypatch.delenv(delta_io.FAULT_ENV)
    half = delta_io.version(spark, silver_uri)
    assert half is not None and good_silver is not None and half > good_silver  # the partial commit is there
    assert delta_io.read(spark, silver_uri).count() == good_events + 6
    assert delta_io.version(spark, quarantine_uri) == quarantine_before  # ... next to the old quarantine

    # Features and recommend (real runs) see the silver of the last successful clean.
    assert _pins(spark, cfg, "recommend")[silver_uri] == good_silver
    assert _pins(spark, cfg, "features")[silver_uri] == good_silver
    run_stage("features", spark, cfg, r2)
    assert_df_equality(delta_io.read(spark, cfg.table("gold", "user_features")), good_features, ignore_row_order=True,
                       ignore_nullable=True)
    with delta_io.pinned(_pins(spark, cfg, "recommend")):
        assert delta_io.read(spark, silver_uri).count() == good_events
        assert delta_io.version(spark, silver_uri) == good_silver
    assert delta_io.read(spark, silver_uri).count() == good_events + 6  # unpinned, the partial version is the latest
    run_stage("recommend", spark, cfg, r2)
    assert reads(spark, cfg, "r2", "features")["silver.events"] == good_silver
    assert reads(spark, cfg, "r2", "recommend")["silver.events"] == good_silver
    recs = delta_io.read(spark, cfg.table("gold", "recommendations"))
    assert recs.where(F.col(C.RUN_ID) == "r2").count() > 0

    # The rerun completes and balances (clean raises otherwise), and moves the manifest: now features sees it.
    result = run_stage("clean", spark, cfg, r2)
    assert result["mode"] == "full"  # silver.events moved since the last clean: rebuilt, not merged twice
    bronze = delta_io.read(spark, cfg.table("bronze", "events")).count()
    assert result["events.silver_rows"] == good_events + 6
    assert bronze == result["events.silver_rows"] + sum(
        v for k, v in result.items() if k.startswith("events.quarantine:")) + result.get("events.duplicates", 0)
    assert manifest_versions(spark, cfg)[silver_uri] == delta_io.version(spark, silver_uri)
    assert delta_io.version(spark, quarantine_uri) == (quarantine_before or 0) + 1
    run_stage("features", spark, cfg, r2, force=True)
    assert reads(spark, cfg, "r2", "features")["silver.events"] == delta_io.version(spark, silver_uri) > half
    record("atomicity", "clean killed after its silver.events commit (before quarantine, metrics), then "
           "features + recommend's reads, then clean rerun", bronze,
           f"features and recommend (real runs) read silver v{good_silver} (not v{half}): gold.user_features equal "
           f"(chispa), {recs.count()} offers; rerun: silver "
           f"{result['events.silver_rows']} rows, balanced, manifest -> v{delta_io.version(spark, silver_uri)}", "pass")
