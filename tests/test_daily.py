"""Daily runs end to end: `run --sample --days N` replays a generated shop one day at a time, each day's run seeing
only the batches that arrived by its date; a rerun resumes instead of redoing past days."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest
from pyspark.sql import SparkSession

from sparkpromo import cli
from tests.conftest import CONF_DIR

DAYS = ("2026-11-01", "2026-11-02", "2026-11-03")


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    assert cli.main(argv) == 0, capsys.readouterr().err
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def csv_rows(path: Path) -> int:
    with path.open(newline="", encoding="utf-8") as fh:
        return sum(1 for _ in csv.DictReader(fh))


@pytest.mark.slow
def test_run_sample_days_runs_once_per_day_on_that_days_files(spark: SparkSession, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    assert spark.sparkContext is not None  # the suite's session: the CLI joins it instead of starting another
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SPARKPROMO_LAKEHOUSE", str(tmp_path / "lakehouse"))
    monkeypatch.setenv("SPARKPROMO_LANDING", str(tmp_path / "landing"))
    argv = ["run", "--sample", "--days", "3", "--events", "2000", "--run-date", DAYS[-1], "--conf-dir",
            str(CONF_DIR), "--stages", "ingest,clean,features", "--set", "spark.shuffle_partitions=2", "--json"]
    out = run_cli(argv, capsys)

    assert [out[f"{d}.run_id"] for d in DAYS] == ["20261101", "20261102", "20261103"]
    landing = tmp_path / "landing"
    for d in DAYS:
        # Each day's ingest read that day's three exports and nothing else.
        assert out[f"{d}.delivered_files"] == 3
        assert (out[f"{d}.ingest.events_files"], out[f"{d}.ingest.users_files"], out[f"{d}.ingest.items_files"]) \
            == (1, 1, 1)
        assert out[f"{d}.ingest.events_rows"] == csv_rows(landing / "events" / f"events-{d}.csv")
        assert out[f"{d}.ingest.items_rows"] == csv_rows(landing / "items" / f"items-{d}.csv")
        users = (landing / "users" / f"users-{d}.jsonl").read_text().splitlines()
        assert out[f"{d}.ingest.users_rows"] == len(users)
        assert out[f"{d}.features.skipped"] is False
    assert out[f"{DAYS[1]}.ingest.events_rows"] < out[f"{DAYS[1]}.clean.events.bronze_rows"]
    assert out[f"{DAYS[-1]}.clean.events.bronze_rows"] == out["generated_events"] == 2000
    last = {k.removeprefix(f"{DAYS[-1]}.clean.events."): v for k, v in out.items()
            if k.startswith(f"{DAYS[-1]}.clean.events.")}
    assert last["bronze_rows"] == last["silver_rows"] + last["quarantined"] + last["duplicates"]
    assert last["duplicates"] > 0  # re-sent rows of earlier days were dropped, not kept twice

    again = run_cli(argv, capsys)
    assert again["generated_events"] == 0  # same parameters: the staged shop is kept
    assert again[f"{DAYS[0]}.skipped"] is True and again[f"{DAYS[1]}.skipped"] is True
    assert again[f"{DAYS[-1]}.ingest.events_rows"] == 0
    assert again[f"{DAYS[-1]}.clean.skipped"] is True and again[f"{DAYS[-1]}.features.skipped"] is True
    assert again[f"{DAYS[-1]}.clean.events.silver_rows"] == last["silver_rows"]
