"""Stable integer ids: the append-only gold.id_map (original id -> Int index, per kind) and indexed interactions."""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import StringType

from sparkpromo import columns as C
from sparkpromo import schemas
from sparkpromo.features.common import _conform
from sparkpromo.frame import POSITION, Transform, positions_within

INT_MAX = 2**31 - 1
USER_KIND = "user"
ITEM_KIND = "item"
ID_MAP_APP_ID = "sparkpromo.features.id_map"


def extend_id_map(existing: DataFrame, ids: DataFrame, kind: str) -> DataFrame:
    """The rows to append to gold.id_map for ``kind``: ids (first column of ``ids``) not yet mapped, numbered
    after the kind's current max idx in ``original_id`` order. Existing ids are never renumbered; nulls are
    skipped. Evaluating the result fails if an idx would exceed the Int range (ALS needs Int ids)."""
    mapped = existing.where(F.col(C.ID_KIND) == kind)
    base = mapped.agg(F.coalesce(F.max(C.IDX).cast("long"), F.lit(-1).cast("long")).alias("_base"))
    new = (ids.select(F.col(ids.columns[0]).cast(StringType()).alias(C.ORIGINAL_ID))
           .where(F.col(C.ORIGINAL_ID).isNotNull()).distinct()
           .join(mapped.select(C.ORIGINAL_ID), C.ORIGINAL_ID, "left_anti"))
    idx = F.col("_base") + F.col(POSITION) + F.lit(1)
    checked = F.when(idx > INT_MAX, F.raise_error(F.concat(
        F.lit(f"id map overflow: {kind} idx exceeds the Int range (2^31-1) at original_id "),
        F.col(C.ORIGINAL_ID)))).otherwise(idx)
    out = (new.transform(sorted_positions(C.ORIGINAL_ID)).crossJoin(base)
           .select(F.lit(kind).alias(C.ID_KIND), C.ORIGINAL_ID, checked.alias(C.IDX)))
    return _conform(out, schemas.ID_MAP)


def sorted_positions(key: str) -> Transform:
    """Distinct, non-null ``key`` values -> the same rows plus ``_pos``: the 0-based position of each in ``key``
    order, numbered consecutively, without a window over the whole frame (a first run maps every id at once; see
    :func:`~sparkpromo.frame.positions_within`)."""
    return positions_within([], [F.asc(key)], POSITION)


def index_interactions(raw: DataFrame, id_map: DataFrame) -> DataFrame:
    """(user_id, item_id, confidence, event_ts) -> schemas.INTERACTIONS via the id map (inner join: an unmapped
    id drops its rows, so map every id first with :func:`extend_id_map`)."""
    def side(kind: str, id_col: str, idx_col: str) -> DataFrame:
        return id_map.where(F.col(C.ID_KIND) == kind).select(F.col(C.ORIGINAL_ID).alias(id_col),
                                                             F.col(C.IDX).alias(idx_col))
    out = (raw.join(side(USER_KIND, C.USER_ID, C.USER_IDX), C.USER_ID)
           .join(side(ITEM_KIND, C.ITEM_ID, C.ITEM_IDX), C.ITEM_ID))
    return _conform(out, schemas.INTERACTIONS)


__all__ = [
    "INT_MAX", "USER_KIND", "ITEM_KIND", "ID_MAP_APP_ID", "extend_id_map", "sorted_positions", "index_interactions",
]
