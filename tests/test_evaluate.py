"""Evaluation: splits, top-K lists, ranking metrics against hand-computed values, the CV model/evaluator pair."""

from __future__ import annotations

import datetime as dt
import math

import pytest
from chispa import assert_df_equality
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from sparkpromo import columns as C
from sparkpromo import evaluate as E
from sparkpromo import schemas

T0 = dt.datetime(2024, 1, 1)


def inter(spark: SparkSession, rows: list[tuple[int, int, float, int]]) -> DataFrame:
    """rows: (user_idx, item_idx, confidence, day offset of event_ts)."""
    return spark.createDataFrame([(u, i, float(c), T0 + dt.timedelta(days=d)) for u, i, c, d in rows],
                                 schemas.INTERACTIONS)


def pairs(df: DataFrame) -> set[tuple[int, int]]:
    return {(r[C.USER_IDX], r[C.ITEM_IDX]) for r in df.select(C.USER_IDX, C.ITEM_IDX).collect()}


# ----------------------------------------------------------------------------------------------------------------
# Metrics
# ----------------------------------------------------------------------------------------------------------------
def test_ranking_metrics_match_hand_computed(spark: SparkSession) -> None:
    recs = spark.createDataFrame([(1, [10, 20, 30]), (2, [50, 60, 70]), (4, [10])],
                                 f"{C.USER_IDX} int, {C.RECOMMENDATIONS} array<int>")
    holdout = spark.createDataFrame([(1, 10), (1, 30), (1, 40), (2, 60), (3, 80)],
                                    f"{C.USER_IDX} int, {C.ITEM_IDX} int")
    got = E.ranking_metrics(recs, holdout, k=3)
    lg = math.log2
    # user 1: hits at ranks 1 and 3 of 3 relevant; user 2: hit at rank 2 of 1 relevant; user 3: no list -> zeros.
    # user 4 has recommendations but no holdout items: not averaged.
    ndcg1 = (1 / lg(2) + 1 / lg(4)) / (1 / lg(2) + 1 / lg(3) + 1 / lg(4))
    ndcg2 = (1 / lg(3)) / (1 / lg(2))
    expected = {
        "precision": (2 / 3 + 1 / 3 + 0) / 3,
        "recall": (2 / 3 + 1 + 0) / 3,
        "ndcg": (ndcg1 + ndcg2 + 0) / 3,
        "map": ((1 / 1 + 2 / 3) / 3 + (1 / 2) / 1 + 0) / 3,  # AP@k divides by min(|relevant|, k)
    }
    assert got.keys() == expected.keys()
    for name, value in expected.items():
        assert got[name] == pytest.approx(value, abs=1e-9), name


def test_ranking_frame_gives_empty_list_not_null(spark: SparkSession) -> None:
    recs = spark.createDataFrame([], f"{C.USER_IDX} int, {C.RECOMMENDATIONS} array<int>")
    holdout = spark.createDataFrame([(3, 80)], f"{C.USER_IDX} int, {C.ITEM_IDX} int")
    row = E.ranking_frame(recs, holdout).first()
    assert row[C.PREDICTION] == [] and row[C.LABEL] == [80.0]
    assert E.ranking_metrics(recs, holdout, 5) == {"ndcg": 0.0, "precision": 0.0, "recall": 0.0, "map": 0.0}
    assert E.ranking_metrics(recs, holdout.limit(0), 5)["ndcg"] == 0.0  # empty holdout: 0, not NaN


def _varied_frame(spark: SparkSession) -> DataFrame:
    """Ranking-frame rows covering every branch of Spark's metrics at k=3: lists shorter and longer than k, more
    labels than k, hits at every rank, no hit, an empty list and an empty label set."""
    rows = [(1, [10.0, 20.0, 30.0, 40.0], [10.0, 30.0, 40.0, 50.0]), (2, [50.0, 60.0], [60.0]),
            (3, [], [80.0, 81.0]), (4, [1.0, 2.0, 3.0], [7.0]), (5, [7.0], [7.0, 8.0, 9.0, 10.0, 11.0]),
            (6, [4.0, 5.0, 6.0], [6.0, 5.0, 4.0]), (7, [9.0], []), (8, [2.0, 9.0, 3.0, 8.0], [8.0, 3.0])]
    return spark.createDataFrame(rows, f"{C.USER_IDX} int, {C.PREDICTION} array<double>, {C.LABEL} array<double>")


