"""Train ALS with cross-validated hyper-parameters, compare it with a popularity baseline and with the model in
service on a holdout, publish.

Flow of :func:`run_train`:

1. read gold/interactions (pinned Delta version), check there is something to learn from;
2. holdout split (``train.split``); cross-validate only on the train part over the grid, or ``train.trials``
   points sampled from its ranges (``train.search``), scoring top-K lists that exclude each fold's training items
   (:class:`~sparkpromo.evaluate.RankingALS` + :class:`~sparkpromo.evaluate.TopKEvaluator`). Folds are random
   (``CrossValidator``) for the random split and forward-chaining in time for the temporal ones
   (:func:`~sparkpromo.evaluate.temporal_folds`: no fold validates on data older than what it trains on);
3. the best grid point is refitted on the whole train part; that train-only fit and the popularity baseline are
   scored on the holdout (ndcg, precision, recall, map, coverage, novelty; RMSE too for explicit ratings). With
   silver events, also with serving's exclusion (only non-repeatable bought or rated items excluded: ``als_served``,
   ``popularity_served``) when it differs from excluding every train pair;
4. champion gate (ALS against popularity), then the incumbent gate: the model in service (``registry/LATEST``) and
   the new champion are scored the same way on the gate holdout (:func:`gate_holdout`: the holdout pairs absent
   from the gold.interactions version the model in service was fitted on, since it was fitted on every
   interaction; popularity for users it cannot score, as in serving), and the new champion replaces it only when it
   scores at least ``incumbent * (1 - train.incumbent_margin)`` on ``train.metric``. With no such pair (or that
   version unreadable) there is no fair evidence: published, ``published_no_fresh_holdout``;
5. the chosen grid point is refitted on every interaction (train and holdout): that is the model persisted under
   ``<lakehouse>/registry/<run_id>/`` with params.json, cv.json and metrics.json (the holdout metrics stay those of
   the train-only fit); the metrics rows (the incumbent and the new champion on the gate holdout as ``incumbent``
   and ``challenger``, its size as ``gate``) and the decision go to the Delta table
   ``<lakehouse>/metrics/model`` (the run's rows replaced, so reruns are idempotent); log the run to MLflow (when
   enabled); finally, when the decision is to publish, write the run id to ``<lakehouse>/registry/LATEST``, which
   the recommend stage reads (a crash before that leaves LATEST on the previous complete run).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import random
import time
from dataclasses import dataclass
from typing import Any

from pyspark import StorageLevel
from pyspark.ml.evaluation import RegressionEvaluator
from pyspark.ml.param import Param
from pyspark.ml.recommendation import ALSModel
from pyspark.ml.tuning import CrossValidator, ParamGridBuilder
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from sparkpromo import columns as C
from sparkpromo import delta_io
from sparkpromo import evaluate as E
from sparkpromo import recommend as R
from sparkpromo import tables as T
from sparkpromo.config import AppConfig, GridConfig, TrainConfig, join_uri
from sparkpromo.logs import spark_progress
from sparkpromo.schemas import MODEL_METRICS
from sparkpromo.session import default_parallelism, is_connect

log = logging.getLogger(__name__)

ALS = "als"
LATEST = "LATEST"  # <lakehouse>/registry/LATEST: the run id of the latest complete training run
POPULARITY = "popularity"
INCUMBENT = "incumbent"  # metrics/model contender: the model in service, scored on the gate holdout
CHALLENGER = "challenger"  # metrics/model contender: the new champion (train-only fit) on the gate holdout
GATE = "gate"  # metrics/model contender whose metrics are the gate holdout's size (holdout_rows, holdout_users)
SERVED = "_served"  # suffix of a contender scored with serving's exclusion (non-repeatable bought/rated items only)
DECISION = "decision"  # metrics/model contender whose metric is the gate's decision (value null)
PUBLISHED, KEPT_INCUMBENT, FIRST_MODEL = "published", "kept_incumbent", "first_model"
PUBLISHED_NO_FRESH_HOLDOUT = "published_no_fresh_holdout"  # no holdout pair the model in service never saw
PUBLISHED_MODEL = "all interactions"  # what registry/<run_id>/model is fitted on
HOLDOUT_METRICS_FROM = "train-only fit"
# config grid key -> ALS param name
GRID_PARAMS = {"rank": "rank", "reg_param": "regParam", "alpha": "alpha", "max_iter": "maxIter",
               "implicit_prefs": "implicitPrefs", "nonnegative": "nonnegative"}



class TrainError(ValueError):
    """Training cannot proceed (no data, one user, bad grid); ``str()`` is a one-line message."""


# ----------------------------------------------------------------------------------------------------------------
# Building blocks
# ----------------------------------------------------------------------------------------------------------------
def build_als(implicit: bool, seed: int, checkpoint_interval: int = 5, k: int = 10, blocks: int = 10,
              **params: Any) -> E.RankingALS:
    """The estimator cross-validated here: ALS on (user_idx, item_idx, confidence), ``coldStartStrategy="drop"``,
    implicit preferences unless ``implicit`` is false. ``params`` (any ALS param name) override these settings."""
    settings: dict[str, Any] = dict(implicitPrefs=implicit, nonnegative=False, seed=seed,
                                    checkpointInterval=checkpoint_interval, numUserBlocks=blocks,
                                    numItemBlocks=blocks, k=k)
    return E.RankingALS(**{**settings, **params})


def _grid_values(grid: GridConfig, key: str) -> list[Any]:
    raw = list(dict.fromkeys(getattr(grid, key)))  # dedupe, keep order
    if not raw:
        raise TrainError(f"train.grid.{key}: empty grid (list at least one value)")
    for v in raw:
        if key in ("implicit_prefs", "nonnegative"):
            ok = isinstance(v, bool)
        else:
            ok = (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                  and (v >= 0 if key == "reg_param" else v > 0)
                  and (float(v).is_integer() if key in ("rank", "max_iter") else True))
        if not ok:
            raise TrainError(f"train.grid.{key}: invalid value {v!r}")
    return raw


def param_grid(als: E.RankingALS, grid: GridConfig) -> list[dict[Param, Any]]:
    """The grid of ``grid`` on ``als``'s params: the cartesian product for each value of ``implicit_prefs``, alpha
    searched only for implicit ALS (explicit ALS ignores it). Raises :class:`TrainError` on an empty list or an
    out-of-range value."""
    values = {key: _grid_values(grid, key) for key in GRID_PARAMS}
    maps: list[dict[Param, Any]] = []
    for implicit in values["implicit_prefs"]:
        builder = ParamGridBuilder().baseOn({als.getParam("implicitPrefs"): implicit})
        for key in GRID_PARAMS:
            if key != "implicit_prefs" and (implicit or key != "alpha"):
                builder = builder.addGrid(als.getParam(GRID_PARAMS[key]), values[key])
        maps += builder.build()
    return maps


def random_param_maps(als: E.RankingALS, grid: GridConfig, trials: int, seed: int) -> list[dict[Param, Any]]:
    """``trials`` distinct points sampled (with ``seed``: deterministic) from the ranges of ``grid``: rank and
    max_iter integers uniform between the listed min and max, reg_param and alpha log-uniform between theirs,
    implicit_prefs and nonnegative from their lists; alpha only for implicit points (as in :func:`param_grid`).
    Fewer points when the ranges hold fewer. Raises :class:`TrainError` like :func:`param_grid`, and for a range
    of reg_param that starts at 0 (no log-uniform draw from 0)."""
    if trials < 1:
        raise TrainError(f"train.trials: must be >= 1, got {trials}")
    values = {key: _grid_values(grid, key) for key in GRID_PARAMS}
    if len(values["reg_param"]) > 1 and min(values["reg_param"]) <= 0:
        raise TrainError("train.grid.reg_param: random search samples it log-uniformly: values must be > 0")
    rng = random.Random(seed)

    def integer(key: str) -> int:
        return rng.randint(int(min(values[key])), int(max(values[key])))

    def log_uniform(key: str) -> float:
        lo, hi = float(min(values[key])), float(max(values[key]))
        if lo == hi:
            return lo
        x = math.exp(rng.uniform(math.log(lo), math.log(hi)))
        return min(max(float(f"{x:.4g}"), lo), hi)  # 4 significant digits read better in the CV table

    points: dict[tuple[tuple[str, Any], ...], dict[Param, Any]] = {}
    for _ in range(50 * trials):  # duplicates are redrawn; a small discrete range simply yields fewer points
        if len(points) == trials:
            break
        # Every key is drawn on every trial, so the sequence does not depend on earlier draws' values.
        point = {"implicit_prefs": rng.choice(values["implicit_prefs"]), "rank": integer("rank"),
                 "reg_param": log_uniform("reg_param"), "alpha": log_uniform("alpha"),
                 "max_iter": integer("max_iter"), "nonnegative": rng.choice(values["nonnegative"])}
        if not point["implicit_prefs"]:
            del point["alpha"]
        points.setdefault(tuple(sorted(point.items())),
                          {als.getParam(GRID_PARAMS[key]): v for key, v in point.items()})
    return list(points.values())


def search_space(als: E.RankingALS, t: TrainConfig) -> list[dict[Param, Any]]:
    """The points cross-validated: the whole grid (``train.search: grid``) or ``train.trials`` random points."""
    if t.search == "grid":
        return param_grid(als, t.grid)
    if t.search == "random":
        return random_param_maps(als, t.grid, t.trials, t.seed)
    raise TrainError(f"train.search: unknown search {t.search!r}")


def _describe(param_map: dict[Param, Any]) -> dict[str, Any]:
    names = {v: k for k, v in GRID_PARAMS.items()}
    return {names[p.name]: v for p, v in sorted(param_map.items(), key=lambda kv: kv[0].name)}


def holdout_split(df: DataFrame, t: TrainConfig) -> E.Split:
    """The holdout split chosen by ``train.split``."""
    if t.split == "random":
        return E.random_split(df, t.test_fraction, t.seed)
    if t.split == "last_days":
        return E.last_days_split(df, t.test_days)
    if t.split == "leave_last_k":
        return E.leave_last_k_split(df, t.leave_last_k)
    raise TrainError(f"train.split: unknown split {t.split!r}")


def check_training_data(df: DataFrame) -> dict[str, int]:
    """Rows, users and items of the interactions (one aggregate); :class:`TrainError` when ALS cannot learn."""
    row = df.agg(F.count("*").alias("rows"), F.countDistinct(C.USER_IDX).alias("users"),
                 F.countDistinct(C.ITEM_IDX).alias("items")).first()
    stats = {k: int(row[k]) for k in ("rows", "users", "items")} if row else {"rows": 0, "users": 0, "items": 0}
    if stats["rows"] == 0:
        raise TrainError("no training data: the interactions table is empty")
    if stats["users"] < 2:
        raise TrainError(f"not enough users to train: {stats['users']} user(s), need at least 2")
    if stats["items"] < 2:
        raise TrainError(f"not enough items to train: {stats['items']} item(s), need at least 2")
    return stats


def choose_champion(als: dict[str, float], popularity: dict[str, float], metric: str, gate: bool) -> str:
    """"als" if ALS beats popularity on ``metric``; otherwise a WARNING and "popularity" when the gate is on."""
    if als[metric] > popularity[metric]:
        return ALS
    log.warning("ALS does not beat the popularity baseline on %s (%.4f <= %.4f)%s", metric, als[metric],
                popularity[metric], "; champion is popularity" if gate else "; gate off, keeping ALS")
    return POPULARITY if gate else ALS


def metrics_rows(run_id: str, metrics: dict[str, dict[str, float]], decision: str | None = None
                 ) -> list[tuple[str, str, str, float | None]]:
    """metrics/model rows: one per (contender, metric), and the gate's ``decision`` as the metric of a row whose
    contender is ``decision`` (value null)."""
    rows: list[tuple[str, str, str, float | None]] = [
        (run_id, contender, name, float(value)) for contender, values in metrics.items()
        for name, value in sorted(values.items())]
    return rows + ([(run_id, DECISION, decision, None)] if decision else [])


def registry_uri(cfg: AppConfig, run_id: str) -> str:
    return join_uri(cfg.lakehouse, "registry", run_id)


def temporal_cv(t: TrainConfig) -> bool:
    """Whether CV folds must follow time: the holdout split does (last_days, leave_last_k)."""
    return t.split != "random"


def random_folds(df: DataFrame, num_folds: int) -> list[E.Split]:
    """The folds ``CrossValidator`` makes from the ``_fold`` column: fold i validates on ``_fold == i`` and trains
    on the rest."""
    return [E.Split(df.where(F.col(C.FOLD) != i), df.where(F.col(C.FOLD) == i)) for i in range(num_folds)]


def cross_validate(estimator: E.RankingALS, grid: list[dict[Param, Any]], evaluator: E.TopKEvaluator,
                   train: DataFrame, t: TrainConfig) -> E.CVResult:
    """Cross-validate ``grid`` on ``train`` and refit the best point on all of it: ``CrossValidator`` on the
    ``_fold`` column for the random split; forward-chaining time folds (:func:`~sparkpromo.evaluate.temporal_folds`)
    for a temporal split, where a random fold would validate on interactions older than some it trains on.

    Over Spark Connect (Spark 4.0) ``CrossValidator`` fails: it fits in a thread pool, and Connect's ML calls on a
    pool thread find no active session (``assert session is not None`` in ``pyspark.ml.util.try_remote_call``).
    There the same ``_fold`` folds run through :func:`~sparkpromo.evaluate.cross_validate_folds` on this thread:
    the same folds, fits and scores, one grid point at a time."""
    if not temporal_cv(t) and is_connect(train.sparkSession):
        if t.parallelism > 1:
            log.info("Spark Connect: cross-validating one grid point at a time (train.parallelism=%d ignored)",
                     t.parallelism)
        return E.cross_validate_folds(estimator, grid, evaluator, random_folds(train, t.folds), train, 1)
    if not temporal_cv(t):
        cv = CrossValidator(estimator=estimator, estimatorParamMaps=grid, evaluator=evaluator, numFolds=t.folds,
                            foldCol=C.FOLD, parallelism=t.parallelism, seed=t.seed)
        model = cv.fit(train)
        return E.CVResult([float(m) for m in model.avgMetrics], [float(s) for s in model.stdMetrics],
                          model.bestModel)
    folds = E.temporal_folds(train, t.folds)
    for i, fold in enumerate(folds, start=1):
        if fold.train.limit(1).count() == 0:
            raise TrainError(f"train.folds: time fold {i} of {t.folds} has nothing to train on (too few distinct "
                             "timestamps in the train part): lower train.folds")
    return E.cross_validate_folds(estimator, grid, evaluator, folds, train,
                                  1 if is_connect(train.sparkSession) else t.parallelism)


def refit_on_all(estimator: E.RankingALS, param_map: dict[Param, Any], data: DataFrame) -> ALSModel:
    """The chosen grid point fitted on every interaction (train and holdout): the model that is published."""
    return estimator.copy(param_map).als().fit(data.select(C.USER_IDX, C.ITEM_IDX, C.CONFIDENCE))


@dataclass(frozen=True)
class Incumbent:
    """The model in service: its run id, champion, for an ALS champion the model, and the gold.interactions
    version it was fitted on (``input_versions`` of its params.json; None when not recorded)."""

    run_id: str
    champion: str
    model: ALSModel | None
    trained_on: int | None = None


def _first_line(e: BaseException) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


def load_incumbent(spark: SparkSession, cfg: AppConfig, run_id: str) -> tuple[Incumbent | None, bool]:
    """``(incumbent, registered)``: the model in service (``registry/LATEST``, loaded as serving loads it) and
    whether any model is registered. No incumbent, with a WARNING, when it cannot be loaded (the gate is then
    against popularity only) or when LATEST already names ``run_id`` (a rerun of the published run)."""
    try:
        latest = R.latest_run_id(spark, cfg)
        if latest is None:
            return None, False
        if latest == run_id:
            log.warning("registry/LATEST already names run %s (a rerun): no incumbent to compare with", run_id)
            return None, True
        served_run, model, champion = R.load_champion(spark, cfg)
    except Exception as e:  # noqa: BLE001 - an unreadable incumbent must not stop a new model being published
        log.warning("the model in service could not be loaded (%s): no incumbent, the new model is gated against "
                    "popularity only", _first_line(e))
        return None, True
    if not served_run:
        return None, False
    return Incumbent(served_run, champion, model, _trained_on(spark, cfg, served_run)), True


def _trained_on(spark: SparkSession, cfg: AppConfig, run_id: str) -> int | None:
    """The gold.interactions version in ``run_id``'s params.json (``input_versions``); None when absent."""
    try:
        params = json.loads(R.read_small_text(spark, join_uri(registry_uri(cfg, run_id), "params.json")) or "{}")
        version = params.get("input_versions", {}).get("gold.interactions")
    except Exception:  # noqa: BLE001 - unknown: the gate then has no fair holdout
        return None
    return version if isinstance(version, int) and not isinstance(version, bool) else None


