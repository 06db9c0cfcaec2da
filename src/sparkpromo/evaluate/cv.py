"""Cross-validation on top-K lists: the RankingALS estimator, its evaluator and the fold loop."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from statistics import fmean, pstdev
from typing import Any, NamedTuple

from pyspark import StorageLevel
from pyspark.ml import Estimator, Model
from pyspark.ml.evaluation import Evaluator
from pyspark.ml.param import Param, Params, TypeConverters
from pyspark.ml.recommendation import ALS, ALSModel, _ALSParams
from pyspark.sql import DataFrame
from pyspark.util import inheritable_thread_target

from sparkpromo import columns as C
from sparkpromo.evaluate.metrics import _finite, ranking_aggregates, ranking_frame
from sparkpromo.evaluate.splits import Split, _drop_unknown
from sparkpromo.evaluate.topk import RANKING_METRICS, as_lists, seen_summary, top_k_excluding_seen

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------------------------------
# Cross-validation on top-K lists
# ----------------------------------------------------------------------------------------------------------------
class CVProgress:
    """Logs a cross-validation's progress: each fit and each (fold, grid point) score, with the elapsed time.

    ``CrossValidator`` (parallelism 1) fits and scores the grid points of one fold in order, then the next fold,
    then refits the best point on all the data; the counters below follow that order.
    """

    def __init__(self, folds: int, grid_size: int) -> None:
        self.folds, self.grid_size = folds, grid_size
        self.fits = self.scores = 0
        self.t0 = time.perf_counter()
        self._lock = threading.Lock()

    def _where(self, n: int) -> str:
        if n > self.folds * self.grid_size:
            return "refit of the best grid point on all folds"
        return f"fold {(n - 1) // self.grid_size + 1}/{self.folds}, grid point {(n - 1) % self.grid_size + 1}/" \
               f"{self.grid_size}"

    def fitted(self, params: dict[str, Any], seconds: float) -> None:
        with self._lock:
            self.fits += 1
            n = self.fits
        log.info("CV %s %s: fitted in %.1fs (elapsed %.1fs)", self._where(n),
                 " ".join(f"{k}={v}" for k, v in params.items()), seconds, time.perf_counter() - self.t0)

    def scored(self, metric: str, k: int, value: float) -> None:
        with self._lock:
            self.scores += 1
            n = self.scores
        log.info("CV %s: %s@%d=%.4f (elapsed %.1fs)", self._where(n), metric, k, value, time.perf_counter() - self.t0)


class _HasK(Params):
    k: Param[int] = Param(Params._dummy(), "k", "length of the top-K lists", typeConverter=TypeConverters.toInt)

    def getK(self) -> int:
        return self.getOrDefault(self.k)


class RankingALSModel(Model):
    """A fitted ALS model plus the data it was fitted on. ``transform(validation)`` returns, per validation user
    known to the model, ``prediction`` = the top-K items excluding the user's *training-fold* items and ``label`` =
    the user's validation items (array<double> each), ready for :class:`TopKEvaluator`.

    Validation users or items absent from the training fold are dropped first (as for the holdout), so a user who
    only appears in the validation fold never yields a NaN or an empty-list penalty.
    """

    def __init__(self, als_model: ALSModel, train: DataFrame, k: int, seen_max: int, n_users: int) -> None:
        super().__init__()
        self.als_model = als_model
        self.train = train.select(C.USER_IDX, C.ITEM_IDX)
        self.k = k
        self.seen_max = seen_max
        self.n_users = n_users

    def _transform(self, dataset: DataFrame) -> DataFrame:
        holdout = _drop_unknown(self.train, dataset.select(C.USER_IDX, C.ITEM_IDX))
        ranked = top_k_excluding_seen(self.als_model, self.train, self.k, users=holdout, seen_max=self.seen_max,
                                      n_users=self.n_users)
        return ranking_frame(as_lists(ranked), holdout)


class RankingALS(Estimator[RankingALSModel], _ALSParams, _HasK):
    """ALS for ``CrossValidator`` when the metric is a top-K ranking metric.

    It carries exactly ALS's params (``_ALSParams``, so a ``ParamGridBuilder`` addresses ``rank``, ``regParam``,
    ``alpha``, ``maxIter`` on this instance) plus ``k``; ``fit`` trains a plain :class:`ALS` with them and returns
    a :class:`RankingALSModel` that remembers the training fold, so the validation score is computed on top-K lists
    that exclude that fold's training items. Extra input columns (e.g. ``_fold``) are ignored.
    """

    def __init__(self, **params: Any) -> None:
        super().__init__()
        self._setDefault(k=10, userCol=C.USER_IDX, itemCol=C.ITEM_IDX, ratingCol=C.CONFIDENCE,
                         coldStartStrategy="drop")
        self._set(**params)

    def als(self) -> ALS:
        """A plain :class:`ALS` with this estimator's param values (for refits and persistence)."""
        als = ALS()
        for p in self.params:
            if p.name != "k" and self.isDefined(p) and als.hasParam(p.name):
                als.set(als.getParam(p.name), self.getOrDefault(p))
        return als

    progress: CVProgress | None = None  # shared by copies (Params.copy is shallow), see CVProgress

    def _fit(self, dataset: DataFrame) -> RankingALSModel:
        train = dataset.select(C.USER_IDX, C.ITEM_IDX, C.CONFIDENCE)
        t0 = time.perf_counter()
        model = RankingALSModel(self.als().fit(train), train, self.getK(), *seen_summary(train))
        if self.progress is not None:
            params: dict[str, Any] = {"rank": self.getRank(), "regParam": self.getRegParam(), "alpha": self.getAlpha(),
                                      "maxIter": self.getMaxIter()}
            if not self.getImplicitPrefs():  # explicit ALS has no alpha
                params = {**{k: v for k, v in params.items() if k != "alpha"}, "implicitPrefs": False}
            self.progress.fitted(params, time.perf_counter() - t0)
        return model


