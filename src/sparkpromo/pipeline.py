"""Stage orchestration shared by the CLI, the thin ``jobs/*.py`` scripts and Databricks wheel tasks."""

from __future__ import annotations

import datetime as dt
import importlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from sparkpromo import columns as C
from sparkpromo import io
from sparkpromo.config import AppConfig, check_path_id, local_path
from sparkpromo.logs import stage

log = logging.getLogger(__name__)

STAGES = ("ingest", "clean", "features", "train", "recommend", "measure")
FORGET = "forget"  # not a stage: its manifest record moves the versions that later stages read

# The Delta tables each stage reads and writes, as (layer, name). A stage rerun for the same run id whose inputs
# and outputs are still at the versions its last successful run recorded is skipped: a retry changes nothing,
# not even a table version. (Ingest has its own per-file idempotence and no Delta inputs.)
STAGE_IO: dict[str, tuple[tuple[tuple[str, str], ...], tuple[tuple[str, str], ...]]] = {
    "clean": ((("bronze", "events"), ("bronze", "users"), ("bronze", "items")),
              (("silver", "events"), ("silver", "users"), ("silver", "items"), ("quarantine", "rows"))),
    "features": ((("silver", "events"), ("silver", "users"), ("silver", "items")),
                 (("gold", "user_features"), ("gold", "item_features"), ("gold", "interactions"),
                  ("gold", "id_map"))),
    "train": ((("gold", "interactions"), ("gold", "id_map")), (("metrics", "model"),)),
    "recommend": ((("gold", "user_features"), ("gold", "item_features"), ("gold", "interactions"),
                   ("gold", "id_map"), ("silver", "events"), ("metrics", "model"), ("metrics", "campaign_actions")),
                  (("gold", "recommendations"),)),
    "measure": ((("gold", "recommendations"), ("silver", "events")),
                (("metrics", "campaign_outcomes"), ("metrics", "uplift"), ("metrics", "campaign_actions"))),
}


@dataclass(frozen=True)
class RunContext:
    run_id: str
    run_date: dt.date

    def __post_init__(self) -> None:
        check_path_id(self.run_id, "run id")

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


def generate_responses_sample(spark: SparkSession, cfg: AppConfig, ctx: RunContext, lakehouse: str
                               ) -> dict[str, Any]:
    """The sample shop's response to the offers ``lakehouse`` listed on the run date (its
    ``gold/recommendations``; prices from its ``silver/items``): ``events/response-<date>.csv`` in the landing zone
    (see :func:`sparkpromo.generate.generate_responses`). Sample data only: the run's listed users are streamed
    to the driver."""
    from sparkpromo.config import join_uri
    from sparkpromo.generate import Assignment, generate_responses

    out = local_path(cfg.landing)
    if out is None:
        raise ValueError(f"landing: the sample generator writes local files only, not {cfg.landing}")
    types = {c.id: c.type for c in cfg.campaigns}
    recs = (io.read(spark, join_uri(lakehouse, "gold", "recommendations"))
            .where((F.col(C.RUN_DATE) == F.lit(ctx.run_date)) & (F.col(C.RANK) == 1)))
    items = io.read(spark, join_uri(lakehouse, "silver", "items")).select(C.ITEM_ID, C.PRICE)
    rows = (recs.join(items, C.ITEM_ID, "left")
            .select(C.CAMPAIGN_ID, C.USER_ID, C.IS_CONTROL, C.ITEM_ID, F.coalesce(F.col(C.PRICE), F.lit(10.0)))
            .toLocalIterator())
    assigned = [Assignment(types.get(r[0], ""), r[1], bool(r[2]), r[3], float(r[4])) for r in rows]
    g = cfg.generate
    report = generate_responses(out, assigned, ctx.run_date, cfg.measure.window_days, seed=g.seed,
                                base_rate=g.response_base_rate, uplift=g.response_uplift)
    return {"responses_file": str(report.path), "response_users": report.users,
            "response_purchases": report.purchases}