def test_ranking_aggregates_equal_sparks_ranking_evaluator(spark: SparkSession) -> None:
    """One aggregate query gives what Spark's RankingEvaluator gives, one job per metric."""
    from pyspark.ml.evaluation import RankingEvaluator

    frame = _varied_frame(spark)
    for k in (1, 3, 5):
        got = frame.agg(*E.ranking_aggregates(k)).first()
        assert got is not None
        for name, spark_name in E.RANKING_METRICS.items():
            expected = RankingEvaluator(predictionCol=C.PREDICTION, labelCol=C.LABEL, metricName=spark_name,
                                        k=k).evaluate(frame)
            assert got[name] == pytest.approx(expected, abs=1e-12), (name, k)


def test_ranking_aggregates_do_not_depend_on_partitioning(spark: SparkSession) -> None:
    """The means are exact sums, so a local and a cluster run, which split the rows differently, agree to the bit."""
    frame = _varied_frame(spark)
    one = frame.coalesce(1).agg(*E.ranking_aggregates(3)).first()
    many = frame.repartition(5, C.USER_IDX).agg(*E.ranking_aggregates(3)).first()
    assert one is not None and many is not None and one.asDict() == many.asDict()


def test_evaluate_recommendations_in_one_query_equals_each_metric_alone(spark: SparkSession) -> None:
    train = inter(spark, [(1, 10, 1, 0), (2, 10, 1, 0), (3, 20, 1, 0), (1, 30, 1, 0), (2, 40, 1, 0)])
    holdout = spark.createDataFrame([(1, 20), (2, 30), (2, 20), (3, 10)], f"{C.USER_IDX} int, {C.ITEM_IDX} int")
    ranked = spark.createDataFrame([(1, 20, 0.9, 1), (1, 40, 0.5, 2), (2, 20, 0.8, 1), (3, 30, 0.7, 1)],
                                   f"{C.USER_IDX} int, {C.ITEM_IDX} int, {C.SCORE} double, {C.RANK} int")
    got = E.evaluate_recommendations(ranked, holdout, train, 2)
    alone = {**E.ranking_metrics(E.as_lists(ranked), holdout, 2), "coverage": E.catalog_coverage(ranked, train),
             "novelty": E.novelty(ranked, train)}
    assert got == alone
    assert got["precision"] == pytest.approx((1 / 2 + 1 / 2 + 0) / 3)  # users 1 and 2 hit once in two, user 3 not


def test_coverage_and_novelty(spark: SparkSession) -> None:
    # item 10: 4 of 4 users (0 bits), item 20: 2 users (1 bit), item 30: 1 user (2 bits), item 40: 1 user
    train = inter(spark, [(1, 10, 1, 0), (2, 10, 1, 0), (3, 10, 1, 0), (4, 10, 1, 0),
                          (1, 20, 1, 0), (2, 20, 1, 0), (3, 30, 1, 0), (4, 40, 1, 0)])
    ranked = spark.createDataFrame([(3, 20, 1.0, 1), (4, 30, 0.5, 2), (4, 20, 0.9, 1)],
                                   f"{C.USER_IDX} int, {C.ITEM_IDX} int, {C.SCORE} double, {C.RANK} int")
    assert E.catalog_coverage(ranked, train) == pytest.approx(2 / 4)
    assert E.novelty(ranked, train) == pytest.approx((1 + 2 + 1) / 3)


