"""Item-kNN: cosine co-occurrence similarities, neighbour cut-off and user scores on a hand-computed frame."""

from __future__ import annotations

import math

import pytest
from chispa import assert_approx_df_equality, assert_df_equality
from pyspark.sql import DataFrame, SparkSession

from sparkpromo import columns as C
from sparkpromo import evaluate as E
from sparkpromo import itemknn as K

SIMS = f"{C.ITEM_IDX} int, {K.NEIGHBOUR_IDX} int, {K.SIMILARITY} double"
SCORES = f"{C.USER_IDX} int, {C.ITEM_IDX} int, {C.SCORE} double"


@pytest.fixture(scope="module")
def history(spark: SparkSession) -> DataFrame:
    # item 1: users {1, 2}; item 2: users {1, 2}; item 3: users {2, 3}; user 2 saw item 2 twice (counts once).
    rows = [(1, 1, 1.0), (1, 2, 1.0), (2, 1, 1.0), (2, 2, 1.0), (2, 2, 3.0), (2, 3, 1.0), (3, 3, 1.0)]
    return spark.createDataFrame(rows, f"{C.USER_IDX} int, {C.ITEM_IDX} int, {C.CONFIDENCE} double")


def test_cooccurrence_counts_distinct_users(spark: SparkSession, history: DataFrame) -> None:
    got = K.item_cooccurrence(history)
    expected = spark.createDataFrame([(1, 2, 2), (2, 1, 2), (1, 3, 1), (3, 1, 1), (2, 3, 1), (3, 2, 1)],
                                     f"{C.ITEM_IDX} int, {K.NEIGHBOUR_IDX} int, cooccurrence long")
    assert_df_equality(got, expected, ignore_row_order=True, ignore_nullable=True)


def test_similarity_is_cosine_of_binary_user_vectors(spark: SparkSession, history: DataFrame) -> None:
    # cos(1,2) = 2/sqrt(2*2) = 1; cos(1,3) = cos(2,3) = 1/sqrt(2*2) = 0.5
    got = K.item_similarity(history, neighbours=10)
    expected = spark.createDataFrame([(1, 2, 1.0), (2, 1, 1.0), (1, 3, 0.5), (3, 1, 0.5), (2, 3, 0.5),
                                      (3, 2, 0.5)], SIMS)
    assert_approx_df_equality(got, expected, 1e-12, ignore_row_order=True, ignore_nullable=True)


def test_similarity_keeps_top_neighbours_ties_by_lower_index(spark: SparkSession, history: DataFrame) -> None:
    got = K.item_similarity(history, neighbours=1)
    expected = spark.createDataFrame([(1, 2, 1.0), (2, 1, 1.0), (3, 1, 0.5)], SIMS)
    assert_approx_df_equality(got, expected, 1e-12, ignore_row_order=True, ignore_nullable=True)


def test_similarity_rejects_non_positive_neighbours(history: DataFrame) -> None:
    with pytest.raises(ValueError, match="neighbours"):
        K.item_similarity(history, neighbours=0)


def test_scores_sum_similarities_over_history(spark: SparkSession, history: DataFrame) -> None:
    got = K.knn_scores(history, K.item_similarity(history, neighbours=10))
    expected = spark.createDataFrame([
        (1, 1, 1.0), (1, 2, 1.0), (1, 3, 1.0),        # user 1 {1, 2}: item 3 <- 0.5 + 0.5
        (2, 1, 1.5), (2, 2, 1.5), (2, 3, 1.0),        # user 2 {1, 2, 3}
        (3, 1, 0.5), (3, 2, 0.5),                     # user 3 {3}
    ], SCORES)
    assert_approx_df_equality(got, expected, 1e-12, ignore_row_order=True, ignore_nullable=True)


def test_top_k_excludes_seen_items(spark: SparkSession, history: DataFrame) -> None:
    ranked = E.top_k_excluding_seen(K.knn_scores(history, K.item_similarity(history)), history, k=1)
    got = {(r[C.USER_IDX], r[C.ITEM_IDX]): r[C.SCORE] for r in ranked.collect()}
    # user 2 has seen everything; user 3 ties on items 1 and 2 -> lower item_idx
    assert got.keys() == {(1, 3), (3, 1)}
    assert math.isclose(got[(1, 3)], 1.0) and math.isclose(got[(3, 1)], 0.5)
