"""Model lifecycle (issue 19): the published model is fitted on every interaction, a new model replaces the one in
service only when it is not worse on the same holdout, served-exclusion metrics, forward-chaining time folds for
temporal splits, and random search."""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import re
from pathlib import Path
from typing import Any

import pytest
from chispa import assert_df_equality
from pyspark.ml.recommendation import ALSModel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from sparkpromo import columns as C
from sparkpromo import evaluate as E
from sparkpromo import io, report, schemas
from sparkpromo import train as T
from sparkpromo.config import AppConfig, GridConfig
from tests.conftest import make_config

pytestmark = pytest.mark.usefixtures("small_data_conf")

T0 = dt.datetime(2024, 1, 1)
# Three tastes: users 0-7 like items 0-5, users 8-13 items 6-11, users 14-17 items 12-17. Each user has five of
# their taste's items on days 0-8 and the sixth (item u % 6 of the taste) on day 10; user 18 only has day-10
# interactions. With `last_days` 1, day 10 is the holdout: user 18 is in no train part.
GROUPS = ((range(0, 8), 0), (range(8, 14), 6), (range(14, 18), 12))
HOLDOUT_ONLY_USER = 18
CATEGORIES = {0: "electronics", 6: "books", 12: "grocery"}  # grocery is repeatable below


def timed_tastes() -> list[tuple[int, int, float, dt.datetime]]:
    rows = []
    for users, first in GROUPS:
        for u in users:
            later = first + u % 6
            earlier = [i for i in range(first, first + 6) if i != later]
            rows += [(u, i, 1.0 + (u + i) % 3, T0 + dt.timedelta(days=2 * n, minutes=u))
                     for n, i in enumerate(earlier)]
            rows.append((u, later, 1.0 + (u + later) % 3, T0 + dt.timedelta(days=10, minutes=u)))
    rows += [(HOLDOUT_ONLY_USER, i, 2.0, T0 + dt.timedelta(days=10, minutes=HOLDOUT_ONLY_USER)) for i in (0, 1, 2)]
    return rows


def write_lakehouse(spark: SparkSession, cfg: AppConfig) -> None:
    """gold.interactions, gold.id_map, gold.item_features and silver.events agreeing with each other: every
    interaction is one event, a purchase when user + item is even, a view otherwise."""
    rows = timed_tastes()
    io.overwrite(spark.createDataFrame(rows, schemas.INTERACTIONS), cfg.table("gold", "interactions"))
    ids = [("user", f"u{n}", n) for n in range(HOLDOUT_ONLY_USER + 1)] + [("item", f"i{n}", n) for n in range(18)]
    io.overwrite(spark.createDataFrame(ids, schemas.ID_MAP), cfg.table("gold", "id_map"))
    items = [(f"i{i}", CATEGORIES[first]) for _, first in GROUPS for i in range(first, first + 6)]
    io.overwrite(spark.createDataFrame(items, f"{C.ITEM_ID} string, {C.CATEGORY} string"),
                 cfg.table("gold", "item_features"))
    events = [(f"e{n}", f"u{u}", f"i{i}", C.PURCHASE if (u + i) % 2 == 0 else C.VIEW, ts, ts.date(), 10.0, 1, None,
               None) for n, (u, i, _, ts) in enumerate(rows)]
    io.overwrite(spark.createDataFrame(events, schemas.SILVER_EVENTS), cfg.table("silver", "events"))


def lifecycle_config(root: Path, grid: dict[str, Any]) -> AppConfig:
    return make_config(root, train={"k": 3, "folds": 2, "seed": 5, "split": "last_days", "test_days": 1,
                                    "grid": grid},
                       recommend={"repeatable_categories": ["grocery"]})


GOOD = {"rank": [8], "reg_param": [0.05], "alpha": [10.0], "max_iter": [10]}
WORSE = {"rank": [1], "reg_param": [0.05], "alpha": [10.0], "max_iter": [1]}


