"""Campaign audiences, the rule compiler and item eligibility, on tiny hand-made frames."""

from __future__ import annotations

import datetime as dt

import pytest
from chispa import assert_approx_df_equality, assert_df_equality
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from sparkpromo import campaigns as K
from sparkpromo import columns as C
from sparkpromo.config import Campaign, Condition, Rule

D = dt.date
TS = dt.datetime
RUN = D(2024, 3, 1)

USERS_DDL = ("user_id string, country string, age_band string, marketing_consent boolean, signup_date date, "
             "birth_month int, birth_day int, purchases int, monetary double, top_category string")
EVENTS_DDL = "user_id string, item_id string, event_type string, event_ts timestamp, event_date date, " \
             "price double, quantity int"
ITEMS_DDL = "item_id string, category string, brand string, price double, stock int, price_band string, " \
            "popularity int, conversion_rate double"


def users(spark: SparkSession, rows: list[tuple]) -> DataFrame:
    return spark.createDataFrame(rows, USERS_DDL)


def u(uid: str, country: str = "DE", consent: bool = True, signup: D | None = D(2023, 1, 1), bm: int | None = 6,
      bd: int | None = 15, purchases: int = 0, monetary: float = 0.0) -> tuple:
    return (uid, country, "25-34", consent, signup, bm, bd, purchases, monetary, None)


def ev(uid: str, item: str, kind: str, ts: TS, price: float | None = None, qty: int | None = None) -> tuple:
    return (uid, item, kind, ts, ts.date(), price, qty)


def ids(df: DataFrame) -> list[str]:
    return sorted(r[C.USER_ID] for r in df.select(C.USER_ID).collect())


# ----------------------------------------------------------------------------------------------------------------
# Rule compiler
# ----------------------------------------------------------------------------------------------------------------
def test_compile_rule_all_and_any(spark: SparkSession) -> None:
    df = users(spark, [u("a", "DE", purchases=2), u("b", "FR", purchases=1, monetary=10.0),
                       u("c", "US", purchases=3, monetary=500.0), u("d", "US", purchases=0, monetary=900.0),
                       u("e", None, purchases=5)])
    rule = Rule(all=(Condition("purchases", "ge", 1),),
                any=(Condition("country", "in", ("DE", "FR")), Condition("monetary", "gt", 100)))
    out = df.where(K.compile_rule(rule, K.USER_RULE_FIELDS, df.schema))
    assert ids(out) == ["a", "b", "c"]


def test_compile_rule_operators_and_nulls(spark: SparkSession) -> None:
    df = users(spark, [u("a", "DE", signup=D(2024, 1, 10)), u("b", None, signup=None), u("c", "FR")])
    rules = {
        "ne": Condition("country", "ne", "DE"),  # null is not "not DE": a null never matches
        "is_null": Condition("country", "is_null"),
        "not_null": Condition("country", "not_null"),
        "not_in": Condition("country", "not_in", ("DE",)),
        "between": Condition("signup_date", "between", ("2024-01-01", "2024-01-31")),
        "lt": Condition("signup_date", "lt", D(2024, 1, 1)),
    }
    cols = [K.compile_rule(Rule(all=(c,)), K.USER_RULE_FIELDS, df.schema).alias(k) for k, c in rules.items()]
    rows = df.select(C.USER_ID, *cols, K.compile_rule(None, K.USER_RULE_FIELDS).alias("none")).collect()
    got = {k: sorted(r[C.USER_ID] for r in rows if r[k]) for k in (*rules, "none")}
    assert got == {"ne": ["c"], "is_null": ["b"], "not_null": ["a", "c"], "not_in": ["c"], "between": ["a"],
                   "lt": ["c"], "none": ["a", "b", "c"]}
    assert all(r[k] is not None for r in rows for k in rules)  # always true/false, never null


