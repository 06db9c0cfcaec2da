"""The recommend stage: per-list selection, caps, control group, fallbacks, and the Delta output."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from chispa import assert_approx_df_equality, assert_df_equality
from conftest import make_config
from pyspark.ml.recommendation import ALS
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from sparkpromo import columns as C
from sparkpromo import delta_io, schemas
from sparkpromo import evaluate as E
from sparkpromo import recommend as R
from sparkpromo.config import AppConfig

D = dt.date
RUN = D(2024, 3, 1)

CANDS_DDL = ("campaign_id string, user_id string, item_id string, score double, source string, level int, "
             "reason array<string>, min_price double, max_price double")
ELIGIBLE_DDL = "campaign_id string, item_id string, category string, price double, popularity int"
PAIRS_DDL = "user_id string, item_id string"


def cand(uid: str, item: str, score: float, level: int = 0, cid: str = "c1", lo: float | None = None,
         hi: float | None = None) -> tuple:
    source = {0: R.ALS, 1: R.SEGMENT_POPULARITY, 2: R.GLOBAL_POPULARITY}[level]
    return (cid, uid, item, score, source, level, None, lo, hi)


def lists(df: DataFrame) -> dict[tuple[str, str], list[str]]:
    """(campaign, user) -> items in rank order."""
    out: dict[tuple[str, str], list[str]] = {}
    for r in df.orderBy(C.CAMPAIGN_ID, C.USER_ID, C.RANK).collect():
        out.setdefault((r[C.CAMPAIGN_ID], r[C.USER_ID]), []).append(r[C.ITEM_ID])
    return out


def no_purchases(spark: SparkSession) -> DataFrame:
    return spark.createDataFrame([], PAIRS_DDL)


# ----------------------------------------------------------------------------------------------------------------
# Per-list selection
# ----------------------------------------------------------------------------------------------------------------
def test_eligibility_is_applied_before_top_k(spark: SparkSession) -> None:
    prices = {"i1": 10.0, "i2": 20.0, "i3": 30.0, "i4": 40.0, "i5": 50.0, "i6": 60.0}
    scores = {"i1": 6.0, "i2": 5.0, "i3": 4.0, "i4": 3.0, "i5": 2.0, "i6": 1.0}
    rows = [cand("u1", i, s) for i, s in scores.items()]
    rows += [cand("u2", i, s, lo=15.0, hi=35.0) for i, s in scores.items()]  # a cart price band
    eligible = spark.createDataFrame([("c1", i, "x", prices[i], 1) for i in ("i2", "i4", "i5", "i6")], ELIGIBLE_DDL)
    out = spark.createDataFrame(rows, CANDS_DDL).transform(
        R.select_items(eligible, no_purchases(spark), None, (), 0, {"c1": 3}))
    # the best-scored items are not eligible: the list is still 3 long
    expected = spark.createDataFrame([("u1", "i2", 1), ("u1", "i4", 2), ("u1", "i5", 3), ("u2", "i2", 1)],
                                     "user_id string, item_id string, rank int")
    assert_df_equality(out.select(C.USER_ID, C.ITEM_ID, C.RANK), expected, ignore_row_order=True,
                       ignore_nullable=True)


def test_purchased_items_excluded_except_repeatable_categories(spark: SparkSession) -> None:
    rows = [cand("u1", "tv", 3.0), cand("u1", "milk", 2.0), cand("u1", "radio", 1.0), cand("u2", "tv", 1.0)]
    eligible = spark.createDataFrame([("c1", "tv", "electronics", 1.0, 1), ("c1", "milk", "grocery", 1.0, 1),
                                      ("c1", "radio", "electronics", 1.0, 1)], ELIGIBLE_DDL)
    bought = spark.createDataFrame([("u1", "tv"), ("u1", "milk"), ("u1", "tv")], PAIRS_DDL)
    cart = spark.createDataFrame([("c1", "u2", "tv")], "campaign_id string, user_id string, item_id string")
    out = spark.createDataFrame(rows, CANDS_DDL).transform(
        R.select_items(eligible, bought, cart, ("grocery",), 0, {"c1": 5}))
    assert lists(out) == {("c1", "u1"): ["milk", "radio"]}  # u2's only item is already in the open cart


def test_per_category_cap_and_level_precedence(spark: SparkSession) -> None:
    rows = [cand("u1", "e1", 0.9), cand("u1", "e2", 0.8), cand("u1", "b1", 0.7), cand("u1", "b2", 0.6),
            cand("u1", "e1", 50.0, level=2),    # duplicate of an ALS item from the global fill: ALS row wins
            cand("u1", "g1", 99.0, level=1)]    # a fill item comes after every ALS item, whatever its score
    cats = {"e1": "electronics", "e2": "electronics", "b1": "books", "b2": "books", "g1": "grocery"}
    eligible = spark.createDataFrame([("c1", i, c, 1.0, 1) for i, c in cats.items()], ELIGIBLE_DDL)
    out = spark.createDataFrame(rows, CANDS_DDL).transform(
        R.select_items(eligible, no_purchases(spark), None, (), 1, {"c1": 5})).cache()
    assert lists(out) == {("c1", "u1"): ["e1", "b1", "g1"]}
    assert {r[C.ITEM_ID]: r[C.SOURCE] for r in out.collect()} == {
        "e1": R.ALS, "b1": R.ALS, "g1": R.SEGMENT_POPULARITY}
    out.unpersist()
    # Items without a category are each a category of their own: a catalogue without categories keeps top_k.
    bare = spark.createDataFrame([("c1", i, None, 1.0, 1) for i in cats], ELIGIBLE_DDL)
    uncategorised = spark.createDataFrame(rows, CANDS_DDL).transform(
        R.select_items(bare, no_purchases(spark), None, (), 1, {"c1": 5}))
    assert lists(uncategorised) == {("c1", "u1"): ["e1", "e2", "b1", "b2", "g1"]}


# ----------------------------------------------------------------------------------------------------------------
# Across campaigns
# ----------------------------------------------------------------------------------------------------------------
RECS_DDL = "campaign_id string, user_id string, item_id string, rank int, level int, score double"


def test_contact_cap_keeps_highest_priority_then_smallest_id(spark: SparkSession) -> None:
    recs = spark.createDataFrame([
        ("low", "u1", "i1", 1, 0, 1.0), ("b", "u1", "i1", 1, 0, 1.0), ("b", "u1", "i2", 2, 0, 0.5),
        ("a", "u1", "i3", 1, 0, 1.0), ("low", "u2", "i1", 1, 0, 1.0)], RECS_DDL)
    prio = {"low": 10, "a": 30, "b": 30}
    two = recs.transform(R.contact_cap(2, prio)).select(C.CAMPAIGN_ID, C.USER_ID).distinct().collect()
    assert sorted(tuple(r) for r in two) == [("a", "u1"), ("b", "u1"), ("low", "u2")]
    one = recs.transform(R.contact_cap(1, prio))
    assert sorted((r[0], r[1], r[2]) for r in one.collect()) == [("a", "u1", "i3"), ("low", "u2", "i1")]


def test_budget_is_deterministic_and_prefers_primary_sources(spark: SparkSession) -> None:
    recs = spark.createDataFrame([
        ("c1", "u1", "i1", 1, 0, 0.9), ("c1", "u1", "i2", 2, 0, 0.1),
        ("c1", "u2", "i1", 1, 0, 0.5), ("c1", "u3", "i1", 1, 0, 0.7),
        ("c1", "u4", "i1", 1, 2, 100.0),       # a popularity fallback: after every ALS user, despite its score
        ("c1", "u5", "i1", 1, 0, 0.5),         # ties u2: the hash decides
        ("c2", "u1", "i1", 1, 0, 0.1), ("c2", "u4", "i1", 1, 2, 1.0)], RECS_DDL)
    budget = {"c1": 3, "c2": 0}
    first = sorted(tuple(r) for r in recs.transform(R.apply_budget(budget))
                   .select(C.CAMPAIGN_ID, C.USER_ID).distinct().collect())
    again = sorted(tuple(r) for r in recs.transform(R.apply_budget(budget))
                   .select(C.CAMPAIGN_ID, C.USER_ID).distinct().collect())
    assert first == again
    c1 = [u for c, u in first if c == "c1"]
    assert len(c1) == 3 and {"u1", "u3"} <= set(c1) and "u4" not in c1
    assert [u for c, u in first if c == "c2"] == ["u1", "u4"]  # budget 0 = unlimited
    assert recs.transform(R.apply_budget(budget)).where(F.col(C.USER_ID) == "u1").count() == 3  # whole lists kept


AUDIENCE_DDL = "campaign_id string, user_id string, min_price double, max_price double, segment string"


def test_budget_shortlist_puts_users_the_campaign_can_serve_first(spark: SparkSession) -> None:
    """A one-item campaign: its buyers have the highest affinity (they liked it), but their lists would lack it, so
    the shortlist takes the users who have not bought it first. A repeatable category's buyers stay servable."""
    aud = spark.createDataFrame([(c, f"u{i}", None, None, "DE") for c in ("b", "r") for i in range(1, 4)],
                                AUDIENCE_DDL)
    aff = spark.createDataFrame([(c, "u1", 0.9) for c in ("b", "r")] + [(c, "u2", 0.5) for c in ("b", "r")],
                                "campaign_id string, user_id string, affinity double")
    eligible = spark.createDataFrame([("b", "sku", "books"), ("r", "milk", "grocery")],
                                     "campaign_id string, item_id string, category string")
    bought = spark.createDataFrame([("u1", "sku"), ("u1", "milk")], "user_id string, item_id string")

    def by_affinity(df: DataFrame) -> DataFrame:
        return df.join(aff, [C.CAMPAIGN_ID, C.USER_ID], "left")

    can_serve = R.servable(eligible, bought, ["grocery"])
    got = aud.transform(R.budget_shortlist({"b": 1, "r": 1}, 1, by_affinity, can_serve))
    expected = spark.createDataFrame([("b", "u2", None, None, "DE"), ("r", "u1", None, None, "DE")], AUDIENCE_DDL)
    assert_df_equality(got, expected, ignore_row_order=True)
    # by affinity alone, the buyer of the only item would be shortlisted
    alone = aud.transform(R.budget_shortlist({"b": 1}, 1, by_affinity)).where(F.col(C.CAMPAIGN_ID) == "b")
    assert [r[C.USER_ID] for r in alone.collect()] == ["u1"]