@pytest.fixture(scope="module")
def runs(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A good first run, then a deliberately worse one (rank 1, one iteration) on the same lakehouse."""
    root = tmp_path_factory.mktemp("lifecycle")
    cfg = lifecycle_config(root, GOOD)
    write_lakehouse(spark, cfg)
    good = T.run_train(spark, cfg, "good")
    latest_after_good = (Path(cfg.lakehouse) / "registry" / T.LATEST).read_text()
    worse = T.run_train(spark, lifecycle_config(root, WORSE), "worse")
    return {"cfg": cfg, "good": good, "worse": worse, "latest_after_good": latest_after_good}


def model_rows(spark: SparkSession, cfg: AppConfig, run_id: str) -> dict[tuple[str, str], float | None]:
    rows = io.read(spark, cfg.table("metrics", "model")).where(F.col(C.METRIC_RUN_ID) == run_id).collect()
    return {(r[C.CONTENDER], r[C.METRIC]): r[C.VALUE] for r in rows}


# ----------------------------------------------------------------------------------------------------------------
# Publishing and the incumbent gate
# ----------------------------------------------------------------------------------------------------------------
def test_first_run_publishes_with_no_incumbent(runs: dict[str, Any], spark: SparkSession) -> None:
    good, cfg = runs["good"], runs["cfg"]
    assert good["decision"] == T.FIRST_MODEL
    assert good["incumbent_run_id"] is None and good["incumbent_ndcg"] is None
    assert T.INCUMBENT not in good["metrics"]
    assert good["champion"] == "als"  # ALS must beat popularity for the later gate to mean something
    assert runs["latest_after_good"] == "good"
    rows = model_rows(spark, cfg, "good")
    assert rows[(T.DECISION, T.FIRST_MODEL)] is None
    assert not any(contender == T.INCUMBENT for contender, _ in rows)
    params = json.loads((Path(good["registry"]) / "params.json").read_text())
    assert (params["decision"], params["published_model"], params["holdout_metrics_from"]) == (
        "first_model", "all interactions", "train-only fit")
    assert (good["published_model"], good["holdout_metrics_from"]) == ("all interactions", "train-only fit")


def test_published_model_has_seen_every_interaction(runs: dict[str, Any], spark: SparkSession) -> None:
    good = runs["good"]
    published = ALSModel.load(good["model_uri"])
    users = {r["id"] for r in published.userFactors.select("id").collect()}
    assert users == set(range(HOLDOUT_ONLY_USER + 1))  # the holdout-only user too
    # The fit the holdout metrics come from knows the 18 train users only.
    assert good["counts"]["published_model_users"] == HOLDOUT_ONLY_USER + 1
    assert good["counts"]["holdout_model_users"] == HOLDOUT_ONLY_USER
    split = T.holdout_split(spark.createDataFrame(timed_tastes(), schemas.INTERACTIONS), runs["cfg"].train)
    assert split.train.where(F.col(C.USER_IDX) == HOLDOUT_ONLY_USER).isEmpty()


def test_worse_model_does_not_replace_the_incumbent(runs: dict[str, Any], spark: SparkSession) -> None:
    good, worse, cfg = runs["good"], runs["worse"], runs["cfg"]
    assert worse["params"]["rank"] == 1
    assert worse["decision"] == T.KEPT_INCUMBENT
    assert worse["incumbent_run_id"] == "good"
    new_score = worse["metrics"][worse["champion"]]["ndcg"]
    assert worse["incumbent_ndcg"] == worse["metrics"][T.INCUMBENT]["ndcg"]
    assert new_score < worse["incumbent_ndcg"] * (1 - cfg.train.incumbent_margin)
    assert (Path(cfg.lakehouse) / "registry" / T.LATEST).read_text() == "good"
    # The run is still recorded: its registry folder, its metrics, both scores and the decision.
    params = json.loads((Path(worse["registry"]) / "params.json").read_text())
    assert (params["decision"], params["incumbent_run_id"]) == ("kept_incumbent", "good")
    assert (Path(worse["registry"]) / "model" / "metadata").is_dir()
    rows = model_rows(spark, cfg, "worse")
    assert (T.DECISION, T.KEPT_INCUMBENT) in rows
    assert rows[(T.INCUMBENT, "ndcg")] == pytest.approx(worse["incumbent_ndcg"])
    assert rows[("als", "ndcg")] == pytest.approx(worse["metrics"]["als"]["ndcg"])
    assert good["metrics"]["als"]["ndcg"] > worse["metrics"]["als"]["ndcg"]


def test_report_shows_the_gate_and_what_was_published(runs: dict[str, Any], spark: SparkSession) -> None:
    body = report.holdout_section(spark, runs["cfg"], "worse", "", report.Charts()).body
    headers = re.findall(r"<th>([^<]*)</th>", body)
    assert headers[:6] == ["metric", "als", "popularity", "als_served", "popularity_served", "incumbent"]
    assert "decision" not in headers and "<td>kept_incumbent</td>" not in body
    score = runs["worse"]["incumbent_ndcg"]
    assert f"Gate decision: kept_incumbent (model in service: run good, ndcg {score:.4f}, margin 0.02)." in body
    assert "Published model fitted on all interactions; holdout metrics from the train-only fit." in body


def test_gate_decision_margin(caplog: pytest.LogCaptureFixture) -> None:
    assert T.gate_decision(0.5, None, 0.02, registered=False) == T.FIRST_MODEL
    assert T.gate_decision(0.5, None, 0.02, registered=True) == T.PUBLISHED
    assert T.gate_decision(0.981, 1.0, 0.02, registered=True) == T.PUBLISHED  # within the margin
    assert T.gate_decision(1.2, 1.0, 0.0, registered=True) == T.PUBLISHED
    with caplog.at_level(logging.WARNING, logger="sparkpromo.train"):
        assert T.gate_decision(0.97, 1.0, 0.02, registered=True) == T.KEPT_INCUMBENT
    assert any("keeping the model in service" in r.getMessage() for r in caplog.records)


def test_unloadable_incumbent_is_no_incumbent(spark: SparkSession, tmp_path: Path,
                                              caplog: pytest.LogCaptureFixture) -> None:
    cfg = make_config(tmp_path)
    registry = Path(cfg.lakehouse) / "registry"
    assert T.load_incumbent(spark, cfg, "new") == (None, False)  # nothing registered yet
    (registry / "broken" / "model").mkdir(parents=True)
    (registry / "broken" / "model" / "garbage").write_text("not a model")
    (registry / "broken" / "params.json").write_text(json.dumps({"run_id": "broken", "champion": "als"}))
    (registry / T.LATEST).write_text("broken")
    with caplog.at_level(logging.WARNING, logger="sparkpromo.train"):
        assert T.load_incumbent(spark, cfg, "new") == (None, True)
    assert any("could not be loaded" in r.getMessage() for r in caplog.records)
    (registry / "broken" / "params.json").write_text(json.dumps({"run_id": "broken", "champion": "popularity"}))
    assert T.load_incumbent(spark, cfg, "new") == (T.Incumbent("broken", "popularity", None), True)


# ----------------------------------------------------------------------------------------------------------------
# Evaluating what is served
# ----------------------------------------------------------------------------------------------------------------
def pairs(spark: SparkSession, rows: list[tuple[int, int]]) -> DataFrame:
    return spark.createDataFrame(rows, f"{C.USER_IDX} int, {C.ITEM_IDX} int")


def test_served_exclusion_keeps_viewed_items_recommendable(spark: SparkSession) -> None:
    """User 0 viewed item 0, bought item 1 and bought item 2 (grocery, repeatable), then came back for item 0: the
    offline exclusion can never recommend it, serving can."""
    ts = T0
    events = spark.createDataFrame(
        [(f"e{n}", "u0", f"i{i}", kind, ts, ts.date(), 1.0, 1, None, None)
         for n, (i, kind) in enumerate(((0, C.VIEW), (1, C.PURCHASE), (2, C.PURCHASE), (3, C.VIEW)))],
        schemas.SILVER_EVENTS)
    id_map = spark.createDataFrame([("user", "u0", 0)] + [("item", f"i{i}", i) for i in range(4)], schemas.ID_MAP)
    items = spark.createDataFrame([("i0", "books"), ("i1", "books"), ("i2", "grocery"), ("i3", "books")],
                                  f"{C.ITEM_ID} string, {C.CATEGORY} string")
    purchased = E.purchased_pairs(events, id_map, items, ["grocery"])
    assert_df_equality(purchased, pairs(spark, [(0, 1)]), ignore_row_order=True, ignore_nullable=True)
    train = pairs(spark, [(0, 0), (0, 1), (0, 2)])
    served = E.served_exclusion(train, purchased)
    assert_df_equality(served, pairs(spark, [(0, 1)]), ignore_row_order=True, ignore_nullable=True)

    scores = spark.createDataFrame([(0, 0, 0.9), (0, 1, 0.8), (0, 3, 0.7), (0, 2, 0.6)],
                                   f"{C.USER_IDX} int, {C.ITEM_IDX} int, {C.SCORE} double")
    holdout = pairs(spark, [(0, 0)])
    offline = E.top_k_excluding_seen(scores, train, 1)
    as_served = E.top_k_excluding_seen(scores, served, 1)
    assert [r[C.ITEM_IDX] for r in offline.collect()] == [3]
    assert [r[C.ITEM_IDX] for r in as_served.collect()] == [0]
    assert E.ranking_metrics(E.as_lists(offline), holdout, 1)["precision"] == 0.0
    assert E.ranking_metrics(E.as_lists(as_served), holdout, 1)["precision"] == 1.0
    # popularity with serving's exclusion: the viewed item stays recommendable; offline, every item is excluded
    assert [(r[C.USER_IDX], r[C.ITEM_IDX]) for r in E.popularity_top_k(train, 1, exclude=served).collect()] == [
        (0, 0)]
    assert E.popularity_top_k(train, 1).isEmpty()


def test_served_exclusion_is_what_serving_excludes(spark: SparkSession) -> None:
    """A ratings source: every rated film is consumed, as in serving (recommend leaves out the event types of
    columns.CONSUMED_EVENT_TYPES), so the served exclusion is every rated train pair and, with nothing repeatable,
    the served metrics are the offline ones and are skipped."""
    assert set(C.CONSUMED_EVENT_TYPES) == {C.PURCHASE, C.RATING_EVENT}
    ts = T0
    events = spark.createDataFrame(
        [(f"e{n}", f"u{u}", f"i{i}", C.RATING_EVENT, ts, ts.date(), None, None, 4.0, None)
         for n, (u, i) in enumerate(((0, 0), (0, 1), (1, 1), (1, 2)))]
        + [("e9", "u1", "i3", C.VIEW, ts, ts.date(), None, None, None, None)], schemas.SILVER_EVENTS)
    id_map = spark.createDataFrame([("user", f"u{u}", u) for u in range(2)]
                                   + [("item", f"i{i}", i) for i in range(4)], schemas.ID_MAP)
    items = spark.createDataFrame([(f"i{i}", "films") for i in range(4)], f"{C.ITEM_ID} string, {C.CATEGORY} string")
    purchased = E.purchased_pairs(events, id_map, items, [])
    rated = pairs(spark, [(0, 0), (0, 1), (1, 1), (1, 2)])
    assert_df_equality(purchased, rated, ignore_row_order=True, ignore_nullable=True)
    assert_df_equality(E.served_exclusion(rated, purchased), rated, ignore_row_order=True, ignore_nullable=True)
    served, note = T.served_metrics(None, rated, rated, purchased, 1, 2, 2)  # type: ignore[arg-type]
    assert served == {} and note.startswith("same as offline")
    # a repeatable category keeps its rated films recommendable again
    assert E.purchased_pairs(events, id_map, items, ["films"]).isEmpty()


def test_run_reports_served_metrics(runs: dict[str, Any]) -> None:
    good = runs["good"]
    assert good["served_exclusion"].startswith("computed")
    for contender in ("als", "popularity"):
        served = good["metrics"][f"{contender}_served"]
        assert set(served) == set(good["metrics"][contender])
        assert all(math.isfinite(v) for v in served.values())
    # Viewed train items (half of them) are recommendable when served, and none is in the holdout here.
    assert good["metrics"]["als_served"]["ndcg"] < good["metrics"]["als"]["ndcg"]
    assert good["input_versions"]["silver.events"] == 0 and good["input_versions"]["gold.item_features"] == 0


# ----------------------------------------------------------------------------------------------------------------
# Forward-chaining time folds
# ----------------------------------------------------------------------------------------------------------------
def test_temporal_folds_never_validate_on_earlier_data(spark: SparkSession) -> None:
    rows = [(u, i, 1.0, T0 + dt.timedelta(hours=3 * i + u)) for u in range(4) for i in range(6)]
    df = spark.createDataFrame([*rows, (9, 9, 1.0, None)], schemas.INTERACTIONS)
    folds = E.temporal_folds(df, 3)
    assert len(folds) == 3
    bounds = []
    for fold in folds:
        tr = fold.train.agg(F.max(C.EVENT_TS), F.count("*"), F.count(C.EVENT_TS)).first()
        va = fold.test.agg(F.min(C.EVENT_TS), F.max(C.EVENT_TS), F.count("*")).first()
        assert va[2] > 0 and tr[1] > tr[2]  # a validation slice, and the untimed row trains
        assert tr[0] < va[0], "a fold validates on data older than what it trains on"
        bounds.append((tr[1], va[0], va[1], va[2]))
    assert [b[0] for b in bounds] == sorted(b[0] for b in bounds)  # expanding history
    for (_, _, last_val, _), (_, next_min, _, _) in zip(bounds, bounds[1:], strict=False):
        assert last_val < next_min  # consecutive slices, no overlap
    # every timed row is validated on once, after the first training slice
    first_train = folds[0].train.where(F.col(C.EVENT_TS).isNotNull()).count()
    assert first_train + sum(b[3] for b in bounds) == len(rows)


def test_run_uses_time_folds_for_a_temporal_split(runs: dict[str, Any]) -> None:
    good = runs["good"]
    assert good["cv_folds"] == "forward-chaining in time"
    assert len(good["cv"]) == 1 and math.isfinite(good["cv"][0]["mean"]) and good["cv"][0]["mean"] > 0
    cv = json.loads((Path(good["registry"]) / "cv.json").read_text())
    assert cv["folds_kind"] == "forward-chaining in time"


# ----------------------------------------------------------------------------------------------------------------
# Random search
# ----------------------------------------------------------------------------------------------------------------
def test_random_search_is_deterministic_and_in_range() -> None:
    grid = GridConfig(rank=(4, 64), reg_param=(0.01, 0.2, 1.0), alpha=(1.0, 40.0), max_iter=(5, 15),
                      implicit_prefs=(True, False))
    als = T.build_als(implicit=True, seed=1)
    points = [T._describe(pm) for pm in T.random_param_maps(als, grid, 8, seed=3)]
    assert points == [T._describe(pm) for pm in T.random_param_maps(als, grid, 8, seed=3)]
    assert points != [T._describe(pm) for pm in T.random_param_maps(als, grid, 8, seed=4)]
    assert len(points) == 8 and len({json.dumps(p, sort_keys=True) for p in points}) == 8
    for p in points:
        assert isinstance(p["rank"], int) and 4 <= p["rank"] <= 64
        assert isinstance(p["max_iter"], int) and 5 <= p["max_iter"] <= 15
        assert 0.01 <= p["reg_param"] <= 1.0
        assert ("alpha" in p) is p["implicit_prefs"]
        assert "alpha" not in p or 1.0 <= p["alpha"] <= 40.0
    assert {p["implicit_prefs"] for p in points} == {True, False}
    # log-uniform: about as many draws below the geometric middle of reg_param's range as above it
    assert 2 <= sum(p["reg_param"] < 0.1 for p in points) <= 6
    # a range holding fewer points than trials yields each once
    small = T.random_param_maps(als, GridConfig(rank=(2, 3), reg_param=(0.1,), alpha=(5.0,), max_iter=(4,)), 8, 1)
    assert sorted(T._describe(pm)["rank"] for pm in small) == [2, 3]
    with pytest.raises(T.TrainError, match="train.grid.reg_param: random search"):
        T.random_param_maps(als, GridConfig(reg_param=(0.0, 0.1)), 4, 1)


def test_search_space_follows_train_search(tmp_path: Path) -> None:
    als = T.build_als(implicit=True, seed=1)
    grid = {"rank": [2, 8], "reg_param": [0.05, 0.5], "alpha": [1.0, 10.0], "max_iter": [3, 6]}
    assert len(T.search_space(als, make_config(tmp_path, train={"grid": grid}).train)) == 16
    cfg = make_config(tmp_path, train={"search": "random", "trials": 5, "seed": 9, "grid": grid})
    assert [T._describe(pm) for pm in T.search_space(als, cfg.train)] == [
        T._describe(pm) for pm in T.random_param_maps(als, cfg.train.grid, 5, 9)]
    assert len(T.search_space(als, cfg.train)) == 5
