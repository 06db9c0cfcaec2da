"""Campaign outcome measurement: the statistics against hand-computed values, the bad cases, the Delta stage."""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from pathlib import Path

import pytest
from chispa import assert_approx_df_equality, assert_df_equality
from conftest import make_config
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from sparkpromo import columns as C
from sparkpromo import delta_io
from sparkpromo import measure as M
from sparkpromo import tables as T
from sparkpromo.recommend import RECOMMENDATIONS

D = dt.date
RUN = D(2026, 11, 1)
CLOSED = D(2026, 11, 8)  # RUN + 7: the window (RUN, RUN + 7] has closed
EVENTS_DDL = "user_id string, item_id string, event_type string, event_date date, price double, quantity int"


def rec(cid: str, user: str, item: str, score: float, control: bool, discount: float = 10.0,
        run: dt.date = RUN) -> tuple:
    return (cid, run, user, item, 1, score, score, "als", control, not control, None, (discount, None, None, None),
            None, "r")


# Campaign "a": treated t1..t4, control c1, c2. Scores order them t1, c1, t2, c2, t3, t4.
RECS = [rec("a", "t1", "i1", 0.9, False), rec("a", "c1", "i1", 0.8, True), rec("a", "t2", "i1", 0.7, False),
        rec("a", "c2", "i1", 0.6, True), rec("a", "t3", "i1", 0.5, False), rec("a", "t4", "i1", 0.4, False)]
EVENTS = [
    ("t1", "i1", "purchase", D(2026, 11, 3), 10.0, 1),   # listed item, in the window
    ("t2", "x", "purchase", D(2026, 11, 5), 30.0, 2),    # another item: revenue 60
    ("t2", "x", "view", D(2026, 11, 5), None, None),     # not a purchase
    ("t3", "i1", "purchase", D(2026, 11, 8), 10.0, 1),   # the window's last day
    ("t4", "i1", "purchase", D(2026, 11, 9), 10.0, 1),   # after the window
    ("c1", "i1", "purchase", D(2026, 11, 2), 10.0, 1),
    ("c2", "i1", "purchase", D(2026, 11, 1), 10.0, 1),   # the run date itself: before the offer
]


def frames(spark: SparkSession, recs: list[tuple] = RECS) -> tuple[DataFrame, DataFrame]:
    return spark.createDataFrame(recs, RECOMMENDATIONS), spark.createDataFrame(EVENTS, EVENTS_DDL)


def users_of(spark: SparkSession, recs: list[tuple] = RECS, window_days: int = 7) -> DataFrame:
    r, events = frames(spark, recs)
    return r.transform(M.assignments()).transform(
        M.user_outcomes(events, r.select(C.CAMPAIGN_ID, C.RUN_DATE, C.USER_ID, C.ITEM_ID), window_days))


def outcome(spark: SparkSession, recs: list[tuple] = RECS, measured_on: dt.date = CLOSED, min_users: int = 1,
            types: dict[str, str] | None = None) -> dict:
    df = users_of(spark, recs).transform(M.campaign_outcomes(measured_on, min_users, types or {"a": "generic"}))
    return {r[C.CAMPAIGN_ID]: r.asDict() for r in df.collect()}


# ----------------------------------------------------------------------------------------------------------------
# Statistics against hand-computed values
# ----------------------------------------------------------------------------------------------------------------
def test_user_outcomes_count_the_window_only(spark: SparkSession) -> None:
    got = users_of(spark).select(C.USER_ID, C.IS_CONTROL, C.CONVERTED, C.OFFER_CONVERTED, C.REVENUE,
                                 C.OFFER_REVENUE, C.WINDOW_END)
    w = D(2026, 11, 8)
    expected = spark.createDataFrame([
        ("c1", True, True, True, 10.0, 10.0, w), ("c2", True, False, False, 0.0, 0.0, w),
        ("t1", False, True, True, 10.0, 10.0, w), ("t2", False, True, False, 60.0, 0.0, w),
        ("t3", False, True, True, 10.0, 10.0, w), ("t4", False, False, False, 0.0, 0.0, w)], got.schema)
    assert_df_equality(got, expected, ignore_row_order=True, ignore_nullable=True)