def test_budget_shortlist_keeps_the_users_of_highest_affinity(spark: SparkSession) -> None:
    aud = spark.createDataFrame([(c, f"u{i}", None, None, "DE") for c in ("b", "open") for i in range(1, 7)],
                                AUDIENCE_DDL)
    aff = spark.createDataFrame([("b", "u1", 0.1), ("b", "u2", 0.9), ("b", "u3", 0.5), ("b", "u4", 0.7),
                                 ("b", "u5", None)], "campaign_id string, user_id string, affinity double")

    def by_affinity(df: DataFrame) -> DataFrame:
        return df.join(aff, [C.CAMPAIGN_ID, C.USER_ID], "left")

    # budget 1 x factor 3: the three best of b; "open" (no budget) keeps everyone
    got = aud.transform(R.budget_shortlist({"b": 1, "open": 0}, 3, by_affinity))
    keep = (F.col(C.CAMPAIGN_ID) == "open") | F.col(C.USER_ID).isin("u2", "u4", "u3")
    assert_df_equality(got, aud.where(keep), ignore_row_order=True)
    # null affinity (a user the model does not know) comes after every known one
    four = aud.transform(R.budget_shortlist({"b": 2}, 2, by_affinity)).where(F.col(C.CAMPAIGN_ID) == "b")
    assert_df_equality(four, aud.where((F.col(C.CAMPAIGN_ID) == "b") & ~F.col(C.USER_ID).isin("u5", "u6")),
                       ignore_row_order=True)
    # factor 0 keeps every row
    assert_df_equality(aud.transform(R.budget_shortlist({"b": 1}, 0, by_affinity)), aud, ignore_row_order=True)
    # without a model: a deterministic hash order, budget x factor users
    hashed = aud.transform(R.budget_shortlist({"b": 2}, 2))
    assert_df_equality(hashed, aud.transform(R.budget_shortlist({"b": 2}, 2)), ignore_row_order=True)
    assert hashed.where(F.col(C.CAMPAIGN_ID) == "b").count() == 4
    assert hashed.where(F.col(C.CAMPAIGN_ID) == "open").count() == 6


