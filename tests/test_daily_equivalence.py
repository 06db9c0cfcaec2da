"""Daily runs end to end, and issue 18's equality: `run --sample --days 5` replays a generated shop one day at a
time (late events, duplicates re-sent on later days, users and items exports with updates), each day's run seeing
only the batches that arrived by its date and cleaning and featurising them incrementally; a rerun resumes instead
of redoing past days; and the days leave silver, quarantine and gold as a full refresh of the same bronze on the
last date does."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from chispa import assert_df_equality
from pyspark.sql import SparkSession

from sparkpromo import delta_io
from tests.conftest import CONF_DIR
from tests.daily_equality import assert_equals_full_refresh, run_cli

# Five days: rows arrive up to MAX_LATE_DAYS (3) days late and copies are re-sent as late, so the last days take in
# rows and copies of every earlier day; more days repeat the same cases at twice the suite time.
DAYS = tuple(f"2026-11-{d:02d}" for d in range(1, 6))
LAST = DAYS[-1]


def csv_rows(path: Path) -> int:
    with path.open(newline="", encoding="utf-8") as fh:
        return sum(1 for _ in csv.DictReader(fh))


@pytest.mark.slow
def test_daily_runs_read_each_days_files_resume_and_equal_a_full_refresh(spark: SparkSession, tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch,
                                                                         capsys: pytest.CaptureFixture[str]
                                                                         ) -> None:
    monkeypatch.chdir(tmp_path)
    lake, landing = tmp_path / "lakehouse", tmp_path / "landing"
    monkeypatch.setenv("SPARKPROMO_LAKEHOUSE", str(lake))
    monkeypatch.setenv("SPARKPROMO_LANDING", str(landing))
    common = ["--conf-dir", str(CONF_DIR), "--set", "spark.shuffle_partitions=2", "--json"]
    argv = ["run", "--sample", "--days", str(len(DAYS)), "--events", "1500", "--run-date", LAST, "--stages",
            "ingest,clean,features", *common]
    daily = run_cli(argv, capsys)

    assert [daily[f"{d}.run_id"] for d in DAYS] == [d.replace("-", "") for d in DAYS]
    for d in DAYS:
        # Each day's ingest read that day's three exports and nothing else.
        assert daily[f"{d}.delivered_files"] == 3
        assert (daily[f"{d}.ingest.events_files"], daily[f"{d}.ingest.users_files"],
                daily[f"{d}.ingest.items_files"]) == (1, 1, 1)
        assert daily[f"{d}.ingest.events_rows"] == csv_rows(landing / "events" / f"events-{d}.csv")
        assert daily[f"{d}.ingest.items_rows"] == csv_rows(landing / "items" / f"items-{d}.csv")
        assert daily[f"{d}.ingest.users_rows"] == len((landing / "users" / f"users-{d}.jsonl").read_text().splitlines())
    assert daily[f"{DAYS[1]}.ingest.events_rows"] < daily[f"{DAYS[1]}.clean.events.bronze_rows"]
    assert daily[f"{LAST}.clean.events.bronze_rows"] == daily["generated_events"] == 1500
    assert [daily[f"{d}.clean.mode"] for d in DAYS] == ["full"] + ["incremental"] * (len(DAYS) - 1)
    # Features too: after the first day, only the users, items and pairs a day can change are computed again.
    assert [daily[f"{d}.features.mode"] for d in DAYS] == ["full"] + ["incremental"] * (len(DAYS) - 1)
    assert all(0 < daily[f"{d}.features.recomputed_users"] < daily[f"{d}.features.users"] for d in DAYS[1:])
    last = {k.removeprefix(f"{LAST}.clean."): v for k, v in daily.items() if k.startswith(f"{LAST}.clean.")}
    assert last["events.duplicates"] > 0  # copies re-sent on a later day than their original
    # A late row or a re-sent copy was judged with the earlier days' rows it shares a key or a user with.
    assert any(daily[f"{d}.clean.events.rejudged_rows"] > 0 for d in DAYS[1:])
    assert last["events.bronze_rows"] == (last["events.silver_rows"] + last["events.quarantined"]
                                          + last["events.duplicates"])

    # The same command again resumes: the staged shop is kept and every day's stages are skipped.
    again = run_cli(argv, capsys)
    assert again["generated_events"] == 0
    assert all(again[f"{d}.skipped"] is True for d in DAYS[:-1])
    assert again[f"{LAST}.ingest.events_rows"] == 0
    assert again[f"{LAST}.clean.skipped"] is True and again[f"{LAST}.features.skipped"] is True
    assert again[f"{LAST}.clean.events.silver_rows"] == last["events.silver_rows"]

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
    earlier = run_cli([*seven, "--run-date", DAYS[-2]], capsys)
    assert earlier["mode"] == "full" and "before the last run's" in earlier["full_reason"], earlier