def test_two_proportion_ci_and_welch_match_hand_computed_values(spark: SparkSession) -> None:
    o = outcome(spark)["a"]
    assert (o[C.STATUS], o[C.IN_CONFIG], o[C.USERS_TREATED], o[C.USERS_CONTROL]) == ("ok", True, 4, 2)
    # conversion 3/4 vs 1/2: d = 0.25, se = sqrt(.75 * .25 / 4 + .5 * .5 / 2) = sqrt(0.171875)
    se = math.sqrt(0.171875)
    assert o[C.UPLIFT] == pytest.approx(0.25)
    assert o[C.UPLIFT_RELATIVE] == pytest.approx(0.5)
    assert (o[C.UPLIFT_CI_LOW], o[C.UPLIFT_CI_HIGH]) == pytest.approx((0.25 - 1.959964 * se, 0.25 + 1.959964 * se))
    # offer conversion 2/4 vs 1/2: no uplift, se = sqrt(.25 / 4 + .25 / 2)
    se_o = math.sqrt(0.0625 + 0.125)
    assert (o[C.OFFER_UPLIFT], o[C.OFFER_UPLIFT_CI_LOW]) == pytest.approx((0.0, -1.959964 * se_o))
    # revenue per user: treated [10, 60, 10, 0] (mean 20, var 2200/3), control [10, 0] (mean 5, var 50);
    # Welch: se^2 = 2200/12 + 25, df = se^4 / ((2200/12)^2 / 3 + 25^2 / 1) = 3.669, t(0.975, 3.669) = 2.8780
    assert (o[C.REVENUE_TREATED], o[C.REVENUE_CONTROL], o[C.REVENUE_UPLIFT]) == pytest.approx((20.0, 5.0, 15.0))
    half = 2.8780 * math.sqrt(2200 / 12 + 25)
    assert (o[C.REVENUE_UPLIFT_CI_LOW], o[C.REVENUE_UPLIFT_CI_HIGH]) == pytest.approx((15 - half, 15 + half),
                                                                                      abs=0.05)
    # incremental: 0.25 x 4 conversions, 15 x 4 revenue; discount 10% of the listed items bought by the treated
    # (t1 10 + t3 10) = 2; return (60 - 2) / 2
    assert (o[C.INCREMENTAL_CONVERSIONS], o[C.INCREMENTAL_REVENUE]) == pytest.approx((1.0, 60.0))
    assert (o[C.DISCOUNT_COST], o[C.INCREMENTAL_ROI]) == pytest.approx((2.0, 29.0))


@pytest.mark.parametrize(("df", "t"), [(4, 2.7764), (5, 2.5706), (10, 2.2281), (30, 2.0423), (1000, 1.9623)])
def test_t_quantile_matches_tables(spark: SparkSession, df: int, t: float) -> None:
    got = spark.range(1).select(M.t_quantile_975(F.lit(df)).alias("t")).first()[0]
    assert got == pytest.approx(t, abs=1e-3)


def test_qini_on_a_tiny_frame(spark: SparkSession) -> None:
    # Terciles: {t1, c1}, {t2, c2}, {t3, t4}. Cumulative (N_t, N_c, Y_t, Y_c): (1, 1, 1, 1), (2, 2, 2, 1),
    # (4, 2, 3, 1); Qini = Y_t - Y_c N_t / N_c: 0, 1, 1; the random line ends at the whole run's Qini (1).
    got = users_of(spark).transform(M.uplift_by_decile(CLOSED, deciles=3)).drop(C.MEASURED_ON)
    expected = spark.createDataFrame([
        ("a", RUN, 1, 1, 1, 1, 1, 0.0, 1 / 3, 0.0, 1 / 3),
        ("a", RUN, 2, 1, 1, 1, 0, 1.0, 2 / 3, 1.0, 2 / 3),
        ("a", RUN, 3, 2, 0, 1, 0, None, 1.0, 1.0, 1.0)],
        "campaign_id string, run_date date, decile int, users_treated long, users_control long, "
        "conversions_treated long, conversions_control long, uplift double, cum_share double, qini double, "
        "qini_random double")
    assert_approx_df_equality(got, expected, 1e-9, ignore_row_order=True, ignore_nullable=True)
    # AUUC: trapezoids (0 + 0) / 2 / 3 + (0 + 1) / 2 / 3 + (1 + 1) / 2 / 3 = 0.5; random: 1 / 2
    areas = got.transform(M.qini_areas()).first()
    assert (areas[C.AUUC], areas[C.AUUC_RANDOM], areas[C.QINI_COEFFICIENT]) == pytest.approx((0.5, 0.5, 0.0))


