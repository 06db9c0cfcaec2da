"""Offline evaluation: holdout splits, top-K lists that exclude seen items (every train pair, or only what serving
excludes: :func:`served_exclusion`), ranking metrics, and the pieces that let ``CrossValidator`` (random folds) or
:func:`cross_validate_folds` (forward-chaining time folds, :func:`temporal_folds`) score ALS on top-K lists
(:class:`RankingALS` + :class:`TopKEvaluator`).

All frames use the gold interaction columns: ``user_idx``, ``item_idx`` (Int), ``confidence``, ``event_ts``.
Relevance is binary: every holdout interaction of a user is a relevant item.
"""

from __future__ import annotations

from sparkpromo.evaluate.cv import (
    CVProgress,
    CVResult,
    RankingALS,
    RankingALSModel,
    TopKEvaluator,
    cross_validate_folds,
)
from sparkpromo.evaluate.metrics import (
    catalog_coverage,
    evaluate_recommendations,
    novelty,
    ranking_frame,
    ranking_metrics,
)
from sparkpromo.evaluate.splits import (
    Split,
    _drop_unknown,
    assign_folds,
    last_days_split,
    leave_last_k_split,
    random_split,
    temporal_folds,
)
from sparkpromo.evaluate.topk import (
    GROUP_MIN_CANDIDATES,
    MAX_EXTRA_CANDIDATES,
    RANKING_METRICS,
    SEEN_GROUP_BOUNDS,
    as_lists,
    max_seen,
    model_or_popularity_top_k,
    popularity_top_k,
    purchased_pairs,
    seen_counts,
    seen_groups,
    seen_summary,
    served_exclusion,
    top_k_excluding_seen,
)

__all__ = [
    "CVProgress", "CVResult", "GROUP_MIN_CANDIDATES", "MAX_EXTRA_CANDIDATES", "RANKING_METRICS", "RankingALS",
    "RankingALSModel", "SEEN_GROUP_BOUNDS", "Split", "TopKEvaluator", "_drop_unknown", "as_lists", "assign_folds",
    "catalog_coverage", "cross_validate_folds", "evaluate_recommendations", "last_days_split",
    "leave_last_k_split", "max_seen", "model_or_popularity_top_k", "novelty", "popularity_top_k",
    "purchased_pairs", "random_split", "ranking_frame", "ranking_metrics", "seen_counts", "seen_groups",
    "seen_summary", "served_exclusion", "temporal_folds", "top_k_excluding_seen",
]
