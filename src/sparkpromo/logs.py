"""Logging in one consistent format: every line carries the run id; stages log start, end, elapsed and counts."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger("sparkpromo")

_run_id = "-"


class _RunIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.run_id = _run_id
        return True


class RedactUriFilter(logging.Filter):
    """Masks URI credentials (``https://user:pass@host`` -> ``https://***@host``) in every record it passes, so a
    URI carrying them can be logged by any module, MLflow's and Spark's included."""

    def filter(self, record: logging.LogRecord) -> bool:
        from sparkpromo.config import redact_uri

        message = record.getMessage()
        redacted = redact_uri(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


def setup_logging(verbose: bool = False, run_id: str = "-") -> None:
    global _run_id
    _run_id = run_id
    handler = logging.StreamHandler()
    handler.addFilter(_RunIdFilter())
    handler.addFilter(RedactUriFilter())
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s run=%(run_id)s %(name)s: %(message)s",
                                           "%Y-%m-%dT%H:%M:%S"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    # py4j chatters at INFO on every call; keep it quiet unless asked.
    logging.getLogger("py4j").setLevel(logging.INFO if verbose else logging.WARNING)


def error_summary(e: BaseException) -> str:
    """``<ExceptionClass>: <first line of its message>`` for a one-line report. A JVM failure reaches Python as
    py4j's ``Py4JJavaError`` ("An error occurred while calling o123.save."), which says nothing: name the Java
    exception and its message instead (e.g. Delta's ``ConcurrentAppendException: ... concurrent update``)."""
    name, text = type(e).__name__, str(e)
    java = getattr(e, "java_exception", None)
    if java is not None:
        try:
            name, text = str(java.getClass().getSimpleName()), str(java.getMessage() or "")
        except Exception:  # noqa: BLE001 - the gateway may be gone; keep py4j's own text
            pass
    lines = text.strip().splitlines()
    return f"{name}: {lines[0]}" if lines else name


@contextlib.contextmanager
def stage(name: str, **fields: Any) -> Iterator[dict[str, Any]]:
    """Log ``stage=<name> status=start|end|failed elapsed_s=..`` plus whatever counts the body adds to the dict."""
    counts: dict[str, Any] = dict(fields)
    t0 = time.perf_counter()
    log.info("stage=%s status=start", name)
    try:
        yield counts
    except Exception as e:
        log.error("stage=%s status=failed elapsed_s=%.1f error=%s", name, time.perf_counter() - t0, error_summary(e))
        raise
    counts["elapsed_s"] = round(time.perf_counter() - t0, 2)
    extra = " ".join(f"{k}={v}" for k, v in counts.items())
    log.info("stage=%s status=end %s", name, extra)


PROGRESS_STAGES = 3  # stages named in a progress line; the others are summed


def progress_summary(stages: Sequence[Any]) -> str:
    """`` (12/40 tasks in 19 active stages; running: stage 7 3/8, stage 9 1/4)``: the totals, and only the stages
    that have started (a plan with many branches queues dozens at 0/N, which say nothing)."""
    if not stages:
        return ""
    done, total = sum(s.numCompletedTasks for s in stages), sum(s.numTasks for s in stages)
    started = [s for s in stages if s.numActiveTasks or s.numCompletedTasks][:PROGRESS_STAGES]
    running = ", ".join(f"stage {s.stageId} {s.numCompletedTasks}/{s.numTasks}" for s in started)
    plural = "s" if len(stages) != 1 else ""
    return f" ({done}/{total} tasks in {len(stages)} active stage{plural}" + (f"; running: {running})" if running
                                                                                 else ")")


@contextlib.contextmanager
def spark_progress(spark: SparkSession, label: str, every_s: float = 30.0) -> Iterator[None]:
    """While the block runs, log every ``every_s`` seconds how long it has run and the task progress of Spark's
    active stages (for long actions: cross-validation, scoring every user)."""
    from sparkpromo.session import is_connect

    done = threading.Event()
    # A Connect client has no SparkContext and so no status tracker: it logs the elapsed time alone.
    tracker = None if is_connect(spark) else spark.sparkContext.statusTracker()
    t0 = time.perf_counter()

    def report() -> None:
        while not done.wait(every_s):
            stages = [] if tracker is None else [
                s for s in (tracker.getStageInfo(i) for i in tracker.getActiveStageIds()) if s is not None]
            log.info("%s: running for %.0fs%s", label, time.perf_counter() - t0, progress_summary(stages))

    thread = threading.Thread(target=report, name=f"progress-{label}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