def test_qini_rewards_a_score_that_finds_the_persuadable(spark: SparkSession) -> None:
    # 100 users: the top-scored half converts when treated (never in control), the bottom half never converts.
    recs = [rec("a", f"u{i:03d}", "i1", 1.0 - i / 100, control=i % 4 == 0) for i in range(100)]
    r = spark.createDataFrame(recs, RECOMMENDATIONS)
    events = spark.createDataFrame([(f"u{i:03d}", "i1", "purchase", D(2026, 11, 2), 5.0, 1)
                                    for i in range(50) if i % 4], EVENTS_DDL)
    users = r.transform(M.assignments()).transform(
        M.user_outcomes(events, r.select(C.CAMPAIGN_ID, C.RUN_DATE, C.USER_ID, C.ITEM_ID), 7))
    areas = users.transform(M.uplift_by_decile(CLOSED)).transform(M.qini_areas()).first()
    assert areas[C.QINI_COEFFICIENT] > 0.25 * areas[C.AUUC_RANDOM] > 0


# ----------------------------------------------------------------------------------------------------------------
# Bad cases: clear states, no crash
# ----------------------------------------------------------------------------------------------------------------
def test_window_not_closed_gives_counts_only(spark: SparkSession) -> None:
    o = outcome(spark, measured_on=D(2026, 11, 7))["a"]
    assert (o[C.STATUS], o[C.USERS_TREATED], o[C.USERS_CONTROL]) == ("window_open", 4, 2)
    assert o[C.UPLIFT] is None and o[C.CONVERSIONS_TREATED] is None and o[C.DISCOUNT_COST] is None
    assert users_of(spark).transform(M.uplift_by_decile(D(2026, 11, 7))).count() == 0


def test_empty_control_group(spark: SparkSession) -> None:
    is_control = RECOMMENDATIONS.fieldNames().index(C.IS_CONTROL)
    recs = [r for r in RECS if not r[is_control]] + [rec("b", "c1", "i1", 0.1, True)]
    got = outcome(spark, recs, types={"a": "generic", "b": "welcome"})
    assert (got["a"][C.STATUS], got["a"][C.USERS_CONTROL], got["a"][C.UPLIFT]) == ("no_control", 0, None)
    assert got["a"][C.CONVERSION_TREATED] is None and got["a"][C.CONVERSIONS_TREATED] == 3
    assert (got["b"][C.STATUS], got["b"][C.USERS_TREATED]) == ("no_treated", 0)
    users = users_of(spark, recs)
    areas = users.transform(M.uplift_by_decile(CLOSED)).transform(M.qini_areas())
    assert {r[C.CAMPAIGN_ID]: r[C.AUUC] for r in areas.collect()}["a"] is None  # no control: no Qini curve
    rows = (users.transform(M.campaign_outcomes(CLOSED, 1, {"a": "generic", "b": "welcome"}))
            .transform(M.with_auuc(areas)).collect())
    assert [(r[C.AUUC], r[C.QINI_COEFFICIENT]) for r in rows] == [(None, None), (None, None)]


def test_small_sample_and_removed_campaign(spark: SparkSession) -> None:
    o = outcome(spark, min_users=3, types={"other": "welcome"})["a"]
    assert (o[C.STATUS], o[C.IN_CONFIG], o[C.CAMPAIGN_TYPE]) == ("small_sample", False, None)
    assert o[C.UPLIFT] == pytest.approx(0.25)  # still measured, discount from the stored offer
    assert o[C.DISCOUNT_COST] == pytest.approx(2.0)


