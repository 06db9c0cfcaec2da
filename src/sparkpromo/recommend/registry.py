"""The model registry: ``<lakehouse>/registry/<entry>/`` per training (the run id, or ``<run_id>.r2``, ... for a
run trained again while its model was in service), ``registry/LATEST`` naming the entry in service."""

from __future__ import annotations

import json
import logging

from pyspark.errors import AnalysisException
from pyspark.ml.recommendation import ALSModel
from pyspark.sql import SparkSession

from sparkpromo.config import RETRAINED_SEPARATOR, AppConfig, join_uri
from sparkpromo.frame import local_rows
from sparkpromo.recommend.common import (
    _RUN_ID_RE,
    ALS,
    CHAMPIONS,
    POPULARITY,
    RecommendError,
)

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------------------------------
# Model registry
# ----------------------------------------------------------------------------------------------------------------
def write_text(spark: SparkSession, uri: str, text: str) -> None:
    """Write a small text document as a one-file folder at ``uri`` through a DataFrame, so any lakehouse URI (local,
    s3a, abfss, dbfs) works in a classic and a Spark Connect session alike; :func:`read_small_text`
    (``spark.read.text(uri, wholetext=True)``) reads it back, as it reads a plain file."""
    local_rows(spark, [(text,)], "value string").coalesce(1).write.mode("overwrite").text(uri)


def read_small_text(spark: SparkSession, uri: str) -> str | None:
    """A small text file through Spark's Hadoop FS (local, s3a, abfss, dbfs); None when it does not exist."""
    try:
        row = spark.read.text(uri, wholetext=True).first()
    except AnalysisException as e:
        cond = getattr(e, "getCondition", getattr(e, "getErrorClass", lambda: None))()
        if cond == "PATH_NOT_FOUND" or "PATH_NOT_FOUND" in str(e):
            return None
        raise
    return "" if row is None else str(row[0])


def latest_run_id(spark: SparkSession, cfg: AppConfig) -> str | None:
    """The registry entry in ``<lakehouse>/registry/LATEST`` (the model in service); None when nothing is registered.
    Raises :class:`RecommendError` on a malformed id."""
    registry = join_uri(cfg.lakehouse, "registry")
    latest = read_small_text(spark, join_uri(registry, "LATEST"))
    if latest is None or not latest.strip():
        return None
    run = latest.strip()
    if not _RUN_ID_RE.match(run):
        raise RecommendError(f"{registry}/LATEST: invalid model run id {run[:80]!r}")
    return run


def load_champion(spark: SparkSession, cfg: AppConfig) -> tuple[str | None, ALSModel | None, str]:
    """``(model_run_id, model, champion)`` from ``<lakehouse>/registry/LATEST`` and that entry's ``params.json``.

    No ``LATEST`` (nothing trained yet) gives ``(None, None, "popularity")``. The ALS model is loaded only when it is
    the champion. Files are read through Spark, so any Hadoop URI works.
    """
    registry = join_uri(cfg.lakehouse, "registry")
    run = latest_run_id(spark, cfg)
    if run is None:
        log.warning("no model registered (%s/LATEST missing or empty): popularity candidates only", registry)
        return None, None, POPULARITY
    params_uri = join_uri(registry, run, "params.json")
    text = read_small_text(spark, params_uri)
    if text is None:
        raise RecommendError(f"{params_uri}: missing (registry run {run} is incomplete)")
    try:
        champion = json.loads(text).get("champion")
    except (ValueError, AttributeError):
        raise RecommendError(f"{params_uri}: not a JSON object") from None
    if champion not in CHAMPIONS:
        raise RecommendError(f"{params_uri}: champion must be one of {', '.join(CHAMPIONS)}, got {champion!r}")
    model = ALSModel.load(join_uri(registry, run, "model")) if champion == ALS else None
    log.info("champion of model run %s: %s", run, champion)
    return run, model, champion


# A run trained again while its model is in service writes a new entry, ``<run_id>.r2``, ``.r3``, ...: the entry in
# service is never rewritten, and LATEST moves only to a complete entry that passed the gate. Run ids cannot end so
# (config.check_path_id).


def _owner(text: str) -> object:
    try:
        doc = json.loads(text)
    except ValueError:
        return None
    return doc.get("run_id") if isinstance(doc, dict) else None


def run_entries(spark: SparkSession, cfg: AppConfig, run_id: str) -> tuple[list[str], str]:
    """``(entries, free)``: the registry entries of ``run_id`` that have a ``params.json`` (written last but
    LATEST, so an entry with one is complete), oldest first (``run_id``, then ``run_id.r2``, ``run_id.r3``, ... whose
    params.json names ``run_id``), and the first attempt name that holds no entry at all."""
    entries: list[str] = []
    n = 1
    while True:
        entry = run_id if n == 1 else f"{run_id}{RETRAINED_SEPARATOR}{n}"
        text = read_small_text(spark, join_uri(cfg.lakehouse, "registry", entry, "params.json"))
        if text is None:
            return entries, entry
        if n == 1 or _owner(text) == run_id:
            entries.append(entry)
        n += 1


def next_entry(entries: list[str], free: str, latest: str | None) -> str:
    """Where a training writes, given its run's ``entries`` and ``free`` name (:func:`run_entries`) and the entry in
    service: its newest entry, unless that one is in service (then ``free``); ``free`` for a first training."""
    if entries and entries[-1] != latest:
        return entries[-1]
    return free


__all__ = ["latest_run_id", "load_champion", "read_small_text", "write_text", "run_entries", "next_entry"]
