"""Issue 18's equality: ten daily increments of the generated shop (late events, duplicates re-sent on later
days, users and items exports with updates) leave silver, quarantine and gold as a full refresh of the same bronze
on the last date does."""

from __future__ import annotations

from pathlib import Path

import pytest
from pyspark.sql import SparkSession

from tests.conftest import CONF_DIR
from tests.daily_equality import assert_equals_full_refresh, run_cli

LAST = "2026-11-10"


@pytest.mark.slow
def test_ten_daily_runs_equal_a_full_refresh_of_the_same_bronze(spark: SparkSession, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    lake = tmp_path / "lakehouse"
    monkeypatch.setenv("SPARKPROMO_LAKEHOUSE", str(lake))
    monkeypatch.setenv("SPARKPROMO_LANDING", str(tmp_path / "landing"))
    common = ["--conf-dir", str(CONF_DIR), "--set", "spark.shuffle_partitions=2", "--json"]
    daily = run_cli(["run", "--sample", "--days", "10", "--events", "1500", "--run-date", LAST,
                     "--stages", "ingest,clean,features", *common], capsys)
    modes = [daily[f"2026-11-{d:02d}.clean.mode"] for d in range(1, 11)]
    assert modes == ["full"] + ["incremental"] * 9
    last = {k.removeprefix(f"{LAST}.clean."): v for k, v in daily.items() if k.startswith(f"{LAST}.clean.")}
    assert last["events.duplicates"] > 0  # copies re-sent on a later day than their original
    assert_equals_full_refresh(spark, lake, LAST, last, common, capsys)
