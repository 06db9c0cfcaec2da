"""Shared typing for DataFrame transformations, the row-numbering and top-N transforms they share, and small frames
built from driver-side values."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from typing import Any

from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql.types import ArrayType, DataType, StructType

Transform = Callable[[DataFrame], DataFrame]
"""A step for ``df.transform``: pure, no reads, writes or actions."""

POSITION = "_pos"

# Key sets up to this many rows are broadcast rather than joined by shuffle, so the large side they pick rows from is
# never shuffled to meet them. A pair of pseudonymised ids (64 hex characters each) is ~300 bytes as a broadcast row,
# so this bounds a broadcast at ~60 MB of driver memory; a day brings far fewer (1M events over 30 days: ~30,000
# pairs, ~40,000 event ids).
BROADCAST_KEYS = 200_000


def broadcast_if_small(df: DataFrame, rows: int) -> DataFrame:
    """``df`` hinted for a broadcast join when its ``rows`` (counted by the caller) are at most
    :data:`BROADCAST_KEYS`."""
    return F.broadcast(df) if rows <= BROADCAST_KEYS else df


def local_now() -> dt.datetime:
    """Now, for a ``timestamp`` column: naive local time, which is how PySpark reads a naive datetime (a naive UTC
    time would be stored shifted by the driver's UTC offset) and how it returns a collected timestamp, so a value
    kept in memory compares with values read back."""
    return dt.datetime.now()


def local_rows(spark: SparkSession, rows: Sequence[Sequence[Any]], schema: StructType | str) -> DataFrame:
    """A frame of a few driver-side ``rows`` (tuples in ``schema``'s field order; ``schema`` a struct or a DDL
    string), with exactly ``schema``'s types and nullability, built in the JVM from literals.

    For records, metrics and documents: a classic session's ``createDataFrame`` ships a list as pickled rows that a
    Python worker process unpickles (the first one a process starts costs most of a second, each later one a
    round trip), and here no worker is needed. The values appear in the query plan, so nothing secret or personal
    belongs in them (the HMAC pads of :mod:`sparkpromo.privacy` and the user ids ``forget`` is given keep
    ``createDataFrame``). A None in a non-nullable field fails before anything runs."""
    struct = schema if isinstance(schema, StructType) else DataType.fromDDL(schema)
    if not isinstance(struct, StructType):
        raise TypeError(f"local_rows needs a struct schema, got {struct.simpleString()}")
    literals = [F.struct(*[F.lit(v).cast(f.dataType).alias(f.name) for v, f in zip(row, struct.fields, strict=True)])
                for row in rows]
    # One partition: a one-row range would otherwise be spread over the default parallelism, mostly empty tasks.
    return spark.range(0, 1, 1, 1).select(F.inline(F.array(*literals).cast(ArrayType(struct, False))))


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
