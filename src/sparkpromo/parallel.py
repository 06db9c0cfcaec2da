"""Independent Spark actions run side by side from driver threads.

At small and medium sizes most of a Spark action's time is on the driver (analysis, planning, Delta log reads, task
scheduling) and in a few short tasks; two independent actions submitted from two threads overlap one's driver work
with the other's tasks. Each thread carries the caller's Spark local properties (job group, description, scheduler
pool) and context variables, so its jobs are the caller's and read the tables at the caller's versions.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

from pyspark.sql import DataFrame, SparkSession
from pyspark.util import inheritable_thread_target

__all__ = ["submit", "run_all", "checkpoint_all"]

_R = TypeVar("_R")


def submit(pool: ThreadPoolExecutor, spark: SparkSession, fn: Callable[..., _R], *args: object) -> Future[_R]:
    """Run ``fn(*args)`` on ``pool`` with the caller's Spark local properties and context variables (the table
    versions a stage reads at, :func:`sparkpromo.delta_io.pinned`, are one)."""
    target = inheritable_thread_target(spark)
    # Without pinned threads (PYSPARK_PIN_THREAD=false) pyspark hands the session back unwrapped: local properties
    # are then the JVM's per-thread ones anyway, and fn runs as it is.
    return pool.submit(contextvars.copy_context().run, target(fn) if callable(target) else fn, *args)


def run_all(spark: SparkSession, fns: Sequence[Callable[[], _R]], name: str = "sparkpromo") -> list[_R]:
    """Call every function of ``fns`` at once (a thread each) and return their results in order; the first
    failure is raised once every call has ended."""
    if len(fns) <= 1:
        return [fn() for fn in fns]
    with ThreadPoolExecutor(max_workers=len(fns), thread_name_prefix=name) as pool:
        jobs = [submit(pool, spark, fn) for fn in fns]
        return [job.result() for job in jobs]


def checkpoint_all(spark: SparkSession, frames: Sequence[DataFrame]) -> list[DataFrame]:
    """Each frame computed now and cut from its lineage (``localCheckpoint(eager=True)``), the frames side by side."""
    return run_all(spark, [lambda df=df: df.localCheckpoint(eager=True) for df in frames], "sparkpromo-checkpoint")
