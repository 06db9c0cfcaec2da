"""Issue 18's equality: ten daily increments of the generated shop (late events, duplicates re-sent on later
days, users and items exports with updates) leave silver, quarantine and gold as a full refresh of the same bronze
on the last date does."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from chispa import assert_df_equality
from pyspark.sql import SparkSession

from sparkpromo import cli, delta_io
from sparkpromo import columns as C
from tests.conftest import CONF_DIR

LAST = "2026-11-10"
TABLES = ("silver/events", "silver/users", "silver/items", "quarantine/rows", "gold/interactions",
          "gold/user_features", "gold/item_features", "gold/id_map")


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    assert cli.main(argv) == 0, capsys.readouterr().err
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


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
    last = {k.removeprefix(f"{LAST}.clean.events."): v for k, v in daily.items()
            if k.startswith(f"{LAST}.clean.events.")}
    assert last["duplicates"] > 0  # copies re-sent on a later day than their original
    uris = {t: str(lake / t) for t in TABLES}
    versions = {t: delta_io.version(spark, u) for t, u in uris.items()}

    full = run_cli(["clean", "--full-refresh", "--run-date", LAST, "--run-id", "full", *common], capsys)
    assert full["mode"] == "full"
    run_cli(["features", "--force", "--run-date", LAST, "--run-id", "full", *common], capsys)
    for name in ("bronze_rows", "silver_rows", "quarantined", "duplicates"):
        assert full[f"events.{name}"] == last[name], name
    rules = {k: v for k, v in daily.items() if k.startswith(f"{LAST}.clean.") and ".quarantine:" in k}
    assert {k.removeprefix(f"{LAST}.clean."): v for k, v in rules.items()} == \
        {k: v for k, v in full.items() if ".quarantine:" in k}
    for table, uri in uris.items():
        before, after = delta_io.read(spark, uri, version=versions[table]), delta_io.read(spark, uri)
        if table == "quarantine/rows":
            before, after = before.drop(C.RUN_ID), after.drop(C.RUN_ID)
        assert_df_equality(before, after, ignore_row_order=True, ignore_nullable=True, ignore_column_order=True)