def test_compile_rule_rejects_unknown_field_and_operator() -> None:
    with pytest.raises(ValueError, match="unknown rule field 'password'"):
        K.compile_rule(Rule(all=(Condition("password", "eq", "x"),)), K.USER_RULE_FIELDS)
    with pytest.raises(ValueError, match="unknown rule operator 'like'"):
        K.compile_rule(Rule(any=(Condition("country", "like", "D%"),)), K.USER_RULE_FIELDS)
    # item fields are not user fields
    with pytest.raises(ValueError, match="unknown rule field 'brand'"):
        K.compile_rule(Rule(all=(Condition("brand", "eq", "x"),)), K.USER_RULE_FIELDS)


def test_compile_rule_rejects_value_of_wrong_type(spark: SparkSession) -> None:
    df = users(spark, [u("a")])
    with pytest.raises(ValueError, match="purchases"):
        K.compile_rule(Rule(all=(Condition("purchases", "ge", "many"),)), K.USER_RULE_FIELDS, df.schema)
    with pytest.raises(ValueError, match="needs a single value"):
        K.compile_rule(Rule(all=(Condition("country", "eq", ("DE", "FR")),)), K.USER_RULE_FIELDS)


def test_compile_rule_value_is_a_literal_not_sql(spark: SparkSession) -> None:
    evil = "x' OR 1=1 --"
    df = users(spark, [u("a", "DE"), u("b", evil), u("c", "FR")])
    out = df.where(K.compile_rule(Rule(all=(Condition("country", "eq", evil),)), K.USER_RULE_FIELDS, df.schema))
    assert ids(out) == ["b"]
    out = df.where(K.compile_rule(Rule(all=(Condition("country", "in", (evil, "1) OR (1=1")),)),
                                  K.USER_RULE_FIELDS, df.schema))
    assert ids(out) == ["b"]


# ----------------------------------------------------------------------------------------------------------------
# Audiences
# ----------------------------------------------------------------------------------------------------------------
def camp(type_: str, **kw: object) -> Campaign:
    base: dict[str, object] = {"id": f"c-{type_}", "type": type_, "valid_from": D(2024, 1, 1),
                               "valid_to": D(2024, 12, 31)}
    base.update(kw)
    return Campaign(**base)  # type: ignore[arg-type]


def test_active_campaigns_window_is_inclusive() -> None:
    c = camp("welcome", valid_from=D(2024, 3, 1), valid_to=D(2024, 3, 31))
    assert [K.is_active(c, d) for d in (D(2024, 2, 29), D(2024, 3, 1), D(2024, 3, 31), D(2024, 4, 1))] == [
        False, True, True, False]
    assert K.active_campaigns([c, camp("birthday")], D(2024, 4, 1)) == [camp("birthday")]


def test_welcome_audience(spark: SparkSession) -> None:
    df = users(spark, [
        u("today", signup=RUN), u("d30", signup=RUN - dt.timedelta(days=30)),
        u("d31", signup=RUN - dt.timedelta(days=31)), u("future", signup=RUN + dt.timedelta(days=1)),
        u("no_signup", signup=None), u("no_consent", consent=False, signup=RUN),
        u("inactive", signup=RUN - dt.timedelta(days=3)),  # zero activity rows are still users
    ])
    out = df.transform(K.welcome_audience(RUN, 30))
    assert ids(out) == ["d30", "inactive", "today"]
    assert out.columns == [C.USER_ID, C.MIN_PRICE, C.MAX_PRICE]


def test_birthday_window_intersects_validity() -> None:
    c = camp("birthday", valid_to=D(2024, 3, 3))
    assert K.birthday_window(c, RUN) == (RUN, D(2024, 3, 3))
    assert K.birthday_window(camp("birthday"), RUN) == (RUN, D(2024, 3, 7))


def test_birthday_keys_year_wrap_and_feb_29() -> None:
    assert K.birthday_keys(D(2024, 12, 29), D(2025, 1, 4)) == [101, 102, 103, 104, 1229, 1230, 1231]
    # non-leap year: 29 February birthdays are celebrated on 28 February
    assert 229 in K.birthday_keys(D(2023, 2, 25), D(2023, 3, 3))
    assert 229 not in K.birthday_keys(D(2023, 3, 1), D(2023, 3, 7))
    assert 229 in K.birthday_keys(D(2024, 2, 25), D(2024, 3, 2))  # leap year: its own date