@dataclass(frozen=True)
class GateHoldout:
    """The holdout the incumbent gate compares on: ``test`` (None: no fair evidence), its size, and a one-line
    note saying what it is or why there is none."""

    test: DataFrame | None
    rows: int | None
    users: int | None
    note: str


def gate_holdout(spark: SparkSession, interactions_uri: str, incumbent: Incumbent, test: DataFrame) -> GateHoldout:
    """The holdout pairs the model in service was not fitted on. An ALS incumbent was fitted on every interaction
    of the gold.interactions version its params.json records, this run's holdout pairs included (the split
    withholds the same pairs each run), which would inflate its score: only the ``test`` pairs absent from that
    version (anti-join on user_idx, item_idx) are fair evidence. A popularity incumbent is this run's popularity
    baseline (nothing fitted was kept): the whole holdout. ``test`` is None, with a WARNING, when no pair is left or
    that version is unknown or unreadable (e.g. vacuumed). A returned frame other than ``test`` is persisted: the
    caller unpersists it."""
    def size(df: DataFrame) -> tuple[int, int]:
        row = df.agg(F.count("*"), F.countDistinct(C.USER_IDX)).first()
        return (int(row[0]), int(row[1])) if row else (0, 0)

    if incumbent.model is None:
        rows, users = size(test)
        return GateHoldout(test, rows, users, f"the whole holdout, {rows} rows of {users} users (popularity "
                                              "in service)")
    version = incumbent.trained_on
    if version is None:
        why = f"run {incumbent.run_id}'s params.json records no gold.interactions version"
        log.warning("no fair gate holdout: %s; publishing without comparing", why)
        return GateHoldout(None, None, None, why)
    fresh = None
    try:
        seen = delta_io.read(spark, interactions_uri, version=version).select(C.USER_IDX, C.ITEM_IDX).distinct()
        fresh = test.join(seen, [C.USER_IDX, C.ITEM_IDX], "left_anti").persist(StorageLevel.MEMORY_AND_DISK)
        rows, users = size(fresh)
    except Exception as e:  # noqa: BLE001 - e.g. a vacuumed version: no evidence, not a failed run
        if fresh is not None:
            fresh.unpersist()
        why = f"gold.interactions version {version} (run {incumbent.run_id}'s training data) unreadable: " \
              f"{_first_line(e)}"
        log.warning("no fair gate holdout: %s; publishing without comparing", why)
        return GateHoldout(None, None, None, why)
    if rows == 0:
        fresh.unpersist()
        why = (f"every holdout pair is in gold.interactions version {version}, which the model in service (run "
               f"{incumbent.run_id}) was fitted on")
        log.warning("no fair gate holdout: %s; publishing without comparing", why)
        return GateHoldout(None, 0, 0, why)
    return GateHoldout(fresh, rows, users, f"{rows} rows of {users} users absent from gold.interactions version "
                                           f"{version}, which the model in service was fitted on")


