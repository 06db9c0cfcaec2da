"""Issue 18's equality on data nobody on the team wrote: the UCI Online Retail log replayed a trading day at a time
through the shipped example (conf/examples/online-retail.yaml, by configuration alone), five daily runs of ingest,
clean and features, leave silver, quarantine (per rule) and gold as a full refresh of the same bronze does.

The log is not part of the project: the test reads ``../shared/data/online-retail/by-day`` next to the checkout, or
the folder named by ``SPARKPROMO_ONLINE_RETAIL_DATA``, and is skipped (saying so) where neither exists."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from pyspark.sql import SparkSession

from tests.conftest import CONF_DIR
from tests.daily_equality import assert_equals_full_refresh, run_cli

DAYS = 5
DATA = Path(os.environ.get("SPARKPROMO_ONLINE_RETAIL_DATA", CONF_DIR.parents[1] / "shared/data/online-retail"))


@pytest.mark.slow
@pytest.mark.skipif(not (DATA / "by-day").is_dir(), reason=f"the Online Retail log is not at {DATA}/by-day")
def test_online_retail_days_equal_a_full_refresh_of_the_same_bronze(
        spark: SparkSession, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    lake, landing = tmp_path / "lakehouse", tmp_path / "online-retail"
    (landing / "by-day").mkdir(parents=True)
    monkeypatch.setenv("SPARKPROMO_LAKEHOUSE", str(lake))
    monkeypatch.setenv("SPARKPROMO_ONLINE_RETAIL", str(landing))
    common = ["--conf-dir", str(CONF_DIR), "--config", str(CONF_DIR / "examples" / "online-retail.yaml"),
              "--set", "spark.shuffle_partitions=2", "--json"]
    files = sorted((DATA / "by-day").glob("*.csv"))[:DAYS]
    modes, results = [], {}
    for f in files:  # each trading day's file lands, then that day's run
        shutil.copy(f, landing / "by-day" / f.name)
        day = f.stem
        results[day] = run_cli(["run", "--run-date", day, "--stages", "ingest,clean,features", *common], capsys)
        modes.append(results[day]["clean.mode"])
    assert modes == ["full"] + ["incremental"] * (DAYS - 1)
    last_day = files[-1].stem
    last = {k.removeprefix("clean."): v for k, v in results[last_day].items() if k.startswith("clean.")}
    # The days overlap as a shop's exports do: a customer or an item seen again is an update, not a new row.
    assert last["users.duplicates"] > 0 and last["items.duplicates"] > 0
    assert last["events.quarantine:missing_field"] > 0 and last["events.quarantine:excluded"] > 0
    assert_equals_full_refresh(spark, lake, last_day, last, common, capsys, sources=("events", "users", "items"))
