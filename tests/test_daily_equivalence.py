"""Issue 18's equality: ten daily increments of the generated shop (late events, duplicates re-sent on later
days, users and items exports with updates), each cleaned and featurised incrementally, leave silver, quarantine
and gold as a full refresh of the same bronze on the last date does."""

from __future__ import annotations

from pathlib import Path

import pytest
from chispa import assert_df_equality
from pyspark.sql import SparkSession

from sparkpromo import delta_io
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
    # Features too: after the first day, only the users, items and pairs a day can change are computed again.
    assert [daily[f"2026-11-{d:02d}.features.mode"] for d in range(1, 11)] == ["full"] + ["incremental"] * 9
    assert all(0 < daily[f"2026-11-{d:02d}.features.recomputed_users"] < daily[f"2026-11-{d:02d}.features.users"]
               for d in range(2, 11))
    last = {k.removeprefix(f"{LAST}.clean."): v for k, v in daily.items() if k.startswith(f"{LAST}.clean.")}
    assert last["events.duplicates"] > 0  # copies re-sent on a later day than their original
    assert_equals_full_refresh(spark, lake, LAST, last, common, capsys)

    # Features again with nothing changed: nothing is computed again, and gold holds what it held.
    gold = {t: str(lake / t) for t in ("gold/user_features", "gold/item_features", "gold/interactions")}
    versions = {t: delta_io.version(spark, uri) for t, uri in gold.items()}
    again = ["features", "--force", "--run-date", LAST, "--run-id", "again", *common]
    same = run_cli(again, capsys)
    assert same["mode"] == "incremental"
    assert (same["recomputed_users"], same["recomputed_items"], same["recomputed_pairs"]) == (0, 0, 0)
    for t, uri in gold.items():
        assert_df_equality(delta_io.read(spark, uri, version=versions[t]), delta_io.read(spark, uri),
                           ignore_row_order=True, ignore_nullable=True)
    # Gold is rebuilt instead when the last run cannot be built on: a changed features setting, --full-refresh,
    # gold written by something else since, a run date before the last run's.
    seven = [*again, "--set", "features.half_life_days=7"]
    changed = run_cli(seven, capsys)
    assert changed["mode"] == "full" and "settings" in changed["full_reason"], changed
    assert run_cli([*seven, "--full-refresh"], capsys)["full_reason"] == "--full-refresh"
    spark.sql(f"ALTER TABLE delta.`{gold['gold/item_features']}` SET TBLPROPERTIES ('sparkpromo.test' = 'moved')")
    assert "gold.item_features changed" in run_cli(seven, capsys)["full_reason"]
    assert run_cli(seven, capsys)["mode"] == "incremental"
    earlier = run_cli([*seven, "--run-date", "2026-11-09"], capsys)
    assert earlier["mode"] == "full" and "before the last run's" in earlier["full_reason"], earlier