# ----------------------------------------------------------------------------------------------------------------
# The stage on Delta tables
# ----------------------------------------------------------------------------------------------------------------
def test_run_measure_writes_both_tables_and_keeps_later_runs(spark: SparkSession, tmp_path: Path) -> None:
    cfg = make_config(tmp_path, measure={"min_users": 1})
    later = D(2026, 11, 20)
    recs, events = frames(spark, RECS + [rec("a", "t1", "i1", 0.9, False, run=later),
                                         rec("gone", "t1", "i1", 0.9, False), rec("gone", "c2", "i1", 0.1, True)])
    delta_io.overwrite(recs, cfg.table("gold", "recommendations"), partition_by=(C.CAMPAIGN_ID, C.RUN_DATE))
    delta_io.overwrite(events, cfg.table("silver", "events"))
    out = M.run_measure(spark, cfg, "m1", CLOSED)
    assert out["runs_measured"] == 2 and out["campaigns"]["a"]["status"] == "ok"
    table = delta_io.read(spark, T.CAMPAIGN_OUTCOMES.uri(cfg))
    assert [(f.name, f.dataType) for f in table.schema] == [(f.name, f.dataType) for f in M.OUTCOMES]
    rows = {r[C.CAMPAIGN_ID]: r for r in table.collect()}
    assert set(rows) == {"a", "gone"}  # the later run date is not measured on CLOSED
    assert (rows["gone"][C.IN_CONFIG], rows["a"][C.IN_CONFIG]) == (False, False)
    assert rows["a"][C.UPLIFT] == pytest.approx(0.25)
    uplift = delta_io.read(spark, T.UPLIFT.uri(cfg))
    assert [(f.name, f.dataType) for f in uplift.schema] == [(f.name, f.dataType) for f in M.UPLIFT]
    assert uplift.where(F.col(C.CAMPAIGN_ID) == "a").count() == 6  # 6 users: 6 non-empty deciles
    # measured again later: the later run date is added (window open), the earlier rows are replaced, not doubled
    out2 = M.run_measure(spark, cfg, "m2", D(2026, 11, 21))
    assert out2["runs_window_open"] == 1
    again = delta_io.read(spark, T.CAMPAIGN_OUTCOMES.uri(cfg))
    assert again.count() == 3
    assert again.where(F.col(C.STATUS) == "window_open").select(C.RUN_DATE).first()[0] == later
    # and a backfill of an earlier date leaves the later run date's row alone
    M.run_measure(spark, cfg, "m3", CLOSED)
    assert delta_io.read(spark, T.CAMPAIGN_OUTCOMES.uri(cfg)).where(F.col(C.RUN_DATE) == later).count() == 1


def test_run_measure_without_recommendations_warns(spark: SparkSession, tmp_path: Path) -> None:
    out = M.run_measure(spark, make_config(tmp_path), "m1", CLOSED)
    assert out["runs_measured"] == 0 and "nothing to measure" in out["warning"]


# ----------------------------------------------------------------------------------------------------------------
# The planted uplift of a shop that responds is found again
# ----------------------------------------------------------------------------------------------------------------
PLANTED_CAMPAIGNS = {"w": "welcome", "b": "birthday", "ct": "cart_threshold", "bu": "bundle", "g": "generic"}


def responses_as_events(spark: SparkSession, path: Path) -> DataFrame:
    raw = spark.read.option("header", "true").csv(str(path))
    return raw.select(C.USER_ID, F.col("product_id").alias(C.ITEM_ID), C.EVENT_TYPE,
                      F.to_date(F.to_timestamp("event_time")).alias(C.EVENT_DATE),
                      F.col(C.PRICE).cast("double").alias(C.PRICE), F.col(C.QUANTITY).cast("int").alias(C.QUANTITY))