def score_incumbent(incumbent: Incumbent, train: DataFrame, test: DataFrame, k: int,
                    popularity: dict[str, float], seen_max: int, n_users: int) -> dict[str, float] | None:
    """The incumbent's metrics on ``test`` (the gate holdout) with this run's code: top-K lists excluding the
    current train items for the users it can score and popularity for the others; a popularity champion scores
    ``popularity`` (this run's baseline on the same holdout). None, with a WARNING, when its model cannot be scored
    (treated as no incumbent)."""
    if incumbent.model is None:
        return dict(popularity)
    try:
        ranked = E.model_or_popularity_top_k(incumbent.model, train, k, test.select(C.USER_IDX).distinct(),
                                             seen_max=seen_max, n_users=n_users)
        return E.evaluate_recommendations(ranked, test, train, k)
    except Exception as e:  # noqa: BLE001 - same as an incumbent that does not load
        log.warning("the model in service (run %s) could not be scored (%s): no incumbent, the new model is gated "
                    "against popularity only", incumbent.run_id, _first_line(e))
        return None


def gate_decision(new: float, incumbent: float | None, margin: float, registered: bool, metric: str = "metric",
                  fresh_holdout: bool = True) -> str:
    """published when there is no incumbent score (first_model when nothing was ever registered;
    published_no_fresh_holdout when there is an incumbent but not ``fresh_holdout``, no pair it was not fitted on to
    compare on) or when ``new`` >= ``incumbent * (1 - margin)``; otherwise kept_incumbent, with a WARNING."""
    if not fresh_holdout:
        return PUBLISHED_NO_FRESH_HOLDOUT
    if incumbent is None:
        return PUBLISHED if registered else FIRST_MODEL
    if new >= incumbent * (1 - margin):
        return PUBLISHED
    log.warning("the new champion scores %s=%.4f, below the model in service's %.4f by more than the margin %.3g: "
                "keeping the model in service", metric, new, incumbent, margin)
    return KEPT_INCUMBENT