def test_campaign_affinity_is_the_mean_score_over_eligible_items(spark: SparkSession) -> None:
    inter = spark.createDataFrame([(u, i, float(1 + (u * i) % 3)) for u in range(4) for i in range(5)
                                   if (u + i) % 2 == 0 or i == 4], "user_idx int, item_idx int, confidence double")
    model = ALS(rank=2, maxIter=3, implicitPrefs=True, seed=1, userCol=C.USER_IDX, itemCol=C.ITEM_IDX,
                ratingCol=C.CONFIDENCE, numUserBlocks=1, numItemBlocks=1).fit(inter)
    id_map = spark.createDataFrame([("user", f"u{u}", u) for u in range(4)] + [("item", f"i{i}", i) for i in range(5)],
                                   schemas.ID_MAP)
    eligible = spark.createDataFrame([("c1", "i0"), ("c1", "i2"), ("c1", "i3"), ("c2", "i4"), ("c3", "unknown")],
                                     "campaign_id string, item_id string")
    aud = spark.createDataFrame([("c1", "u0"), ("c1", "u3"), ("c2", "u1"), ("c1", "ghost"), ("c3", "u0")],
                                "campaign_id string, user_id string")
    users = {r["id"]: r["features"] for r in model.userFactors.collect()}
    items = {r["id"]: r["features"] for r in model.itemFactors.collect()}

    def mean_score(u: int, its: list[int]) -> float:
        return sum(sum(a * b for a, b in zip(users[u], items[i], strict=True)) for i in its) / len(its)

    expected = spark.createDataFrame([("c1", "u0", mean_score(0, [0, 2, 3])), ("c1", "u3", mean_score(3, [0, 2, 3])),
                                      ("c2", "u1", mean_score(1, [4])), ("c1", "ghost", None), ("c3", "u0", None)],
                                     "campaign_id string, user_id string, affinity double")
    got = aud.transform(R.campaign_affinity(model, id_map, eligible))
    assert_approx_df_equality(got, expected, 1e-5, ignore_row_order=True, ignore_nullable=True)


def test_control_group_is_deterministic_with_about_the_configured_share(spark: SparkSession) -> None:
    users = spark.range(4000).select(F.concat(F.lit("user-"), F.col("id").cast("string")).alias(C.USER_ID))
    recs = users.crossJoin(spark.createDataFrame([("c1",), ("c2",), ("c3",)], "campaign_id string"))
    flagged = recs.transform(R.flag_control({"c1": 0.2, "c2": 0.0, "c3": 0.2}))
    stats = {r[0]: (r[1], r[2], r[3]) for r in flagged.groupBy(C.CAMPAIGN_ID).agg(
        F.avg(F.col(C.IS_CONTROL).cast("double")),
        F.count(F.when(F.col(C.IS_CONTROL) == F.col(C.DELIVERED), 1)),
        F.sum(F.crc32(F.concat_ws("|", C.USER_ID, F.col(C.IS_CONTROL).cast("string"))))).collect()}
    assert stats["c1"][0] == pytest.approx(0.2, abs=0.03)
    assert stats["c2"][0] == 0.0
    assert stats["c1"][1] == 0  # delivered is exactly "not control"
    # deterministic: recomputing gives the same membership; another campaign gets a different slice
    again = recs.transform(R.flag_control({"c1": 0.2})).where(F.col(C.CAMPAIGN_ID) == "c1").agg(
        F.sum(F.crc32(F.concat_ws("|", C.USER_ID, F.col(C.IS_CONTROL).cast("string"))))).first()[0]
    assert again == stats["c1"][2]
    both = flagged.groupBy(C.USER_ID).agg(F.sum(F.col(C.IS_CONTROL).cast("int")).alias("n"))
    overlap = both.where(F.col("n") >= 2).count()
    assert overlap < 0.1 * 4000  # independent slices overlap ~4%, identical ones would overlap 20%


def _campaign(cid: str, ctype: str = "generic", **offer: Any) -> Any:
    from sparkpromo.config import Campaign, Offer
    return Campaign(id=cid, type=ctype, valid_from=D(2020, 1, 1), valid_to=D(2099, 1, 1), name=cid.title(),
                    offer=Offer(**offer))


def test_offer_has_campaign_name_text_and_a_derived_coupon(spark: SparkSession) -> None:
    active = [_campaign("welcome", "welcome", discount_pct=15, coupon_template="W-{code}"),
              _campaign("plain", discount_pct=0), _campaign("cart", "cart_threshold", discount_pct=10,
                                                            text="{campaign}: {item_name} {discount}% {coupon}")]
    recs = spark.createDataFrame([("welcome", "u'1", "i1", True), ("welcome", "u2", "i1", False),
                                  ("plain", "u2", "i2", True), ("cart", "u2", "i2", True)],
                                 "campaign_id string, user_id string, item_id string, delivered boolean")
    names = spark.createDataFrame([("i1", "Red kettle"), ("i2", None)], "item_id string, name string")
    got = {(r[C.CAMPAIGN_ID], r[C.USER_ID]): r[C.OFFER].asDict()
           for r in recs.transform(R.with_offer(active, "r1", names)).collect()}
    code = R.coupon_code("r1")
    expected_code = spark.createDataFrame([("welcome", "u'1")], "campaign_id string, user_id string") \
        .select(code).first()[0]
    welcome = got[("welcome", "u'1")]
    assert welcome[C.COUPON_CODE] == f"W-{expected_code}" and len(expected_code) == R.COUPON_CODE_LENGTH
    assert "u'1" not in welcome[C.COUPON_CODE] and welcome[C.CAMPAIGN_NAME] == "Welcome"
    assert welcome[C.OFFER_TEXT] == f"Welcome! 15% off Red kettle with code W-{expected_code}"
    # a control row is never sent: no coupon, no text
    assert got[("welcome", "u2")] == {C.DISCOUNT_PCT: 15.0, C.COUPON_CODE: None, C.CAMPAIGN_NAME: "Welcome",
                                      C.OFFER_TEXT: None}
    # no discount: no coupon, the plain text; a nameless item shows its id
    assert got[("plain", "u2")] == {C.DISCOUNT_PCT: 0.0, C.COUPON_CODE: None, C.CAMPAIGN_NAME: "Plain",
                                    C.OFFER_TEXT: "Plain: i2"}
    cart = got[("cart", "u2")]
    assert cart[C.COUPON_CODE].startswith("CART-") and cart[C.OFFER_TEXT] == f"Cart: i2 10% {cart[C.COUPON_CODE]}"


