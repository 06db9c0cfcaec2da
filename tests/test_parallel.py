"""Independent actions side by side (sparkpromo.parallel): results in order, the caller's context in every thread,
a failure raised only after every call ended."""

from __future__ import annotations

import contextvars
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from chispa import assert_df_equality
from pyspark.sql import SparkSession

from sparkpromo.parallel import checkpoint_all, run_all
from tests.cluster import clean_env

ROOT = Path(__file__).resolve().parents[1]

_WHO = contextvars.ContextVar("who", default="nobody")


def test_results_come_back_in_order_from_other_threads(spark: SparkSession) -> None:
    threads: set[int] = set()

    def call(n: int) -> int:
        threads.add(threading.get_ident())
        time.sleep(0.05 * (3 - n))  # the first call ends last
        return n * n

    assert run_all(spark, [lambda n=n: call(n) for n in range(3)]) == [0, 1, 4]
    assert threading.get_ident() not in threads and len(threads) == 3


def test_every_thread_sees_the_callers_context_variables(spark: SparkSession) -> None:
    token = _WHO.set("caller")
    try:
        assert run_all(spark, [_WHO.get, _WHO.get]) == ["caller", "caller"]
    finally:
        _WHO.reset(token)


def test_every_thread_runs_its_jobs_with_the_callers_local_properties(spark: SparkSession) -> None:
    sc = spark.sparkContext
    sc.setLocalProperty("sparkpromo.test", "caller")
    try:
        assert run_all(spark, [lambda: sc.getLocalProperty("sparkpromo.test")] * 2) == ["caller", "caller"]
    finally:
        sc.setLocalProperty("sparkpromo.test", None)  # type: ignore[arg-type]


def test_a_failure_is_raised_after_the_other_calls_ended(spark: SparkSession) -> None:
    ended: list[str] = []

    def slow() -> None:
        time.sleep(0.3)
        ended.append("slow")

    def failing() -> None:
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        run_all(spark, [failing, slow])
    assert ended == ["slow"]


def test_checkpointed_frames_hold_the_rows_of_their_inputs(spark: SparkSession) -> None:
    a = spark.createDataFrame([(1, "x"), (2, "y")], "id int, v string")
    b = spark.range(5).selectExpr("id * 2 AS id")
    kept = checkpoint_all(spark, [a.where("id > 1"), b])
    assert_df_equality(kept[0], a.where("id > 1"), ignore_row_order=True)
    assert_df_equality(kept[1], b, ignore_row_order=True)


@pytest.mark.slow
def test_calls_run_side_by_side_without_pinned_threads(tmp_path: Path) -> None:
    """PYSPARK_PIN_THREAD=false (a py4j gateway without pinned threads): pyspark then hands the session back instead
    of a wrapper, and the calls still run."""
    script = ("from pyspark.sql import SparkSession\n"
              "from sparkpromo.parallel import run_all\n"
              "spark = SparkSession.builder.master('local[1]').config('spark.ui.enabled', 'false').getOrCreate()\n"
              "print('COUNTS=%s' % run_all(spark, [lambda: spark.range(3).count(), lambda: spark.range(5).count()]))\n"
              "spark.stop()\n")
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=tmp_path,
                         env=clean_env(PYTHONPATH=str(ROOT / "src"), PYSPARK_PIN_THREAD="false"),
                         stdin=subprocess.DEVNULL)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "COUNTS=[3, 5]" in res.stdout