@pytest.mark.slow
def test_planted_uplift_lies_in_the_measured_ci(spark: SparkSession, tmp_path: Path) -> None:
    import numpy as np

    from sparkpromo.generate import PLANTED_UPLIFT, Assignment, generate_responses

    # 5 campaigns of 6,000 users each drawn from 18,000 (so many users are in two or three), half held out.
    rng, scores = np.random.default_rng(20), np.random.default_rng(1)
    assigned: list[Assignment] = []
    recs: list[tuple] = []
    for cid, kind in PLANTED_CAMPAIGNS.items():
        for u in rng.choice(18_000, 6_000, replace=False).tolist():
            control = bool(rng.random() < 0.5)
            item = f"{cid}-i{u % 50}"
            assigned.append(Assignment(kind, f"u{u:05d}", control, item, 20.0))
            recs.append(rec(cid, f"u{u:05d}", item, float(scores.random()), control))
    report = generate_responses(tmp_path, assigned, RUN, 7, seed=5)
    events = responses_as_events(spark, report.path)
    r = spark.createDataFrame(recs, RECOMMENDATIONS)
    users = r.transform(M.assignments()).transform(
        M.user_outcomes(events, r.select(C.CAMPAIGN_ID, C.RUN_DATE, C.USER_ID, C.ITEM_ID), 7))
    got = {row[C.CAMPAIGN_ID]: row for row in
           users.transform(M.campaign_outcomes(CLOSED, 100, PLANTED_CAMPAIGNS)).collect()}
    for cid, kind in PLANTED_CAMPAIGNS.items():
        o = got[cid]
        assert o[C.STATUS] == "ok"
        treated, t_buy, control, c_buy = report.by_type[kind]  # what the generator drew
        assert (o[C.USERS_TREATED], o[C.USERS_CONTROL]) == (treated, control)
        assert (o[C.CONVERSION_TREATED], o[C.CONVERSION_CONTROL]) == pytest.approx((t_buy / treated, c_buy / control))
        # the base rate, plus what the control users' offers of other campaigns add
        assert 0.08 < o[C.CONVERSION_CONTROL] < 0.16, cid
        assert o[C.UPLIFT_CI_LOW] <= PLANTED_UPLIFT[kind] <= o[C.UPLIFT_CI_HIGH], (cid, o[C.UPLIFT])
    assert got["bu"][C.UPLIFT_CI_LOW] <= 0 <= got["bu"][C.UPLIFT_CI_HIGH]  # bundle: no true effect
    assert got["w"][C.UPLIFT_CI_LOW] > 0 and got["ct"][C.UPLIFT_CI_LOW] > 0  # large enough to tell from zero
    # an offer's own item carries its whole effect (base purchases are of any of the user's listed items)
    assert got["w"][C.OFFER_UPLIFT_CI_LOW] <= PLANTED_UPLIFT["welcome"] <= got["w"][C.OFFER_UPLIFT_CI_HIGH]
    assert got["w"][C.OFFER_CONVERSION_TREATED] < got["w"][C.CONVERSION_TREATED]
    assert got["w"][C.DISCOUNT_COST] > 0
    assert got["w"][C.INCREMENTAL_REVENUE] == pytest.approx(got["w"][C.REVENUE_UPLIFT] * got["w"][C.USERS_TREATED])


def test_responses_are_deterministic_and_stay_in_the_window(tmp_path: Path) -> None:
    from sparkpromo.generate import Assignment, generate_responses

    assigned = [Assignment("welcome", f"u{i}", i % 2 == 0, "p1", 9.5) for i in range(400)]
    a = generate_responses(tmp_path / "a", assigned, RUN, 3, seed=1)
    b = generate_responses(tmp_path / "b", assigned, RUN, 3, seed=1)
    assert a.path.read_text() == b.path.read_text()
    lines = a.path.read_text().splitlines()
    assert lines[0].split(",")[:4] == ["event_id", "user_id", "product_id", "event_type"]
    days = {line.split(",")[4][:10] for line in lines[1:]}
    assert days and days <= {"2026-11-02", "2026-11-03", "2026-11-04"}
    treated, t_buy, control, c_buy = a.by_type["welcome"]
    assert (treated, control) == (200, 200) and a.purchases == t_buy + c_buy == (len(lines) - 1) // 2


