"""Features: hand-computed user/item features, confidence math, id map stability, the stage end to end."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from chispa import assert_df_equality
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from sparkpromo import columns as C
from sparkpromo import delta_io, schemas
from sparkpromo import features as FT
from tests.conftest import make_config

AS_OF = dt.date(2024, 1, 15)
WEIGHTS = {C.VIEW: 1.0, C.FAVORITE: 2.0, C.ADD_TO_CART: 4.0, C.PURCHASE: 8.0}


def ts(s: str) -> dt.datetime:
    return dt.datetime.fromisoformat(s)


def events_df(spark: SparkSession, rows: list[tuple]) -> DataFrame:
    """rows: (event_id, user, item, type, 'YYYY-MM-DD HH:MM', price, quantity, rating, session_id)."""
    full = [(eid, u, i, t, ts(when), ts(when).date(), p, q, r, s) for eid, u, i, t, when, p, q, r, s in rows]
    return spark.createDataFrame(full, schemas.SILVER_EVENTS)


@pytest.fixture(scope="module")
def shop(spark: SparkSession) -> tuple[DataFrame, DataFrame, DataFrame]:
    events = events_df(spark, [
        # u1: gap-sessionised (no session_id): [e1 e2 e3] spans 1200 s, [e4 e5] spans 300 s
        ("e1", "u1", "i1", C.VIEW, "2024-01-10 10:00", None, None, None, None),
        ("e2", "u1", "i2", C.VIEW, "2024-01-10 10:10", None, None, None, None),
        ("e3", "u1", "i2", C.ADD_TO_CART, "2024-01-10 10:20", 20.0, 2, None, None),
        ("e4", "u1", "i2", C.PURCHASE, "2024-01-12 09:00", 20.0, 2, None, None),
        ("e5", "u1", "i1", C.PURCHASE, "2024-01-12 09:05", None, 1, None, None),  # null price: not in monetary
        # u2: one explicit session (the 30 min gap does not split it); open cart of 12.5 x (null qty = 1)
        ("e6", "u2", "i1", C.VIEW, "2024-01-14 08:00", None, None, None, "s1"),
        ("e7", "u2", "i1", C.ADD_TO_CART, "2024-01-14 08:30", 12.5, None, None, "s1"),
        ("e8", "u2", "i4", C.PURCHASE, "2024-01-14 08:40", 250.0, 1, None, "s1"),
        # after as_of: ignored everywhere
        ("e9", "u1", "i3", C.VIEW, "2024-01-20 10:00", None, None, None, None),
    ])
    users = spark.createDataFrame([
        ("u1", dt.date(2023, 12, 16), 7, 4, "35-44", "FR", False),
        ("u3", dt.date(2024, 1, 1), 3, 15, "25-34", "DE", True),  # no events: cold start
    ], schemas.SILVER_USERS)
    items = spark.createDataFrame([
        ("i1", "books", "A", 5.0, 3, "Atlas"),
        ("i2", "toys", "B", 60.0, None, None),
        ("i3", None, None, None, 1, None),
    ], schemas.SILVER_ITEMS)
    return events, users, items


def test_user_features_hand_computed(spark: SparkSession, shop: tuple[DataFrame, DataFrame, DataFrame]) -> None:
    events, users, items = shop
    actual = FT.user_features(events, users, items, AS_OF, session_gap_minutes=30)
    expected = spark.createDataFrame([
        ("u1", "FR", "35-44", False, dt.date(2023, 12, 16), 7, 4, 30, 2, 2, 2, 40.0, 3, 750.0, 0.0, "toys"),
        ("u2", None, None, False, None, None, None, None, 1, 1, 1, 250.0, 1, 2400.0, 12.5, "books"),
        ("u3", "DE", "25-34", True, dt.date(2024, 1, 1), 3, 15, 14, 0, 0, 0, 0.0, None, 0.0, 0.0, None),
    ], FT.USER_FEATURES)
    assert_df_equality(actual, expected, ignore_row_order=True, ignore_nullable=True)


def test_user_features_without_users_or_items(spark: SparkSession,
                                              shop: tuple[DataFrame, DataFrame, DataFrame]) -> None:
    events, _, _ = shop
    out = FT.user_features(events, None, None, AS_OF).orderBy(C.USER_ID).collect()
    assert [r[C.USER_ID] for r in out] == ["u1", "u2"]
    assert all(r[C.TOP_CATEGORY] is None and r[C.MARKETING_CONSENT] is False for r in out)
    assert out[1][C.CART_VALUE] == 12.5  # no catalogue price needed: the event carries one


def test_open_cart_value_of_two_events_at_one_instant_is_the_larger_whatever_their_order(
        spark: SparkSession) -> None:
    one = ("c1", "u9", "i1", C.ADD_TO_CART, "2024-01-14 08:30", 10.0, 1, None, None)
    three = ("c2", "u9", "i1", C.ADD_TO_CART, "2024-01-14 08:30", 10.0, 3, None, None)
    for order in ([one, three], [three, one]):
        events = events_df(spark, order).coalesce(1)  # one task meets the rows in this order
        out = FT.user_features(events, None, None, AS_OF).collect()
        assert [(r[C.USER_ID], r[C.CART_VALUE]) for r in out] == [("u9", 30.0)], order


def test_item_features_hand_computed(spark: SparkSession, shop: tuple[DataFrame, DataFrame, DataFrame]) -> None:
    events, _, items = shop
    actual = FT.item_features(events, items, AS_OF, price_bands=(10.0, 50.0, 200.0))
    expected = spark.createDataFrame([
        ("i1", "books", "A", 5.0, 3, "0-10", 2, 0.5, "Atlas"),  # viewed by u1, u2; bought by u1
        ("i2", "toys", "B", 60.0, None, "50-200", 1, 1.0, None),
        ("i3", None, None, None, 1, None, 0, 0.0, None),  # only a post-as_of view: no activity, no price
        ("i4", None, None, 250.0, None, "200+", 1, 0.0, None),  # not in the catalogue; no viewers -> 0
    ], FT.ITEM_FEATURES)
    assert_df_equality(actual, expected, ignore_row_order=True, ignore_nullable=True)


def test_price_band_labels() -> None:
    assert FT.price_band_labels((10, 50, 200)) == ["0-10", "10-50", "50-200", "200+"]
    assert FT.price_band_labels((2.5,)) == ["0-2.5", "2.5+"]
    with pytest.raises(FT.FeatureError):
        FT.with_price_band((50.0, 10.0))


def test_interactions_confidence_hand_computed(spark: SparkSession) -> None:
    as_of = dt.date(2024, 1, 31)
    events = events_df(spark, [
        # u1/i1: 3 views aged 0, 10, 20 days; cap 2 keeps the two most recent -> 1*(1 + 0.5); purchase aged 10 ->
        # 8 * 0.5. Total 5.5.
        ("a", "u1", "i1", C.VIEW, "2024-01-31 08:00", None, None, None, None),
        ("b", "u1", "i1", C.VIEW, "2024-01-21 08:00", None, None, None, None),
        ("c", "u1", "i1", C.VIEW, "2024-01-11 08:00", None, None, None, None),
        ("d", "u1", "i1", C.PURCHASE, "2024-01-21 09:00", 10.0, 1, None, None),
        # u1/i2: cart today -> 4.0; a view after as_of is ignored
        ("e", "u1", "i2", C.ADD_TO_CART, "2024-01-31 12:00", None, None, None, None),
        ("f", "u1", "i2", C.VIEW, "2024-02-02 12:00", None, None, None, None),
        # u2/i1: favourite aged 20 days -> 2 * 0.25
        ("g", "u2", "i1", C.FAVORITE, "2024-01-11 07:00", None, None, None, None),
    ])
    actual = events.transform(FT.interactions(as_of, "events", WEIGHTS, half_life_days=10.0, max_count_per_type=2))
    expected = spark.createDataFrame([
        ("u1", "i1", 5.5, ts("2024-01-31 08:00")),
        ("u1", "i2", 4.0, ts("2024-01-31 12:00")),
        ("u2", "i1", 0.5, ts("2024-01-11 07:00")),
    ], FT.RAW_INTERACTIONS)
    assert_df_equality(actual, expected, ignore_row_order=True, ignore_nullable=True)


def test_rating_interactions_take_latest_rating(spark: SparkSession) -> None:
    events = events_df(spark, [
        ("1", "u1", "m1", C.RATING_EVENT, "2024-01-01 00:00", None, None, 2.0, None),
        ("2", "u1", "m1", C.RATING_EVENT, "2024-01-05 00:00", None, None, 4.0, None),
        ("3", "u1", "m2", C.RATING_EVENT, "2024-01-05 00:00", None, None, None, None),  # null rating: ignored
        ("4", "u2", "m2", C.RATING_EVENT, "2024-01-02 00:00", None, None, 5.0, None),
    ])
    actual = events.transform(FT.interactions(dt.date(2024, 1, 31), "ratings"))
    expected = spark.createDataFrame([("u1", "m1", 4.0, ts("2024-01-05 00:00")),
                                      ("u2", "m2", 5.0, ts("2024-01-02 00:00"))], FT.RAW_INTERACTIONS)
    assert_df_equality(actual, expected, ignore_row_order=True, ignore_nullable=True)


def test_event_weights_are_checked_before_any_data(spark: SparkSession) -> None:
    as_of = dt.date(2024, 1, 31)
    with pytest.raises(FT.FeatureError, match="no weight for event type.*favorite"):
        FT.interactions(as_of, "events", {C.VIEW: 1.0, C.ADD_TO_CART: 4.0, C.PURCHASE: 8.0})
    with pytest.raises(FT.FeatureError, match="unknown event type"):
        FT.interactions(as_of, "events", {**WEIGHTS, "click": 1.0})
    with pytest.raises(FT.FeatureError, match="positive"):
        FT.interactions(as_of, "events", {**WEIGHTS, C.VIEW: 0.0})
    # A rating event in an events source without a rating weight fails loudly at run time, never silently.
    events = events_df(spark, [("1", "u1", "m1", C.RATING_EVENT, "2024-01-01 00:00", None, None, 2.0, None)])
    with pytest.raises(Exception, match="no event weight for event type rating"):
        events.transform(FT.interactions(as_of, "events", WEIGHTS)).collect()


def test_id_map_is_stable_across_runs(spark: SparkSession) -> None:
    empty = spark.createDataFrame([], schemas.ID_MAP)
    first = FT.extend_id_map(empty, spark.createDataFrame([("b",), ("a",), ("c",), ("a",), (None,)], "id string"),
                             "user")
    assert_df_equality(first, spark.createDataFrame([("user", "a", 0), ("user", "b", 1), ("user", "c", 2)],
                                                    schemas.ID_MAP), ignore_row_order=True, ignore_nullable=True)
    items = FT.extend_id_map(first, spark.createDataFrame([("x",)], "id string"), "item")
    assert items.collect()[0][C.IDX] == 0  # numbering is per kind
    existing = first.unionByName(items)
    second = FT.extend_id_map(existing, spark.createDataFrame([("d",), ("b",), ("0x",)], "id string"), "user")
    # only the new ids, numbered after the current max in original_id order; b keeps idx 1 (not returned)
    assert_df_equality(second, spark.createDataFrame([("user", "0x", 3), ("user", "d", 4)], schemas.ID_MAP),
                       ignore_row_order=True, ignore_nullable=True)


def test_id_map_fails_clearly_past_int_range(spark: SparkSession) -> None:
    existing = spark.createDataFrame([("user", "a", FT.INT_MAX - 1)], schemas.ID_MAP)
    out = FT.extend_id_map(existing, spark.createDataFrame([("b",), ("c",)], "id string"), "user")
    with pytest.raises(Exception, match="id map overflow: user idx exceeds the Int range"):
        out.collect()


def test_index_interactions(spark: SparkSession) -> None:
    id_map = spark.createDataFrame([("user", "u1", 0), ("user", "u2", 1), ("item", "i1", 0), ("item", "u1", 7)],
                                   schemas.ID_MAP)
    raw = spark.createDataFrame([("u1", "i1", 2.0, ts("2024-01-01 00:00")), ("u2", "u1", 1.0, None)],
                                FT.RAW_INTERACTIONS)
    expected = spark.createDataFrame([(0, 0, 2.0, ts("2024-01-01 00:00")), (1, 7, 1.0, None)], schemas.INTERACTIONS)
    assert_df_equality(FT.index_interactions(raw, id_map), expected, ignore_row_order=True, ignore_nullable=True)


def test_run_features_end_to_end_and_rerun(spark: SparkSession, tmp_path: Path,
                                           shop: tuple[DataFrame, DataFrame, DataFrame],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    events, users, items = shop
    cfg = make_config(tmp_path)
    delta_io.overwrite(events, cfg.table("silver", "events"))
    delta_io.overwrite(users, cfg.table("silver", "users"))
    delta_io.overwrite(items, cfg.table("silver", "items"))
    first = FT.run_features(spark, cfg, "r1", as_of=AS_OF)
    assert (first["interactions"], first["users"], first["items"]) == (4, 3, 4)
    assert (first["new_user_ids"], first["new_item_ids"]) == (3, 3)  # u3 has no events but is mapped
    map_uri = cfg.table("gold", "id_map")
    before = {(r[0], r[1]): r[2] for r in delta_io.read(spark, map_uri).collect()}

    # A rerun only appends ids the map lacks: here one new user and one newly interacted item.
    more = events_df(spark, [("e10", "u0", "i3", C.VIEW, "2024-01-15 10:00", None, None, None, None)])
    delta_io.append(more, cfg.table("silver", "events"))
    third = FT.run_features(spark, cfg, "r2", as_of=AS_OF)
    after = {(r[0], r[1]): r[2] for r in delta_io.read(spark, map_uri).collect()}
    assert (third["new_user_ids"], third["new_item_ids"]) == (1, 1)
    assert {k: after[k] for k in before} == before  # never renumbered
    assert after[("user", "u0")] == 3 and after[("item", "i3")] == 3  # appended after the max
    inter = delta_io.read(spark, cfg.table("gold", "interactions"))
    assert inter.schema.simpleString() == schemas.INTERACTIONS.simpleString()
    assert inter.where(F.col(C.USER_IDX) == 3).count() == 1

    # An id the map lacks when interactions are indexed (another run's append lost, say) fails the run before its
    # first gold write: every gold table keeps the version the last good run left.
    delta_io.append(events_df(spark, [("e11", "u9", "i9", C.VIEW, "2024-01-14 10:00", None, None, None, None)]),
                    cfg.table("silver", "events"))
    gold = [cfg.table("gold", t) for t in ("interactions", "user_features", "item_features", "id_map")]
    versions = [delta_io.version(spark, uri) for uri in gold]
    # run_features looks extend_id_map up in its own module (sparkpromo.features.stage).
    monkeypatch.setattr("sparkpromo.features.stage.extend_id_map", lambda existing, ids, kind: existing.limit(0))
    with pytest.raises(FT.FeatureError, match=r"1 interaction\(s\) unmapped .*nothing was written to gold"):
        FT.run_features(spark, cfg, "r3", as_of=AS_OF)
    assert [delta_io.version(spark, uri) for uri in gold] == versions


def test_sorted_positions_are_consecutive_across_ranges(spark: SparkSession) -> None:
    """Positions in key order, numbered across several range partitions with no window over the whole frame."""
    keys = [f"k{n:04d}" for n in range(0, 300, 7)]
    df = spark.createDataFrame([(k,) for k in reversed(keys)], "id string").repartition(3)
    out = df.transform(FT.sorted_positions("id"))
    expected = spark.createDataFrame(list(zip(keys, range(len(keys)), strict=True)), "id string, _pos long")
    assert_df_equality(out, expected, ignore_row_order=True, ignore_nullable=True)


def test_events_before_the_lookback_window_do_not_reach_the_features(spark: SparkSession) -> None:
    as_of = dt.date(2024, 1, 31)
    events = events_df(spark, [
        ("a", "u1", "i1", C.VIEW, "2024-01-31 08:00", None, None, None, None),  # age 0 -> 1.0
        ("b", "u2", "i1", C.FAVORITE, "2024-01-03 08:00", None, None, None, None),  # first day in: 2 * 0.25
        ("c", "u1", "i2", C.PURCHASE, "2024-01-02 08:00", 9.0, 1, None, None),  # the day before the window
        ("d", "u3", "i3", C.PURCHASE, "2023-06-01 08:00", 9.0, 1, None, None),  # long before
    ])
    window = FT.within_lookback(as_of, 29)  # 2024-01-03 .. 2024-01-31
    actual = events.transform(window).transform(FT.interactions(as_of, "events", WEIGHTS, half_life_days=14.0))
    expected = spark.createDataFrame([
        ("u1", "i1", 1.0, ts("2024-01-31 08:00")),
        ("u2", "i1", 0.5, ts("2024-01-03 08:00")),
    ], FT.RAW_INTERACTIONS)
    assert_df_equality(actual, expected, ignore_row_order=True, ignore_nullable=True)

    # u1's old purchase and u3's only event count for nothing: u3 is a cold-start user; i2 and i3 (not in an
    # items table) are gone from the item features.
    users = (FT.user_features(events.transform(window), None, None, as_of)
             .select(C.USER_ID, C.PURCHASES, C.ACTIVE_DAYS, C.RECENCY_DAYS))
    assert_df_equality(users, spark.createDataFrame([("u1", 0, 1, 0), ("u2", 0, 1, 28)], users.schema),
                       ignore_row_order=True, ignore_nullable=True)
    items = FT.item_features(events.transform(window), None, as_of).select(C.ITEM_ID, C.POPULARITY)
    assert_df_equality(items, spark.createDataFrame([("i1", 2)], items.schema), ignore_nullable=True)
    assert events.transform(FT.within_lookback(as_of, 0)).count() == 4  # 0 = every event
    with pytest.raises(FT.FeatureError):
        FT.within_lookback(as_of, -1)


def test_run_features_builds_gold_from_the_lookback_window_only(
        spark: SparkSession, tmp_path: Path, shop: tuple[DataFrame, DataFrame, DataFrame]) -> None:
    events, users, items = shop
    unbounded = make_config(tmp_path, features={"lookback_days": 0})
    delta_io.overwrite(events, unbounded.table("silver", "events"))
    delta_io.overwrite(users, unbounded.table("silver", "users"))
    delta_io.overwrite(items, unbounded.table("silver", "items"))
    FT.run_features(spark, unbounded, "r1", as_of=AS_OF)
    map_before = delta_io.read(spark, unbounded.table("gold", "id_map")).collect()

    cfg = make_config(tmp_path, features={"lookback_days": 3})  # 2024-01-13 .. 2024-01-15: u2's events only
    result = FT.run_features(spark, cfg, "r2", as_of=AS_OF)
    id_map = delta_io.read(spark, cfg.table("gold", "id_map"))
    # The id map only grows: ids whose events left the window keep their index.
    assert_df_equality(id_map, spark.createDataFrame(map_before, schemas.ID_MAP), ignore_row_order=True,
                       ignore_nullable=True)
    pairs = (delta_io.read(spark, cfg.table("gold", "interactions"))
             .join(id_map.where(F.col(C.ID_KIND) == "user").select(F.col(C.IDX).alias(C.USER_IDX),
                                                                    F.col(C.ORIGINAL_ID).alias(C.USER_ID)), C.USER_IDX)
             .join(id_map.where(F.col(C.ID_KIND) == "item").select(F.col(C.IDX).alias(C.ITEM_IDX),
                                                                    F.col(C.ORIGINAL_ID).alias(C.ITEM_ID)), C.ITEM_IDX)
             .select(C.USER_ID, C.ITEM_ID, C.EVENT_TS))
    expected = spark.createDataFrame([("u2", "i1", ts("2024-01-14 08:30")), ("u2", "i4", ts("2024-01-14 08:40"))],
                                     pairs.schema)
    assert_df_equality(pairs, expected, ignore_row_order=True, ignore_nullable=True)
    # Users keep their rows (attributes are not windowed); u1's behaviour before the window is not counted.
    u1 = delta_io.read(spark, cfg.table("gold", "user_features")).where(F.col(C.USER_ID) == "u1").first()
    assert u1 is not None and (u1[C.PURCHASES], u1[C.MONETARY], u1[C.RECENCY_DAYS]) == (0, 0.0, None)
    assert (result["interactions"], result["users"]) == (2, 3)
