"""A replay of several dates that fails part-way resumes where it stopped (README, "What a rerun does"): the dates
that finished are not run again, the failed date and the ones after it are; ``--force`` runs every date again."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pyspark.sql import SparkSession

from sparkpromo import cli, delta_io, pipeline
from sparkpromo import columns as C
from sparkpromo.config import AppConfig
from sparkpromo.pipeline import RunContext
from tests.conftest import CONF_DIR
from tests.daily_equality import run_cli

DAYS = ("2026-11-01", "2026-11-02", "2026-11-03")


def test_a_failed_replay_resumes_at_the_date_that_failed_and_force_reruns_every_date(
        spark: SparkSession, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
        ) -> None:
    monkeypatch.chdir(tmp_path)
    lake = tmp_path / "lakehouse"
    monkeypatch.setenv("SPARKPROMO_LAKEHOUSE", str(lake))
    monkeypatch.setenv("SPARKPROMO_LANDING", str(tmp_path / "landing"))
    argv = ["run", "--sample", "--days", str(len(DAYS)), "--events", "1000", "--run-date", DAYS[-1],
            "--stages", "ingest", "--conf-dir", str(CONF_DIR), "--set", "spark.shuffle_partitions=2", "--json"]
    bronze = str(lake / "bronze" / "events")

    # The second date's ingest crashes before it writes (the fault point every bronze write passes): the first date
    # is committed, the third is not run.
    real_run_stage = pipeline.run_stage

    def crash_on_second_date(name: str, spark: SparkSession, cfg: AppConfig, ctx: RunContext,
                             **kw: Any) -> dict[str, Any]:
        with monkeypatch.context() as m:
            if ctx.run_date.isoformat() == DAYS[1]:
                m.setenv(delta_io.FAULT_ENV, "before_write:bronze.events")
            return real_run_stage(name, spark, cfg, ctx, **kw)

    monkeypatch.setattr(pipeline, "run_stage", crash_on_second_date)
    assert cli.main(argv) != 0
    assert "fault injected at before_write:bronze.events" in capsys.readouterr().err
    monkeypatch.setattr(pipeline, "run_stage", real_run_stage)
    loaded = sorted(r[0] for r in spark.read.format("delta").load(bronze).select(C.SOURCE_FILE).distinct().collect())
    assert len(loaded) == 1 and DAYS[0] in loaded[0]

    resumed = run_cli(argv, capsys)
    assert resumed[f"{DAYS[0]}.skipped"] is True
    for day in DAYS[1:]:
        assert f"{day}.skipped" not in resumed
        assert resumed[f"{day}.ingest.skipped"] is False
        assert resumed[f"{day}.ingest.events_rows"] > 0  # the day's own file, loaded once
    rows = spark.read.format("delta").load(bronze).count()

    forced = run_cli([*argv, "--force"], capsys)
    for day in DAYS:
        assert f"{day}.skipped" not in forced
        assert forced[f"{day}.ingest.skipped"] is False
        assert forced[f"{day}.ingest.events_rows"] == 0  # every file was loaded before: nothing twice
    assert spark.read.format("delta").load(bronze).count() == rows
