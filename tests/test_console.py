"""A normal run's console: sparkpromo's own lines, not Spark's or Ivy's."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from pyspark.sql import SparkSession

from tests.conftest import CONF_DIR, SMALL_DATA_CONF

pytestmark = pytest.mark.slow

IVY_MARKERS = (":: resolving dependencies", "Ivy Default Cache", "found io.delta", ":: loading settings",
               ":: retrieving ::")
# sparkpromo's log format (logs.py): ISO time, level, run id, logger.
OWN_LINE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2} [A-Z]+ run=\S+ sparkpromo[\w.]*: ")
# The JVM itself prints this when a module Spark's launcher always adds (jdk.incubator.vector, for ALS's vectorised
# BLAS) is resolved; no logging setting reaches it.
JVM_NOTICE = "WARNING: Using incubator modules: jdk.incubator.vector"


def test_a_run_prints_only_its_own_lines(spark: SparkSession, tmp_path: Path) -> None:
    """No WindowExec warning, no Ivy resolution, and none of the notes Spark makes on every run (large task
    binaries, truncated plan strings, no native BLAS): each stderr line is sparkpromo's, through recommend."""
    # `spark` is only here so that this machine has started one session (and resolved the Delta jars) before.
    env = {**os.environ, "PYTHONPATH": str(CONF_DIR.parent / "src")}
    env.pop("SPARKPROMO_LAKEHOUSE", None)
    env.pop("SPARKPROMO_LANDING", None)
    res = subprocess.run([sys.executable, "-m", "sparkpromo.cli", "run", "--sample", "--events", "1000",
                          "--stages", "ingest,clean,features,train,recommend", "--conf-dir", str(CONF_DIR),
                          "--set", "spark.master=local[2]", "--set", "spark.shuffle_partitions=2",
                          "--set", f"spark.conf={json.dumps(SMALL_DATA_CONF)}", "--run-date", "2026-11-29"],
                         cwd=tmp_path, capture_output=True, text=True, env=env, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    err = res.stderr
    assert "WindowExec" not in err and "No Partition Defined" not in err
    assert not [line for line in err.splitlines() if any(m in line for m in IVY_MARKERS)], err[:3000]
    for name in ("ingest", "clean", "features", "train", "recommend"):
        assert err.count(f"stage={name} status=start") == 1, err
    others = [line for line in err.splitlines() if line.strip() and line != JVM_NOTICE and not OWN_LINE.match(line)]
    assert others == [], "\n".join(others)


SPARK_NOTES = ("Broadcasting large task binary with size 3.2 MiB",
               "Truncated the string representation of a plan since it was too large. This behavior can be adjusted "
               "by setting 'spark.sql.debug.maxToStringFields'.",
               "Failed to load implementation from:dev.ludovic.netlib.blas.JNIBLAS",
               "Failed to load implementation from:dev.ludovic.netlib.lapack.JNILAPACK",
               "Block rdd_4990_0 already exists on this machine; not re-adding it",
               # Each MERGE's materialized source and each checkpointed frame of an incremental clean, when dropped
               "RDD 366 was locally checkpointed, its lineage has been truncated and cannot be recomputed after "
               "unpersisting",
               # Delta's change-feed reads (features and measure on a daily run), three per read
               "Converting duplicated key startingVersion into CaseInsensitiveStringMap.")
KEPT = ("Block broadcast_1 could not be removed as it was not found on disk or in memory",
        "Lost task 0.0 in stage 3.0 (TID 7): java.io.IOException: No space left on device",
        "Failed to load implementation from:com.example.OtherLibrary",
        "RDD 366 was locally checkpointed; checkpoint data lost",
        "Converting duplicated key startingVersion failed")


def test_the_console_filter_drops_spark_notes_and_nothing_else() -> None:
    """The driver JVM's console filter (src/sparkpromo/log4j2.properties, a Java regex that must match a whole
    message) drops the notes above, and not warnings that say something went wrong. (That log4j applies it is what
    the run above shows: without the filter, that run's stderr held nine of these notes on 2026-12-05.)"""
    props = {}
    for line in (CONF_DIR.parent / "src" / "sparkpromo" / "log4j2.properties").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition("=")
            props[key.strip()] = value.strip().replace("\\\\", "\\")  # a properties file escapes backslashes
    assert props["appender.console.filter.notes.type"] == "RegexFilter"
    assert props["appender.console.filter.notes.onMatch"] == "DENY"
    pattern = re.compile(props["appender.console.filter.notes.regex"])
    assert all(pattern.fullmatch(note) for note in SPARK_NOTES)
    assert not any(pattern.fullmatch(message) for message in KEPT)
