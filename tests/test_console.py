"""A normal run's console: sparkpromo's own lines, not Spark's or Ivy's."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from pyspark.sql import SparkSession

from tests.conftest import CONF_DIR

pytestmark = pytest.mark.slow

IVY_MARKERS = (":: resolving dependencies", "Ivy Default Cache", "found io.delta", ":: loading settings",
               ":: retrieving ::")


def test_a_run_prints_no_window_warning_and_no_ivy_lines(spark: SparkSession, tmp_path: Path) -> None:
    # `spark` is only here so that this machine has started one session (and resolved the Delta jars) before.
    env = {**os.environ, "PYTHONPATH": str(CONF_DIR.parent / "src")}
    env.pop("SPARKPROMO_LAKEHOUSE", None)
    env.pop("SPARKPROMO_LANDING", None)
    res = subprocess.run([sys.executable, "-m", "sparkpromo.cli", "run", "--sample", "--events", "1000",
                          "--stages", "ingest,clean,features,train", "--conf-dir", str(CONF_DIR),
                          "--set", "spark.master=local[2]", "--set", "spark.shuffle_partitions=2",
                          "--run-date", "2026-11-29"],
                         cwd=tmp_path, capture_output=True, text=True, env=env, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    err = res.stderr
    assert "WindowExec" not in err and "No Partition Defined" not in err
    assert not [line for line in err.splitlines() if any(m in line for m in IVY_MARKERS)], err[:3000]
    for name in ("ingest", "clean", "features", "train"):
        assert err.count(f"stage={name} status=start") == 1, err
