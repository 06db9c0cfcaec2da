"""Shared typing for DataFrame transformations, and the row-numbering and top-N transforms they share."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

Transform = Callable[[DataFrame], DataFrame]
"""A step for ``df.transform``: pure, no reads, writes or actions."""

POSITION = "_pos"


def positions_within(group: Sequence[str], order: Sequence[Column], name: str = POSITION) -> Transform:
    """Add ``name``: each row's 0-based position within its ``group`` (column names; empty = the whole frame) in
    ``order`` (sort expressions: make them a total order, or ties are numbered arbitrarily), numbered
    consecutively like ``row_number() - 1``.

    Not a window over the group: a window ``partitionBy(group)`` sorts each group in one task, and when the group is
    a constant (one campaign; Spark folds the literal away) or empty, the whole frame in one task. Here the rows are
    range partitioned by ``(group, order)``, numbered inside each range by a window partitioned by the range, and
    offset by the sizes of the same group's rows in the ranges before it (a frame of one row per range and group).
    Both uses of the range exchange are one reused exchange, so they see the same ranges."""
    def apply(df: DataFrame) -> DataFrame:
        keys = [F.col(g) for g in group]
        ranged = df.repartitionByRange(*keys, *order).withColumn("_part", F.spark_partition_id())
        numbered = ranged.withColumn("_row", F.row_number().over(
            Window.partitionBy("_part", *keys).orderBy(*order)))
        sizes = numbered.groupBy("_part", *keys).agg(F.max("_row").alias("_n"))
        a, b = sizes.alias("a"), sizes.alias("b")
        before = F.col("b._part") < F.col("a._part")
        for g in group:
            before = before & F.col(f"a.{g}").eqNullSafe(F.col(f"b.{g}"))
        offsets = (a.join(b, before, "left")
                   .groupBy(F.col("a._part").alias("_o_part"), *(F.col(f"a.{g}").alias(f"_o_{i}")
                                                                 for i, g in enumerate(group)))
                   .agg(F.coalesce(F.sum("b._n"), F.lit(0)).cast("long").alias("_off")))
        on = F.col("_part") == F.col("_o_part")
        for i, g in enumerate(group):
            on = on & F.col(g).eqNullSafe(F.col(f"_o_{i}"))
        # Few rows (ranges x groups): broadcast, so the numbered rows are not shuffled again.
        return (numbered.join(F.broadcast(offsets), on)
                .select(*df.columns, (F.col("_off") + F.col("_row") - F.lit(1)).alias(name)))
    return apply


def ntile_within(group: Sequence[str], order: Sequence[Column], n: int, name: str) -> Transform:
    """Add ``name``: ``ntile(n)`` over ``group`` in ``order`` (1..n, the first ``rows mod n`` tiles one row larger),
    numbered by :func:`positions_within`, so a group (a campaign's users) is not sorted in one task."""
    def apply(df: DataFrame) -> DataFrame:
        sizes = df.groupBy(*(F.col(g).alias(f"_s_{i}") for i, g in enumerate(group))).agg(
            F.count("*").alias("_size"))
        on = F.lit(True)
        for i, g in enumerate(group):
            on = on & F.col(g).eqNullSafe(F.col(f"_s_{i}"))
        ranked = df.transform(positions_within(group, order)).join(F.broadcast(sizes), on)
        q, r = F.floor(F.col("_size") / F.lit(n)), F.col("_size") % F.lit(n)
        big = r * (q + F.lit(1))  # rows in the larger tiles
        tile = F.when(F.col(POSITION) < big, F.floor(F.col(POSITION) / (q + F.lit(1))) + F.lit(1)) \
            .otherwise(r + F.floor((F.col(POSITION) - big) / F.greatest(q, F.lit(1))) + F.lit(1))
        return ranked.select(*df.columns, tile.cast("int").alias(name))
    return apply


def top_within(group: Sequence[str], order: Sequence[Column], limit: Column, spread: Column, buckets: int = 16,
               rank: Callable[[], Column] = F.row_number) -> Transform:
    """Keep the rows whose ``rank()`` (``row_number`` or ``dense_rank``) over ``order`` within ``group`` is at most
    ``limit`` (a column: a per-group budget), as one window ranking each group would.

    In two steps, so that a group's rows are not sorted in one task: ranked first within ``(group, bucket)``, the
    bucket a hash of ``spread`` (``buckets`` of them, sorted in parallel), keeping each bucket's best ``limit``; then
    within the group over what is left, at most ``buckets * limit`` rows, however large the group. The result is
    the one-window result when ``order`` is a total order of the ranked entities and every row of one entity has the
    same ``spread`` (with ``dense_rank``, rows ranked together, such as one user's list, must share a bucket): the
    group's best ``limit`` are each among their bucket's best ``limit``."""
    def apply(df: DataFrame) -> DataFrame:
        bucket = F.pmod(F.xxhash64(spread), F.lit(buckets))
        by_bucket = Window.partitionBy(*group, bucket).orderBy(*order)
        by_group = Window.partitionBy(*group).orderBy(*order)
        return (df.withColumn("_top", rank().over(by_bucket)).where(F.col("_top") <= limit)
                .withColumn("_top", rank().over(by_group)).where(F.col("_top") <= limit).drop("_top"))
    return apply
