"""Stage orchestration shared by the CLI, the thin ``jobs/*.py`` scripts and Databricks wheel tasks."""

from __future__ import annotations

import datetime as dt
import importlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyspark.sql import SparkSession

from sparkpromo import columns as C
from sparkpromo import io
from sparkpromo.config import AppConfig, local_path
from sparkpromo.logs import stage

log = logging.getLogger(__name__)

STAGES = ("ingest", "clean", "features", "train", "recommend")


@dataclass(frozen=True)
class RunContext:
    run_id: str
    run_date: dt.date

    @property
    def as_of(self) -> dt.datetime:
        """The run's reference instant: the end of its run date (UTC). Events after it are 'in the future'."""
        return dt.datetime.combine(self.run_date + dt.timedelta(days=1), dt.time())

    @staticmethod
    def default_run_id(run_date: dt.date) -> str:
        return run_date.strftime("%Y%m%d")


class StageNotAvailable(RuntimeError):
    """The stage's module is not part of this build."""


def _call(module: str, func: str) -> Callable[..., Any]:
    try:
        mod = importlib.import_module(f"sparkpromo.{module}")
    except ModuleNotFoundError as e:
        if e.name == f"sparkpromo.{module}":
            raise StageNotAvailable(f"stage '{module}' is not built yet") from None
        raise
    return getattr(mod, func)


def generate_sample(cfg: AppConfig, ctx: RunContext, events: int | None = None) -> dict[str, Any]:
    """Write the generated sample shop into the landing zone (skipped when identical files are already there)."""
    from sparkpromo.generate import generate_shop

    out = local_path(cfg.landing)
    if out is None:
        raise ValueError(f"landing: the sample generator writes local files only, not {cfg.landing}")
    g = cfg.generate
    n = events or g.events
    marker = out / "_sample_params.json"
    params = {"events": n, "seed": g.seed, "days": g.days, "end": ctx.run_date.isoformat(), "dirty": g.dirty,
              "users": g.users, "items": g.items}
    if marker.exists() and json.loads(marker.read_text()) == params:
        log.info("sample data with the same parameters already in %s; not regenerating", out)
        return {"generated_events": 0}
    report = generate_shop(out, n_events=n, seed=g.seed, days=g.days, end=ctx.run_date, n_users=g.users,
                           n_items=g.items, dirty=g.dirty)
    marker.write_text(json.dumps(params))
    return {"generated_events": report.events}


def run_stage(name: str, spark: SparkSession, cfg: AppConfig, ctx: RunContext) -> dict[str, Any]:
    """Run one stage, log it in the common format and record its timing in ``metrics/stages``."""
    t0 = time.perf_counter()
    with stage(name, run_date=ctx.run_date.isoformat()) as counts:
        if name == "ingest":
            result = _call("ingest", "run_ingest")(spark, cfg, ctx.run_id)
        elif name == "clean":
            result = _call("clean", "run_clean")(spark, cfg, ctx.run_id, ctx.as_of)
        elif name == "features":
            result = _call("features", "run_features")(spark, cfg, ctx.run_id, ctx.run_date)
        elif name == "train":
            result = _call("train", "run_train")(spark, cfg, ctx.run_id)
        elif name == "recommend":
            result = _call("recommend", "run_recommend")(spark, cfg, ctx.run_id, ctx.run_date)
        else:
            raise ValueError(f"unknown stage {name}")
        counts.update({k: v for k, v in result.items() if isinstance(v, (int, float, str))})
    record_stage_time(spark, cfg, ctx, name, time.perf_counter() - t0)
    return result


def record_stage_time(spark: SparkSession, cfg: AppConfig, ctx: RunContext, name: str, seconds: float) -> None:
    row = [(ctx.run_id, ctx.run_date, name, float(seconds), dt.datetime.now(dt.UTC).replace(tzinfo=None))]
    df = spark.createDataFrame(row, f"{C.RUN_ID} string, {C.RUN_DATE} date, stage string, elapsed_s double, "
                                    "finished_at timestamp")
    io.replace_partition(df, cfg.table("metrics", "stages"), {C.RUN_ID: ctx.run_id, "stage": name},
                         name="metrics.stages")


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, default=str))