# ----------------------------------------------------------------------------------------------------------------
# Top-K lists
# ----------------------------------------------------------------------------------------------------------------
def test_top_k_from_scores_excludes_seen_and_breaks_ties(spark: SparkSession) -> None:
    train = inter(spark, [(1, 1, 1, 0), (2, 2, 1, 0)])
    scores = spark.createDataFrame([(1, 1, 9.0), (1, 2, 5.0), (1, 3, 5.0), (1, 4, 1.0), (2, 1, 3.0), (2, 2, 8.0)],
                                   f"{C.USER_IDX} int, {C.ITEM_IDX} int, {C.SCORE} double")
    got = E.top_k_excluding_seen(scores, train, k=2)
    expected = spark.createDataFrame([(1, 2, 5.0, 1), (1, 3, 5.0, 2), (2, 1, 3.0, 1)],
                                     f"{C.USER_IDX} int, {C.ITEM_IDX} int, {C.SCORE} double, {C.RANK} int")
    assert_df_equality(got, expected, ignore_row_order=True, ignore_nullable=True)
    lists = {r[C.USER_IDX]: r[C.RECOMMENDATIONS] for r in E.as_lists(got).collect()}
    assert lists == {1: [2, 3], 2: [1]}


def test_popularity_top_k(spark: SparkSession) -> None:
    # popularity: item 1 -> 3 users, item 2 -> 2, item 3 -> 1, item 4 -> 1
    train = inter(spark, [(1, 1, 1, 0), (2, 1, 1, 0), (3, 1, 1, 0), (1, 2, 1, 0), (2, 2, 1, 0), (3, 3, 1, 0),
                          (2, 4, 1, 0)])
    got = {r[C.USER_IDX]: r[C.RECOMMENDATIONS] for r in E.as_lists(E.popularity_top_k(train, k=2)).collect()}
    assert got == {1: [3, 4], 2: [3], 3: [2, 4]}


def test_top_k_with_als_excludes_seen(spark: SparkSession) -> None:
    train = inter(spark, [(u, i, 1.0, 0) for u in range(4) for i in range(5) if (u + i) % 2 == 0])
    model = E.RankingALS(rank=2, maxIter=3, implicitPrefs=True, seed=1, numUserBlocks=1, numItemBlocks=1).als() \
        .fit(train)
    ranked = E.top_k_excluding_seen(model, train, k=2)
    assert not pairs(ranked) & pairs(train)
    per_user = ranked.groupBy(C.USER_IDX).count().collect()
    assert sorted(r[0] for r in per_user) == [0, 1, 2, 3] and all(r[1] == 2 for r in per_user)