def table_versions(spark: SparkSession, cfg: AppConfig, tables: tuple[tuple[str, str], ...]) -> dict[str, int | None]:
    return {f"{layer}.{name}": io.version(spark, cfg.table(layer, name)) for layer, name in tables}


def _last_run(spark: SparkSession, cfg: AppConfig, ctx: RunContext, name: str) -> dict[str, Any] | None:
    uri = cfg.table("metrics", "stages")
    if not io.is_delta(spark, uri):
        return None
    row = (io.read(spark, uri).where((F.col(C.RUN_ID) == ctx.run_id) & (F.col("stage") == name))
           .select("io_versions", "result").limit(1).collect())
    if not row:
        return None
    io_versions = row[0]["io_versions"]
    return {"io": None if io_versions is None else json.loads(io_versions),
            "result": json.loads(row[0]["result"] or "{}")}


def manifest_versions(spark: SparkSession, cfg: AppConfig) -> dict[str, int]:
    """The run manifest: table URI -> the version the last *successful* run of the stage that writes it left (its
    ``metrics/stages`` row, written last). ``forget`` records the versions it leaves as the stage ``forget``."""
    uri = cfg.table("metrics", "stages")
    if not io.is_delta(spark, uri):
        return {}
    rows = (io.read(spark, uri).where(F.col("io_versions").isNotNull()).select("stage", "finished_at", "io_versions")
            .collect())
    out: dict[str, int] = {}
    for r in sorted(rows, key=lambda r: r["finished_at"] or dt.datetime.min):
        versions: dict[str, int | None] = json.loads(r["io_versions"])
        owned = ({f"{layer}.{name}" for layer, name in STAGE_IO[r["stage"]][1]} if r["stage"] in STAGE_IO
                 else set(versions) if r["stage"] == FORGET else set())
        for table, v in versions.items():
            if table in owned and v is not None:
                layer, _, name = table.partition(".")
                out[cfg.table(layer, name)] = int(v)
    return out


def _pins(spark: SparkSession, cfg: AppConfig, name: str) -> dict[str, int]:
    """What stage ``name`` reads at pinned versions: every table of the manifest but its own outputs."""
    own = {cfg.table(layer, t) for layer, t in STAGE_IO.get(name, ((), ()))[1]}
    return {uri: v for uri, v in manifest_versions(spark, cfg).items() if uri not in own}


class StrictError(RuntimeError):
    """Under ``--strict``, a stage finished with a warning that a scheduled run must not pass over."""


def _strict(result: dict[str, Any], strict: bool) -> dict[str, Any]:
    if strict and result.get("warning"):
        raise StrictError(f"{result['warning']} (--strict)")
    return result


def run_stage(name: str, spark: SparkSession, cfg: AppConfig, ctx: RunContext, force: bool = False,
              strict: bool = False, full_refresh: bool = False) -> dict[str, Any]:
    """Run one stage, log it in the common format and record its timing in ``metrics/stages``.

    A rerun of the same run id whose input and output tables have not moved since its last success is skipped.
    A stage result with a ``warning`` (e.g. recommend served no offers) raises :class:`StrictError` under
    ``strict``, after the stage's tables and record are written. ``full_refresh`` (clean only, never skipped)
    rebuilds silver from the whole of bronze instead of merging the rows added since the last clean.

    Atomicity across stages: the stage reads every table an upstream stage writes at the version recorded by that
    stage's last successful run (:func:`manifest_versions`), so what a failed stage wrote before failing is
    invisible downstream until its rerun succeeds.
    """
    # A half-finished upstream stage is invisible: its inputs are read as the upstream's last success left them.
    with io.pinned(_pins(spark, cfg, name)):
        return _run_stage(name, spark, cfg, ctx, force, strict, full_refresh and name == "clean")