def test_a_negative_planted_uplift_puts_treated_users_off(tmp_path: Path) -> None:
    """An offer that loses buyers (the config allows base rate + uplift down to 0): treated users buy less than
    control users, by about the planted amount. (Once, only positive effects were drawn.)"""
    from sparkpromo.generate import Assignment, generate_responses

    assigned = [Assignment("generic", f"u{i}", i % 2 == 0, "p1", 9.5) for i in range(20_000)]
    report = generate_responses(tmp_path, assigned, RUN, 3, seed=3, base_rate=0.1, uplift={"generic": -0.05})
    treated, t_buy, control, c_buy = report.by_type["generic"]
    assert 0.04 < t_buy / treated < 0.06 and 0.09 < c_buy / control < 0.11


@pytest.mark.slow
def test_generated_shop_to_measure_on_delta_tables(spark: SparkSession, tmp_path: Path) -> None:
    import dataclasses

    from sparkpromo.config import load_config
    from sparkpromo.generate import PLANTED_UPLIFT, generate_shop
    from sparkpromo.pipeline import RunContext, generate_responses_sample, run_stage
    from tests.conftest import CONF_DIR

    base = load_config("local", CONF_DIR)
    cfg = dataclasses.replace(make_config(tmp_path, measure={"min_users": 20}),
                              campaigns=tuple(dataclasses.replace(c, control_share=0.5) for c in base.campaigns))
    generate_shop(Path(cfg.landing), n_events=8_000, seed=4, days=30, end=RUN, n_users=1_200, dirty=False)
    day0, day7 = RunContext("d0", RUN), RunContext("d7", CLOSED)
    for name in ("ingest", "clean", "features", "recommend"):
        run_stage(name, spark, cfg, day0)
    opened = run_stage("measure", spark, cfg, day0)
    assert opened["runs_measured"] == 0 and opened["runs_window_open"] >= 3
    responses = generate_responses_sample(spark, cfg, day0, cfg.lakehouse)
    assert responses["response_purchases"] > 0
    run_stage("ingest", spark, cfg, day7)
    run_stage("clean", spark, cfg, day7)
    run_stage("measure", spark, cfg, day7)
    rows = {r[C.CAMPAIGN_ID]: r for r in delta_io.read(spark, T.CAMPAIGN_OUTCOMES.uri(cfg)).collect()}
    by_type = dict(base_row for base_row in ((c.id, c.type) for c in cfg.campaigns))
    measured = [cid for cid, r in rows.items() if r[C.STATUS] in M.MEASURED]
    assert len(measured) >= 3, {cid: (r[C.STATUS], r[C.USERS_TREATED], r[C.USERS_CONTROL]) for cid, r in rows.items()}
    for cid in measured:
        r = rows[cid]
        assert r[C.WINDOW_END] == CLOSED and r[C.IN_CONFIG]
        assert r[C.UPLIFT_CI_LOW] <= PLANTED_UPLIFT[by_type[cid]] <= r[C.UPLIFT_CI_HIGH], (cid, r[C.UPLIFT])
        assert r[C.CONVERSIONS_TREATED] + r[C.CONVERSIONS_CONTROL] > 0
    deciles = delta_io.read(spark, T.UPLIFT.uri(cfg)).where(F.col(C.CAMPAIGN_ID) == measured[0])
    assert deciles.count() == 10 and deciles.agg(F.max(C.CUM_SHARE)).first()[0] == pytest.approx(1.0)
    # a campaign dropped from the config keeps its measured past, flagged
    gone = measured[0]
    fewer = dataclasses.replace(cfg, campaigns=tuple(c for c in cfg.campaigns if c.id != gone))
    M.run_measure(spark, fewer, "d7b", CLOSED)
    again = {r[C.CAMPAIGN_ID]: r for r in delta_io.read(spark, T.CAMPAIGN_OUTCOMES.uri(cfg)).collect()}
    assert set(again) == set(rows) and again[gone][C.IN_CONFIG] is False
    assert again[gone][C.UPLIFT] == pytest.approx(rows[gone][C.UPLIFT])