def test_coupon_codes_are_keyed_when_a_key_is_set(spark: SparkSession) -> None:
    import hashlib
    import hmac

    active = [_campaign("welcome", "welcome", discount_pct=15, coupon_template="W-{code}")]
    recs = spark.createDataFrame([("welcome", "u1", "i1", True)],
                                 "campaign_id string, user_id string, item_id string, delivered boolean")
    key = b"coupon-test-key-0123456789"
    keyed = recs.transform(R.with_offer(active, "r1", key=key))
    assert keyed.columns == recs.columns + [C.OFFER]  # the pad columns are dropped
    expected = hmac.new(key, b"welcome|r1|u1", hashlib.sha256).hexdigest()[:R.COUPON_CODE_LENGTH].upper()
    assert keyed.first()[C.OFFER][C.COUPON_CODE] == f"W-{expected}"
    plain = hashlib.sha256(b"welcome|r1|u1").hexdigest()[:R.COUPON_CODE_LENGTH].upper()
    assert recs.transform(R.with_offer(active, "r1")).first()[C.OFFER][C.COUPON_CODE] == f"W-{plain}" != f"W-{expected}"


def test_scores_share_one_scale(spark: SparkSession) -> None:
    """ALS scores (~1) and popularity counts (tens) land on one [0, 1] scale, primary sources above fallbacks."""
    recs = spark.createDataFrame([
        ("c1", "u1", "a", 1.2, R.ALS, 0), ("c1", "u1", "b", 0.4, R.ALS, 0), ("c1", "u2", "c", 0.8, R.ALS, 0),
        ("c1", "u2", "d", 44.0, R.SEGMENT_POPULARITY, 1), ("c1", "u3", "d", 4.0, R.SEGMENT_POPULARITY, 1),
        ("c1", "u3", "e", 30.0, R.GLOBAL_POPULARITY, 2), ("c2", "u1", "e", 30.0, R.GLOBAL_POPULARITY, 2)],
        "campaign_id string, user_id string, item_id string, score double, source string, level int")
    out = recs.transform(R.calibrate_scores()).select(C.CAMPAIGN_ID, C.USER_ID, C.ITEM_ID, C.SCORE, C.RAW_SCORE)
    expected = spark.createDataFrame([
        ("c1", "u1", "a", 1.0, 1.2), ("c1", "u1", "b", (2 + 0.01) / 3, 0.4),
        ("c1", "u2", "c", (2 + 0.01 + 0.99 * 0.5) / 3, 0.8), ("c1", "u2", "d", 2 / 3, 44.0),
        ("c1", "u3", "d", (1 + 0.01) / 3, 4.0), ("c1", "u3", "e", 1 / 3, 30.0), ("c2", "u1", "e", 1 / 3, 30.0)],
        "campaign_id string, user_id string, item_id string, score double, raw_score double")
    assert_approx_df_equality(out, expected, 1e-9, ignore_row_order=True, ignore_nullable=True)
    # The bands do not touch: the lowest model score is above the highest segment popularity.
    levels = recs.transform(R.calibrate_scores()).groupBy(C.LEVEL).agg(F.min(C.SCORE), F.max(C.SCORE)).collect()
    bands = {r[0]: (r[1], r[2]) for r in levels}
    assert bands[0][0] > bands[1][1] and bands[1][0] > bands[2][1]


def test_exposure_gini(spark: SparkSession) -> None:
    recs = spark.createDataFrame([("even", "a"), ("even", "b"), ("even", "c"), ("even", "d"),
                                  ("one", "a"), ("one", "a"), ("one", "a"), ("one", "a")],
                                 "campaign_id string, item_id string")
    got = {r[0]: r[1] for r in recs.transform(E.exposure_gini(4)).collect()}
    assert got["even"] == pytest.approx(0.0) and got["one"] == pytest.approx(0.75)


def test_exposure_against_popularity_baseline(spark: SparkSession) -> None:
    """Fairness figures: our slots vs the same slots filled by the most popular eligible items."""
    items = spark.createDataFrame([("a", 9.0), ("b", 5.0), ("c", 2.0), ("d", 1.0), ("e", 0.5), ("f", 0.1),
                                   ("g", 0.1), ("h", 0.1), ("i", 0.1), ("j", 0.1), ("k", 0.0)],
                                  "item_id string, popularity double")
    head = E.most_popular(items, 11)  # ceil(10% of 11) = 2 items
    assert_df_equality(head, spark.createDataFrame([("a",), ("b",)], "item_id string"), ignore_nullable=True)

    delivered = spark.createDataFrame([("c1", "u1", "c", 1), ("c1", "u1", "a", 2), ("c1", "u2", "d", 1)],
                                      "campaign_id string, user_id string, item_id string, rank int")
    eligible = spark.createDataFrame([("c1", "a", 9.0), ("c1", "c", 2.0), ("c1", "d", 1.0)],
                                     "campaign_id string, item_id string, popularity double")
    baseline = delivered.transform(E.popularity_baseline(eligible))
    expected = spark.createDataFrame([("c1", 1, "u1", "a"), ("c1", 2, "u1", "c"), ("c1", 1, "u2", "a")],
                                     "campaign_id string, rank int, user_id string, item_id string")
    assert_df_equality(baseline, expected, ignore_row_order=True, ignore_nullable=True)

    ours = {k: v for k, v in delivered.transform(E.exposure_metrics(11, head)).first().asDict().items()}
    base = baseline.transform(E.exposure_metrics(11, head, prefix="baseline_")).first().asDict()
    assert ours["coverage"] == pytest.approx(3 / 11) and base["baseline_coverage"] == pytest.approx(2 / 11)
    assert ours["head_share"] == pytest.approx(1 / 3) and base["baseline_head_share"] == pytest.approx(2 / 3)
    assert ours["gini"] < base["baseline_gini"]