def test_birthday_audience(spark: SparkSession) -> None:
    df = users(spark, [u("jan2", bm=1, bd=2), u("dec30", bm=12, bd=30), u("dec28", bm=12, bd=28),
                       u("jan5", bm=1, bd=5), u("unknown", bm=None, bd=None),
                       u("no_consent", consent=False, bm=12, bd=31)])
    start, end = K.birthday_window(camp("birthday", valid_to=D(2025, 12, 31)), D(2024, 12, 29))  # type: ignore[misc]
    assert ids(df.transform(K.birthday_audience(start, end))) == ["dec30", "jan2"]


def test_cart_threshold_audience_and_price_band(spark: SparkSession) -> None:
    items = spark.createDataFrame([("i1", 30.0), ("i2", 25.0), ("i3", 40.0), ("i4", 60.0)],
                                  "item_id string, price double")
    t = TS(2024, 2, 28, 12)
    events = spark.createDataFrame([
        ev("over", "i1", C.ADD_TO_CART, t), ev("over", "i2", C.ADD_TO_CART, t),           # 55 >= 50
        ev("slack", "i3", C.ADD_TO_CART, t),                                               # 40: within 15 of 50
        ev("slack", "i1", C.ADD_TO_CART, t), ev("slack", "i1", C.PURCHASE, t + dt.timedelta(hours=1)),  # bought
        ev("under", "i1", C.ADD_TO_CART, t),                                               # 30 < 35
        ev("qty", "i2", C.ADD_TO_CART, t, price=20.0, qty=3),                              # event price x qty = 60
        ev("old", "i4", C.ADD_TO_CART, TS(2024, 2, 1)),                                    # outside 14-day lookback
        ev("later", "i4", C.ADD_TO_CART, TS(2024, 3, 2)),                                  # after the run date
        ev("no_consent", "i4", C.ADD_TO_CART, t),
    ], EVENTS_DDL)
    lines = events.transform(K.open_cart_lines(items, RUN, 14))
    lines = spark.createDataFrame(lines.collect(), lines.schema)  # materialise once for the two audiences below
    names = ("over", "slack", "under", "qty", "old", "later")
    df = users(spark, [u(x) for x in names] + [u("no_consent", consent=False)])
    out = df.transform(K.cart_threshold_audience(lines, 50.0, 15.0))
    expected = spark.createDataFrame([("over", 0.0, 15.0), ("qty", 0.0, 15.0), ("slack", 10.0, 25.0)],
                                     "user_id string, min_price double, max_price double")
    assert_df_equality(out, expected, ignore_row_order=True, ignore_nullable=True)
    # without slack: only carts at or over the threshold, no upper price bound
    out0 = df.transform(K.cart_threshold_audience(lines, 50.0, 0.0))
    assert ids(out0) == ["over", "qty"] and out0.where(F.col(C.MAX_PRICE).isNotNull()).count() == 0


def test_two_cart_events_at_one_instant_give_the_larger_line_whatever_their_order(spark: SparkSession) -> None:
    """Cart value and the cart audience do not depend on which of two simultaneous cart events Spark meets first
    (the features' open-cart value follows the same rule)."""
    items = spark.createDataFrame([("i1", 20.0)], "item_id string, price double")
    t = TS(2024, 2, 28, 12)
    one, three = ev("u", "i1", C.ADD_TO_CART, t, qty=1), ev("u", "i1", C.ADD_TO_CART, t, qty=3)
    for order in ([one, three], [three, one]):
        events = spark.createDataFrame(order, EVENTS_DDL).coalesce(1)
        lines = events.transform(K.open_cart_lines(items, RUN, 14))
        assert [(r[C.USER_ID], r[C.LINE_VALUE]) for r in lines.collect()] == [("u", 60.0)], order


