"""The one session factory: Maven mirrors honoured, launcher settings never overridden."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from pyspark.sql import SparkSession

from sparkpromo.session import (
    build_session,
    default_parallelism,
    is_connect,
    launched_externally,
    local_settings,
    maven_mirrors,
    remote_url,
)
from tests.cluster import clean_env
from tests.conftest import CONF_DIR, make_config

ROOT = Path(__file__).resolve().parents[1]

SETTINGS = """<?xml version="1.0"?>
<settings xmlns="http://maven.apache.org/SETTINGS/1.0.0">
  <mirrors>
    <mirror><id>corp</id><mirrorOf>central</mirrorOf><url>https://maven.corp.example/repo</url></mirror>
  </mirrors>
</settings>
"""


def test_maven_mirror_from_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = tmp_path / "settings.xml"
    f.write_text(SETTINGS)
    monkeypatch.delenv("SPARKPROMO_MAVEN_REPO", raising=False)
    monkeypatch.setenv("MAVEN_SETTINGS", str(f))
    assert maven_mirrors() == ["https://maven.corp.example/repo"]
    cfg = make_config(tmp_path)
    assert local_settings(cfg)["spark.jars.repositories"] == "https://maven.corp.example/repo"


def test_no_mirror_no_repository_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SPARKPROMO_MAVEN_REPO", raising=False)
    monkeypatch.setenv("MAVEN_SETTINGS", str(tmp_path / "absent.xml"))
    assert maven_mirrors() == []
    assert "spark.jars.repositories" not in local_settings(make_config(tmp_path))


def test_unparsable_settings_ignored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = tmp_path / "settings.xml"
    f.write_text("<settings><mirrors>")
    monkeypatch.setenv("MAVEN_SETTINGS", str(f))
    monkeypatch.setenv("SPARKPROMO_MAVEN_REPO", "https://mirror.example/m2")
    assert maven_mirrors() == ["https://mirror.example/m2"]


@pytest.mark.parametrize("var", ["PYSPARK_GATEWAY_PORT", "DATABRICKS_RUNTIME_VERSION"])
def test_launcher_detection(monkeypatch: pytest.MonkeyPatch, var: str) -> None:
    for v in ("PYSPARK_GATEWAY_PORT", "DATABRICKS_RUNTIME_VERSION", "SPARK_SUBMIT_MODE"):
        monkeypatch.delenv(v, raising=False)
    assert not launched_externally()
    monkeypatch.setenv(var, "1")
    assert launched_externally()


def test_existing_session_keeps_its_master_and_delta(spark: SparkSession, tmp_path: Path) -> None:
    cfg = make_config(tmp_path, spark={"master": "local[1]", "shuffle_partitions": 3, "conf": {
        "spark.sql.extensions": "com.example.Nope"}})
    joined = build_session(cfg)
    assert joined is spark
    assert joined.sparkContext.master == "local[2]"
    assert "io.delta.sql.DeltaSparkSessionExtension" in joined.conf.get("spark.sql.extensions")
    assert joined.conf.get("spark.sql.shuffle.partitions") == "3"
    assert joined.conf.get("spark.sql.session.timeZone") == "UTC"
    assert f"{tmp_path}/lakehouse/_checkpoints/" in joined.sparkContext.getCheckpointDir()  # type: ignore[operator]
    spark.conf.set("spark.sql.shuffle.partitions", "2")


def test_a_setting_the_config_states_explicitly_is_not_replaced_by_ours(spark: SparkSession, tmp_path: Path) -> None:
    cfg = make_config(tmp_path, spark={"shuffle_partitions": 3, "conf": {"spark.sql.shuffle.partitions": "5"}})
    try:
        assert build_session(cfg).conf.get("spark.sql.shuffle.partitions") == "5"
        assert build_session(make_config(tmp_path, spark={"shuffle_partitions": 3})).conf.get(
            "spark.sql.shuffle.partitions") == "3"
    finally:
        spark.conf.set("spark.sql.shuffle.partitions", "2")


@pytest.mark.slow
def test_packages_in_the_config_are_resolved_with_deltas(tmp_path: Path) -> None:
    """A fresh process: delta-spark's own mechanism sets spark.jars.packages, and the config's packages go with it
    rather than being replaced (delta-storage: a package Ivy already holds, as Delta needs it)."""
    from importlib.metadata import version

    extra = f"io.delta:delta-storage:{version('delta-spark')}"
    script = (
        "import sys\n"
        "from sparkpromo.config import load_config\n"
        "from sparkpromo.session import build_session\n"
        f"cfg = load_config('local', {str(CONF_DIR)!r}, overrides={{'lakehouse': {str(tmp_path / 'lake')!r}, "
        f"'spark.conf': {{'spark.jars.packages': {extra!r}, 'spark.ui.enabled': 'false'}}}})\n"
        "spark = build_session(cfg)\n"
        "print('PACKAGES=' + spark.conf.get('spark.jars.packages'))\n"
        "spark.stop()\n")
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600, cwd=tmp_path,
                         env=clean_env(PYTHONPATH=str(ROOT / "src")), stdin=subprocess.DEVNULL)
    assert res.returncode == 0, res.stderr[-3000:]
    packages = next(line for line in res.stdout.splitlines() if line.startswith("PACKAGES=")).split("=", 1)[1]
    assert extra in packages.split(",") and any(p.startswith("io.delta:delta-spark") for p in packages.split(","))


def test_adaptive_execution_is_a_default_the_launcher_can_override(spark: SparkSession, tmp_path: Path) -> None:
    # shuffle_partitions is an upper bound that AQE coalesces: on in every session we build ...
    assert local_settings(make_config(tmp_path))["spark.sql.adaptive.coalescePartitions.enabled"] == "true"
    assert local_settings(make_config(tmp_path))["spark.sql.adaptive.enabled"] == "true"
    # ... but a session whose launcher already chose keeps its choice.
    before = spark.conf.get("spark.sql.adaptive.enabled")
    spark.conf.set("spark.sql.adaptive.enabled", "false")
    try:
        assert build_session(make_config(tmp_path)) is spark
        assert spark.conf.get("spark.sql.adaptive.enabled") == "false"
    finally:
        spark.conf.set("spark.sql.adaptive.enabled", before)


def test_local_jvm_runs_the_parallel_collector_and_a_large_codegen_cache(spark: SparkSession) -> None:
    # The suite's own session was built by build_session in local mode: its JVM must carry the settings.
    mx = spark._jvm.java.lang.management.ManagementFactory  # type: ignore[union-attr]
    collectors = {g.getName() for g in mx.getGarbageCollectorMXBeans()}
    assert collectors == {"PS Scavenge", "PS MarkSweep"}, collectors
    assert spark.conf.get("spark.sql.codegen.cache.maxEntries") == "4000"


def test_progress_line_names_only_started_stages() -> None:
    from types import SimpleNamespace

    from sparkpromo.logs import progress_summary

    queued = [SimpleNamespace(stageId=i, numTasks=4, numActiveTasks=0, numCompletedTasks=0) for i in range(19)]
    running = SimpleNamespace(stageId=30, numTasks=8, numActiveTasks=2, numCompletedTasks=3)
    line = progress_summary([*queued, running])
    assert line == " (3/84 tasks in 20 active stages; running: stage 30 3/8)"
    assert progress_summary([]) == ""


def test_classic_session_is_not_connect_and_reports_its_cores(spark: SparkSession) -> None:
    assert not is_connect(spark)
    assert default_parallelism(spark, fallback=99) == spark.sparkContext.defaultParallelism


def test_remote_comes_from_config_then_spark_remote(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPARK_REMOTE", "sc://from-env:15002")
    assert remote_url(make_config(tmp_path)) == "sc://from-env:15002"
    assert remote_url(make_config(tmp_path, spark={"remote": "sc://conf:1"})) == "sc://conf:1"
    monkeypatch.delenv("SPARK_REMOTE")
    assert remote_url(make_config(tmp_path)) == ""


def test_bad_remote_is_one_line_naming_the_key_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                                         ) -> None:
    from sparkpromo.cli import main

    code = main(["ingest", "--conf-dir", str(CONF_DIR), "--remote", "localhost:15002"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and "spark.remote" in err[0] and "sc://" in err[0]
