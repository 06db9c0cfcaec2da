"""Incremental features: which events make a user, item or pair be computed again, and how the other gold rows are
carried to the new date (hand-written frames, chispa). The stage end to end is checked against a rebuild by the
daily equality tests (test_daily_equivalence.py)."""

from __future__ import annotations

import datetime as dt

from chispa import assert_approx_df_equality, assert_df_equality
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from sparkpromo import columns as C
from sparkpromo import features as FT
from sparkpromo import schemas
from sparkpromo.features import incremental as FI

D = dt.date


def events(spark: SparkSession, rows: list[tuple[str, str, str, str]]) -> DataFrame:
    """rows: (user, item, type, 'YYYY-MM-DD')."""
    full = [(f"e{n}", u, i, t, dt.datetime.fromisoformat(d + " 12:00"), D.fromisoformat(d), None, None, None, None)
            for n, (u, i, t, d) in enumerate(rows)]
    return spark.createDataFrame(full, schemas.SILVER_EVENTS)


def test_moved_events_are_those_that_left_a_window_or_came_inside_the_run_date(spark: SparkSession) -> None:
    before = FI.Dates(as_of=D(2024, 3, 10), ref=D(2024, 3, 10), lookback_days=30)
    now = FI.Dates(as_of=D(2024, 3, 12), ref=D(2024, 3, 12), lookback_days=30)  # lower bound 02-09 -> 02-11
    df = events(spark, [
        ("u1", "i1", C.VIEW, "2024-02-09"),         # already out before
        ("u2", "i2", C.VIEW, "2024-02-10"),         # leaves the lookback window
        ("u3", "i3", C.VIEW, "2024-02-11"),         # leaves it too (the bound is exclusive)
        ("u4", "i4", C.VIEW, "2024-02-12"),         # stays in
        ("u5", "i5", C.PURCHASE, "2024-03-11"),     # dated after the old run date: comes inside
        ("u6", "i6", C.ADD_TO_CART, "2024-02-26"),  # cart window: after 02-25 before, after 02-27 now: leaves
        ("u7", "i7", C.ADD_TO_CART, "2024-02-28"),  # still in the cart window
        ("u8", "i8", C.VIEW, "2024-03-20"),         # still after the run date
    ])
    out = df.transform(FI.moved_events(before, now, cart_lookback_days=14))
    expected = spark.createDataFrame([("u2", "i2", True), ("u3", "i3", True), ("u5", "i5", True),
                                      ("u6", "i6", False)], "user_id string, item_id string, _pair boolean")
    assert_df_equality(out, expected, ignore_row_order=True, ignore_nullable=True)


def test_no_window_moves_on_the_same_dates(spark: SparkSession) -> None:
    same = FI.Dates(as_of=D(2024, 3, 10), ref=D(2024, 3, 10), lookback_days=30)
    df = events(spark, [("u1", "i1", C.VIEW, "2024-02-10"), ("u2", "i2", C.ADD_TO_CART, "2024-02-25")])
    assert df.transform(FI.moved_events(same, same, cart_lookback_days=14)).count() == 0


def test_clamped_events_are_those_old_enough_for_the_decay_floor(spark: SparkSession) -> None:
    now = FI.Dates(as_of=D(2024, 3, 10), ref=D(2024, 3, 10), lookback_days=0)
    # half-life 1 day: the floor 2^-20 is reached at 20 days of age (2024-02-19)
    df = events(spark, [("u1", "i1", C.VIEW, "2024-02-19"), ("u2", "i2", C.VIEW, "2024-02-20")])
    out = df.transform(FI.clamped_events(now, half_life_days=1.0))
    assert_df_equality(out, spark.createDataFrame([("u1", "i1")], "user_id string, item_id string"),
                       ignore_nullable=True)


def test_carried_users_move_their_dates_and_leave_out_the_recomputed(spark: SparkSession) -> None:
    def row(user: str, recency: int | None, since: int | None) -> tuple:
        return (user, "FR", None, True, None, None, None, since, 1, 1, 0, 0.0, recency, 0.0, 0.0, None)
    gold = spark.createDataFrame([row("u1", 3, 100), row("u2", None, None), row("u3", 0, 5)],
                                 schemas.USER_FEATURES)
    recomputed = spark.createDataFrame([("u3",)], "user_id string")
    out = gold.transform(FI.carried_users(recomputed, days=2))
    expected = spark.createDataFrame([row("u1", 5, 102), row("u2", None, None)], schemas.USER_FEATURES)
    assert_df_equality(out, expected, ignore_row_order=True, ignore_nullable=True)


def test_carried_interactions_decay_by_the_factor_and_leave_out_the_recomputed(spark: SparkSession) -> None:
    t = dt.datetime(2024, 3, 1, 12)
    gold = spark.createDataFrame([(0, 0, 4.0, t), (0, 1, 2.0, t), (1, 0, 1.0, t)], schemas.INTERACTIONS)
    id_map = spark.createDataFrame([("user", "u1", 0), ("user", "u2", 1), ("item", "i1", 0), ("item", "i2", 1)],
                                   schemas.ID_MAP)
    pairs = spark.createDataFrame([("u1", "i2")], "user_id string, item_id string")
    out = gold.transform(FI.carried_interactions(pairs, id_map, factor=0.5))
    expected = spark.createDataFrame([(0, 0, 2.0, t), (1, 0, 0.5, t)], schemas.INTERACTIONS)
    assert_df_equality(out, expected, ignore_row_order=True, ignore_nullable=True)


def test_scaling_equals_computing_at_the_later_reference(spark: SparkSession) -> None:
    """The identity the carried confidences rest on: an interaction computed at one reference and scaled by
    2^(-days / half-life) equals the one computed ``days`` later, while no event sits on the decay floor."""
    weights = {C.VIEW: 1.0, C.FAVORITE: 2.0, C.ADD_TO_CART: 4.0, C.PURCHASE: 8.0}
    df = events(spark, [("u1", "i1", C.VIEW, "2024-03-01"), ("u1", "i1", C.PURCHASE, "2024-03-05"),
                        ("u2", "i1", C.ADD_TO_CART, "2024-02-20")])

    def at(ref: dt.date) -> DataFrame:
        return df.transform(FT.interactions(ref, "events", weights, 7.0, 10, ref))
    scaled = at(D(2024, 3, 10)).withColumn(C.CONFIDENCE, F.col(C.CONFIDENCE) * 2.0 ** (-3 / 7.0))
    assert_approx_df_equality(scaled.orderBy(C.USER_ID), at(D(2024, 3, 13)).orderBy(C.USER_ID), 1e-12,
                              ignore_nullable=True)

