"""Offline evaluation: holdout splits, top-K lists that exclude seen items (every train pair, or only what serving
excludes: :func:`served_exclusion`), ranking metrics, and the pieces that let ``CrossValidator`` (random folds) or
:func:`cross_validate_folds` (forward-chaining time folds, :func:`temporal_folds`) score ALS on top-K lists
(:class:`RankingALS` + :class:`TopKEvaluator`).

All frames use the gold interaction columns: ``user_idx``, ``item_idx`` (Int), ``confidence``, ``event_ts``.
Relevance is binary: every holdout interaction of a user is a relevant item.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import reduce
from statistics import fmean, pstdev
from typing import Any, NamedTuple

from pyspark import StorageLevel
from pyspark.ml import Estimator, Model
from pyspark.ml.evaluation import Evaluator, RankingEvaluator
from pyspark.ml.param import Param, Params, TypeConverters
from pyspark.ml.recommendation import ALS, ALSModel, _ALSParams
from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql.types import ArrayType, DoubleType, IntegerType
from pyspark.util import inheritable_thread_target

from sparkpromo import columns as C
from sparkpromo.features import ITEM_KIND, USER_KIND
from sparkpromo.frame import Transform

log = logging.getLogger(__name__)


# metric name in config -> RankingEvaluator metricName
RANKING_METRICS = {"ndcg": "ndcgAtK", "precision": "precisionAtK", "recall": "recallAtK",
                   "map": "meanAveragePrecisionAtK"}
# At most this many extra candidates are asked of the model to make room for seen items; a user who has seen more
# than this may get fewer than k unseen items back.
MAX_EXTRA_CANDIDATES = 1000
# Users are scored in groups by the number of items they have seen, each group asking for k + (its largest count)
# candidates: one n for everybody (k + the heaviest history) gives every user the list only the heaviest users need
# (at 10M generated events: ~250M candidate rows for 250k users, most of whom have seen fewer than 64 items).
SEEN_GROUP_BOUNDS = (16, 64, 256)
# Below this many candidate rows (users x list size) one list size for everybody is cheaper: each group is a scoring
# job of its own (ML-100k: 943 users x 747 candidates, where grouping took 2.6x as long as a single call).
GROUP_MIN_CANDIDATES = 2_000_000
_BUCKETS = 1_000_000


class Split(NamedTuple):
    train: DataFrame
    test: DataFrame


# ----------------------------------------------------------------------------------------------------------------
# Splits
# ----------------------------------------------------------------------------------------------------------------
def _drop_unknown(train: DataFrame, test: DataFrame) -> DataFrame:
    """Test rows whose user or item never appears in train: a collaborative model cannot score them."""
    return (test.join(train.select(C.USER_IDX).distinct(), C.USER_IDX, "left_semi")
            .join(train.select(C.ITEM_IDX).distinct(), C.ITEM_IDX, "left_semi"))


def _hash_unit(seed: int) -> Any:
    """A deterministic pseudo-random number in [0, 1) per (user_idx, item_idx), independent of partitioning."""
    h = F.xxhash64(F.col(C.USER_IDX), F.col(C.ITEM_IDX), F.lit(seed))
    return F.pmod(h, F.lit(_BUCKETS)) / F.lit(float(_BUCKETS))


def random_split(df: DataFrame, test_fraction: float, seed: int) -> Split:
    """Per-interaction split: a row goes to test with probability ``test_fraction``, decided by a seeded hash of
    (user_idx, item_idx), so the split does not depend on partitioning or row order. Test rows whose user or item
    is not in train are dropped from test."""
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    is_test = _hash_unit(seed) < F.lit(test_fraction)
    train = df.where(~is_test)
    return Split(train, _drop_unknown(train, df.where(is_test)))


def last_days_split(df: DataFrame, days: int) -> Split:
    """Temporal split: test = interactions whose latest ``event_ts`` falls in the last ``days`` days before the
    newest interaction in ``df`` (one global cut-off, so nothing from the future leaks into train; rows without a
    timestamp stay in train). Test rows whose user or item is not in train are dropped from test."""
    if days <= 0:
        raise ValueError(f"days must be > 0, got {days}")
    cutoff = df.agg((F.max(C.EVENT_TS) - F.make_dt_interval(F.lit(days))).alias("_cutoff"))
    is_test = F.coalesce(F.col(C.EVENT_TS) > F.col("_cutoff"), F.lit(False))  # no timestamp: train
    marked = df.crossJoin(F.broadcast(cutoff)).withColumn("_test", is_test)
    train = marked.where(~F.col("_test")).drop("_test", "_cutoff")
    test = marked.where(F.col("_test")).drop("_test", "_cutoff")
    return Split(train, _drop_unknown(train, test))


def leave_last_k_split(df: DataFrame, k: int) -> Split:
    """Per user: the ``k`` most recent interactions (by ``event_ts``, ties by item_idx) go to test. Users with
    ``k`` or fewer interactions stay wholly in train (they would have nothing to learn from). Test rows whose item
    is not in train are dropped from test."""
    if k <= 0:
        raise ValueError(f"k must be > 0, got {k}")
    by_user = Window.partitionBy(C.USER_IDX)
    recent = by_user.orderBy(F.desc_nulls_last(C.EVENT_TS), F.desc(C.ITEM_IDX))
    marked = (df.withColumn("_rn", F.row_number().over(recent))
              .withColumn("_n", F.count("*").over(by_user))
              .withColumn("_test", (F.col("_rn") <= k) & (F.col("_n") > k)))
    train = marked.where(~F.col("_test")).drop("_rn", "_n", "_test")
    test = marked.where(F.col("_test")).drop("_rn", "_n", "_test")
    return Split(train, _drop_unknown(train, test))


def temporal_folds(df: DataFrame, num_folds: int) -> list[Split]:
    """Forward-chaining cross-validation folds: ``event_ts`` cut at its ``i / (num_folds + 1)`` quantiles
    (i = 1..num_folds); fold i trains on every interaction before cut i and validates on those from cut i up to
    cut i + 1 (the last fold: to the end). So no fold validates on data older than what it trains on, and each
    fold trains on more history than the one before. Rows without a timestamp train in every fold and are never
    validated on. The cuts are computed lazily (one aggregate joined to the rows), nothing is collected."""
    if num_folds < 1:
        raise ValueError(f"num_folds must be >= 1, got {num_folds}")
    micros = F.unix_micros(F.col(C.EVENT_TS))
    fractions = [i / (num_folds + 1) for i in range(1, num_folds + 1)]
    cuts = df.agg(F.percentile_approx(micros, fractions).alias("_cuts"))
    marked = df.crossJoin(F.broadcast(cuts))
    folds = []
    for i in range(num_folds):
        lo = F.col("_cuts")[i]
        until_next = micros < F.col("_cuts")[i + 1] if i + 1 < num_folds else F.lit(True)
        train = marked.where(micros.isNull() | (micros < lo)).drop("_cuts")
        validation = marked.where((micros >= lo) & until_next).drop("_cuts")
        folds.append(Split(train, validation))
    return folds


def assign_folds(num_folds: int, seed: int) -> Transform:
    """Add ``_fold`` in [0, num_folds): a seeded hash of (user_idx, item_idx), for CrossValidator's ``foldCol``
    (deterministic, unlike ``rand`` whose values depend on partitioning)."""
    def apply(df: DataFrame) -> DataFrame:
        h = F.xxhash64(F.col(C.USER_IDX), F.col(C.ITEM_IDX), F.lit(seed), F.lit("fold"))
        return df.withColumn(C.FOLD, F.pmod(h, F.lit(num_folds)).cast(IntegerType()))
    return apply


# ----------------------------------------------------------------------------------------------------------------
# Top-K lists
# ----------------------------------------------------------------------------------------------------------------
def seen_counts(train: DataFrame) -> DataFrame:
    """(user_idx, _seen): distinct train items per user."""
    return train.groupBy(C.USER_IDX).agg(F.countDistinct(C.ITEM_IDX).alias("_seen"))


def seen_summary(train: DataFrame) -> tuple[int, int]:
    """(largest number of distinct train items of one user, number of users): one aggregate row to the driver."""
    row = seen_counts(train).agg(F.max("_seen"), F.count("*")).first()
    return (int(row[0] or 0), int(row[1] or 0)) if row else (0, 0)


def max_seen(train: DataFrame) -> int:
    """Largest number of distinct train items of one user."""
    return seen_summary(train)[0]


def _rank_unseen(candidates: DataFrame, train: DataFrame, k: int) -> DataFrame:
    """candidates (user_idx, item_idx, score) -> top ``k`` per user after removing train pairs, with ``rank``."""
    seen = train.select(C.USER_IDX, C.ITEM_IDX).distinct()
    w = Window.partitionBy(C.USER_IDX).orderBy(F.desc(C.SCORE), F.asc(C.ITEM_IDX))
    return (candidates.join(seen, [C.USER_IDX, C.ITEM_IDX], "left_anti")
            .withColumn(C.RANK, F.row_number().over(w))
            .where(F.col(C.RANK) <= k)
            .select(C.USER_IDX, C.ITEM_IDX, F.col(C.SCORE).cast(DoubleType()).alias(C.SCORE), C.RANK))


def seen_groups(extra: int) -> list[int]:
    """Upper bounds of the seen-item counts scored as one group: :data:`SEEN_GROUP_BOUNDS` below ``extra``, then
    ``extra`` itself."""
    return [b for b in SEEN_GROUP_BOUNDS if b < extra] + [max(extra, 0)]


def _with_seen(who: DataFrame, train: DataFrame) -> DataFrame:
    """``who`` (user_idx) plus ``_seen`` (0 for users without train rows)."""
    return (who.join(seen_counts(train), C.USER_IDX, "left")
            .select(C.USER_IDX, F.coalesce(F.col("_seen"), F.lit(0)).alias("_seen")))


def _explode_recs(recs: DataFrame, model: ALSModel) -> DataFrame:
    rec = F.explode("recommendations").alias("r")
    return (recs.select(F.col(model.getUserCol()).alias(C.USER_IDX), rec)
            .select(C.USER_IDX, F.col(f"r.{model.getItemCol()}").alias(C.ITEM_IDX),
                    F.col("r.rating").alias(C.SCORE)))


def top_k_excluding_seen(model_or_scores: ALSModel | DataFrame, train: DataFrame, k: int,
                         users: DataFrame | None = None, seen_max: int | None = None,
                         max_extra: int = MAX_EXTRA_CANDIDATES, n_users: int | None = None) -> DataFrame:
    """Top ``k`` unseen items per user: (user_idx, item_idx, score, rank), rank 1 = best.

    With an ALS model, asks for at least ``k + min(seen, max_extra)`` candidates per user (``users``, or all
    users) with ``recommendForUserSubset``/``recommendForAllUsers``, drops items the user has in ``train`` and
    re-ranks. When that list size times the users (``n_users``, train's users by default) exceeds
    :data:`GROUP_MIN_CANDIDATES`, users are scored in groups by their seen count (:func:`seen_groups`) so that light
    users do not get the candidate list of the heaviest one; the result is the same. With a frame of
    (user_idx, item_idx, score) candidates it only filters and re-ranks. Users unknown to the model get no rows.
    ``seen_max`` and ``n_users`` default to :func:`seen_summary` of ``train`` (one action).
    """
    if k <= 0:
        raise ValueError(f"k must be > 0, got {k}")
    if isinstance(model_or_scores, DataFrame):
        return _rank_unseen(model_or_scores.select(C.USER_IDX, C.ITEM_IDX, C.SCORE), train, k)
    model = model_or_scores
    if seen_max is None or n_users is None:
        summary = seen_summary(train)
        seen_max = summary[0] if seen_max is None else seen_max
        n_users = summary[1] if n_users is None else n_users
    extra = min(seen_max, max_extra)
    bounds = seen_groups(extra) if n_users * (k + extra) > GROUP_MIN_CANDIDATES else [extra]
    if len(bounds) == 1:
        recs = (model.recommendForUserSubset(users.select(model.getUserCol()).distinct(), k + bounds[0])
                if users is not None else model.recommendForAllUsers(k + bounds[0]))
        return _rank_unseen(_explode_recs(recs, model), train, k)
    who = _with_seen((users if users is not None else train).select(C.USER_IDX).distinct(), train)
    group = F.lit(len(bounds) - 1)
    for i in reversed(range(len(bounds) - 1)):
        group = F.when(F.col("_seen") <= bounds[i], F.lit(i)).otherwise(group)
    who = who.withColumn("_group", group)
    parts = [_explode_recs(model.recommendForUserSubset(
                 who.where(F.col("_group") == i).select(F.col(C.USER_IDX).alias(model.getUserCol())), k + bound),
                 model)
             for i, bound in enumerate(bounds)]
    return _rank_unseen(reduce(DataFrame.unionByName, parts), train, k)


def popularity_top_k(train: DataFrame, k: int, users: DataFrame | None = None, seen_max: int | None = None,
                     max_extra: int = MAX_EXTRA_CANDIDATES, exclude: DataFrame | None = None) -> DataFrame:
    """Popularity baseline in the same shape as :func:`top_k_excluding_seen`: each user's ``k`` most popular unseen
    items, popularity = distinct train users per item (ties: lower item_idx). ``users`` defaults to train users.
    Each user gets only the ``k + min(seen, max_extra)`` most popular items as candidates. ``exclude`` (user_idx,
    item_idx pairs, a subset of ``train``'s) replaces ``train`` as the pairs not to recommend, e.g.
    :func:`served_exclusion`."""
    if k <= 0:
        raise ValueError(f"k must be > 0, got {k}")
    extra = min(max_seen(train) if seen_max is None else seen_max, max_extra)
    top = (train.groupBy(C.ITEM_IDX).agg(F.countDistinct(C.USER_IDX).cast(DoubleType()).alias(C.SCORE))
           .orderBy(F.desc(C.SCORE), F.asc(C.ITEM_IDX)).limit(k + extra))
    # Positions through one sorted array (a few hundred rows), not a window without partitioning.
    ordered = F.array_sort(F.collect_list(F.struct((-F.col(C.SCORE)).alias("neg"), F.col(C.ITEM_IDX))))
    positioned = (top.agg(ordered.alias("_top")).select(F.posexplode("_top").alias("_pos", "_t"))
                  .select("_pos", F.col(f"_t.{C.ITEM_IDX}").alias(C.ITEM_IDX), (-F.col("_t.neg")).alias(C.SCORE)))
    who = _with_seen((users if users is not None else train).select(C.USER_IDX).distinct(), train)
    wanted = F.col("_pos") < F.lit(k) + F.least(F.col("_seen"), F.lit(extra))
    candidates = who.join(F.broadcast(positioned), wanted).select(C.USER_IDX, C.ITEM_IDX, C.SCORE)
    return _rank_unseen(candidates, train if exclude is None else exclude, k)


def purchased_pairs(events: DataFrame, id_map: DataFrame, items: DataFrame,
                    repeatable_categories: Sequence[str]) -> DataFrame:
    """(user_idx, item_idx) pairs that serving never recommends again: items the user consumed (silver events whose
    ``event_type`` is in :data:`~sparkpromo.columns.CONSUMED_EVENT_TYPES`: bought or rated, as serving reads them)
    whose ``category`` (``items``: item_id, category) is not repeatable, the rule of
    :func:`sparkpromo.recommend.exclude_purchased`, mapped to indices through ``id_map``."""
    def side(kind: str, id_col: str, idx_col: str) -> DataFrame:
        return id_map.where(F.col(C.ID_KIND) == kind).select(F.col(C.ORIGINAL_ID).alias(id_col),
                                                             F.col(C.IDX).alias(idx_col))
    bought = events.where(F.col(C.EVENT_TYPE).isin(*C.CONSUMED_EVENT_TYPES)).select(C.USER_ID, C.ITEM_ID).distinct()
    if repeatable_categories:
        repeatable = items.where(F.col(C.CATEGORY).isin(*repeatable_categories)).select(C.ITEM_ID)
        bought = bought.join(repeatable, C.ITEM_ID, "left_anti")
    return (bought.join(side(USER_KIND, C.USER_ID, C.USER_IDX), C.USER_ID)
            .join(side(ITEM_KIND, C.ITEM_ID, C.ITEM_IDX), C.ITEM_ID)
            .select(C.USER_IDX, C.ITEM_IDX))


def served_exclusion(train: DataFrame, purchased: DataFrame) -> DataFrame:
    """The train pairs serving excludes (:func:`purchased_pairs`): a user's viewed, carted or favourited items, and
    bought or rated items of repeatable categories, stay recommendable, whereas offline evaluation excludes every
    train pair."""
    return (train.select(C.USER_IDX, C.ITEM_IDX).distinct()
            .join(purchased.select(C.USER_IDX, C.ITEM_IDX), [C.USER_IDX, C.ITEM_IDX], "left_semi"))


def model_or_popularity_top_k(model: ALSModel, train: DataFrame, k: int, users: DataFrame,
                              seen_max: int | None = None, n_users: int | None = None) -> DataFrame:
    """Top-K lists as serving builds them from a registered model: :func:`top_k_excluding_seen` for the ``users``
    the model has factors for, :func:`popularity_top_k` of ``train`` for the others (users it never saw)."""
    known = model.userFactors.select(F.col("id").alias(C.USER_IDX))
    users = users.select(C.USER_IDX).distinct()
    scored = top_k_excluding_seen(model, train, k, users=users.join(known, C.USER_IDX, "left_semi"),
                                  seen_max=seen_max, n_users=n_users)
    fallback = popularity_top_k(train, k, users=users.join(known, C.USER_IDX, "left_anti"), seen_max=seen_max)
    return scored.unionByName(fallback)


def as_lists(ranked: DataFrame) -> DataFrame:
    """(user_idx, item_idx, rank) rows -> (user_idx, recommendations: array<int> in rank order)."""
    pairs = F.sort_array(F.collect_list(F.struct(F.col(C.RANK), F.col(C.ITEM_IDX))))
    return ranked.groupBy(C.USER_IDX).agg(F.transform(pairs, lambda s: s[C.ITEM_IDX]).alias(C.RECOMMENDATIONS))


# ----------------------------------------------------------------------------------------------------------------
# Metrics
# ----------------------------------------------------------------------------------------------------------------
def ranking_frame(recs: DataFrame, holdout: DataFrame) -> DataFrame:
    """One row per holdout user: ``prediction`` (the user's recommendation list, empty when there is none) and
    ``label`` (the user's holdout items), both array<double> as RankingEvaluator wants them."""
    labels = holdout.groupBy(C.USER_IDX).agg(
        F.array_sort(F.collect_set(F.col(C.ITEM_IDX).cast(DoubleType()))).alias(C.LABEL))
    empty = F.array().cast(ArrayType(DoubleType()))
    return (labels.join(recs.select(C.USER_IDX, C.RECOMMENDATIONS), C.USER_IDX, "left")
            .select(C.USER_IDX,
                    F.coalesce(F.col(C.RECOMMENDATIONS).cast(ArrayType(DoubleType())), empty).alias(C.PREDICTION),
                    C.LABEL))


def _ranking_evaluator(metric: str, k: int) -> RankingEvaluator:
    if metric not in RANKING_METRICS:
        raise ValueError(f"unknown ranking metric {metric!r} (expected one of {', '.join(RANKING_METRICS)})")
    return RankingEvaluator(predictionCol=C.PREDICTION, labelCol=C.LABEL, metricName=RANKING_METRICS[metric], k=k)


def _finite(x: float) -> float:
    return x if math.isfinite(x) else 0.0


def ranking_metrics(recs: DataFrame, holdout: DataFrame, k: int) -> dict[str, float]:
    """NDCG@k, precision@k, recall@k and MAP@k (Spark's RankingEvaluator definitions) of ``recs``
    (user_idx, recommendations) against ``holdout`` (user_idx, item_idx), averaged over holdout users; a user
    without recommendations scores 0. An empty holdout gives 0.0 for every metric."""
    frame = ranking_frame(recs, holdout).persist(StorageLevel.MEMORY_AND_DISK)  # scanned once per metric
    try:
        if frame.isEmpty():  # RankingEvaluator fails on an empty frame
            return dict.fromkeys(RANKING_METRICS, 0.0)
        return {name: _finite(_ranking_evaluator(name, k).evaluate(frame)) for name in RANKING_METRICS}
    finally:
        frame.unpersist()


def catalog_coverage(ranked: DataFrame, catalog: DataFrame) -> float:
    """Distinct recommended items / distinct items in ``catalog`` (any frame with item_idx)."""
    row = (ranked.agg(F.countDistinct(C.ITEM_IDX).alias("rec"))
           .crossJoin(catalog.agg(F.countDistinct(C.ITEM_IDX).alias("cat"))).first())
    return float(row["rec"]) / row["cat"] if row and row["cat"] else 0.0


def novelty(ranked: DataFrame, train: DataFrame) -> float:
    """Mean self-information -log2(share of train users who interacted with the item) over all recommended
    (user, item) rows; 0.0 when nothing is recommended."""
    users = train.agg(F.countDistinct(C.USER_IDX).alias("_users"))
    pop = train.groupBy(C.ITEM_IDX).agg(F.countDistinct(C.USER_IDX).alias("_pop"))
    row = (ranked.join(pop, C.ITEM_IDX).crossJoin(users)
           .agg(F.avg(-F.log2(F.col("_pop") / F.col("_users")))).first())
    return float(row[0]) if row and row[0] is not None else 0.0


def evaluate_recommendations(ranked: DataFrame, holdout: DataFrame, train: DataFrame, k: int) -> dict[str, float]:
    """All holdout metrics of ranked top-K rows: ndcg, precision, recall, map, coverage (of the train catalog),
    novelty."""
    ranked = ranked.persist(StorageLevel.MEMORY_AND_DISK)  # three passes; computing top-K lists is the costly part
    try:
        out = ranking_metrics(as_lists(ranked), holdout, k)
        out["coverage"] = catalog_coverage(ranked, train)
        out["novelty"] = novelty(ranked, train)
        return out
    finally:
        ranked.unpersist()


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
        # An empty frame: e.g. every validation user was unknown to the training fold.
        value = 0.0 if dataset.isEmpty() else _finite(_ranking_evaluator(metric, self.getK()).evaluate(dataset))
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
