"""Two runs writing one lakehouse at once: both succeed with a single run's result, or one fails with a Delta
conflict; neither leaves a corrupt or doubled table.

The races are forced, not hoped for: both writers are held at the same fault point (just before their Delta
write) by a barrier, so each has read the table before either commits.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from delta.exceptions import DeltaConcurrentModificationException
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from sparkpromo import columns as C
from sparkpromo import delta_io
from sparkpromo.config import AppConfig
from sparkpromo.ingest import ingest_source
from sparkpromo.logs import error_summary
from sparkpromo.pipeline import RunContext, run_stage
from tests.conftest import CONF_DIR, SHORT_JVM_OPTS, SMALL_DATA_CONF, make_config
from tests.measure import record

pytestmark = pytest.mark.slow

CTX = RunContext("20261101", dt.date(2026, 11, 1))
HEADER = "event_id,user_id,product_id,event_type,event_time,price,quantity,session_id\n"


def write_events(cfg: AppConfig, name: str, first: int, n: int, event_type: str = "view") -> None:
    d = Path(cfg.sources.events.path)
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_text(HEADER + "".join(f"e{i},u{i % 7},p{i % 5},{event_type},2026-10-{1 + i % 28:02d}T10:00:00Z,"
                                           f",,s{i}\n" for i in range(first, first + n)))


def write_users_items(cfg: AppConfig) -> None:
    users = "".join(f'{{"user_id": "u{i}", "marketing_consent": false}}\n' for i in range(7))
    for src, text in ((cfg.sources.users, users),
                      (cfg.sources.items, "product_id,category,brand,price,stock\n"
                                          + "".join(f"p{i},c,b,1,1\n" for i in range(5)))):
        Path(src.path).mkdir(parents=True, exist_ok=True)
        (Path(src.path) / ("u.jsonl" if src.format == "json" else "i.csv")).write_text(text)


def race(monkeypatch: pytest.MonkeyPatch, point: str, *calls: Callable[[], Any]) -> list[Any]:
    """Run ``calls`` in threads that all wait for each other at fault point ``point``; each result or exception."""
    barrier = threading.Barrier(len(calls), timeout=300)
    real = delta_io.fault_point

    def hold(name: str) -> None:
        if name == point:
            try:
                barrier.wait()
            except threading.BrokenBarrierError:
                pass  # the other writer failed before reaching the point: go on alone
        real(name)

    monkeypatch.setattr(delta_io, "fault_point", hold)
    results: list[Any] = [None] * len(calls)

    def runner(k: int, call: Callable[[], Any]) -> None:
        try:
            results[k] = call()
        except BaseException as e:  # noqa: BLE001 - collected and asserted on below
            results[k] = e
            barrier.abort()

    threads = [threading.Thread(target=runner, args=(k, c)) for k, c in enumerate(calls)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    monkeypatch.setattr(delta_io, "fault_point", real)
    return results


# Delta's commit conflicts (delta_io.delta.exceptions.*). Through py4j they arrive as Py4JJavaError; error_summary names
# the Java class, which is also what the CLI prints.
CONFLICTS = ("ConcurrentAppendException", "ConcurrentWriteException", "ConcurrentDeleteReadException",
             "ConcurrentDeleteDeleteException", "ConcurrentTransactionException", "MetadataChangedException",
             "ProtocolChangedException")


def assert_succeeded_or_conflicted(results: list[Any]) -> list[str]:
    """Every outcome is a success or a Delta commit conflict, and at least one run succeeded; returns the
    one-line summaries of the failures."""
    failures = [r for r in results if isinstance(r, BaseException)]
    for f in failures:
        ok = isinstance(f, DeltaConcurrentModificationException) or error_summary(f).split(":")[0] in CONFLICTS
        assert ok, f"not a clean conflict: {str(f)[:3000]}"
    assert len(failures) < len(results)
    return [error_summary(f) for f in failures]


def bronze_counts(spark: SparkSession, cfg: AppConfig) -> tuple[int, int]:
    df = delta_io.read(spark, cfg.table("bronze", "events"))
    return df.count(), df.select("event_id").distinct().count()


@pytest.mark.parametrize("existing", [False, True], ids=["first-ingest", "append"])
def test_concurrent_ingest_never_doubles_bronze(spark: SparkSession, tmp_path: Path, existing: bool) -> None:
    """Two ingests of one source in one driver take turns on its stream checkpoint: both succeed, and the new
    files are read by exactly one of them."""
    cfg = make_config(tmp_path)
    write_events(cfg, "a.csv", 0, 40)
    if existing:
        ingest_source(spark, cfg, "events", "r0")
        write_events(cfg, "b.csv", 40, 30)
    start = threading.Barrier(2, timeout=300)

    def ingest(run_id: str) -> dict[str, int]:
        start.wait()
        return ingest_source(spark, cfg, "events", run_id)

    results: list[Any] = [None, None]
    threads = [threading.Thread(target=lambda k=k: results.__setitem__(k, ingest(f"r{k + 1}"))) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    expected = 70 if existing else 40
    new = expected - 40 if existing else 40
    assert sorted(r["events_rows"] for r in results) == [0, new]
    got = bronze_counts(spark, cfg)
    assert got == (expected, expected)  # readable, every row once
    record("concurrency", f"two ingests at once ({'append to' if existing else 'create'} bronze), threads",
           expected, f"bronze {got[0]} rows, {got[1]} distinct", "both succeeded; one read the new files")
    # A later file still arrives.
    write_events(cfg, "c.csv", 100, 5)
    assert ingest_source(spark, cfg, "events", "r4")["events_rows"] == 5
    assert bronze_counts(spark, cfg) == (expected + 5, expected + 5)


def test_concurrent_clean_leaves_one_runs_tables(spark: SparkSession, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = make_config(tmp_path)
    write_events(cfg, "a.csv", 0, 60)
    write_events(cfg, "b.csv", 60, 3, event_type="click")  # three rows for quarantine
    write_users_items(cfg)
    run_stage("ingest", spark, cfg, CTX)

    results = race(monkeypatch, "before_write:silver.events",
                   lambda: run_stage("clean", spark, cfg, CTX, force=True),
                   lambda: run_stage("clean", spark, cfg, CTX, force=True))
    failed = assert_succeeded_or_conflicted(results)
    silver = delta_io.read(spark, cfg.table("silver", "events"))
    n = silver.count()
    assert n == 60 == silver.select(C.EVENT_ID).distinct().count()  # one run's rows, each once
    assert delta_io.read(spark, cfg.table("quarantine", "rows")).count() == 3
    assert delta_io.read(spark, cfg.table("silver", "users")).count() == 7
    record("concurrency", "two cleans at once (same lakehouse), threads", 63,
           f"silver {n} + quarantine 3, no duplicates",
           "; ".join(f.split(":")[0] for f in failed) + " for one run" if failed else "both succeeded")


def cli(cwd: Path, *args: str) -> subprocess.Popen[str]:
    src = str(CONF_DIR.parent / "src")  # this checkout's code, whatever the installed copy points at
    # SPARK_SUBMIT_OPTS adds to the launcher's java options; the session's own stay (this test 0.75x).
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")]),
           "SPARKPROMO_LANDING": str(cwd / "landing"), "SPARKPROMO_LAKEHOUSE": str(cwd / "lakehouse"),
           "SPARK_SUBMIT_OPTS": f"{os.environ.get('SPARK_SUBMIT_OPTS', '')} {SHORT_JVM_OPTS}".strip()}
    return subprocess.Popen([sys.executable, "-m", "sparkpromo.cli", *args, "--conf-dir", str(CONF_DIR),
                             "--set", "spark.master=local[1]", "--set", "spark.driver_memory=1g",
                             "--set", "spark.shuffle_partitions=2",
                             "--set", f"spark.conf={json.dumps(SMALL_DATA_CONF)}"],
                            cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_two_cli_ingests_at_once(spark: SparkSession, tmp_path: Path) -> None:
    """Two ``sparkpromo ingest`` processes (two JVMs) on one lakehouse: each exits 0, or 1 with a one-line conflict
    message (Delta's, or the stream checkpoint's); bronze holds every landing row exactly once."""
    cfg = make_config(tmp_path)
    write_events(cfg, "a.csv", 0, 50)
    write_users_items(cfg)
    procs = [cli(tmp_path, "ingest", "--run-id", f"cli{k}", "--run-date", "2026-11-01") for k in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    codes = [p.returncode for p in procs]
    assert 0 in codes, outs
    for code, (_, err) in zip(codes, outs, strict=True):
        if code != 0:
            assert code == 1
            lines = [ln for ln in err.strip().splitlines() if ln.startswith("error:")]
            assert len(lines) == 1 and lines[0].startswith("error: ingest failed: "), err
            # A Delta commit conflict, or the stream checkpoint's refusal of a second query (IngestConflict).
            assert any(f"failed: {c}: " in lines[0] for c in (*CONFLICTS, "IngestConflict")), err
    assert bronze_counts(spark, cfg) == (50, 50)
    failed = [err.strip().splitlines()[-1] for code, (_, err) in zip(codes, outs, strict=True) if code]
    record("concurrency", "two `sparkpromo ingest` processes at once (two JVMs)", 50, "bronze 50 rows, 50 distinct",
           f"exit codes {sorted(codes)}; " + (failed[0][:110] if failed else "both succeeded"))
    assert delta_io.read(spark, cfg.table("bronze", "users")).count() == 7
    assert delta_io.read(spark, cfg.table("bronze", "items")).where(F.col("product_id") == "p1").count() == 1
