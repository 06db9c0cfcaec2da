"""Interactions: one confidence per (user, item) from weighted, decayed events (or the latest rating), and the
lookback window of the events they are computed from."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from sparkpromo import columns as C
from sparkpromo.features.common import FeatureError, _as_of_filter, _conform
from sparkpromo.frame import Transform
from sparkpromo.schemas import RAW_INTERACTIONS


def within_lookback(reference: dt.date, lookback_days: int) -> Transform:
    """Keep the events of the ``lookback_days`` days ending on ``reference`` (``event_date`` after
    ``reference - lookback_days``); ``lookback_days == 0`` keeps every event.

    The bound is a date literal on ``event_date``, so Delta skips files (and partitions) wholly before it."""
    if lookback_days < 0:
        raise FeatureError(f"lookback_days must be >= 0, got {lookback_days}")

    def apply(events: DataFrame) -> DataFrame:
        if lookback_days == 0:
            return events
        return events.where(F.col(C.EVENT_DATE) > F.lit(reference - dt.timedelta(days=lookback_days)))
    return apply


def check_event_weights(event_weights: Mapping[str, float]) -> None:
    """Raise :class:`FeatureError` unless every canonical event type has a positive weight and no key is unknown."""
    unknown = sorted(set(event_weights) - set(C.ALL_EVENT_TYPES))
    if unknown:
        raise FeatureError(f"event_weights: unknown event type(s) {', '.join(unknown)}")
    missing = [t for t in C.EVENT_TYPES if t not in event_weights]
    if missing:
        raise FeatureError(f"event_weights: no weight for event type(s) {', '.join(missing)}")
    bad = sorted(t for t, w in event_weights.items() if not (w > 0 and math.isfinite(w)))
    if bad:
        raise FeatureError(f"event_weights: weights must be positive and finite ({', '.join(bad)})")


# Decay never goes below this: an event more than 20 half-lives old counts as much as one exactly 20 half-lives old.
# float32 (what ALS casts confidences to) keeps it, and every weight times it, far above its smallest normal.
MIN_DECAY = 2.0 ** -20


def decay_reference(as_of: dt.date, last_event_date: dt.date | None) -> dt.date:
    """The date ages are counted from: the earlier of the run's date and the data's last event date, so that a
    replay of an old log weighs its last days fully instead of decaying everything to nothing."""
    return as_of if last_event_date is None else min(as_of, last_event_date)


def interactions(as_of: dt.date, kind: str = "events", event_weights: Mapping[str, float] | None = None,
                 half_life_days: float = 30.0, max_count_per_type: int = 10, decay_from: dt.date | None = None,
                 min_rating: float = 0.0) -> Transform:
    """Silver events -> one row per (user_id, item_id): ``confidence`` and the latest ``event_ts``.

    ``kind="events"`` (implicit): confidence = Σ_type weight[type] × Σ_{the type's ``max_count_per_type`` most
    recent events} max(2^(-age_days / half_life_days), MIN_DECAY), i.e. weight × min(count, cap) × the mean decay
    of the events kept; ``age_days`` = whole days from ``event_date`` to ``decay_from`` (default ``as_of``; see
    :func:`decay_reference`), computed in double. Rating events are weighted like any other type (they need a
    weight).

    ``kind="ratings"``: confidence = the latest non-null rating of the pair (ties: highest event_id), pairs whose
    rating is below ``min_rating`` left out. Train fits it as explicit ALS, or as implicit ALS with confidence
    1 + alpha × rating.
    """
    if kind not in ("events", "ratings"):
        raise FeatureError(f"kind must be 'events' or 'ratings', got {kind!r}")
    if kind == "ratings":
        return _rating_interactions(as_of, min_rating)
    weights = dict(event_weights or {})
    check_event_weights(weights)
    if half_life_days <= 0:
        raise FeatureError(f"half_life_days must be > 0, got {half_life_days}")
    if max_count_per_type <= 0:
        raise FeatureError(f"max_count_per_type must be > 0, got {max_count_per_type}")
    weight_map = F.create_map(*(x for t, w in sorted(weights.items()) for x in (F.lit(t), F.lit(float(w)))))

    def apply(events: DataFrame) -> DataFrame:
        w = weight_map[F.col(C.EVENT_TYPE)]
        checked = F.when(w.isNull(), F.raise_error(F.concat(F.lit("no event weight for event type "),
                                                           F.col(C.EVENT_TYPE)))).otherwise(w)
        recent = Window.partitionBy(C.USER_ID, C.ITEM_ID, C.EVENT_TYPE).orderBy(F.desc(C.EVENT_TS),
                                                                               F.desc(C.EVENT_ID))
        age = F.greatest(F.datediff(F.lit(decay_from or as_of), F.col(C.EVENT_DATE)), F.lit(0)).cast("double")
        decay = F.greatest(F.pow(F.lit(2.0), -age / F.lit(float(half_life_days))), F.lit(MIN_DECAY))
        out = (events.where(_as_of_filter(as_of))
               .withColumn("_rn", F.row_number().over(recent))
               .where(F.col("_rn") <= max_count_per_type)
               .groupBy(C.USER_ID, C.ITEM_ID)
               .agg(F.sum(checked * decay).alias(C.CONFIDENCE), F.max(C.EVENT_TS).alias(C.EVENT_TS)))
        return _conform(out, RAW_INTERACTIONS)
    return apply


def _rating_interactions(as_of: dt.date, min_rating: float) -> Transform:
    def apply(events: DataFrame) -> DataFrame:
        latest = Window.partitionBy(C.USER_ID, C.ITEM_ID).orderBy(F.desc(C.EVENT_TS), F.desc(C.EVENT_ID))
        out = (events.where(_as_of_filter(as_of) & (F.col(C.EVENT_TYPE) == C.RATING_EVENT)
                            & F.col(C.RATING).isNotNull())
               .withColumn("_rn", F.row_number().over(latest))
               .where((F.col("_rn") == 1) & (F.col(C.RATING) >= F.lit(float(min_rating))))
               .select(C.USER_ID, C.ITEM_ID, F.col(C.RATING).alias(C.CONFIDENCE), C.EVENT_TS))
        return _conform(out, RAW_INTERACTIONS)
    return apply


__all__ = [
    "within_lookback", "check_event_weights", "MIN_DECAY", "decay_reference", "interactions",
]
