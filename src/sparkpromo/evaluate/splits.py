"""Holdout splits and cross-validation folds of the interactions (random, by time, leave-last-k)."""

from __future__ import annotations

from typing import Any, NamedTuple

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql.types import IntegerType

from sparkpromo import columns as C
from sparkpromo.frame import Transform

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


__all__ = [
    "Split", "random_split", "last_days_split", "leave_last_k_split", "temporal_folds", "assign_folds",
]
