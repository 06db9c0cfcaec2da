"""positions_within, ntile_within and top_within: the numbering of a window's row_number and ntile, and its top N per
group, without moving a group (or the frame) into one task; local_rows: a few driver-side rows without a Python
worker; broadcast_if_small: key sets broadcast up to a bound."""

from __future__ import annotations

import datetime as dt
import io
import math
import re
from contextlib import redirect_stdout

import pytest
from chispa import assert_df_equality
from pyspark.errors import AnalysisException
from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql.types import StructType

from sparkpromo import schemas
from sparkpromo.clean.incremental import in_slice
from sparkpromo.frame import (
    BROADCAST_KEYS,
    POSITION,
    broadcast_if_small,
    local_rows,
    ntile_within,
    positions_within,
    top_within,
)


def _physical_plan(df: DataFrame) -> str:
    out = io.StringIO()
    with redirect_stdout(out):
        df.explain()
    return out.getvalue()


@pytest.fixture(scope="module")
def rows(spark: SparkSession) -> DataFrame:
    # Three groups of uneven size, repeated values (ties broken by id), more rows than one range partition holds.
    return spark.createDataFrame([("a" if i % 5 else "b" if i % 2 else None, (i * 37) % 11, i) for i in range(300)],
                                 "g string, v long, id long")


@pytest.mark.parametrize("group", [["g"], []], ids=["by-group", "whole-frame"])
def test_positions_equal_row_number_minus_one(rows: DataFrame, group: list[str]) -> None:
    order = [F.desc("v"), F.asc("id")]
    got = rows.transform(positions_within(group, order))
    numbered = F.row_number().over(Window.partitionBy(*group).orderBy(*order)) - F.lit(1)
    expected = rows.withColumn(POSITION, numbered.cast("long"))
    assert_df_equality(got, expected, ignore_row_order=True, ignore_nullable=True)


def test_a_constant_group_is_not_moved_into_one_partition(rows: DataFrame) -> None:
    """One campaign: a literal campaign id, which Spark folds out of a window's partitioning (the
    'No Partition Defined for Window operation' case). The numbering must still be right and range partitioned."""
    one = rows.withColumn("campaign", F.lit("only"))
    order = [F.asc("v"), F.asc("id")]
    got = one.transform(positions_within(["campaign"], order))
    numbered = F.row_number().over(Window.partitionBy("campaign").orderBy(*order)) - F.lit(1)
    window = one.withColumn(POSITION, numbered.cast("long"))
    assert "SinglePartition" in _physical_plan(window)  # what the window does with a folded constant
    assert "SinglePartition" not in _physical_plan(got)
    assert "rangepartitioning" in _physical_plan(got).lower()
    assert_df_equality(got, window, ignore_row_order=True, ignore_nullable=True)


@pytest.mark.parametrize("n", [3, 10, 400], ids=["few-tiles", "deciles", "more-tiles-than-rows"])
def test_ntile_equals_sparks_ntile(rows: DataFrame, n: int) -> None:
    order = [F.asc("v"), F.desc("id")]
    got = rows.transform(ntile_within(["g"], order, n, "tile"))
    expected = rows.withColumn("tile", F.ntile(n).over(Window.partitionBy("g").orderBy(*order)))
    assert_df_equality(got, expected, ignore_row_order=True, ignore_nullable=True)


def limit() -> Column:
    """Per-group limits as a column (a campaign's budget): uneven, one larger than its group."""
    return F.when(F.col("g") == "a", 7).when(F.col("g") == "b", 2).otherwise(500)


def test_top_within_keeps_what_one_window_keeps(rows: DataFrame) -> None:
    order = [F.desc("v"), F.asc("id")]
    got = rows.transform(top_within(["g"], order, limit(), spread=F.col("id"), buckets=3))
    n = F.row_number().over(Window.partitionBy("g").orderBy(*order))
    expected = rows.withColumn("_n", n).where(F.col("_n") <= limit()).drop("_n")
    assert got.count() == 7 + 2 + rows.where(F.col("g").isNull()).count()
    assert_df_equality(got, expected, ignore_row_order=True, ignore_nullable=True)


def test_top_within_ranks_entities_with_dense_rank(rows: DataFrame) -> None:
    """A user's list of rows is ranked as one (the order is constant over it): the best users keep every row."""
    lists = rows.withColumn("u", F.col("id") % 40).withColumn("s", (F.col("u") * 7) % 13)
    order = [F.desc("s"), F.asc("u")]
    got = lists.transform(top_within(["g"], order, limit(), spread=F.col("u"), buckets=3, rank=F.dense_rank))
    n = F.dense_rank().over(Window.partitionBy("g").orderBy(*order))
    expected = lists.withColumn("_n", n).where(F.col("_n") <= limit()).drop("_n")
    assert got.where(F.col("g") == "b").select("u").distinct().count() == 2
    assert_df_equality(got, expected, ignore_row_order=True, ignore_nullable=True)