def read_purchases(spark: SparkSession, cfg: AppConfig, versions: dict[str, int | None]
                   ) -> tuple[DataFrame | None, str]:
    """The (user_idx, item_idx) pairs serving excludes (:func:`~sparkpromo.evaluate.purchased_pairs`) from silver
    events and gold.item_features at pinned versions (added to ``versions``), lazily; None and the reason when
    there are no silver events or id map."""
    events_uri, items_uri = T.SILVER_EVENTS.uri(cfg), T.ITEM_FEATURES.uri(cfg)
    versions["silver.events"] = delta_io.version(spark, events_uri)
    versions["gold.item_features"] = delta_io.version(spark, items_uri)
    if versions["silver.events"] is None or versions["gold.id_map"] is None:
        return None, "not computed: no silver.events or gold.id_map table to know what serving excludes"
    events = delta_io.read(spark, events_uri, version=versions["silver.events"]).select(C.USER_ID, C.ITEM_ID,
                                                                                 C.EVENT_TYPE)
    id_map = delta_io.read(spark, T.ID_MAP.uri(cfg), version=versions["gold.id_map"])
    repeatable = cfg.recommend.repeatable_categories
    if versions["gold.item_features"] is None:
        if repeatable:
            log.warning("no gold.item_features table: no item counts as repeatable in the served evaluation")
        items = spark.createDataFrame([], f"{C.ITEM_ID} string, {C.CATEGORY} string")
    else:
        items = delta_io.read(spark, items_uri, version=versions["gold.item_features"]).select(C.ITEM_ID, C.CATEGORY)
    return E.purchased_pairs(events, id_map, items, repeatable), ""