def test_co_occurrence_and_bundle_candidates(spark: SparkSession) -> None:
    t = TS(2024, 2, 20)
    buys = [("u1", "a"), ("u1", "b"), ("u1", "c"), ("u2", "a"), ("u2", "b"), ("u3", "a"), ("u3", "c"),
            ("u4", "a"), ("u4", "b"), ("u5", "d")]
    events = spark.createDataFrame([ev(x, i, C.PURCHASE, t) for x, i in buys]
                                   + [ev("u5", "a", C.VIEW, t)], EVENTS_DDL)
    pairs = events.transform(K.basket_items(RUN)).transform(K.co_occurrence(2))
    rows_ = pairs.collect()
    pairs = spark.createDataFrame(rows_, pairs.schema)
    assert {(r[C.ITEM_ID], r[C.OTHER_ITEM_ID]): r[C.CO_COUNT] for r in rows_} == {
        ("a", "b"): 3, ("b", "a"): 3, ("a", "c"): 2, ("c", "a"): 2}
    ab = next(r[C.SCORE] for r in rows_ if (r[C.ITEM_ID], r[C.OTHER_ITEM_ID]) == ("a", "b"))
    assert ab == pytest.approx(3 / (4 * 3) ** 0.5)

    anchors = spark.createDataFrame([("x", "a"), ("y", "b"), ("y", "c"), ("z", "a"), ("z", "b"), ("z", "c")],
                                    "user_id string, item_id string")
    cands = anchors.transform(K.bundle_candidates(pairs, 2))
    cand_rows = cands.collect()
    cands = spark.createDataFrame(cand_rows, cands.schema)
    rows = {(r[C.USER_ID], r[C.ITEM_ID]): r[C.REASON] for r in cand_rows}
    # anchors are never their own candidates; y's "a" is explained by both anchors, best first
    assert set(rows) == {("x", "b"), ("x", "c"), ("y", "a")}
    assert rows[("y", "a")] == ["bought together with b", "bought together with c"]
    assert rows[("x", "b")] == ["bought together with a"]

    df = users(spark, [u("x"), u("y", consent=False), u("z")])
    assert ids(df.transform(K.bundle_audience(cands))) == ["x"]

    # Each anchor keeps its best partners only: "a" keeps "b" (0.87) and drops "c" (0.71).
    one_partner = anchors.transform(K.bundle_candidates(pairs, 2, max_partners=1)).collect()
    assert {(r[C.USER_ID], r[C.ITEM_ID]) for r in one_partner} == {("x", "b"), ("y", "a")}
    # Each user keeps its best target; reasons name the best anchor first.
    best = anchors.transform(K.bundle_candidates(pairs, 1, max_candidates=1))
    ab, ac = 3 / (4 * 3) ** 0.5, 2 / (4 * 2) ** 0.5
    expected = spark.createDataFrame([("x", "b", ab, ["bought together with a"]),
                                      ("y", "a", ab + ac, ["bought together with b"])],
                                     "user_id string, item_id string, score double, reason array<string>")
    assert_approx_df_equality(best, expected, 1e-9, ignore_row_order=True, ignore_nullable=True)


def test_generic_audience(spark: SparkSession) -> None:
    df = users(spark, [u("a", purchases=1), u("b", purchases=0), u("c", purchases=4, consent=False)])
    rule = Rule(all=(Condition("purchases", "ge", 1),))
    assert ids(df.transform(K.generic_audience(rule))) == ["a"]
    assert ids(df.transform(K.generic_audience(None))) == ["a", "b"]
    with pytest.raises(ValueError, match="cart_value"):  # a rule field the input does not have
        df.transform(K.generic_audience(Rule(all=(Condition("cart_value", "gt", 1.0),))))


