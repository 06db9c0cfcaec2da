"""Offline evaluation: holdout splits, top-K lists that exclude seen items (every train pair, or only what serving
excludes: :func:`served_exclusion`), ranking metrics, and the pieces that let ``CrossValidator`` (random folds) or
:func:`cross_validate_folds` (forward-chaining time folds, :func:`temporal_folds`) score ALS on top-K lists
(:class:`RankingALS` + :class:`TopKEvaluator`).

All frames use the gold interaction columns: ``user_idx``, ``item_idx`` (Int), ``confidence``, ``event_ts``.
Relevance is binary: every holdout interaction of a user is a relevant item.
"""

from sparkpromo.evaluate.cv import *  # noqa: F403
from sparkpromo.evaluate.exposure import *  # noqa: F403
from sparkpromo.evaluate.metrics import *  # noqa: F403
from sparkpromo.evaluate.splits import *  # noqa: F403
from sparkpromo.evaluate.splits import _drop_unknown  # noqa: F401 - used by tests
from sparkpromo.evaluate.topk import *  # noqa: F403