def served_metrics(als_model: ALSModel, train: DataFrame, test: DataFrame, purchased: DataFrame, k: int,
                   seen_max: int, n_users: int) -> tuple[dict[str, dict[str, float]], str]:
    """Holdout metrics of ALS and popularity when only serving's exclusion applies, keyed ``als_served`` and
    ``popularity_served``, and a one-line note. Nothing is scored when that exclusion is every train pair (the
    metrics would be the offline ones): the note says so."""
    served = E.served_exclusion(train, purchased).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        pairs = train.select(C.USER_IDX, C.ITEM_IDX)
        if pairs.join(served, [C.USER_IDX, C.ITEM_IDX], "left_anti").limit(1).isEmpty():
            return {}, "same as offline: serving excludes every train pair (all are bought or rated, none repeatable)"
        users = test.select(C.USER_IDX).distinct()
        # seen_max/n_users of all train pairs bound the served ones: enough candidates survive the exclusion.
        als = E.top_k_excluding_seen(als_model, served, k, users=users, seen_max=seen_max, n_users=n_users)
        pop = E.popularity_top_k(train, k, users=users, seen_max=seen_max, exclude=served)
        return ({ALS + SERVED: E.evaluate_recommendations(als, test, train, k),
                 POPULARITY + SERVED: E.evaluate_recommendations(pop, test, train, k)},
                "computed: only non-repeatable bought or rated items excluded, as in serving")
    finally:
        served.unpersist()