def test_top_k_with_als_grouped_by_seen_count_matches_full_scores(spark: SparkSession,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    # Users have seen 1..6 of 12 items; with group bounds (1, 3) they are scored in three groups asking for k+1,
    # k+3 and k+6 candidates. The reference ranks the model's full score matrix.
    train = inter(spark, [(u, (u * 5 + j) % 12, 1.0 + j, 0) for u in range(6) for j in range(u + 1)])
    model = E.RankingALS(rank=3, maxIter=4, implicitPrefs=True, seed=3, numUserBlocks=1, numItemBlocks=1).als() \
        .fit(train)
    full = (model.recommendForAllUsers(12).select(F.col(C.USER_IDX), F.explode("recommendations").alias("r"))
            .select(C.USER_IDX, F.col(f"r.{C.ITEM_IDX}").alias(C.ITEM_IDX), F.col("r.rating").alias(C.SCORE)))
    expected = E.top_k_excluding_seen(full, train, k=3)
    monkeypatch.setattr(E.topk, "SEEN_GROUP_BOUNDS", (1, 3))  # where the top-K lists read them
    monkeypatch.setattr(E.topk, "GROUP_MIN_CANDIDATES", 0)  # group even these few users
    assert E.seen_groups(6) == [1, 3, 6]
    got = E.top_k_excluding_seen(model, train, k=3)
    assert_df_equality(got, expected, ignore_row_order=True, ignore_nullable=True)
    subset = spark.createDataFrame([(0,), (5,)], f"{C.USER_IDX} int")
    assert_df_equality(E.top_k_excluding_seen(model, train, k=3, users=subset),
                       expected.where(F.col(C.USER_IDX).isin(0, 5)), ignore_row_order=True, ignore_nullable=True)


# ----------------------------------------------------------------------------------------------------------------
# Splits
# ----------------------------------------------------------------------------------------------------------------
def test_random_split_deterministic_without_leakage(spark: SparkSession) -> None:
    df = inter(spark, [(u, i, 1.0, 0) for u in range(8) for i in range(8) if (u * i) % 3 != 1])
    a = E.random_split(df, 0.3, seed=5)
    train, test = pairs(a.train), pairs(a.test)
    b = E.random_split(df.repartition(3), 0.3, seed=5)  # different partitioning, same split
    assert pairs(b.test) == test
    assert test and not train & test
    assert len(train) + len(test) <= df.count()
    assert {u for u, _ in test} <= {u for u, _ in train} and {i for _, i in test} <= {i for _, i in train}
    assert pairs(E.random_split(df, 0.3, seed=6).test) != test


def test_leave_last_k_split(spark: SparkSession) -> None:
    df = inter(spark, [(1, 1, 1, 0), (1, 2, 1, 1), (1, 3, 1, 2), (2, 1, 1, 0), (2, 3, 1, 5), (3, 3, 1, 9),
                       (4, 9, 1, 0), (4, 8, 1, 1)])
    split = E.leave_last_k_split(df, 1)
    # user 3 has one interaction: stays in train; user 4's last item (8) is unknown to train: dropped from test
    assert pairs(split.test) == {(1, 3), (2, 3)}
    assert pairs(split.train) == {(1, 1), (1, 2), (2, 1), (3, 3), (4, 9)}


def test_last_days_split(spark: SparkSession) -> None:
    df = inter(spark, [(1, 1, 1, 0), (1, 2, 1, 8), (2, 1, 1, 3), (2, 2, 1, 9), (3, 3, 1, 10), (3, 1, 1, 1)])
    split = E.last_days_split(df, 2)  # newest is day 10: test = days 9 and 10 (after day 8)
    assert pairs(split.train) == {(1, 1), (1, 2), (2, 1), (3, 1)}
    assert pairs(split.test) == {(2, 2)}  # (3, 3): item 3 never in train -> dropped


# ----------------------------------------------------------------------------------------------------------------
# CrossValidator pieces
# ----------------------------------------------------------------------------------------------------------------
def test_ranking_als_and_evaluator_handle_validation_only_user(spark: SparkSession) -> None:
    train = inter(spark, [(u, i, 1.0, 0) for u in range(4) for i in range(6) if (u + i) % 3 != 0])
    validation = inter(spark, [(0, 0, 1.0, 0), (1, 2, 1.0, 0), (9, 1, 1.0, 0)])  # user 9 is unknown to train
    est = E.RankingALS(rank=2, maxIter=3, implicitPrefs=True, seed=3, k=3, numUserBlocks=1, numItemBlocks=1)
    model = est.fit(train)
    scored = model.transform(validation).cache()
    out = scored.collect()
    assert sorted(r[C.USER_IDX] for r in out) == [0, 1]
    seen = pairs(train)
    for r in out:  # every unseen item (at most k=3) is listed, no seen item is
        unseen = {i for i in range(6) if (r[C.USER_IDX], i) not in seen}
        assert len(r[C.PREDICTION]) == min(3, len(unseen)) and {int(x) for x in r[C.PREDICTION]} <= unseen
    for metric in E.RANKING_METRICS:
        value = E.TopKEvaluator(metricName=metric, k=3).evaluate(scored)
        assert math.isfinite(value) and 0.0 <= value <= 1.0
    only_unknown = inter(spark, [(9, 1, 1.0, 0)])
    assert E.TopKEvaluator(k=3).evaluate(model.transform(only_unknown)) == 0.0
    with pytest.raises(ValueError, match="unknown ranking metric"):
        E.TopKEvaluator(metricName="auc")
