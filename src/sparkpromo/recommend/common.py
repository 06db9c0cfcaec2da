"""The recommend stage's shared names: the output table's declaration, candidate sources, reasons and small
per-campaign helpers."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from functools import reduce
from itertools import chain
from typing import Any

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import (
    ArrayType,
    StringType,
)

from sparkpromo import columns as C
from sparkpromo.frame import Transform
from sparkpromo.schemas import OFFER_TYPE, RECOMMENDATIONS

ALS, POPULARITY, SEGMENT_POPULARITY, GLOBAL_POPULARITY, BUNDLE = (
    "als", "popularity", "segment_popularity", "global_popularity", "bundle")
FALLBACK_SOURCES = (POPULARITY, SEGMENT_POPULARITY, GLOBAL_POPULARITY)
CHAMPIONS = (ALS, POPULARITY)
REASON_SIMILAR = "similar to "
REASON_POPULAR_IN = "popular in "
REASON_POPULAR = "popular overall"
HISTORY_ITEMS = 20  # past items per user considered for ALS reasons
CONTROL_BUCKETS = 1_000_000
_RUN_ID_RE = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")


# An offer's text when its campaign sets none, by campaign type; "plain" for an offer without a coupon.
DEFAULT_OFFER_TEXT = {
    "welcome": "Welcome! {discount}% off {item_name} with code {coupon}",
    "birthday": "Happy birthday! {discount}% off {item_name} with code {coupon}",
    "cart_threshold": "Add {item_name} to your cart and save {discount}% with code {coupon}",
    "bundle": "Complete the set with {item_name}: {discount}% off with code {coupon}",
    "generic": "{campaign}: {discount}% off {item_name} with code {coupon}",
    "plain": "{campaign}: {item_name}",
}
COUPON_CODE_LENGTH = 16  # 64 bits: a million codes of one campaign run collide with odds of about 3e-8
# score = (MAX_LEVEL - level + q) / (MAX_LEVEL + 1), q = SCORE_FLOOR + (1 - SCORE_FLOOR) * p, p the raw score
# min-max scaled within (campaign, source). The floor keeps adjacent levels' bands apart: with p alone the lowest
# model score and the highest segment popularity would both be 2/3.
MAX_LEVEL = 2
SCORE_FLOOR = 0.01



# The silver.events columns this stage reads.
EVENT_COLUMNS = (C.USER_ID, C.ITEM_ID, C.EVENT_TYPE, C.EVENT_TS, C.EVENT_DATE, C.PRICE, C.QUANTITY)

# Candidate rows flowing through the ranking transforms.
CANDIDATE_COLUMNS = (C.CAMPAIGN_ID, C.USER_ID, C.ITEM_ID, C.SCORE, C.SOURCE, C.LEVEL, C.REASON, C.MIN_PRICE,
                     C.MAX_PRICE)


class RecommendError(RuntimeError):
    """A recommend-stage problem (unreadable registry); ``str()`` is one line."""


# ----------------------------------------------------------------------------------------------------------------
# Small helpers
# ----------------------------------------------------------------------------------------------------------------
def _by_campaign(values: Mapping[str, Any]) -> Column:
    """Per-campaign literal looked up by ``campaign_id`` (a literal map; values never become SQL text)."""
    return F.create_map(*chain.from_iterable((F.lit(k), F.lit(v)) for k, v in values.items()))[F.col(C.CAMPAIGN_ID)]


def _order() -> list[Column]:
    """Ranking order inside a list: source precedence, then score, then item id (deterministic)."""
    return [F.asc(C.LEVEL), F.desc(C.SCORE), F.asc(C.ITEM_ID)]


def _empty_reason() -> Column:
    return F.lit(None).cast(ArrayType(StringType()))


def _with_campaign(df: DataFrame, campaign_id: str) -> DataFrame:
    return df.select(F.lit(campaign_id).alias(C.CAMPAIGN_ID), *df.columns)


def _union(frames: Sequence[DataFrame]) -> DataFrame | None:
    return reduce(lambda a, b: a.unionByName(b), frames) if frames else None


def _ids(id_map: DataFrame, kind: str, id_col: str, idx_col: str) -> DataFrame:
    return id_map.where(F.col(C.ID_KIND) == kind).select(F.col(C.ORIGINAL_ID).alias(id_col),
                                                         F.col(C.IDX).alias(idx_col))


def with_user_idx(id_map: DataFrame) -> Transform:
    """Add ``user_idx``; users unknown to the id map are dropped (they are cold-start users)."""
    def apply(df: DataFrame) -> DataFrame:
        return df.join(_ids(id_map, "user", C.USER_ID, C.USER_IDX), C.USER_ID)
    return apply


def to_original_ids(id_map: DataFrame) -> Transform:
    """Replace ``user_idx``/``item_idx`` by the original ``user_id``/``item_id``."""
    def apply(df: DataFrame) -> DataFrame:
        return (df.join(_ids(id_map, "user", C.USER_ID, C.USER_IDX), C.USER_IDX)
                .join(_ids(id_map, "item", C.ITEM_ID, C.ITEM_IDX), C.ITEM_IDX)
                .drop(C.USER_IDX, C.ITEM_IDX))
    return apply


def _dot(a: Column, b: Column) -> Column:
    return F.aggregate(F.zip_with(a, b, lambda x, y: x * y), F.lit(0.0), lambda acc, x: acc + x)

__all__ = ["ALS", "BUNDLE", "CANDIDATE_COLUMNS", "CHAMPIONS", "CONTROL_BUCKETS",
    "COUPON_CODE_LENGTH", "DEFAULT_OFFER_TEXT", "EVENT_COLUMNS", "FALLBACK_SOURCES", "GLOBAL_POPULARITY",
    "HISTORY_ITEMS", "MAX_LEVEL", "SCORE_FLOOR", "OFFER_TYPE", "POPULARITY", "REASON_POPULAR",
    "REASON_POPULAR_IN", "REASON_SIMILAR", "RECOMMENDATIONS", "RecommendError", "SEGMENT_POPULARITY",
    "to_original_ids", "with_user_idx"]