# ----------------------------------------------------------------------------------------------------------------
# Stage
# ----------------------------------------------------------------------------------------------------------------
def run_train(spark: SparkSession, cfg: AppConfig, run_id: str) -> dict[str, Any]:
    """Cross-validate, evaluate against popularity and the model in service, persist, publish when it is not
    worse; returns the result dict the CLI prints."""
    t = cfg.train
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    # run_stage logs the stage's start and end; a second pair here was noise.
    with contextlib.nullcontext({"run_id": run_id}) as counts:
        # ALS blocks scale with the cores actually there, not with the shuffle width (64 blocks on 4k rows is all
        # overhead): one block per core, never more than the shuffle partitions.
        blocks = max(1, min(cfg.spark.shuffle_partitions, default_parallelism(spark, cfg.spark.shuffle_partitions)))
        estimator = build_als(True, t.seed, t.checkpoint_interval, t.k, blocks=blocks)
        grid = search_space(estimator, t)  # fail on a bad grid before touching data
        inter_uri, map_uri = T.INTERACTIONS.uri(cfg), T.ID_MAP.uri(cfg)
        versions = {"gold.interactions": delta_io.version(spark, inter_uri),
                    "gold.id_map": delta_io.version(spark, map_uri)}
        if versions["gold.interactions"] is None:
            raise TrainError(f"no training data: no interactions table at {inter_uri} (run features first)")
        data = delta_io.read(spark, inter_uri, version=versions["gold.interactions"])
        counts.update(check_training_data(data))
        purchased, served_note = read_purchases(spark, cfg, versions)
        incumbent, registered = load_incumbent(spark, cfg, run_id)
        folds_kind = "forward-chaining in time" if temporal_cv(t) else "random"

        split = holdout_split(data, t)
        # The train part feeds every CV fold (each fold's slices are cached, but they are all computed from this
        # frame), the final refit, the seen-item exclusion and every contender: persist it once instead of
        # re-reading and re-splitting Delta files each time. The holdout is scanned for every contender.
        train = (split.train if temporal_cv(t) else split.train.transform(E.assign_folds(t.folds, t.seed))) \
            .persist(StorageLevel.MEMORY_AND_DISK)
        test = split.test.persist(StorageLevel.MEMORY_AND_DISK)
        try:
            counts["train_rows"], counts["test_rows"] = train.count(), test.count()
            if counts["test_rows"] == 0:
                raise TrainError(f"the {t.split} holdout split left no test interactions")
            if train.select(C.USER_IDX).distinct().limit(2).count() < 2:
                raise TrainError("not enough users to train after the holdout split: need at least 2")
            timings["prepare_s"] = round(time.perf_counter() - t0, 2)

            t1 = time.perf_counter()
            evaluator = E.TopKEvaluator(metricName=t.metric, k=t.k)
            estimator.progress = evaluator.progress = E.CVProgress(t.folds, len(grid))
            log.info("CV: %d %s folds x %d %s points, scored by %s@%d", t.folds, folds_kind, len(grid), t.search,
                     t.metric, t.k)
            with spark_progress(spark, "CV"):
                cv = cross_validate(estimator, grid, evaluator, train, t)  # refits the best point on all of train
            best = cv.best_model
            timings["cv_s"] = round(time.perf_counter() - t1, 2)
            cv_table = [{"params": _describe(pm), "mean": m, "std": sd}
                        for pm, m, sd in zip(grid, cv.avg_metrics, cv.std_metrics, strict=True)]
            best_index = max(range(len(grid)), key=lambda i: cv.avg_metrics[i])
            params = _describe(grid[best_index])
            implicit = bool(params["implicit_prefs"])

            t2 = time.perf_counter()
            users = test.select(C.USER_IDX).distinct()
            als_ranked = E.top_k_excluding_seen(best.als_model, train, t.k, users=users, seen_max=best.seen_max,
                                                n_users=best.n_users)
            pop_ranked = E.popularity_top_k(train, t.k, users=users, seen_max=best.seen_max)
            metrics = {ALS: E.evaluate_recommendations(als_ranked, test, train, t.k),
                       POPULARITY: E.evaluate_recommendations(pop_ranked, test, train, t.k)}
            if not implicit:
                rmse = RegressionEvaluator(metricName="rmse", labelCol=C.CONFIDENCE, predictionCol=C.PREDICTION)
                metrics[ALS]["rmse"] = rmse.evaluate(best.als_model.transform(test))
            champion = choose_champion(metrics[ALS], metrics[POPULARITY], t.metric, t.champion_gate)
            if purchased is not None:
                served, served_note = served_metrics(best.als_model, train, test, purchased, t.k, best.seen_max,
                                                     best.n_users)
                metrics.update(served)
            held = None if incumbent is None else gate_holdout(spark, inter_uri, incumbent, test)
            incumbent_metrics = challenger_metrics = None
            if incumbent is not None and held is not None and held.test is not None:
                try:
                    incumbent_metrics = score_incumbent(incumbent, train, held.test, t.k, metrics[POPULARITY],
                                                        best.seen_max, best.n_users)
                    if incumbent_metrics is not None:
                        # The new champion on the same pairs, by the same code (all holdout users are train users).
                        ranked = als_ranked if champion == ALS else pop_ranked
                        challenger_metrics = (metrics[champion] if held.test is test else E.evaluate_recommendations(
                            ranked.join(held.test.select(C.USER_IDX).distinct(), C.USER_IDX, "left_semi"),
                            held.test, train, t.k))
                finally:
                    if held.test is not test:
                        held.test.unpersist()
            timings["evaluate_s"] = round(time.perf_counter() - t2, 2)
        finally:
            train.unpersist()
            test.unpersist()

        no_fresh_holdout = held is not None and held.test is None
        if incumbent_metrics is not None and challenger_metrics is not None:
            metrics[INCUMBENT], metrics[CHALLENGER] = incumbent_metrics, challenger_metrics
        elif not no_fresh_holdout:
            incumbent = held = None  # an incumbent that cannot be scored counts as none
        if held is not None and held.rows is not None:
            metrics[GATE] = {"holdout_rows": float(held.rows), "holdout_users": float(held.users or 0)}
        new_score = (challenger_metrics or metrics[champion])[t.metric]
        incumbent_score = None if incumbent_metrics is None else incumbent_metrics[t.metric]
        decision = gate_decision(new_score, incumbent_score, t.incumbent_margin, registered, t.metric,
                                 fresh_holdout=not no_fresh_holdout)
        incumbent_run = None if incumbent is None else incumbent.run_id
        log.info("gate on %s (%s): new champion %s %.4f, model in service %s %s: %s", t.metric,
                 "no gate holdout" if held is None else held.note, champion, new_score, incumbent_run or "(none)",
                 "-" if incumbent_score is None else f"{incumbent_score:.4f}", decision)

        t3 = time.perf_counter()
        published = refit_on_all(estimator, grid[best_index], data)
        counts["published_model_users"] = published.userFactors.count()
        counts["holdout_model_users"] = best.als_model.userFactors.count()
        timings["refit_s"] = round(time.perf_counter() - t3, 2)

        t4 = time.perf_counter()
        registry = registry_uri(cfg, run_id)
        model_uri = join_uri(registry, "model")
        published.write().overwrite().save(model_uri)
        gate = {"decision": decision, "incumbent_run_id": incumbent_run, f"incumbent_{t.metric}": incumbent_score,
                f"challenger_{t.metric}": None if challenger_metrics is None else challenger_metrics[t.metric],
                "incumbent_margin": t.incumbent_margin,
                "gate_holdout": None if held is None else held.note,
                "gate_holdout_rows": None if held is None else held.rows,
                "gate_holdout_users": None if held is None else held.users}
        lineage = {"published_model": PUBLISHED_MODEL, "holdout_metrics_from": HOLDOUT_METRICS_FROM,
                   "cv_folds": folds_kind, "search": t.search, "served_exclusion": served_note}
        params_doc = {"run_id": run_id, "champion": champion, "params": params, "implicit_prefs": implicit,
                      "k": t.k, "metric": t.metric, "seed": t.seed, "input_versions": versions, **gate, **lineage}
        R.write_text(spark, join_uri(registry, "params.json"), json.dumps(params_doc, indent=2, sort_keys=True))
        R.write_text(spark, join_uri(registry, "cv.json"), json.dumps(
            {"metric": t.metric, "k": t.k, "folds": t.folds, "folds_kind": folds_kind, "search": t.search,
             "grid": cv_table}, indent=2, sort_keys=True))
        R.write_text(spark, join_uri(registry, "metrics.json"), json.dumps(metrics, indent=2, sort_keys=True))
        rows = spark.createDataFrame(metrics_rows(run_id, metrics, decision), MODEL_METRICS)
        delta_io.replace_partition(rows, T.MODEL_METRICS.uri(cfg), {C.METRIC_RUN_ID: run_id}, name=T.MODEL_METRICS.key)
        timings["persist_s"] = round(time.perf_counter() - t4, 2)
        timings["total_s"] = round(time.perf_counter() - t0, 2)
        counts.update(champion=champion, decision=decision,
                      **{f"{ALS}_{t.metric}": round(metrics[ALS][t.metric], 4),
                         f"{POPULARITY}_{t.metric}": round(metrics[POPULARITY][t.metric], 4)})
    result = {"run_id": run_id, "champion": champion, **gate, "params": params, "metrics": metrics,
              "cv": cv_table, "input_versions": versions, "timings": timings, "model_uri": model_uri,
              "registry": registry, **lineage,
              "counts": {k: counts[k] for k in ("rows", "users", "items", "train_rows", "test_rows",
                                                "published_model_users", "holdout_model_users")}}
    from sparkpromo.tracking import log_train_run

    result["mlflow_run_id"] = log_train_run(cfg, result, model_uri, published)
    if decision == KEPT_INCUMBENT:
        log.warning("registry/LATEST stays on run %s; run %s is in the registry, unpublished", incumbent_run, run_id)
    else:
        # Published last: recommend only ever sees a model whose files and metrics are complete.
        R.write_text(spark, join_uri(cfg.lakehouse, "registry", LATEST), run_id)
    return result