def test_load_champion_without_registry(spark: SparkSession, cfg: AppConfig) -> None:
    assert R.load_champion(spark, cfg) == (None, None, R.POPULARITY)


# ----------------------------------------------------------------------------------------------------------------
# End to end on a tiny lakehouse with a tiny ALS model
# ----------------------------------------------------------------------------------------------------------------
USER_FEATURES_DDL = ("user_id string, country string, age_band string, marketing_consent boolean, signup_date date, "
                     "days_since_signup int, birth_month int, birth_day int, active_days int, sessions int, "
                     "purchases int, monetary double, recency_days int, top_category string")
ITEM_FEATURES_DDL = ("item_id string, category string, brand string, price double, stock int, price_band string, "
                     "popularity int, conversion_rate double")
ITEMS = {  # item -> (category, price, stock)
    "e1": ("electronics", 20.0, 5), "e2": ("electronics", 40.0, 5), "e3": ("electronics", 60.0, 5),
    "e4": ("electronics", 80.0, 5), "b1": ("books", 10.0, 5), "b2": ("books", 15.0, 5),
    "g1": ("grocery", 5.0, 100), "x1": ("electronics", 30.0, 0)}
# user -> (country, consent, signup days before RUN); u7 and u9 are cold-start users with no events
USERS = {"u1": ("DE", True, 10), "u2": ("DE", True, 400), "u3": ("FR", True, 400), "u4": ("DE", True, 400),
         "u5": ("FR", True, 400), "u6": ("DE", True, 400), "u7": ("DE", True, 2), "u8": ("DE", False, 5),
         "u9": ("IT", True, 5)}
EVENTS = [  # (user, item, type, days before RUN)
    ("u1", "e1", "view", 3), ("u1", "e2", "view", 3), ("u1", "g1", "purchase", 5), ("u1", "b2", "view", 2),
    ("u2", "e3", "add_to_cart", 2), ("u2", "e2", "view", 2), ("u2", "e1", "purchase", 30),
    ("u3", "e1", "purchase", 20), ("u3", "b1", "purchase", 20), ("u3", "e2", "view", 4),
    ("u4", "e1", "purchase", 25), ("u4", "b1", "purchase", 25), ("u4", "g1", "view", 1),
    ("u5", "e1", "purchase", 15), ("u5", "b1", "purchase", 15), ("u5", "e4", "view", 6),
    ("u6", "e1", "purchase", 3), ("u6", "e2", "view", 3), ("u6", "e4", "favorite", 2),
    ("u8", "e1", "purchase", 3), ("u8", "e2", "view", 3), ("u3", "b2", "view", 1), ("u4", "e2", "view", 7),
]
WEIGHT = {"view": 1.0, "favorite": 2.0, "add_to_cart": 4.0, "purchase": 8.0}