def _run_stage(name: str, spark: SparkSession, cfg: AppConfig, ctx: RunContext, force: bool, strict: bool,
               full_refresh: bool = False) -> dict[str, Any]:
    io_tables = STAGE_IO.get(name)
    if io_tables and not (force or full_refresh):
        last = _last_run(spark, cfg, ctx, name)
        current = table_versions(spark, cfg, io_tables[0] + io_tables[1])
        if last is not None and last["io"] is not None and last["io"] == current:
            log.info("stage=%s status=skipped reason=inputs_and_outputs_unchanged run_id=%s", name, ctx.run_id)
            # The recorded result in full (nested metrics and campaigns too): a skipped stage reports what its
            # last run reported, in the same shape.
            return _strict({**last["result"], "skipped": True}, strict)
    t0 = time.perf_counter()
    with stage(name, run_date=ctx.run_date.isoformat()) as counts:
        if name == "ingest":
            result = _call("ingest", "run_ingest")(spark, cfg, ctx.run_id)
        elif name == "clean":
            result = _call("clean", "run_clean")(spark, cfg, ctx.run_id, ctx.as_of, full_refresh=full_refresh)
        elif name == "features":
            result = _call("features", "run_features")(spark, cfg, ctx.run_id, ctx.run_date)
        elif name == "train":
            result = _call("train", "run_train")(spark, cfg, ctx.run_id)
        elif name == "recommend":
            result = _call("recommend", "run_recommend")(spark, cfg, ctx.run_id, ctx.run_date)
        elif name == "measure":
            result = _call("measure", "run_measure")(spark, cfg, ctx.run_id, ctx.run_date)
        else:
            raise ValueError(f"unknown stage {name}")
        counts.update({k: v for k, v in result.items() if isinstance(v, (int, float, str))})
    result = {**result, "skipped": False}
    if name == "ingest" and not any(v for k, v in result.items() if k.endswith("_rows")) \
            and _last_run(spark, cfg, ctx, name) is not None:
        return result  # a retry that found nothing new leaves every table, the run record too, as it was
    if name == "recommend" and isinstance(result.get("campaigns"), dict):
        record_campaign_metrics(spark, cfg, ctx, result["campaigns"])
    versions = table_versions(spark, cfg, io_tables[0] + io_tables[1]) if io_tables else None
    record_stage_time(spark, cfg, ctx, name, time.perf_counter() - t0, versions, result)
    return _strict(result, strict)


def record_stage_time(spark: SparkSession, cfg: AppConfig, ctx: RunContext, name: str, seconds: float,
                      versions: dict[str, int | None] | None = None, result: dict[str, Any] | None = None) -> None:
    """One row per (run id, stage): timing, the table versions it left, and its (small) result summary: the whole
    result (nested metrics and campaigns included, ``skipped`` left out), which a skipped rerun reports again."""
    scalars = {k: v for k, v in (result or {}).items() if k != "skipped"}
    row = [(ctx.run_id, ctx.run_date, name, float(seconds), dt.datetime.now(dt.UTC).replace(tzinfo=None),
            None if versions is None else json.dumps(versions, sort_keys=True), json.dumps(scalars, default=str))]
    df = spark.createDataFrame(row, f"{C.RUN_ID} string, {C.RUN_DATE} date, stage string, elapsed_s double, "
                                    "finished_at timestamp, io_versions string, result string")
    io.replace_partition(df, cfg.table("metrics", "stages"), {C.RUN_ID: ctx.run_id, "stage": name},
                         name="metrics.stages")


def record_campaign_metrics(spark: SparkSession, cfg: AppConfig, ctx: RunContext,
                            campaigns: dict[str, dict[str, Any]]) -> None:
    """The per-campaign summary (audience, served, control, fallback share, coverage, Gini...), one row per metric,
    replaced per run: what the run report and the fairness figures read."""
    rows = [(ctx.run_id, ctx.run_date, cid, k, float(v)) for cid, m in campaigns.items() for k, v in m.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)]
    df = spark.createDataFrame(rows, f"{C.RUN_ID} string, {C.RUN_DATE} date, {C.CAMPAIGN_ID} string, "
                                     "metric string, value double")
    io.replace_partition(df, cfg.table("metrics", "campaigns"), {C.RUN_ID: ctx.run_id}, name="metrics.campaigns")
