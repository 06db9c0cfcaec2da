"""Top-K lists that exclude what a user has seen: from an ALS model, from popularity, or served's exclusion."""

from __future__ import annotations

from collections.abc import Sequence
from functools import reduce

from pyspark.ml.recommendation import ALSModel
from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql.types import DoubleType

from sparkpromo import columns as C
from sparkpromo.features import ITEM_KIND, USER_KIND

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
    item_idx pairs, e.g. :func:`served_exclusion`) replaces ``train`` as the pairs not to recommend and the seen
    counts; ``seen_max`` must then bound its per-user counts."""
    if k <= 0:
        raise ValueError(f"k must be > 0, got {k}")
    excluded = train if exclude is None else exclude
    extra = min(max_seen(excluded) if seen_max is None else seen_max, max_extra)
    top = (train.groupBy(C.ITEM_IDX).agg(F.countDistinct(C.USER_IDX).cast(DoubleType()).alias(C.SCORE))
           .orderBy(F.desc(C.SCORE), F.asc(C.ITEM_IDX)).limit(k + extra))
    # Positions through one sorted array (a few hundred rows), not a window without partitioning.
    ordered = F.array_sort(F.collect_list(F.struct((-F.col(C.SCORE)).alias("neg"), F.col(C.ITEM_IDX))))
    positioned = (top.agg(ordered.alias("_top")).select(F.posexplode("_top").alias("_pos", "_t"))
                  .select("_pos", F.col(f"_t.{C.ITEM_IDX}").alias(C.ITEM_IDX), (-F.col("_t.neg")).alias(C.SCORE)))
    who = _with_seen((users if users is not None else train).select(C.USER_IDX).distinct(), excluded)
    wanted = F.col("_pos") < F.lit(k) + F.least(F.col("_seen"), F.lit(extra))
    candidates = who.join(F.broadcast(positioned), wanted).select(C.USER_IDX, C.ITEM_IDX, C.SCORE)
    return _rank_unseen(candidates, excluded, k)


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
                              seen_max: int | None = None, n_users: int | None = None,
                              exclude: DataFrame | None = None) -> DataFrame:
    """Top-K lists as serving builds them from a registered model: :func:`top_k_excluding_seen` for the ``users``
    the model has factors for, :func:`popularity_top_k` of ``train`` for the others (users it never saw).
    ``exclude`` (user_idx, item_idx) replaces ``train`` as the pairs not to list (``seen_max`` and ``n_users`` then
    describe it)."""
    known = model.userFactors.select(F.col("id").alias(C.USER_IDX))
    users = users.select(C.USER_IDX).distinct()
    scored = top_k_excluding_seen(model, train if exclude is None else exclude, k,
                                  users=users.join(known, C.USER_IDX, "left_semi"), seen_max=seen_max,
                                  n_users=n_users)
    fallback = popularity_top_k(train, k, users=users.join(known, C.USER_IDX, "left_anti"), seen_max=seen_max,
                                exclude=exclude)
    return scored.unionByName(fallback)


def as_lists(ranked: DataFrame) -> DataFrame:
    """(user_idx, item_idx, rank) rows -> (user_idx, recommendations: array<int> in rank order)."""
    pairs = F.sort_array(F.collect_list(F.struct(F.col(C.RANK), F.col(C.ITEM_IDX))))
    return ranked.groupBy(C.USER_IDX).agg(F.transform(pairs, lambda s: s[C.ITEM_IDX]).alias(C.RECOMMENDATIONS))


__all__ = [
    "RANKING_METRICS", "MAX_EXTRA_CANDIDATES", "SEEN_GROUP_BOUNDS", "GROUP_MIN_CANDIDATES", "seen_counts",
    "seen_summary", "max_seen", "seen_groups", "top_k_excluding_seen", "popularity_top_k", "purchased_pairs",
    "served_exclusion", "model_or_popularity_top_k", "as_lists",
]