class TopKEvaluator(Evaluator, _HasK):
    """Scores a :class:`RankingALSModel` output (``prediction``/``label`` arrays) with one ranking metric
    (``ndcg``, ``precision``, ``recall`` or ``map``) at ``k``. Larger is better; an empty fold scores 0, not NaN."""

    metricName: Param[str] = Param(Params._dummy(), "metricName", "ndcg | precision | recall | map",
                                   typeConverter=TypeConverters.toString)

    def __init__(self, metricName: str = "ndcg", k: int = 10) -> None:  # noqa: N803 - Spark's param name
        super().__init__()
        if metricName not in RANKING_METRICS:
            raise ValueError(f"unknown ranking metric {metricName!r} (expected one of {', '.join(RANKING_METRICS)})")
        self._set(metricName=metricName, k=k)

    progress: CVProgress | None = None

    def _evaluate(self, dataset: DataFrame) -> float:
        metric = self.getOrDefault(self.metricName)
        # An empty frame (e.g. every validation user was unknown to the training fold) scores 0.
        row = dataset.agg(*ranking_aggregates(self.getK(), [metric])).first()
        value = _finite(float(row[0])) if row else 0.0
        if self.progress is not None:
            self.progress.scored(metric, self.getK(), value)
        return value

    def isLargerBetter(self) -> bool:
        return True


class CVResult(NamedTuple):
    """What a cross-validation leaves, in :class:`~pyspark.ml.tuning.CrossValidatorModel`'s terms: the mean and
    (population) standard deviation of the fold scores per grid point, and the best point refitted on all of the
    cross-validated data."""

    avg_metrics: list[float]
    std_metrics: list[float]
    best_model: RankingALSModel


def cross_validate_folds(estimator: RankingALS, grid: Sequence[dict[Param, Any]], evaluator: TopKEvaluator,
                         folds: Sequence[Split], data: DataFrame, parallelism: int = 1) -> CVResult:
    """``CrossValidator`` over given (train, validation) folds, e.g. :func:`temporal_folds`: ``CrossValidator``
    trains each fold on all the other folds, which lets a time-ordered validation slice precede its training data.
    Same estimator and evaluator, same order (each grid point of fold 1, then fold 2, ...; grid points of one fold
    ``parallelism`` at a time), and the best mean is refitted on ``data``."""
    if not grid or not folds:
        raise ValueError("cross_validate_folds needs at least one grid point and one fold")
    scores: list[list[float]] = []
    for fold in folds:
        train = fold.train.persist(StorageLevel.MEMORY_AND_DISK)
        validation = fold.test.persist(StorageLevel.MEMORY_AND_DISK)
        try:
            def score(param_map: dict[Param, Any], train: DataFrame = train, validation: DataFrame = validation
                      ) -> float:
                return evaluator.evaluate(estimator.fit(train, param_map).transform(validation))
            if parallelism > 1:
                with ThreadPoolExecutor(max_workers=min(parallelism, len(grid))) as pool:
                    scores.append(list(pool.map(inheritable_thread_target(score), grid)))
            else:
                scores.append([score(pm) for pm in grid])
        finally:
            train.unpersist()
            validation.unpersist()
    by_point = list(zip(*scores, strict=True))
    avg = [fmean(s) for s in by_point]
    std = [pstdev(s) for s in by_point]
    best = max(range(len(grid)), key=lambda i: avg[i])
    return CVResult(avg, std, estimator.fit(data, grid[best]))


__all__ = [
    "CVProgress", "RankingALSModel", "RankingALS", "TopKEvaluator", "CVResult", "cross_validate_folds",
]
