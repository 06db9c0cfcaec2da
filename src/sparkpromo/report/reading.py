"""The report's constants and the small metric tables and registry files it reads."""

from __future__ import annotations

import datetime as dt
import difflib
import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pyspark.errors import AnalysisException
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from sparkpromo import columns as C
from sparkpromo import delta_io
from sparkpromo import tables as T
from sparkpromo.config import AppConfig, local_path

log = logging.getLogger(__name__)


SECTION_IDS = ("stages", "data-quality", "cv-grid", "holdout", "campaigns", "outcomes")
STAGE_ORDER = ("generate", "ingest", "clean", "features", "train", "recommend")
# Holdout metrics on a 0..1 scale, charted together; novelty (bits) gets a panel of its own, rmse is in the table.
UNIT_METRICS = ("ndcg", "precision", "recall", "map", "coverage")
GRID_ORDER = ("rank", "reg_param", "alpha", "max_iter")
# Columns of the holdout table: the run's contenders, their scores with serving's exclusion, the model in service.
CONTENDER_ORDER = ("als", "popularity", "als_served", "popularity_served", "incumbent", "challenger")
INSTALL_HINT = "pip install 'sparkpromo[report]'"
RESULT_ITEMS = 8  # a stage's result values shown in the timings table; more end with "…"
_SAFE_NAME = re.compile(r"[^A-Za-z0-9_.-]")


class ReportError(ValueError):
    """The report cannot be written (unknown run id, no runs recorded); ``str()`` is one line."""


@dataclass(frozen=True)
class RunInfo:
    run_id: str
    run_date: dt.date | None
    finished_at: dt.datetime | None


@dataclass(frozen=True)
class Section:
    id: str
    title: str
    body: str


# ----------------------------------------------------------------------------------------------------------------
# Reading the metric tables
# ----------------------------------------------------------------------------------------------------------------
def _table(spark: SparkSession, cfg: AppConfig, table: T.Table, version: int | None = None) -> DataFrame | None:
    uri = table.uri(cfg)
    if not delta_io.is_delta(spark, uri):
        return None
    return delta_io.read(spark, uri, version).transform(T.legacy_run_id_renamed)  # a table train has not migrated


def read_text(spark: SparkSession, uri: str) -> str | None:
    """A small text file (registry JSON) from any lakehouse URI; None when it does not exist."""
    path = local_path(uri)
    if path is not None and path.is_file():
        return path.read_text(encoding="utf-8")
    if path is not None and not path.exists():
        return None
    try:  # a remote URI, or the one-file folder train writes
        row = spark.read.text(uri, wholetext=True).first()
    except AnalysisException as e:
        if "PATH_NOT_FOUND" in str(e):
            return None
        raise
    return None if row is None else str(row[0])


def _json(text: str | None, what: str) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        log.warning("%s is not valid JSON; left out of the report", what)
        return None


def list_runs(spark: SparkSession, cfg: AppConfig) -> list[RunInfo]:
    """Every run id in ``metrics/stages``, newest first (by run date, then finish time)."""
    stages = _table(spark, cfg, T.STAGE_RUNS)
    if stages is None:
        return []
    rows = (stages.groupBy(C.RUN_ID)
            .agg(F.max(C.RUN_DATE).alias(C.RUN_DATE), F.max("finished_at").alias("finished_at")).collect())
    runs = [RunInfo(r[C.RUN_ID], r[C.RUN_DATE], r["finished_at"]) for r in rows]
    runs.sort(key=lambda r: (r.run_date or dt.date.min, r.finished_at or dt.datetime.min, r.run_id), reverse=True)
    return runs


def resolve_run(runs: Sequence[RunInfo], run_id: str | None, where: str = "metrics/stages") -> RunInfo:
    """The requested run (default: the newest); :class:`ReportError` naming the nearest valid ids otherwise."""
    if not runs:
        raise ReportError(f"no runs recorded in {where}: run the pipeline first (sparkpromo run)")
    if run_id is None:
        return runs[0]
    for r in runs:
        if r.run_id == run_id:
            return r
    ids = [r.run_id for r in runs]
    near = difflib.get_close_matches(run_id, ids, n=5, cutoff=0.5)
    latest = [i for i in ids[:3] if i not in near]
    hint = "; ".join(part for part in (f"nearest: {', '.join(near)}" if near else "",
                                       f"latest: {', '.join(latest)}" if latest else "") if part)
    raise ReportError(f"unknown run id {run_id!r} in {where}; {hint}")


__all__ = [
    "SECTION_IDS", "STAGE_ORDER", "UNIT_METRICS", "GRID_ORDER", "CONTENDER_ORDER", "INSTALL_HINT", "RESULT_ITEMS",
    "ReportError", "RunInfo", "Section", "read_text", "list_runs", "resolve_run",
]
