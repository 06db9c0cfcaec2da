"""Stage orchestration shared by the CLI, the thin ``jobs/*.py`` scripts and Databricks wheel tasks."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pyspark.sql import Row, SparkSession
from pyspark.sql import functions as F

import sparkpromo
from sparkpromo import columns as C
from sparkpromo import delta_io, schemas
from sparkpromo import tables as T
from sparkpromo.clean import run_clean
from sparkpromo.config import CLEAN_PRIVACY_KEYS, AppConfig, check_path_id, local_path
from sparkpromo.features import run_features
from sparkpromo.frame import local_rows
from sparkpromo.ingest import run_ingest
from sparkpromo.logs import stage
from sparkpromo.measure import read_actions, run_measure
from sparkpromo.recommend import run_recommend
from sparkpromo.run_records import decoded, last_record, record_stage_time, stage_rows
from sparkpromo.train import run_train

log = logging.getLogger(__name__)

STAGES = ("ingest", "clean", "features", "train", "recommend", "measure")
FORGET = "forget"  # not a stage: its manifest record moves the versions that later stages read

# The Delta tables each stage reads and writes, as (layer, name). A stage rerun for the same run id whose inputs
# and outputs are still at the versions its last successful run recorded is skipped: a retry changes nothing,
# not even a table version. (Ingest has its own per-file idempotence and no Delta inputs.)
STAGE_IO: dict[str, tuple[tuple[T.Table, ...], tuple[T.Table, ...]]] = {
    "clean": ((T.BRONZE_EVENTS, T.BRONZE_USERS, T.BRONZE_ITEMS),
              (T.SILVER_EVENTS, T.SILVER_USERS, T.SILVER_ITEMS, T.QUARANTINE)),
    "features": ((T.SILVER_EVENTS, T.SILVER_USERS, T.SILVER_ITEMS),
                 (T.USER_FEATURES, T.ITEM_FEATURES, T.INTERACTIONS, T.ID_MAP)),
    "train": ((T.INTERACTIONS, T.ID_MAP), (T.MODEL_METRICS,)),
    # Not metrics.campaign_actions: the run date's own measure writes it after recommend, so its version moves on
    # every run; recommend reads only the decisions measured before its run date (stage_fingerprint's "data").
    "recommend": ((T.USER_FEATURES, T.ITEM_FEATURES, T.INTERACTIONS, T.ID_MAP, T.SILVER_EVENTS, T.MODEL_METRICS),
                  (T.RECOMMENDATIONS,)),
    "measure": ((T.RECOMMENDATIONS, T.SILVER_EVENTS), (T.CAMPAIGN_OUTCOMES, T.UPLIFT, T.CAMPAIGN_ACTIONS)),
}

# The tables the run manifest tracks: those a stage writes and records. Bronze is not among them: ingest appends to
# it while other stages read it, so each stage pins bronze where it first sees it (run_stage).
RECORDED = frozenset(t.key for _, outputs in STAGE_IO.values() for t in outputs)

# The configuration each stage reads, as dotted paths into AppConfig (``*`` = every element of a list). A stage is
# skipped only when these (hashed), the package version and, for DATED_STAGES, the run date are what its last
# successful run recorded, as well as its table versions; so changing a campaign reruns recommend (and measure,
# whose input recommendations then moved) and no other stage. Ingest has no entry: it never skips, and it loads
# only files bronze does not hold yet, whatever the configuration says.
STAGE_CONFIG: dict[str, tuple[str, ...]] = {
    "clean": ("sources", "clean", *(f"privacy.{k}" for k in CLEAN_PRIVACY_KEYS)),
    "features": ("features", "sources.kind", "privacy.consent_without_users"),
    # shuffle_partitions bounds the ALS blocks; mlflow says where the run is logged
    "train": ("train", "spark.shuffle_partitions", "recommend.repeatable_categories", "mlflow"),
    # privacy.key_env names the key of the coupon codes
    "recommend": ("campaigns", "recommend", "measure.pause_negative", "measure.reallocate_budgets",
                  "privacy.key_env"),
    # measure reads a campaign's type (outcomes), budget and dates (reallocation among the campaigns active on the
    # next run date), not its rules or offer
    "measure": ("measure", "campaigns.*.id", "campaigns.*.type", "campaigns.*.budget", "campaigns.*.valid_from",
                "campaigns.*.valid_to"),
}
# Stages that take in only what changed since their last run, unless asked for a full refresh.
FULL_REFRESH_STAGES = frozenset({"clean", "features", "measure"})
# Stages whose output depends on the run date, not only on the run id (clean: the future-event cut-off).
DATED_STAGES = frozenset({"clean", "features", "recommend", "measure"})


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


def sample_dates(cfg: AppConfig, run_date: dt.date) -> list[dt.date]:
    """The run dates of a daily sample ending on ``run_date``: one per day of ``generate.days``."""
    n = cfg.generate.days
    return [run_date - dt.timedelta(days=n - 1 - i) for i in range(n)]


def generate_sample(cfg: AppConfig, ctx: RunContext, events: int | None = None, deliver: bool = True
                    ) -> dict[str, Any]:
    """Write the generated sample shop into the landing zone (skipped when identical files are already there).

    With ``generate.daily`` the shop is one batch per day of the ``generate.days`` ending on the run date, staged
    (:func:`sparkpromo.generate.generate_daily`); ``deliver`` moves every batch into the landing zone at once,
    otherwise :func:`run_days` moves each in just before that day's run.
    """
    from sparkpromo.generate import deliver_day, generate_daily, generate_shop

    out = local_path(cfg.landing)
    if out is None:
        raise ValueError(f"landing: the sample generator writes local files only, not {cfg.landing}")
    g = cfg.generate
    n = events or g.events
    marker = out / "_sample_params.json"
    params: dict[str, Any] = {"events": n, "seed": g.seed, "days": g.days, "end": ctx.run_date.isoformat(),
                              "dirty": g.dirty, "users": g.users, "items": g.items}
    if g.daily:
        params["daily"] = True
    before = json.loads(marker.read_text()) if marker.exists() else None
    lake = local_path(cfg.lakehouse)
    ingested = before is not None and lake is not None and (lake / "_checkpoints" / "ingest").is_dir()
    changed = sorted(k for k in params.keys() | (before or {}).keys()
                     if k != "end" and (before or {}).get(k) != params.get(k))
    if ingested and changed:
        # A new shop is written under the same file names, and ingest reads a file name once: it would never be
        # read, and the run would go on with the old shop's rows.
        raise ValueError(f"the sample in {out} was generated with other {', '.join(changed)} and the lakehouse "
                         f"{cfg.lakehouse} has ingested it: a new sample needs a fresh lakehouse and landing "
                         "(SPARKPROMO_LAKEHOUSE, SPARKPROMO_LANDING), or both removed")
    if before is not None and (before == params or (ingested and not g.daily)):
        # (another run date alone, once ingested: the shop stands; its files would not be read again anyway)
        log.info("sample data already in %s (generated for %s); not regenerating", out, before["end"])
        generated = 0
    elif g.daily:
        marker.unlink(missing_ok=True)  # a half-written shop is never taken for a finished one
        generated = generate_daily(out, n_events=n, seed=g.seed, days=g.days, end=ctx.run_date + dt.timedelta(1),
                                   n_users=g.users, n_items=g.items, dirty=g.dirty).shop.events
        marker.write_text(json.dumps(params))
    else:
        marker.unlink(missing_ok=True)
        generated = generate_shop(out, n_events=n, seed=g.seed, days=g.days, end=ctx.run_date, n_users=g.users,
                                  n_items=g.items, dirty=g.dirty).events
        marker.write_text(json.dumps(params))
    if not g.daily:
        return {"generated_events": generated}
    days = sample_dates(cfg, ctx.run_date)
    if deliver:
        for day in days:
            deliver_day(out, day)
    return {"generated_events": generated, "generated_days": len(days)}


def run_days(spark: SparkSession, cfg: AppConfig, dates: list[dt.date], stages: list[str], force: bool = False,
             strict: bool = False, deliver: bool = False, ctx: RunContext | None = None,
             full_refresh: bool = False) -> dict[str, Any]:
    """Run ``stages`` once per date, oldest first, each date under its own run id (``YYYYMMDD``): a backfill, or
    the daily replay of a generated shop. With ``deliver``, each date's staged sample batch
    (:func:`sparkpromo.generate.deliver_day`) lands just before that date's stages, so each run ingests only what
    arrived by its date. A single date runs under ``ctx`` when given (its run id may be the caller's).

    Result keys are ``<stage>.<key>``, prefixed ``<date>.`` when there are several dates; each such date also
    reports its ``<date>.run_id`` (and ``<date>.delivered_files`` with ``deliver``). A failing stage raises: the
    dates before it are committed, later ones are not run.

    A rerun resumes: a date before the last whose run id already recorded a success of every stage asked for is
    not run again (``<date>.skipped``), since rerunning it over tables that later dates have moved would redo it
    with their data; ``force`` reruns every date. The last date reruns as a single run would (each stage skipped
    when its tables are unchanged). ``full_refresh`` rebuilds silver on the first date run; later dates clean
    incrementally from that rebuild.
    """
    from sparkpromo.generate import deliver_day

    out = local_path(cfg.landing) if deliver else None
    if deliver and out is None:
        raise ValueError(f"landing: the sample generator writes local files only, not {cfg.landing}")
    result: dict[str, Any] = {}
    for day in dates:
        single = len(dates) == 1
        day_ctx = ctx if single and ctx is not None else RunContext(RunContext.default_run_id(day), day)
        prefix = "" if single else f"{day.isoformat()}."
        if not single:
            result[f"{prefix}run_id"] = day_ctx.run_id
        if out is not None:
            result[f"{prefix}delivered_files"] = len(deliver_day(out, day))
        if day != dates[-1] and not force and all(last_record(spark, cfg, name, day_ctx.run_id) for name in stages):
            log.info("run_id=%s status=skipped reason=every_stage_done (a later date follows)", day_ctx.run_id)
            result[f"{prefix}skipped"] = True
            continue
        for name in stages:
            stage_result = run_stage(name, spark, cfg, day_ctx, force=force, strict=strict,
                                     full_refresh=full_refresh)
            result.update({f"{prefix}{name}.{k}": v for k, v in stage_result.items()})
        full_refresh = False  # one rebuild; the dates after it clean incrementally
    return result


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
    recs = (delta_io.read(spark, join_uri(lakehouse, "gold", "recommendations"))
            .where((F.col(C.RUN_DATE) == F.lit(ctx.run_date)) & (F.col(C.RANK) == 1)))
    items = delta_io.read(spark, join_uri(lakehouse, "silver", "items")).select(C.ITEM_ID, C.PRICE)
    rows = (recs.join(items, C.ITEM_ID, "left")
            .select(C.CAMPAIGN_ID, C.USER_ID, C.IS_CONTROL, C.ITEM_ID, F.coalesce(F.col(C.PRICE), F.lit(10.0)))
            .toLocalIterator())
    assigned = [Assignment(types.get(r[0], ""), r[1], bool(r[2]), r[3], float(r[4])) for r in rows]
    g = cfg.generate
    report = generate_responses(out, assigned, ctx.run_date, cfg.measure.window_days, seed=g.seed,
                                base_rate=g.response_base_rate, uplift=g.response_uplift)
    return {"responses_file": str(report.path), "response_users": report.users,
            "response_purchases": report.purchases}


def table_versions(spark: SparkSession, cfg: AppConfig, tables: tuple[T.Table, ...]) -> dict[str, int | None]:
    return {t.key: delta_io.version(spark, t.uri(cfg)) for t in tables}


def _canonical(value: Any) -> Any:
    """``value`` as plain JSON data: dataclasses as field mappings, mappings with sorted string keys, lists."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _canonical(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): _canonical(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    if isinstance(value, (dt.date, dt.datetime)):
        return value.isoformat()
    return value


def _pick(value: Any, path: list[str]) -> Any:
    if not path or value is None:
        return _canonical(value)
    head, rest = path[0], path[1:]
    if head == "*":
        return [_pick(v, rest) for v in value]
    return _pick(getattr(value, head), rest)


def config_digest(cfg: AppConfig, path: str) -> str:
    """SHA-256 of the canonical JSON of one :data:`STAGE_CONFIG` path of ``cfg``."""
    text = json.dumps(_pick(cfg, path.split(".")), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def stage_fingerprint(cfg: AppConfig, name: str, run_date: dt.date) -> dict[str, Any]:
    """What stage ``name`` depends on besides its tables: the package version, a digest per configuration path it
    reads (:data:`STAGE_CONFIG`) and, for :data:`DATED_STAGES`, the run date."""
    fp: dict[str, Any] = {"version": sparkpromo.__version__,
                          "config": {p: config_digest(cfg, p) for p in STAGE_CONFIG.get(name, ())}}
    if name in DATED_STAGES:
        fp["run_date"] = run_date.isoformat()
    return fp


def data_fingerprint(spark: SparkSession, cfg: AppConfig, name: str, run_date: dt.date) -> dict[str, str]:
    """What stage ``name`` reads from a table that is not among its inputs, as digests: recommend, with the feedback
    options on, the decisions of the latest measure before its run date."""
    if name != "recommend" or not (cfg.measure.pause_negative or cfg.measure.reallocate_budgets):
        return {}
    text = json.dumps(read_actions(spark, cfg, run_date), sort_keys=True, separators=(",", ":"), default=str)
    return {"campaign_actions": hashlib.sha256(text.encode("utf-8")).hexdigest()}


def record_to_build_on(spark: SparkSession, cfg: AppConfig, name: str) -> tuple[dict[str, Any] | None, str]:
    """Stage ``name``'s latest record (:func:`last_record`) when an incremental run can build on it: it recorded its
    tables and a fingerprint that is today's but for the run date (the same configuration it reads and package
    version). Otherwise None and why not."""
    last = last_record(spark, cfg, name)
    if last is None or last["io"] is None or last["fingerprint"] is None:
        return None, f"no earlier {name} run recorded"
    now = {k: v for k, v in stage_fingerprint(cfg, name, dt.date.min).items() if k != "run_date"}
    if {k: v for k, v in last["fingerprint"].items() if k != "run_date"} != now:
        return None, f"the {name} settings or the package version changed since the last run"
    return last, ""


def rerun_reason(last: Mapping[str, Any], versions: Mapping[str, int | None], fingerprint: Mapping[str, Any]
                 ) -> str | None:
    """Why a stage whose last success recorded ``last`` (:func:`last_record`) must run again; None when nothing it
    depends on changed. Reasons, ';'-separated: ``no_fingerprint`` (recorded before fingerprints existed),
    ``version:<old>-><new>``, ``run_date:<old>-><new>``, ``config:<paths>``, ``data:<names>``,
    ``tables:<tables>``."""
    if last.get("io") is None:
        return "no_record"
    old = last.get("fingerprint")
    reasons: list[str] = []
    if old is None:
        reasons.append("no_fingerprint")
    else:
        if old.get("version") != fingerprint["version"]:
            reasons.append(f"version:{old.get('version')}->{fingerprint['version']}")
        if old.get("run_date") != fingerprint.get("run_date"):
            reasons.append(f"run_date:{old.get('run_date')}->{fingerprint.get('run_date')}")
        was, now = old.get("config") or {}, fingerprint["config"]
        changed = sorted(p for p in set(was) | set(now) if was.get(p) != now.get(p))
        if changed:
            reasons.append("config:" + ",".join(changed))
        was, now = old.get("data") or {}, fingerprint.get("data") or {}
        changed = sorted(p for p in set(was) | set(now) if was.get(p) != now.get(p))
        if changed:
            reasons.append("data:" + ",".join(changed))
    moved = sorted(t for t in set(last["io"]) | set(versions) if last["io"].get(t) != versions.get(t))
    if moved:
        reasons.append("tables:" + ",".join(moved))
    return ";".join(reasons) or None


def manifest_versions(spark: SparkSession, cfg: AppConfig, latest: list[Row] | None = None) -> dict[str, int]:
    """The run manifest: table URI -> the version the last *successful* run of the stage that writes it left (its
    ``metrics/stages`` row, written last). ``forget`` records the versions it leaves as the stage ``forget``.
    ``latest``: :func:`stage_rows`' latest rows, when already read."""
    rows = stage_rows(spark, cfg)[0] if latest is None else latest
    out: dict[str, int] = {}
    for r in sorted(rows, key=lambda r: r["finished_at"] or dt.datetime.min):
        if r["io_versions"] is None:
            continue
        versions: dict[str, int | None] = json.loads(r["io_versions"])
        # forget names every table it rewrote, bronze among them; it takes over only those a stage records.
        owned = ({t.key for t in STAGE_IO[r["stage"]][1]} if r["stage"] in STAGE_IO
                 else set(versions) & RECORDED if r["stage"] == FORGET else set())
        for table, v in versions.items():
            if table in owned and v is not None:
                layer, _, name = table.partition(".")
                out[cfg.table(layer, name)] = int(v)
    return out


def _pins(spark: SparkSession, cfg: AppConfig, name: str, latest: list[Row] | None = None) -> dict[str, int]:
    """What stage ``name`` reads at pinned versions: every table of the manifest but its own outputs."""
    own = {t.uri(cfg) for t in STAGE_IO.get(name, ((), ()))[1]}
    return {uri: v for uri, v in manifest_versions(spark, cfg, latest).items() if uri not in own}


class StrictError(RuntimeError):
    """Under ``--strict``, a stage finished with a warning that a scheduled run must not pass over."""


def _strict(result: dict[str, Any], strict: bool) -> dict[str, Any]:
    if strict and result.get("warning"):
        raise StrictError(f"{result['warning']} (--strict)")
    return result


def run_stage(name: str, spark: SparkSession, cfg: AppConfig, ctx: RunContext, force: bool = False,
              strict: bool = False, full_refresh: bool = False) -> dict[str, Any]:
    """Run one stage, log it in the common format and record its timing in ``metrics/stages``.

    A rerun of the same run id is skipped when its input and output tables have not moved since its last success
    and its :func:`stage_fingerprint` (configuration read, run date, package version) is the one recorded then;
    otherwise it runs and logs why (:func:`rerun_reason`).
    A stage result with a ``warning`` (e.g. recommend served no offers) raises :class:`StrictError` under
    ``strict``, after the stage's tables and record are written. ``full_refresh`` (clean, features and measure,
    never skipped) rebuilds silver from the whole of bronze, gold from the whole of silver, and measures every
    campaign run again, instead of taking in only what changed since the stage's last run.

    Atomicity across stages: the stage reads every table an upstream stage writes at the version recorded by that
    stage's last successful run (:func:`manifest_versions`), so what a failed stage wrote before failing is
    invisible downstream until its rerun succeeds.
    """
    # A half-finished upstream stage is invisible: its inputs are read as the upstream's last success left them.
    # One read of metrics/stages: the manifest and this stage's record for this run id.
    latest, mine = stage_rows(spark, cfg, name, ctx.run_id)
    pins = _pins(spark, cfg, name, latest)
    # An input no stage records (bronze, which ingest appends to, maybe while this stage runs) is pinned where the
    # stage first sees it: the stage reads it there, and its record names that version, not a later append's.
    for table in STAGE_IO.get(name, ((), ()))[0]:
        uri = table.uri(cfg)
        if uri not in pins and (v := delta_io.version(spark, uri)) is not None:
            pins[uri] = v
    with delta_io.pinned(pins):
        return _run_stage(name, spark, cfg, ctx, force, strict, full_refresh and name in FULL_REFRESH_STAGES,
                          decoded(mine))


def _run_stage(name: str, spark: SparkSession, cfg: AppConfig, ctx: RunContext, force: bool, strict: bool,
               full_refresh: bool, last: dict[str, Any] | None) -> dict[str, Any]:
    """``last``: the stage's record for this run id before it ran (:func:`last_record`)."""
    io_tables = STAGE_IO.get(name)
    fingerprint = stage_fingerprint(cfg, name, ctx.run_date) if io_tables else None
    if fingerprint is not None and (data := data_fingerprint(spark, cfg, name, ctx.run_date)):
        fingerprint["data"] = data
    if io_tables and fingerprint is not None and not (force or full_refresh):
        # The versions are looked up only when there is a record to compare them with (not on a first run).
        why = None if last is None else rerun_reason(last, table_versions(spark, cfg, io_tables[0] + io_tables[1]),
                                                     fingerprint)
        if last is not None and why is None:
            log.info("stage=%s status=skipped reason=tables_config_and_version_unchanged run_id=%s", name,
                     ctx.run_id)
            # The recorded result in full (nested metrics and campaigns too): a skipped stage reports what its
            # last run reported, in the same shape.
            return _strict({**last["result"], "skipped": True}, strict)
        if last is not None:
            log.info("stage=%s status=rerun reason=%s run_id=%s", name, why, ctx.run_id)
    t0 = time.perf_counter()
    with stage(name, run_date=ctx.run_date.isoformat()) as counts:
        if name == "ingest":
            result = run_ingest(spark, cfg, ctx.run_id)
        elif name == "clean":
            result = run_clean(spark, cfg, ctx.run_id, ctx.as_of, full_refresh=full_refresh)
        elif name == "features":
            result = run_features(spark, cfg, ctx.run_id, ctx.run_date, full_refresh=full_refresh)
        elif name == "train":
            result = run_train(spark, cfg, ctx.run_id)
        elif name == "recommend":
            result = run_recommend(spark, cfg, ctx.run_id, ctx.run_date)
        elif name == "measure":
            result = run_measure(spark, cfg, ctx.run_id, ctx.run_date, full_refresh=full_refresh)
        else:
            raise ValueError(f"unknown stage {name}")
        counts.update({k: v for k, v in result.items() if isinstance(v, (int, float, str))})
    result = {**result, "skipped": False}
    if name == "ingest" and not any(v for k, v in result.items() if k.endswith("_rows")) and last is not None:
        return result  # a retry that found nothing new leaves every table, the run record too, as it was
    if name == "recommend" and isinstance(result.get("campaigns"), dict):
        record_campaign_metrics(spark, cfg, ctx, result["campaigns"])
    versions = table_versions(spark, cfg, io_tables[0] + io_tables[1]) if io_tables else None
    record_stage_time(spark, cfg, ctx, name, time.perf_counter() - t0, versions, result, fingerprint)
    return _strict(result, strict)


def record_campaign_metrics(spark: SparkSession, cfg: AppConfig, ctx: RunContext,
                            campaigns: dict[str, dict[str, Any]]) -> None:
    """The per-campaign summary (audience, served, control, fallback share, coverage, Gini...), one row per metric,
    replaced per run: what the run report and the fairness figures read."""
    rows = [(ctx.run_id, ctx.run_date, cid, k, float(v)) for cid, m in campaigns.items() for k, v in m.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)]
    df = local_rows(spark, rows, schemas.CAMPAIGN_METRICS)
    delta_io.replace_partition(df, T.CAMPAIGN_METRICS.uri(cfg), {C.RUN_ID: ctx.run_id}, name=T.CAMPAIGN_METRICS.key)
