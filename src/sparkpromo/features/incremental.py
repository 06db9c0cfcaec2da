"""An incremental features run: only the users, items and (user, item) pairs whose gold rows can differ from the
last run's are computed again; every other gold row is carried over, moved to the new date.

What can differ, and why (``as_of`` is the run date, ``ref`` the decay reference, :func:`decay_reference`):

* a silver row changed (Delta's change data feed of silver.events, users and items between the versions the last
  run read and the ones this run reads): its user, its item and its pair;
* an event left the lookback window (its date is past the old lower bound and up to the new one), or came inside the
  run date (dated after the old run date, up to the new one): its user, item and pair;
* an add-to-cart left the open-cart window: its user (``cart_value``);
* an item record changed: the users with events on it (their ``top_category`` and cart value read it);
* an event is old enough for the decay floor (:data:`MIN_DECAY`) at the new reference: its pair, whose confidence
  is then no longer the old one times one factor.

Every other row is the last run's, moved to the new date: ``recency_days`` and ``days_since_signup`` grow by the days
between the run dates, and a pair's confidence (events) is multiplied by ``2^(-days / half_life)``, the days between
the decay references. That product equals a rebuild up to floating-point rounding (a relative 1e-15 per day); with the
sums of a recomputed user or item (monetary, prices), which add the same doubles in another order, it is the only way
an incremental run differs from a rebuild.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from dataclasses import dataclass

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from sparkpromo import columns as C
from sparkpromo.features.common import _conform
from sparkpromo.features.confidence import MIN_DECAY
from sparkpromo.features.id_map import ITEM_KIND, USER_KIND
from sparkpromo.frame import Transform
from sparkpromo.schemas import INTERACTIONS, ITEM_FEATURES, USER_FEATURES

__all__ = [
    "Dates", "moved_events", "clamped_events", "keys_of", "carried_users", "carried_items", "carried_interactions",
    "CDF_TYPES",
]

# Change data feed rows that describe a row as it is or was (update pre- and post-images, inserts, deletes).
CDF_TYPES = ("insert", "delete", "update_preimage", "update_postimage")
PAIR = (C.USER_ID, C.ITEM_ID)


@dataclass(frozen=True)
class Dates:
    """One features run's dates: the run date, the decay reference and the lookback (0 = every event)."""
    as_of: dt.date
    ref: dt.date
    lookback_days: int

    @property
    def lower(self) -> dt.date | None:
        """Events dated after this are in the window (None: no lower bound)."""
        return self.ref - dt.timedelta(days=self.lookback_days) if self.lookback_days else None


def _between(col: str, after: dt.date | None, upto: dt.date | None) -> F.Column:
    """``after < col <= upto`` (False when either bound is missing or the range is empty)."""
    if after is None or upto is None or upto <= after:
        return F.lit(False)
    return (F.col(col) > F.lit(after)) & (F.col(col) <= F.lit(upto))


def moved_events(before: Dates, now: Dates, cart_lookback_days: int) -> Transform:
    """Silver events whose membership of a window moved between the two runs: they left the lookback window, came
    inside the run date, or (add-to-cart) left the open-cart window. Columns: user_id, item_id, ``_pair`` (True
    when the pair's interaction can change, False for a cart-window move, which only changes its user)."""
    cart = dt.timedelta(days=cart_lookback_days)

    def step(events: DataFrame) -> DataFrame:
        window = (_between(C.EVENT_DATE, before.lower, now.lower)
                  | _between(C.EVENT_DATE, before.as_of, now.as_of))
        cart_moved = (F.col(C.EVENT_TYPE) == C.ADD_TO_CART) & _between(C.EVENT_DATE, before.as_of - cart,
                                                                         now.as_of - cart)
        return (events.where(window | cart_moved)
                .select(C.USER_ID, C.ITEM_ID, window.alias("_pair")))
    return step


def clamped_events(now: Dates, half_life_days: float) -> Transform:
    """Window events at least ``20 × half_life`` days older than the reference: their decay may sit on the floor
    (:data:`MIN_DECAY`), so their pair's confidence is computed again rather than scaled."""
    floor_age = math.floor(-math.log2(MIN_DECAY) * half_life_days)

    def step(events: DataFrame) -> DataFrame:
        cut = now.ref - dt.timedelta(days=floor_age)
        return events.where(F.col(C.EVENT_DATE) <= F.lit(cut)).select(*PAIR)
    return step


def keys_of(frames: Sequence[DataFrame], cols: Sequence[str]) -> DataFrame:
    """The distinct non-null ``cols`` of every frame in ``frames`` (each holds them)."""
    out = frames[0].select(*cols)
    for df in frames[1:]:
        out = out.unionByName(df.select(*cols))
    return out.dropna().distinct()


def carried_users(users: DataFrame, days: int) -> Transform:
    """Last run's user features without ``users`` (computed again), moved ``days`` run days on."""
    def step(gold: DataFrame) -> DataFrame:
        return _conform(gold.join(users, C.USER_ID, "left_anti")
                        .withColumn(C.RECENCY_DAYS, F.col(C.RECENCY_DAYS) + F.lit(days))
                        .withColumn(C.DAYS_SINCE_SIGNUP, F.col(C.DAYS_SINCE_SIGNUP) + F.lit(days)), USER_FEATURES)
    return step


def carried_items(items: DataFrame) -> Transform:
    """Last run's item features without ``items`` (computed again); nothing in them depends on the date."""
    def step(gold: DataFrame) -> DataFrame:
        return _conform(gold.join(items, C.ITEM_ID, "left_anti"), ITEM_FEATURES)
    return step


def carried_interactions(pairs: DataFrame, id_map: DataFrame, factor: float) -> Transform:
    """Last run's interactions without ``pairs`` (user_id, item_id; computed again), confidences times ``factor``
    (the decay between the two references)."""
    def side(kind: str, id_col: str, idx_col: str) -> DataFrame:
        return id_map.where(F.col(C.ID_KIND) == kind).select(F.col(C.ORIGINAL_ID).alias(id_col),
                                                             F.col(C.IDX).alias(idx_col))

    def step(gold: DataFrame) -> DataFrame:
        indexed = (pairs.join(side(USER_KIND, C.USER_ID, C.USER_IDX), C.USER_ID)
                   .join(side(ITEM_KIND, C.ITEM_ID, C.ITEM_IDX), C.ITEM_ID)
                   .select(C.USER_IDX, C.ITEM_IDX))
        kept = gold.join(indexed, [C.USER_IDX, C.ITEM_IDX], "left_anti")
        if factor != 1.0:
            kept = kept.withColumn(C.CONFIDENCE, F.col(C.CONFIDENCE) * F.lit(factor))
        return _conform(kept, INTERACTIONS)
    return step
