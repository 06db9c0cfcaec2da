"""One session-scoped local SparkSession with real Delta, shared by the whole suite."""

from __future__ import annotations

import fcntl
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pyspark.sql import SparkSession

from sparkpromo.config import AppConfig, build_config
from sparkpromo.session import build_session

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"


def make_config(root: Path | str, **sections: Any) -> AppConfig:
    """A small AppConfig whose lakehouse lives under ``root``; keyword arguments override top-level sections."""
    root = Path(root)
    data: dict[str, Any] = {
        "lakehouse": str(root / "lakehouse"),
        "landing": str(root / "landing"),
        "spark": {"master": "local[2]", "shuffle_partitions": 2, "driver_memory": "2g"},
        "sources": {
            "events": {"path": str(root / "landing" / "events"), "format": "csv", "options": {"header": "true"},
                       "columns": {"item_id": "product_id", "event_ts": "event_time"}},
            "users": {"path": str(root / "landing" / "users"), "format": "json"},
            "items": {"path": str(root / "landing" / "items"), "format": "csv", "options": {"header": "true"},
                      "columns": {"item_id": "product_id"}},
        },
        "train": {"folds": 2, "grid": {"rank": [4], "reg_param": [0.1], "alpha": [5.0], "max_iter": [5]}},
    }
    data.update(sections)
    if "users" not in data["sources"] or data["sources"]["users"] is None:
        # A test source without a users table: its users are taken as consenting unless the test says otherwise.
        data.setdefault("privacy", {"consent_without_users": "granted"})
    return build_config(data)


# Tiny frames: interpreted execution without adaptive re-planning needs a fraction of the CPU (test_pipeline_rerun:
# 164 s -> 120 s). The whole suite runs so, and so do the JVMs it starts where a test does not depend on Spark's
# defaults (the Spark Connect server, the standalone cluster's application, the console's run, the concurrent CLI
# ingests); production keeps Spark's defaults, and `run --sample` merges the first two from conf/sample.yaml (the
# third is an internal setting Spark keeps for its own tests). A test that needs another value sets it and restores
# it.
SMALL_DATA_CONF = {"spark.sql.adaptive.enabled": "false", "spark.sql.codegen.wholeStage": "false",
                   "spark.sql.codegen.factoryMode": "NO_CODEGEN"}


# Java options for the short-lived JVMs some tests start several of at once (the standalone cluster's driver and
# executors, concurrent CLI processes): the client JIT alone. Each would otherwise compile the same hot code with C2
# on the two cores the other test process also needs (BENCHMARKS.md, "The cluster run's JVMs on the client JIT").
# Not for a JVM that does a long run alone (the suite's own, the console test's): there C2 pays for itself.
SHORT_JVM_OPTS = "-XX:TieredStopAtLevel=1"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Files that hold a slow test run first, each file's tests kept together and in order. pytest-xdist hands out
    whole files in this order (scripts/test.sh), so the long end-to-end files start early and the quick files fill
    the end on both test processes."""
    slow = {item.nodeid.split("::", 1)[0] for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.nodeid.split("::", 1)[0] not in slow)


@pytest.fixture(scope="session")
def spark_root() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="sparkpromo-tests-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def spark(spark_root: Path) -> Iterator[SparkSession]:
    # One JVM serves the whole suite (500+ tests, end-to-end runs among them): the local environment's 4g, as
    # conf/local.yaml gives a laptop run. With 2g it died of GC overhead near the end of the suite.
    cfg = make_config(spark_root, spark={"master": "local[2]", "shuffle_partitions": 2, "driver_memory": "4g"})
    # Test processes (pytest-xdist) start at once; on a fresh machine each would resolve the Delta jars into the
    # same ~/.ivy2 at the same time, which Ivy does not survive. The first start resolves and records them; the
    # others wait, then start from the record.
    with open(Path(tempfile.gettempdir()) / "sparkpromo-tests-first-start.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        session = build_session(cfg, app_name="sparkpromo-tests")
    for k, v in SMALL_DATA_CONF.items():
        session.conf.set(k, v)
    yield session
    session.stop()


@pytest.fixture(scope="module", autouse=True)
def _drop_cached_frames() -> Iterator[None]:
    """Drop what a module left cached, so that cached blocks and their plans do not pile up over the suite."""
    yield
    active = SparkSession.getActiveSession()
    if active is not None:
        active.catalog.clearCache()


@pytest.fixture
def cfg(tmp_path: Path) -> AppConfig:
    return make_config(tmp_path)


def registry_text(path: Path) -> str:
    """A registry document as train writes it (a one-file folder, ``spark.read.text``'s layout) or as a plain file."""
    if path.is_file():
        return path.read_text()
    parts = sorted(path.glob("part-*"))
    assert len(parts) == 1, f"{path}: expected one part file, found {parts}"
    return parts[0].read_text()