def test_with_cart_value(spark: SparkSession) -> None:
    lines = spark.createDataFrame([("a", "i1", 10.0), ("a", "i2", 5.5)], "user_id string, item_id string, "
                                                                          "line_value double")
    out = users(spark, [u("a"), u("b")]).transform(K.with_cart_value(lines))
    assert {r[C.USER_ID]: r[C.CART_VALUE] for r in out.collect()} == {"a": 15.5, "b": 0.0}


def test_eligible_items(spark: SparkSession) -> None:
    items = spark.createDataFrame([
        ("i1", "electronics", "acme", 99.0, 3, "50-200", 10, 0.1),
        ("i2", "electronics", "acme", 20.0, 0, "10-50", 50, 0.2),      # out of stock
        ("i3", "computers", "zed", 500.0, None, "200+", 5, 0.0),        # stock not tracked: allowed
        ("i4", "books", "acme", 9.0, 7, "<10", 70, 0.3),
    ], ITEMS_DDL)
    rule = Rule(any=(Condition("category", "in", ("electronics", "computers")),))
    got = sorted(r[C.ITEM_ID] for r in items.transform(K.eligible_items(rule)).collect())
    assert got == ["i1", "i3"]
    assert sorted(r[C.ITEM_ID] for r in items.transform(K.eligible_items()).collect()) == ["i1", "i3", "i4"]


def test_audience_and_items_rules_narrow_every_campaign_type(spark: SparkSession) -> None:
    from sparkpromo.recommend.candidates import campaign_frames

    people = users(spark, [u("de-new", "DE", signup=RUN), u("fr-new", "FR", signup=RUN),
                           u("fr-bday", "FR", bm=RUN.month, bd=RUN.day + 2)])
    items = spark.createDataFrame([("i1", "wine", "x", 20.0, 5, "10-50", 9, 0.1),
                                   ("i2", "books", "y", 9.0, 5, "<10", 3, 0.2)], ITEMS_DDL)
    events = spark.createDataFrame([], EVENTS_DDL)
    in_country = {c: Rule(all=(Condition("country", "eq", c),)) for c in ("DE", "FR")}
    active = [camp("welcome", id="welcome-de", audience=in_country["DE"]),
              camp("welcome", id="welcome-fr", audience=in_country["FR"]),
              camp("birthday", id="bday", items=Rule(all=(Condition("category", "ne", "wine"),)))]
    frames = campaign_frames(active, RUN, people, items, events, "country", n_reasons=2)
    got = sorted((r[C.CAMPAIGN_ID], r[C.USER_ID]) for r in frames.audience.collect())
    assert got == [("bday", "fr-bday"), ("welcome-de", "de-new"), ("welcome-fr", "fr-new")]
    eligible = sorted((r[C.CAMPAIGN_ID], r[C.ITEM_ID]) for r in frames.eligible.collect())
    assert eligible == [("bday", "i2"), ("welcome-de", "i1"), ("welcome-de", "i2"), ("welcome-fr", "i1"),
                        ("welcome-fr", "i2")]


def test_recently_listed_keeps_each_campaigns_period_before_the_run_date(spark: SparkSession) -> None:
    from sparkpromo.recommend.candidates import recently_listed

    day = dt.timedelta(days=1)
    previous = spark.createDataFrame([("welcome", "u1", RUN - day), ("welcome", "u2", RUN - 31 * day),
                                      ("welcome", "u3", RUN), ("birthday", "u1", RUN - 3 * day),
                                      ("birthday", "u1", RUN - 2 * day), ("cart", "u4", RUN - day)],
                                     "campaign_id string, user_id string, run_date date")
    got = previous.transform(recently_listed({"welcome": 30, "birthday": 7}, RUN))
    expected = spark.createDataFrame([("welcome", "u1"), ("birthday", "u1")], "campaign_id string, user_id string")
    assert_df_equality(got, expected, ignore_row_order=True, ignore_nullable=True)
    assert K.recontact_days(camp("welcome", signup_within_days=30)) == 30
    assert K.recontact_days(camp("birthday")) == 7 and K.recontact_days(camp("bundle")) == 0
    assert K.recontact_days(camp("welcome", recontact_after_days=0)) == 0