def test_top_within_a_constant_group_first_ranks_in_buckets(rows: DataFrame) -> None:
    """One campaign (a folded literal): the whole group is not sorted in one task; only each bucket's best are."""
    one = rows.withColumn("campaign", F.lit("only"))
    order = [F.asc("v"), F.asc("id")]
    got = one.transform(top_within(["campaign"], order, F.lit(5), spread=F.col("id"), buckets=4))
    plan = _physical_plan(got).lower()
    # The first window's rows are hash partitioned by the bucket (pmod(xxhash64(id), 4)), computed as a column.
    assert "pmod(xxhash64(id" in plan and re.search(r"exchange hashpartitioning\(_w\d", plan), plan
    expected = one.orderBy(*order).limit(5)
    assert_df_equality(got, expected, ignore_row_order=True, ignore_nullable=True)


LOCAL_CASES = [
    (schemas.STAGE_RUNS, [("r1", dt.date(2026, 11, 30), "clean", 1.5, dt.datetime(2026, 11, 30, 23, 59, 58), None,
                           '{"a": "it\'s \\"quoted\\""}\n{"b": "\\\\"}', None),
                          ("r2", None, "train", 0.0, None, "{}", "", "{}")]),
    (schemas.DQ_STATS, [("r", "events", "silver", 5), ("r", "users", "quarantine:x", 2 ** 40)]),
    (schemas.MODEL_METRICS, [("r", "als", "ndcg", float("nan")), ("r", "als", "map", None)]),
    (schemas.ID_MAP, []),
    ("item_id string, category string", [("i1", None)]),
]


@pytest.mark.parametrize("schema,data", LOCAL_CASES, ids=["stage_runs", "dq", "nan_and_null", "empty", "ddl"])
def test_local_rows_equal_create_dataframe(spark: SparkSession, schema: StructType | str, data: list[tuple]) -> None:
    """Types, nullability, nulls, NaN, quotes and an empty list: the frame createDataFrame makes of the same rows."""
    made = local_rows(spark, data, schema)
    expected = spark.createDataFrame(data, schema)
    assert made.schema == expected.schema  # nullability too, so a table created from it is the declared one
    nan_rows = [r for r in made.collect() if any(isinstance(v, float) and math.isnan(v) for v in r)]
    assert len(nan_rows) == sum(1 for r in data if any(isinstance(v, float) and math.isnan(v) for v in r))
    assert_df_equality(made.fillna(-1.0), expected.fillna(-1.0), ignore_row_order=True)


def test_local_rows_need_no_python_worker(spark: SparkSession) -> None:
    """createDataFrame of a list scans an RDD of pickled rows (a Python worker unpickles them); local_rows plans
    literals only, in one partition."""
    data = [("r", "events", "silver", 5)]
    assert "ExistingRDD" in _physical_plan(spark.createDataFrame(data, schemas.DQ_STATS))
    made = local_rows(spark, data, schemas.DQ_STATS)
    plan = _physical_plan(made)
    assert "ExistingRDD" not in plan and "Python" not in plan, plan
    assert made.rdd.getNumPartitions() == 1


def test_local_rows_refuse_a_null_in_a_required_field(spark: SparkSession) -> None:
    with pytest.raises(AnalysisException, match="cannot cast"):
        local_rows(spark, [("r", None, "silver", 5)], schemas.DQ_STATS)
    with pytest.raises(ValueError):  # a row with a field too few
        local_rows(spark, [("r", "events", "silver")], schemas.DQ_STATS)


@pytest.mark.parametrize(("rows", "join"), [(3, "BroadcastHashJoin"), (BROADCAST_KEYS, "BroadcastHashJoin"),
                                            (BROADCAST_KEYS + 1, "SortMergeJoin")])
@pytest.mark.parametrize("through", ["semi-join", "in_slice"])
def test_key_sets_are_broadcast_up_to_the_bound(spark: SparkSession, rows: int, join: str, through: str) -> None:
    """Directly, and through the incremental clean's ``in_slice`` (a projection and a left join), which is how the
    clean's slice keys reach all of bronze."""
    big = spark.range(40).select(F.col("id").alias("k"), (F.col("id") * 2).alias("v"))
    keys = spark.range(3).select(F.col("id").alias("k"))
    before = spark.conf.get("spark.sql.autoBroadcastJoinThreshold")
    # Spark would broadcast these frames by their size anyway: only the hint may do it here.
    spark.conf.set("spark.sql.autoBroadcastJoinThreshold", "-1")
    try:
        hinted = broadcast_if_small(keys, rows)
        if through == "semi-join":
            joined, expected = big.join(hinted, "k", "left_semi"), big.where(F.col("k") < 3)
        else:
            joined = big.transform(in_slice(hinted, "k", "_in"))
            expected = big.withColumn("_in", F.col("k") < 3)
        plan = _physical_plan(joined)
        assert_df_equality(joined, expected, ignore_row_order=True, ignore_nullable=True)
    finally:
        spark.conf.set("spark.sql.autoBroadcastJoinThreshold", before)
    other, = {"BroadcastHashJoin", "SortMergeJoin"} - {join}
    assert join in plan and other not in plan, plan