# ----------------------------------------------------------------------------------------------------------------
# Feedback into the next run (off by default)
# ----------------------------------------------------------------------------------------------------------------
def _row(cid: str, day: int, low: float, high: float, inc_rev: float = 0.0, treated: int = 100,
         status: str = "ok") -> dict:
    return {C.CAMPAIGN_ID: cid, C.RUN_DATE: D(2026, 11, day), C.STATUS: status, C.UPLIFT_CI_LOW: low,
            C.UPLIFT_CI_HIGH: high, C.INCREMENTAL_REVENUE: inc_rev, C.USERS_TREATED: treated}


def _campaigns(tmp_path: Path) -> tuple:
    import dataclasses

    from sparkpromo.config import load_config
    from tests.conftest import CONF_DIR

    cs = load_config("local", CONF_DIR).campaigns
    # two budgeted campaigns: welcome (budget 100) and the generic one (budget 500 in base.yaml)
    return tuple(dataclasses.replace(c, budget=100) if c.type == "welcome" else c for c in cs)


def test_pause_needs_min_runs_wholly_negative_in_a_row(tmp_path: Path) -> None:
    camps = _campaigns(tmp_path)
    history = [_row("birthday", 1, -0.05, -0.01), _row("birthday", 2, -0.06, -0.02), _row("birthday", 3, -0.04, -0.01),
               _row("bundle", 1, -0.05, -0.01), _row("bundle", 2, -0.03, 0.01), _row("bundle", 3, -0.05, -0.01),
               _row("cart-50", 4, -0.05, -0.01, status="window_open")]
    actions = M.decide_actions(history, camps, pause_negative=True, min_runs=2, reallocate=False)
    assert [(cid, a) for cid, a, _, _ in actions] == [("birthday", "pause")]
    assert M.decide_actions(history, camps, pause_negative=False, min_runs=2, reallocate=False) == []
    assert M.decide_actions(history, camps, pause_negative=True, min_runs=4, reallocate=False) == []
    # A small sample's interval is not acted on (README: "shown, not to be trusted"): a one-user control arm that
    # bought gives [-1, -1]. With its last run small, birthday has two trusted runs, not three.
    small = [*history[:2], _row("birthday", 3, -1.0, -1.0, status="small_sample"), *history[3:]]
    assert M.decide_actions(small, camps, pause_negative=True, min_runs=2, reallocate=False) == [
        ("birthday", "pause", None, "uplift 95% CI below zero in the last 2 run(s) with status ok (latest -0.0600 to "
         "-0.0200)")]
    assert M.decide_actions(small, camps, pause_negative=True, min_runs=3, reallocate=False) == []


def test_budgets_follow_incremental_revenue_per_offer(tmp_path: Path) -> None:
    camps = _campaigns(tmp_path)
    history = [_row("welcome-new-users", 1, 0.0, 0.1, inc_rev=300.0, treated=100),   # 3.0 per offer
               _row("electronics-fans", 1, 0.0, 0.1, inc_rev=500.0, treated=500)]    # 1.0 per offer
    actions = {cid: v for cid, a, v, _ in M.decide_actions(history, camps, False, 3, reallocate=True)}
    assert actions == {"welcome-new-users": 450.0, "electronics-fans": 150.0}  # 600 offers split 3:1
    kept, changes = M.apply_actions(camps, {"welcome-new-users": {"budget": 450.0}, "birthday": {"pause": None}})
    assert "birthday" not in {c.id for c in kept}
    assert {c.id: c.budget for c in kept}["welcome-new-users"] == 450
    assert changes == ["campaign welcome-new-users: budget 100 -> 450 by measure.reallocate_budgets",
                       "campaign birthday: paused by measure.pause_negative"]
    # one campaign not measured yet: no re-split
    assert M.decide_actions(history[:1], camps, False, 3, reallocate=True) == []
    # A small sample's point estimate does count for budgets (a budget of 500 with a 10% control group never has
    # measure.min_users controls): the re-split is 3:1 as above.
    small = [history[0], _row("electronics-fans", 1, -1.0, 1.0, inc_rev=500.0, treated=500, status="small_sample")]
    assert {cid: v for cid, a, v, _ in M.decide_actions(small, camps, False, 3, reallocate=True)} == actions
    # A budgeted campaign without a control group is never measured: it keeps its budget and does not block the
    # others' re-split (here the only other one, which then keeps the whole of its own budget).
    no_control = tuple(dataclasses.replace(c, control_share=0.0) if c.id == "electronics-fans" else c for c in camps)
    assert {cid: v for cid, a, v, _ in M.decide_actions(history[:1], no_control, False, 3, reallocate=True)} == {
        "welcome-new-users": 100.0}


