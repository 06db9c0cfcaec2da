"""Cross-validated search for ALS: the estimator, the search space, holdout and folds, and the refit on all data."""

from __future__ import annotations

import logging
import math
import random
from typing import Any

from pyspark.ml.param import Param
from pyspark.ml.recommendation import ALSModel
from pyspark.ml.tuning import CrossValidator, ParamGridBuilder
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from sparkpromo import columns as C
from sparkpromo import evaluate as E
from sparkpromo.config import AppConfig, GridConfig, TrainConfig, join_uri
from sparkpromo.session import is_connect

log = logging.getLogger(__name__)


ALS = "als"
LATEST = "LATEST"  # <lakehouse>/registry/LATEST: the registry entry of the model in service
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
    the same folds, fits and scores, one grid point at a time.

    A one-point grid leaves nothing to choose: its fold fits would only estimate what the holdout measures anyway,
    so the point is fitted once on all of ``train`` and the result holds no fold scores."""
    if len(grid) == 1:
        return E.CVResult([], [], estimator.fit(train, grid[0]))
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


__all__ = [
    "ALS", "LATEST", "POPULARITY", "INCUMBENT", "CHALLENGER", "GATE", "SERVED", "DECISION",
    "PUBLISHED_NO_FRESH_HOLDOUT", "PUBLISHED_MODEL", "HOLDOUT_METRICS_FROM", "GRID_PARAMS", "TrainError",
    "build_als", "param_grid", "random_param_maps", "search_space", "holdout_split", "check_training_data",
    "choose_champion", "metrics_rows", "registry_uri", "temporal_cv", "random_folds", "cross_validate",
    "refit_on_all", "PUBLISHED", "KEPT_INCUMBENT", "FIRST_MODEL",
]