def campaigns(welcome_days: int = 30, inactive: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    always = {"valid_from": "2020-01-01", "valid_to": "2099-12-31"}
    camps = [
        {"id": "welcome", "type": "welcome", **always, "priority": 50, "top_k": 3, "control_share": 0.0,
         "signup_within_days": welcome_days, "offer": {"discount_pct": 15, "coupon_template": "W-{code}"}},
        {"id": "birthday", "type": "birthday", **always, "priority": 40},
        {"id": "cart-50", "type": "cart_threshold", **always, "priority": 30, "top_k": 3, "control_share": 0.0,
         "cart_threshold": 50, "cart_slack": 15},
        {"id": "bundle", "type": "bundle", **always, "priority": 20, "top_k": 2, "control_share": 0.0,
         "min_co_occurrence": 2},
        {"id": "fans", "type": "generic", **always, "priority": 10, "top_k": 2, "budget": 2, "control_share": 0.5,
         "audience": {"all": [{"field": "purchases", "op": "ge", "value": 1}]},
         "items": {"any": [{"field": "category", "op": "in", "value": ["electronics"]}]}},
    ]
    return [{**c, "valid_to": "2024-02-29"} if c["id"] in inactive else c for c in camps]


def e2e_config(root: Path, **kw: Any) -> AppConfig:
    return make_config(root, campaigns=campaigns(**kw), recommend={
        "candidates": 10, "max_offers_per_user": 10, "repeatable_categories": ["grocery"], "segment": "country",
        "reasons": 2})


def write_inputs(spark: SparkSession, cfg: AppConfig) -> None:
    ts = {e: dt.datetime.combine(RUN, dt.time(12)) - dt.timedelta(days=e[3]) for e in EVENTS}
    events = spark.createDataFrame(
        [(f"ev{n}", e[0], e[1], e[2], ts[e], ts[e].date(), ITEMS[e[1]][1], None, None, None)
         for n, e in enumerate(EVENTS)], schemas.SILVER_EVENTS)
    delta_io.overwrite(events, cfg.table("silver", "events"))
    buyers = {e[0] for e in EVENTS if e[2] == "purchase"}
    users = spark.createDataFrame(
        [(u, c, "25-34", ok, RUN - dt.timedelta(days=d), d, 6, 15, 1, 1, int(u in buyers), 0.0, 1, None)
         for u, (c, ok, d) in USERS.items()], USER_FEATURES_DDL)
    delta_io.overwrite(users, cfg.table("gold", "user_features"))
    pop = {i: len({e[0] for e in EVENTS if e[1] == i}) for i in ITEMS}
    items = spark.createDataFrame([(i, c, "acme", p, s, "x", pop[i], 0.1) for i, (c, p, s) in ITEMS.items()],
                                  ITEM_FEATURES_DDL)
    delta_io.overwrite(items, cfg.table("gold", "item_features"))
    uidx = {u: n for n, u in enumerate(sorted({e[0] for e in EVENTS}))}
    iidx = {i: n for n, i in enumerate(sorted(ITEMS))}
    delta_io.overwrite(spark.createDataFrame([("user", u, n) for u, n in uidx.items()] + [("item", i, n) for i, n in
                                                                                   iidx.items()], schemas.ID_MAP),
                       cfg.table("gold", "id_map"))
    conf: dict[tuple[int, int], float] = {}
    for e in EVENTS:
        conf[(uidx[e[0]], iidx[e[1]])] = conf.get((uidx[e[0]], iidx[e[1]]), 0.0) + WEIGHT[e[2]]
    inter = spark.createDataFrame([(u, i, c, None) for (u, i), c in conf.items()], schemas.INTERACTIONS)
    delta_io.overwrite(inter, cfg.table("gold", "interactions"))
    model = ALS(rank=3, maxIter=4, implicitPrefs=True, alpha=5.0, regParam=0.05, seed=7, userCol=C.USER_IDX,
                itemCol=C.ITEM_IDX, ratingCol=C.CONFIDENCE, numUserBlocks=1, numItemBlocks=1).fit(inter)
    registry = Path(cfg.lakehouse) / "registry"
    model.save(str(registry / "m1" / "model"))
    (registry / "m1" / "params.json").write_text(json.dumps({"champion": "als", "run_id": "m1"}))
    (registry / "LATEST").write_text("m1\n")


@dataclasses.dataclass
class E2E:
    cfg: AppConfig
    first: dict[str, Any]
    rows1: list[dict[str, Any]]
    warnings: list[str]


def table_rows(spark: SparkSession, cfg: AppConfig) -> list[dict[str, Any]]:
    rows = delta_io.read(spark, R.table_uri(cfg)).collect()
    return sorted((r.asDict(recursive=True) for r in rows),
                  key=lambda d: (d[C.CAMPAIGN_ID], d[C.USER_ID], d[C.RANK]))


@pytest.fixture(scope="module")
def e2e(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory) -> Iterator[E2E]:
    root = tmp_path_factory.mktemp("recommend")
    cfg = e2e_config(root)
    write_inputs(spark, cfg)
    seen: list[str] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: seen.append(record.getMessage())  # type: ignore[method-assign]
    logging.getLogger("sparkpromo").addHandler(handler)
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.delenv(cfg.privacy.key_env, raising=False)
            first = R.run_recommend(spark, cfg, "r1", RUN)
    finally:
        logging.getLogger("sparkpromo").removeHandler(handler)
    yield E2E(cfg, first, table_rows(spark, cfg), seen)


@pytest.mark.slow
def test_run_recommend_summary_and_partitions(e2e: E2E) -> None:
    s = e2e.first
    # campaigns with coupons and no privacy key: the codes are unkeyed hashes, and the run says so
    assert any(w.startswith("coupon codes are hashed without a key") for w in e2e.warnings), e2e.warnings
    assert s["champion"] == "als" and s["model_run_id"] == "m1" and s["campaigns_active"] == 5
    camps = s["campaigns"]
    assert camps["birthday"]["status"] == "empty_audience" and camps["birthday"]["rows"] == 0
    assert camps["welcome"]["audience"] == 3 and camps["welcome"]["served"] == 3
    assert camps["fans"]["users_listed"] == 2  # budget
    assert s["rows"] == len(e2e.rows1) == sum(c["rows"] for c in camps.values())
    for c in camps.values():
        assert 0.0 <= c["fallback_share"] <= 1.0 and 0.0 <= c["coverage"] <= 1.0 and 0.0 <= c["gini"] < 1.0
        assert all(0.0 <= c[k] <= 1.0 for k in E.FAIRNESS_METRICS)
        assert (c["baseline_coverage"] > 0) == (c["served"] > 0)  # the baseline fills the same delivered slots
    table = Path(R.table_uri(e2e.cfg))
    for cid in ("welcome", "cart-50", "bundle", "fans"):
        assert (table / f"campaign_id={cid}" / f"run_date={RUN.isoformat()}").is_dir()
    assert not (table / "campaign_id=birthday").exists()


@pytest.mark.slow
def test_control_rows_can_never_be_delivered(spark: SparkSession, e2e: E2E) -> None:
    rows = [r for r in e2e.rows1 if r[C.IS_CONTROL]]
    assert rows and all(not r[C.DELIVERED] for r in rows)
    bad = spark.createDataFrame([{**rows[0], C.DELIVERED: True, C.RANK: 99}], R.RECOMMENDATIONS)
    with pytest.raises(Exception, match="(?i)control_never_delivered"):
        delta_io.append(bad, R.table_uri(e2e.cfg))
    assert delta_io.read(spark, R.table_uri(e2e.cfg)).where(F.col(C.DELIVERED) & F.col(C.IS_CONTROL)).count() == 0


@pytest.mark.slow
def test_run_recommend_rows(e2e: E2E) -> None:
    rows = e2e.rows1
    bought = {(e[0], e[1]) for e in EVENTS if e[2] == "purchase"}
    assert all(r[C.USER_ID] != "u8" for r in rows)                   # no consent, no offer
    assert all(r[C.ITEM_ID] != "x1" for r in rows)                   # out of stock
    assert all((r[C.USER_ID], r[C.ITEM_ID]) not in bought or ITEMS[r[C.ITEM_ID]][0] == "grocery" for r in rows)
    assert all(r[C.RUN_DATE] == RUN and r[C.MODEL_RUN_ID] == "m1" and r[C.RUN_ID] == "r1" for r in rows)
    by = {}
    for r in rows:
        by.setdefault((r[C.CAMPAIGN_ID], r[C.USER_ID]), []).append(r)
    # welcome: warm u1 from ALS with item-similarity reasons; cold u7 (DE) segment first, cold u9 (IT) global only
    assert {r[C.SOURCE] for r in by[("welcome", "u1")]} == {R.ALS}
    assert any(r[C.REASON] and r[C.REASON][0].startswith(R.REASON_SIMILAR) for r in by[("welcome", "u1")])
    u7 = [r[C.SOURCE] for r in by[("welcome", "u7")]]
    assert u7[0] == R.SEGMENT_POPULARITY and u7 == sorted(u7, key=lambda x: x != R.SEGMENT_POPULARITY)
    assert by[("welcome", "u7")][0][C.REASON] == ["popular in DE"]
    assert {r[C.SOURCE] for r in by[("welcome", "u9")]} == {R.GLOBAL_POPULARITY}
    assert [r[C.RANK] for r in by[("welcome", "u9")]] == [1, 2, 3]
    offer = by[("welcome", "u1")][0][C.OFFER]
    assert offer[C.DISCOUNT_PCT] == 15.0 and offer[C.COUPON_CODE].startswith("W-") and "u1" not in offer[C.COUPON_CODE]
    assert offer[C.CAMPAIGN_NAME] == "welcome" and offer[C.COUPON_CODE] in offer[C.OFFER_TEXT]
    # one score scale: [0, 1], a list sorted by score is sorted by rank, the source's own score kept apart
    assert all(0.0 <= r[C.SCORE] <= 1.0 and r[C.RAW_SCORE] is not None for r in rows)
    for lst in by.values():
        assert [r[C.SCORE] for r in lst] == sorted((r[C.SCORE] for r in lst), reverse=True)
    assert all(r[C.SCORE] >= 2 / 3 for r in rows if r[C.SOURCE] in (R.ALS, R.BUNDLE))
    assert all(r[C.OFFER][C.COUPON_CODE] for r in rows if r[C.DELIVERED] and r[C.OFFER][C.DISCOUNT_PCT] > 0)
    # cart: u2 has 60 in the cart (e3): add-ons up to the slack (15), never e3 itself
    assert {u for c, u in by if c == "cart-50"} == {"u2"}
    assert all(ITEMS[r[C.ITEM_ID]][1] <= 15 and r[C.ITEM_ID] != "e3" for r in by[("cart-50", "u2")])
    # bundle: u6 bought e1 recently; b1 is bought with e1 by u3, u4 and u5
    b = by[("bundle", "u6")]
    assert b[0][C.ITEM_ID] == "b1" and b[0][C.SOURCE] == R.BUNDLE and b[0][C.REASON] == ["bought together with e1"]
    # generic: electronics only, budget 2 users, control rows kept but not delivered
    fans = [r for (c, _), rs in by.items() if c == "fans" for r in rs]
    assert all(ITEMS[r[C.ITEM_ID]][0] == "electronics" for r in fans)
    assert all(r[C.DELIVERED] == (not r[C.IS_CONTROL]) for r in rows)


@pytest.mark.slow
def test_popularity_champion(spark: SparkSession, e2e: E2E) -> None:
    cfg = e2e.cfg
    welcome = [c for c in cfg.campaigns if c.id == "welcome"]
    users = delta_io.read(spark, cfg.table("gold", "user_features"))
    items = delta_io.read(spark, cfg.table("gold", "item_features"))
    events = delta_io.read(spark, cfg.table("silver", "events"))
    frames = R.campaign_frames(welcome, RUN, users, items, events, "country", 2)
    recs = R.recommendations(frames, welcome, RUN, users, events, delta_io.read(spark, cfg.table("gold", "id_map")),
                             delta_io.read(spark, cfg.table("gold", "interactions")), None, cfg.recommend)
    got = {(r[C.USER_ID], r[C.SOURCE]) for r in recs.select(C.USER_ID, C.SOURCE).distinct().collect()}
    assert got == {("u1", R.POPULARITY), ("u7", R.POPULARITY), ("u9", R.POPULARITY)}


@pytest.mark.slow
def test_budgeted_campaign_scores_only_its_shortlist(spark: SparkSession, e2e: E2E,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = e2e.cfg
    fans = [dataclasses.replace(c, budget=1) for c in cfg.campaigns if c.id == "fans"]
    users = delta_io.read(spark, cfg.table("gold", "user_features"))
    items = delta_io.read(spark, cfg.table("gold", "item_features"))
    events = delta_io.read(spark, cfg.table("silver", "events"))
    id_map = delta_io.read(spark, cfg.table("gold", "id_map"))
    interactions = delta_io.read(spark, cfg.table("gold", "interactions"))
    model = R.load_champion(spark, cfg)[1]
    assert model is not None
    frames = R.campaign_frames(fans, RUN, users, items, events, "country", 2)
    affinity = frames.audience.transform(R.campaign_affinity(model, id_map, frames.eligible))
    ranked = [r[C.USER_ID] for r in affinity.orderBy(F.desc_nulls_last(C.AFFINITY), C.USER_ID).collect()]
    assert len(ranked) >= 2  # otherwise a shortlist of one would not be a choice
    idx = {r[C.ORIGINAL_ID]: r[C.IDX] for r in id_map.where(F.col(C.ID_KIND) == "user").collect()}
    scored: list[set[int]] = []  # the users each call asks the model to score (the real call still runs)
    subset = model.recommendForUserSubset

    def spy(users_df: DataFrame, n: int) -> DataFrame:
        scored.append({r[0] for r in users_df.collect()})
        return subset(users_df, n)

    monkeypatch.setattr(model, "recommendForUserSubset", spy)
    for factor in (1, 0):
        recs = R.recommendations(frames, fans, RUN, users, events, id_map, interactions, model,
                                 dataclasses.replace(cfg.recommend, budget_shortlist=factor))
        assert recs.select(C.USER_ID).distinct().count() == 1  # the budget
    assert scored == [{idx[ranked[0]]}, {idx[u] for u in ranked if u in idx}]


@pytest.mark.slow
def test_rerun_replaces_only_its_partitions(spark: SparkSession, e2e: E2E) -> None:
    # the same run date again: the welcome audience is now empty, three campaigns are no longer active
    cfg2 = dataclasses.replace(e2e.cfg, campaigns=e2e_config(Path(e2e.cfg.lakehouse).parent, welcome_days=0,
                                                             inactive=("birthday", "bundle", "fans")).campaigns)
    # The table records its change data feed (measure reads it), and one from before that gets it switched on.
    ref = delta_io.table_ref(R.table_uri(cfg2))

    def feed() -> str | None:
        return {r["key"]: r["value"] for r in spark.sql(f"SHOW TBLPROPERTIES {ref}").collect()}.get(
            delta_io.CHANGE_FEED)

    assert feed() == "true"
    spark.sql(f"ALTER TABLE {ref} UNSET TBLPROPERTIES ('{delta_io.CHANGE_FEED}')")
    assert feed() is None
    second = R.run_recommend(spark, cfg2, "r2", RUN)
    assert feed() == "true"
    assert second["campaigns"]["welcome"] == {**second["campaigns"]["welcome"], "status": "empty_audience",
                                              "rows": 0, "audience": 0}
    assert second["campaigns_inactive"] == ["birthday", "bundle", "fans"]
    rows2 = table_rows(spark, cfg2)

    def part(rows: list[dict[str, Any]], cid: str, strip_run: bool = False) -> list[dict[str, Any]]:
        return [{k: v for k, v in r.items() if not (strip_run and k == C.RUN_ID)} for r in rows
                if r[C.CAMPAIGN_ID] == cid]

    assert part(rows2, "welcome") == []                              # stale rows cleared
    for cid in ("bundle", "fans"):                                   # untouched (still run r1)
        assert part(rows2, cid) == part(e2e.rows1, cid) and part(rows2, cid)[0][C.RUN_ID] == "r1"
    cart = part(rows2, "cart-50")                                     # rerun: identical content, new run id
    assert cart and part(rows2, "cart-50", True) == part(e2e.rows1, "cart-50", True) and cart[0][C.RUN_ID] == "r2"
    assert len(rows2) == len(e2e.rows1) - len(part(e2e.rows1, "welcome"))


@pytest.mark.slow
def test_no_offers_is_a_warning_and_an_error_under_strict(spark: SparkSession, tmp_path: Path) -> None:
    """Nobody consented: every campaign ends empty. The summary says so with the likely cause; ``--strict`` (the
    scheduled jobs) turns it into a failure, also when the rerun is skipped."""
    from sparkpromo.pipeline import RunContext, StrictError, run_stage

    cfg = dataclasses.replace(e2e_config(tmp_path), campaigns=e2e_config(tmp_path, inactive=(
        "welcome", "birthday", "cart-50", "bundle")).campaigns)
    write_inputs(spark, cfg)
    users = delta_io.read(spark, cfg.table("gold", "user_features")).withColumn(C.MARKETING_CONSENT, F.lit(False))
    delta_io.overwrite(users.localCheckpoint(), cfg.table("gold", "user_features"))
    ctx = RunContext("r1", RUN)
    result = run_stage("recommend", spark, cfg, ctx)
    assert result["rows"] == 0 and result["campaigns"]["fans"]["status"] == "empty_audience"
    assert result["warning"] == ("no offers served: every active campaign ended empty (fans: empty_audience) (no "
                                 "user has marketing consent? see privacy.consent_without_users)")
    with pytest.raises(StrictError, match="^no offers served: .* \\(--strict\\)$"):
        run_stage("recommend", spark, cfg, ctx, strict=True)


@pytest.mark.slow
def test_a_campaign_does_not_list_a_user_again_within_its_recontact_period(spark: SparkSession,
                                                                          tmp_path: Path) -> None:
    """Daily runs: a new user gets one welcome (its period is the 30-day signup window), not one a day; a generic
    campaign (period 0) lists its users again. A rerun of the next day still counts only earlier days."""
    cfg = e2e_config(tmp_path)
    write_inputs(spark, cfg)
    R.run_recommend(spark, cfg, "r1", RUN)
    nxt = RUN + dt.timedelta(days=1)
    second = R.run_recommend(spark, cfg, "r2", nxt)

    def users_of(cid: str, day: dt.date) -> list[str]:
        return sorted({r[C.USER_ID] for r in table_rows(spark, cfg) if r[C.CAMPAIGN_ID] == cid
                       and r[C.RUN_DATE] == day})

    welcomed = users_of("welcome", RUN)
    assert welcomed and users_of("welcome", nxt) == []
    assert second["campaigns"]["welcome"] == {**second["campaigns"]["welcome"], "audience": 0,
                                              "recently_listed": len(welcomed), "status": "empty_audience"}
    assert users_of("fans", nxt) and second["campaigns"]["fans"]["recently_listed"] == 0
    assert R.run_recommend(spark, cfg, "r2", nxt)["campaigns"]["welcome"]["recently_listed"] == len(welcomed)
    every_run = dataclasses.replace(cfg, campaigns=[dataclasses.replace(c, recontact_after_days=0)
                                                    if c.id == "welcome" else c for c in cfg.campaigns])
    assert R.run_recommend(spark, every_run, "r2", nxt)["campaigns"]["welcome"]["recently_listed"] == 0
    assert users_of("welcome", nxt) == welcomed


@pytest.mark.slow
def test_measures_decisions_pause_a_campaign_and_set_a_budget_on_the_next_run(spark: SparkSession,
                                                                             tmp_path: Path) -> None:
    """README, "Feedback": a campaign measure paused is left out of the next recommend (no rows for the date), a
    re-split budget caps the users listed, and the summary names both changes. Off by default: the
    same decisions change nothing without ``measure.pause_negative``/``reallocate_budgets``."""
    from sparkpromo import tables as T
    from sparkpromo.measure.actions import BUDGET, PAUSE

    off = e2e_config(tmp_path)
    write_inputs(spark, off)
    decided = RUN - dt.timedelta(days=1)
    actions = [(decided, "bundle", PAUSE, None, "uplift below zero", "m0"),
               (decided, "fans", BUDGET, 1.0, "incremental revenue", "m0")]
    delta_io.overwrite(spark.createDataFrame(actions, schemas.ACTIONS), T.CAMPAIGN_ACTIONS.uri(off))

    ignored = R.run_recommend(spark, off, "r0", RUN)
    assert "automatic_changes" not in ignored
    assert ignored["campaigns"]["bundle"]["rows"] > 0 and ignored["campaigns"]["fans"]["users_listed"] == 2

    on = dataclasses.replace(off, measure=dataclasses.replace(off.measure, pause_negative=True,
                                                              reallocate_budgets=True))
    following = RUN + dt.timedelta(days=1)
    applied = R.run_recommend(spark, on, "r1", following)
    assert "bundle" not in applied["campaigns"] and applied["campaigns_active"] == 4
    assert applied["automatic_changes"] == ("campaign bundle: paused by measure.pause_negative; campaign fans: "
                                            "budget 2 -> 1 by measure.reallocate_budgets")
    assert applied["campaigns"]["fans"]["users_listed"] == 1
    rows = table_rows(spark, on)
    served = {c for c, v in applied["campaigns"].items() if v["rows"]}
    assert served and {r[C.CAMPAIGN_ID] for r in rows if r[C.RUN_DATE] == following} == served
    # The paused campaign's offers of the run before stay: a pause stops new offers, it does not recall sent ones.
    assert {r[C.RUN_ID] for r in rows if r[C.CAMPAIGN_ID] == "bundle"} == {"r0"}
