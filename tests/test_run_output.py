"""What ``run --json`` reports: the same shape whether a stage ran or was skipped as unchanged."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from pyspark.sql import SparkSession

from sparkpromo import pipeline
from sparkpromo.pipeline import RunContext, run_stage
from tests.conftest import make_config


def test_a_skipped_stage_reports_its_recorded_result_in_the_same_shape(
        spark: SparkSession, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    def fake_train(_spark: SparkSession, _cfg: Any, run_id: str) -> dict[str, Any]:
        calls.append(run_id)
        return {"run_id": run_id, "champion": "als", "rows": 3,
                "metrics": {"als": {"ndcg": 0.25, "precision": 0.5}, "popularity": {"ndcg": 0.125}}}

    monkeypatch.setattr(pipeline, "run_train", fake_train)
    cfg = make_config(tmp_path)
    ctx = RunContext("r1", dt.date(2026, 11, 29))
    first = run_stage("train", spark, cfg, ctx)
    second = run_stage("train", spark, cfg, ctx)
    assert calls == ["r1"]  # the rerun found nothing changed and did not train again
    assert first["skipped"] is False and second["skipped"] is True
    assert set(first) == set(second)
    assert second["metrics"] == first["metrics"] and second["champion"] == "als"