def test_actions_are_written_and_read_by_the_next_run(spark: SparkSession, tmp_path: Path) -> None:
    cfg = make_config(tmp_path, measure={"min_users": 1, "pause_negative": True, "min_runs": 1},
                      campaigns=[{"id": "a", "type": "generic", "valid_from": "2026-01-01", "valid_to": "2026-12-31",
                                  "audience": {"all": [{"field": "purchases", "op": "ge", "value": 0}]}}])
    # control users all buy, treated users never: the uplift interval lies below zero
    recs = [rec("a", f"t{i}", "i1", 0.5, False) for i in range(30)] + [rec("a", f"c{i}", "i1", 0.5, True)
                                                                       for i in range(30)]
    events = [(f"c{i}", "i1", "purchase", D(2026, 11, 2), 10.0, 1) for i in range(30)]
    delta_io.overwrite(spark.createDataFrame(recs, RECOMMENDATIONS), cfg.table("gold", "recommendations"))
    delta_io.overwrite(spark.createDataFrame(events, EVENTS_DDL), cfg.table("silver", "events"))
    out = M.run_measure(spark, cfg, "m", CLOSED)
    assert out["actions"] == 1
    assert M.read_actions(spark, cfg, CLOSED) == {}  # decided on CLOSED: applies from the next run date
    assert M.read_actions(spark, cfg, CLOSED + dt.timedelta(days=1)) == {"a": {"pause": None}}
    # The next measure decides nothing (two runs in a row now needed): from the day after it, "a" is not paused
    later = CLOSED + dt.timedelta(days=1)
    relaxed = dataclasses.replace(cfg, measure=dataclasses.replace(cfg.measure, min_runs=2))
    assert M.run_measure(spark, relaxed, "m2", later)["actions"] == 0
    assert M.read_actions(spark, cfg, later) == {"a": {"pause": None}}
    assert M.read_actions(spark, cfg, later + dt.timedelta(days=1)) == {}


def test_budgets_are_shared_only_among_campaigns_active_on_the_next_run(tmp_path: Path) -> None:
    camps = _campaigns(tmp_path)
    ended = tuple(dataclasses.replace(c, valid_to=D(2026, 11, 5)) if c.id == "welcome-new-users" else c
                  for c in camps)
    history = [_row("welcome-new-users", 1, 0.0, 0.1, inc_rev=300.0, treated=100),
               _row("electronics-fans", 1, 0.0, 0.1, inc_rev=500.0, treated=500)]
    # welcome ended: the generic campaign keeps its budget whole rather than 150 of a 600-offer split
    kept = {cid: v for cid, a, v, _ in M.decide_actions(history, ended, False, 3, reallocate=True,
                                                        next_run=D(2026, 11, 6))}
    assert kept == {"electronics-fans": 500.0}
    # a campaign that starts later, not measured yet, does not hold back the re-split of the measured ones
    later = tuple(dataclasses.replace(c, valid_from=D(2026, 12, 1), valid_to=D(2026, 12, 31), budget=50)
                  if c.type == "birthday" else c for c in camps)
    split = {cid: v for cid, a, v, _ in M.decide_actions(history, later, False, 3, reallocate=True,
                                                         next_run=D(2026, 11, 6))}
    assert split == {"welcome-new-users": 450.0, "electronics-fans": 150.0}
