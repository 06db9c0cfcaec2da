"""Model lifecycle (issue 19): the published model is fitted on every interaction, a new model replaces the one in
service only when it is not worse on the holdout pairs the one in service was not fitted on, served-exclusion
metrics, forward-chaining time folds for temporal splits, and random search."""

from __future__ import annotations

import dataclasses
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
from sparkpromo import delta_io, report, schemas
from sparkpromo import evaluate as E
from sparkpromo import recommend as R
from sparkpromo import train as T
from sparkpromo.config import AppConfig, GridConfig
from sparkpromo.report import sections as report_sections
from sparkpromo.report.reading import RunInfo
from tests.conftest import make_config, registry_text

T0 = dt.datetime(2024, 1, 1)
# Three tastes: users 0-7 like items 0-5, users 8-13 items 6-11, users 14-17 items 12-17. Each user has five of
# their taste's items on days 0-8 and the sixth (item u % 6 of the taste) on day 10; user 18 only has day-10
# interactions. With `last_days` 1, day 10 is the holdout: user 18 is in no train part. The first gold.interactions
# version lacks the day-10 interactions of even users 0-17 (LATE): they arrive as the next version, before the
# second run, so that run's holdout holds pairs the first (published) model was never fitted on.
GROUPS = ((range(0, 8), 0), (range(8, 14), 6), (range(14, 18), 12))
HOLDOUT_ONLY_USER = 18
CATEGORIES = {0: "electronics", 6: "books", 12: "grocery"}  # grocery is repeatable below


def is_late(row: tuple[int, int, float, dt.datetime]) -> bool:
    u, _, _, ts = row
    return u != HOLDOUT_ONLY_USER and u % 2 == 0 and ts >= T0 + dt.timedelta(days=10)


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


def events_of(spark: SparkSession, rows: list[tuple[int, int, float, dt.datetime]]) -> DataFrame:
    """One silver event per interaction: a purchase when user + item is even, a view otherwise."""
    return spark.createDataFrame(
        [(f"e{u}-{i}", f"u{u}", f"i{i}", C.PURCHASE if (u + i) % 2 == 0 else C.VIEW, ts, ts.date(), 10.0, 1, None,
          None) for u, i, _, ts in rows], schemas.SILVER_EVENTS)


def write_lakehouse(spark: SparkSession, cfg: AppConfig, rows: list[tuple[int, int, float, dt.datetime]]) -> None:
    """gold.interactions (``rows``), gold.id_map, gold.item_features and silver.events agreeing with each other."""
    delta_io.overwrite(spark.createDataFrame(rows, schemas.INTERACTIONS), cfg.table("gold", "interactions"))
    ids = [("user", f"u{n}", n) for n in range(HOLDOUT_ONLY_USER + 1)] + [("item", f"i{n}", n) for n in range(18)]
    delta_io.overwrite(spark.createDataFrame(ids, schemas.ID_MAP), cfg.table("gold", "id_map"))
    items = [(f"i{i}", CATEGORIES[first]) for _, first in GROUPS for i in range(first, first + 6)]
    delta_io.overwrite(spark.createDataFrame(items, f"{C.ITEM_ID} string, {C.CATEGORY} string"),
                       cfg.table("gold", "item_features"))
    delta_io.overwrite(events_of(spark, rows), cfg.table("silver", "events"))


def append_interactions(spark: SparkSession, cfg: AppConfig, rows: list[tuple[int, int, float, dt.datetime]]
                        ) -> None:
    """Later interactions: a new version of gold.interactions and of silver.events."""
    delta_io.append(spark.createDataFrame(rows, schemas.INTERACTIONS), cfg.table("gold", "interactions"))
    delta_io.append(events_of(spark, rows), cfg.table("silver", "events"))


def lifecycle_config(root: Path, grid: dict[str, Any]) -> AppConfig:
    return make_config(root, train={"k": 3, "folds": 2, "seed": 5, "split": "last_days", "test_days": 1,
                                    "grid": grid},
                       recommend={"repeatable_categories": ["grocery"]})


GOOD = {"rank": [8], "reg_param": [0.05], "alpha": [10.0], "max_iter": [10]}
# Two points (both rank 1, one iteration), so that this run is cross-validated on time folds.
WORSE = {"rank": [1], "reg_param": [0.05, 0.5], "alpha": [10.0], "max_iter": [1]}


@pytest.fixture(scope="module")
def runs(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A good first run, then, once the late interactions have arrived (gold.interactions version 1), a
    deliberately worse one (rank 1, one iteration) on the same lakehouse."""
    root = tmp_path_factory.mktemp("lifecycle")
    cfg = lifecycle_config(root, GOOD)
    rows = timed_tastes()
    write_lakehouse(spark, cfg, [r for r in rows if not is_late(r)])
    good = T.run_train(spark, cfg, "good")
    latest_after_good = registry_text(Path(cfg.lakehouse) / "registry" / T.LATEST).strip()
    append_interactions(spark, cfg, [r for r in rows if is_late(r)])
    worse = T.run_train(spark, lifecycle_config(root, WORSE), "worse")
    return {"cfg": cfg, "good": good, "worse": worse, "latest_after_good": latest_after_good}


def model_rows(spark: SparkSession, cfg: AppConfig, run_id: str) -> dict[tuple[str, str], float | None]:
    rows = delta_io.read(spark, cfg.table("metrics", "model")).where(F.col(C.RUN_ID) == run_id).collect()
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
    params = json.loads(registry_text(Path(good["registry"]) / "params.json"))
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
    assert (good["input_versions"]["gold.interactions"], worse["input_versions"]["gold.interactions"]) == (0, 1)
    assert worse["params"]["rank"] == 1
    assert worse["decision"] == T.KEPT_INCUMBENT
    assert worse["incumbent_run_id"] == "good"
    # Both are scored on the gate holdout: the late pairs only (even users' day 10), which "good" never saw.
    late_users = len([u for u in range(HOLDOUT_ONLY_USER) if u % 2 == 0])
    assert (worse["gate_holdout_rows"], worse["gate_holdout_users"]) == (late_users, late_users)
    assert worse["counts"]["test_rows"] == HOLDOUT_ONLY_USER  # the full holdout: every train user's day 10
    assert worse["incumbent_ndcg"] == worse["metrics"][T.INCUMBENT]["ndcg"]
    assert worse["challenger_ndcg"] == worse["metrics"][T.CHALLENGER]["ndcg"]
    assert worse["challenger_ndcg"] < worse["incumbent_ndcg"] * (1 - cfg.train.incumbent_margin)
    assert registry_text(Path(cfg.lakehouse) / "registry" / T.LATEST).strip() == "good"
    # The run is still recorded: its registry folder, its metrics, both scores, the gate holdout and the decision.
    params = json.loads(registry_text(Path(worse["registry"]) / "params.json"))
    assert (params["decision"], params["incumbent_run_id"]) == ("kept_incumbent", "good")
    assert params["gate_holdout_rows"] == late_users and "version 0" in params["gate_holdout"]
    assert (Path(worse["registry"]) / "model" / "metadata").is_dir()
    rows = model_rows(spark, cfg, "worse")
    assert (T.DECISION, T.KEPT_INCUMBENT) in rows
    assert rows[(T.INCUMBENT, "ndcg")] == pytest.approx(worse["incumbent_ndcg"])
    assert rows[(T.CHALLENGER, "ndcg")] == pytest.approx(worse["challenger_ndcg"])
    assert (rows[(T.GATE, "holdout_rows")], rows[(T.GATE, "holdout_users")]) == (late_users, late_users)
    assert rows[("als", "ndcg")] == pytest.approx(worse["metrics"]["als"]["ndcg"])  # full holdout, as reported
    assert good["metrics"]["als"]["ndcg"] > worse["metrics"]["als"]["ndcg"]


def test_gate_holdout_is_the_pairs_the_incumbent_never_saw(runs: dict[str, Any], spark: SparkSession,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    cfg = runs["cfg"]
    incumbent, registered = T.load_incumbent(spark, cfg)
    assert registered and (incumbent.run_id, incumbent.trained_on) == ("good", 0)
    test = T.holdout_split(delta_io.read(spark, cfg.table("gold", "interactions")), cfg.train).test
    uri = cfg.table("gold", "interactions")
    held = T.gate_holdout(spark, uri, incumbent, test)
    got = {(r[C.USER_IDX], r[C.ITEM_IDX]) for r in held.test.collect()}
    assert got == {(u, i) for u, i, _, _ in filter(is_late, timed_tastes())}
    held.test.unpersist()
    with caplog.at_level(logging.WARNING, logger="sparkpromo.train"):
        # trained on the latest version: every holdout pair seen; a version that is not there: no evidence
        seen_all = T.gate_holdout(spark, uri, dataclasses.replace(incumbent, trained_on=1), test)
        assert (seen_all.test, seen_all.rows) == (None, 0)
        gone = T.gate_holdout(spark, uri, dataclasses.replace(incumbent, trained_on=99), test)
        assert (gone.test, gone.rows) == (None, None) and "version 99" in gone.note
        unknown = T.gate_holdout(spark, uri, dataclasses.replace(incumbent, trained_on=None), test)
        assert unknown.test is None and "no gold.interactions version" in unknown.note
    assert sum("no fair gate holdout" in r.getMessage() for r in caplog.records) == 3
    # a popularity incumbent kept no fitted model: the whole holdout is fair
    whole = T.gate_holdout(spark, uri, T.Incumbent("p", "popularity", None, 0), test)
    assert whole.test is test and whole.rows == HOLDOUT_ONLY_USER


def test_no_unseen_holdout_pair_publishes_without_comparing(spark: SparkSession, tmp_path: Path) -> None:
    """A second run on the same gold.interactions version: the model in service was fitted on every holdout pair,
    so its score proves nothing; even a worse model is published, as published_no_fresh_holdout."""
    cfg = lifecycle_config(tmp_path, GOOD)
    write_lakehouse(spark, cfg, timed_tastes())
    first = T.run_train(spark, cfg, "first")
    assert (first["decision"], first["champion"]) == (T.FIRST_MODEL, "als")  # an ALS model in service
    second = T.run_train(spark, lifecycle_config(tmp_path, WORSE), "second")
    assert second["decision"] == T.PUBLISHED_NO_FRESH_HOLDOUT
    assert second["incumbent_run_id"] == "first" and second["incumbent_ndcg"] is None
    assert (second["gate_holdout_rows"], second["gate_holdout_users"]) == (0, 0)
    assert "every holdout pair is in gold.interactions version 0" in second["gate_holdout"]
    assert T.INCUMBENT not in second["metrics"] and T.CHALLENGER not in second["metrics"]
    assert registry_text(Path(cfg.lakehouse) / "registry" / T.LATEST).strip() == "second"
    rows = model_rows(spark, cfg, "second")
    assert (T.DECISION, T.PUBLISHED_NO_FRESH_HOLDOUT) in rows and rows[(T.GATE, "holdout_rows")] == 0
    body = report.holdout_section(spark, cfg, "second", "", report.Charts()).body
    assert "Gate decision: published_no_fresh_holdout (model in service: run first, not compared; gate holdout: " \
           "every holdout pair" in body


def two_holdout_tastes() -> list[tuple[int, int, float, dt.datetime]]:
    """Each user of :data:`GROUPS` has four of their taste's items on days 0-6 and the other two on day 10 (the
    holdout); for even users the second day-10 item arrives late (:func:`arrives_late`)."""
    rows = []
    for users, first in GROUPS:
        for u in users:
            a, b = first + u % 6, first + (u + 1) % 6
            rest = [i for i in range(first, first + 6) if i not in (a, b)]
            rows += [(u, i, 1.0 + (u + i) % 3, T0 + dt.timedelta(days=2 * n, minutes=u)) for n, i in enumerate(rest)]
            rows += [(u, a, 2.0, T0 + dt.timedelta(days=10, minutes=u)),
                     (u, b, 2.0, T0 + dt.timedelta(days=10, minutes=u, seconds=30))]
    return rows


def arrives_late(row: tuple[int, int, float, dt.datetime]) -> bool:
    return row[0] % 2 == 0 and row[3].second == 30


def test_the_gate_lists_no_holdout_pair_the_model_in_service_was_fitted_on(spark: SparkSession,
                                                                        tmp_path: Path) -> None:
    """The model in service was fitted on one of each even user's two holdout pairs; the gate holdout is the other.
    Listing the first would be a miss that only the model in service is drawn to, so neither contender lists it,
    and the run's incumbent score is the one on those lists."""
    cfg = lifecycle_config(tmp_path, GOOD)
    rows = two_holdout_tastes()
    write_lakehouse(spark, cfg, [r for r in rows if not arrives_late(r)])
    assert T.run_train(spark, cfg, "first")["champion"] == "als"
    append_interactions(spark, cfg, [r for r in rows if arrives_late(r)])
    second = T.run_train(spark, cfg, "second")
    assert second["incumbent_run_id"] == "first" and second["incumbent_ndcg"] is not None

    incumbent, _ = T.load_incumbent(spark, cfg)
    uri = cfg.table("gold", "interactions")
    split = T.holdout_split(delta_io.read(spark, uri), cfg.train)
    held = T.gate_holdout(spark, uri, incumbent, split.test)
    try:
        fresh = {(u, i) for u, i, _, _ in filter(arrives_late, rows)}
        stale = {(u, i) for u, i, _, ts in rows if ts.day == 11 and not arrives_late((u, i, 0.0, ts))}
        assert {(r[C.USER_IDX], r[C.ITEM_IDX]) for r in held.test.collect()} == fresh
        exclusion = T.gate_exclusion(split.train, split.test, held.test)
        expected = pairs(spark, [(u, i) for u, i, _, ts in rows if ts.day < 11] + sorted(stale))
        assert_df_equality(exclusion, expected, ignore_row_order=True, ignore_nullable=True)

        users = held.test.select(C.USER_IDX).distinct()
        seen_max, n_users = E.seen_summary(exclusion)
        served, new = T.gate_rankings(incumbent.model, incumbent.model, split.train, exclusion, users, 3, seen_max,
                                      n_users)
        _, popular = T.gate_rankings(incumbent.model, None, split.train, exclusion, users, 3, seen_max, n_users)
        for ranked in (served, new, popular):
            listed = {(r[C.USER_IDX], r[C.ITEM_IDX]) for r in ranked.collect()}
            assert len(listed) == 3 * len(fresh) and not listed & stale
        # What the gate did before: only train pairs excluded, the model in service lists pairs it was fitted on.
        before = E.model_or_popularity_top_k(incumbent.model, split.train, 3, users)
        assert {(r[C.USER_IDX], r[C.ITEM_IDX]) for r in before.collect()} & stale
        assert second["incumbent_ndcg"] == pytest.approx(
            E.evaluate_recommendations(served, held.test, split.train, 3)["ndcg"])
        assert second["incumbent_ndcg"] > E.evaluate_recommendations(before, held.test, split.train, 3)["ndcg"]
    finally:
        held.test.unpersist()


def test_a_rerun_of_the_run_in_service_writes_a_new_entry_gated_against_it(spark: SparkSession,
                                                                         tmp_path: Path) -> None:
    """Training a run again while its model is in service (a changed grid, ``--force``) never rewrites that model:
    the new attempt is ``<run>.r2``, gated against the one in service, and LATEST moves only when it passes. An
    attempt that was not published is rewritten by the next rerun, so reruns do not pile up entries."""
    cfg = lifecycle_config(tmp_path, GOOD)
    registry = Path(cfg.lakehouse) / "registry"
    rows = timed_tastes()
    write_lakehouse(spark, cfg, [r for r in rows if not is_late(r)])
    assert T.run_train(spark, cfg, "day")["decision"] == T.FIRST_MODEL

    def files(entry: str) -> dict[str, tuple[int, int]]:
        return {str(p.relative_to(registry / entry)): (p.stat().st_mtime_ns, p.stat().st_size)
                for p in (registry / entry).rglob("*") if p.is_file()}

    first_files = files("day")
    # Same data: the model in service was fitted on every holdout pair, so there is no fair comparison.
    again = T.run_train(spark, cfg, "day")
    assert (again["registry_entry"], again["incumbent_run_id"], again["decision"]) == (
        "day.r2", "day", T.PUBLISHED_NO_FRESH_HOLDOUT)
    assert files("day") == first_files  # the model that was in service is untouched
    assert registry_text(registry / T.LATEST).strip() == "day.r2"
    assert R.load_champion(spark, cfg)[0] == "day.r2"
    params = json.loads(registry_text(registry / "day.r2" / "params.json"))
    assert (params["run_id"], params["registry_entry"]) == ("day", "day.r2")

    # New interactions, then a worse grid: gated against day.r2 on the pairs it never saw, and kept out.
    append_interactions(spark, cfg, [r for r in rows if is_late(r)])
    in_service = files("day.r2")
    worse = T.run_train(spark, lifecycle_config(tmp_path, WORSE), "day")
    assert (worse["registry_entry"], worse["incumbent_run_id"], worse["decision"]) == (
        "day.r3", "day.r2", T.KEPT_INCUMBENT)
    assert files("day.r2") == in_service and registry_text(registry / T.LATEST).strip() == "day.r2"
    # Once more: day.r3 is not in service, so it is rewritten, with its metrics rows replaced, not added.
    assert T.run_train(spark, lifecycle_config(tmp_path, WORSE), "day")["registry_entry"] == "day.r3"
    assert not (registry / "day.r4").exists()
    decisions = (delta_io.read(spark, cfg.table("metrics", "model")).where(F.col(C.CONTENDER) == T.DECISION)
                 .select(C.RUN_ID, C.METRIC))
    expected = spark.createDataFrame([("day", T.FIRST_MODEL), ("day.r2", T.PUBLISHED_NO_FRESH_HOLDOUT),
                                      ("day.r3", T.KEPT_INCUMBENT)], decisions.schema)
    assert_df_equality(decisions, expected, ignore_row_order=True, ignore_nullable=True)
    # The report of run "day" shows its newest attempt.
    assert report_sections._model_run(spark, cfg, RunInfo("day", None, None)) == ("day.r3", "")


def test_a_runs_registry_entries_skip_another_run_of_an_attempts_name(spark: SparkSession, tmp_path: Path) -> None:
    cfg = make_config(tmp_path)
    # "day.r2": a run of that name (run ids can no longer end in ".r<number>", but an older lakehouse may hold one)
    for entry, run in (("day", "day"), ("day.r2", "day.r2"), ("day.r3", "day")):
        R.write_text(spark, str(Path(cfg.lakehouse) / "registry" / entry / "params.json"), json.dumps({"run_id": run}))
    assert R.run_entries(spark, cfg, "day") == (["day", "day.r3"], "day.r4")
    assert R.run_entries(spark, cfg, "day.r2") == (["day.r2"], "day.r2.r2")
    assert R.run_entries(spark, cfg, "new") == ([], "new")
    assert R.next_entry(["day", "day.r3"], "day.r4", "day.r3") == "day.r4"  # the newest is in service
    assert R.next_entry(["day", "day.r3"], "day.r4", "day") == "day.r3"  # the newest was not published
    assert R.next_entry([], "new", "day") == "new"


def test_report_shows_the_gate_and_what_was_published(runs: dict[str, Any], spark: SparkSession) -> None:
    body = report.holdout_section(spark, runs["cfg"], "worse", "", report.Charts()).body
    headers = re.findall(r"<th>([^<]*)</th>", body)
    assert headers[:7] == ["metric", "als", "popularity", "als_served", "popularity_served", "incumbent",
                           "challenger"]
    assert "decision" not in headers and "gate" not in headers and "<td>kept_incumbent</td>" not in body
    assert "holdout_rows" not in body
    worse = runs["worse"]
    score, new = worse["incumbent_ndcg"], worse["challenger_ndcg"]
    assert (f"Gate decision: kept_incumbent (model in service: run good, ndcg {score:.4f}, new champion "
            f"{new:.4f}, margin 0.02; gate holdout (incumbent and challenger columns): {worse['gate_holdout']})."
            in body)
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
    assert T.load_incumbent(spark, cfg) == (None, False)  # nothing registered yet
    (registry / "broken" / "model").mkdir(parents=True)
    (registry / "broken" / "model" / "garbage").write_text("not a model")
    (registry / "broken" / "params.json").write_text(json.dumps({"run_id": "broken", "champion": "als"}))
    (registry / T.LATEST).write_text("broken")
    with caplog.at_level(logging.WARNING, logger="sparkpromo.train"):
        assert T.load_incumbent(spark, cfg) == (None, True)
    assert any("could not be loaded" in r.getMessage() for r in caplog.records)
    (registry / "broken" / "params.json").write_text(json.dumps({"run_id": "broken", "champion": "popularity"}))
    assert T.load_incumbent(spark, cfg) == (T.Incumbent("broken", "popularity", None), True)


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
    worse = runs["worse"]
    assert worse["cv_folds"] == "forward-chaining in time"
    assert len(worse["cv"]) == 2 and all(math.isfinite(row["mean"]) and row["mean"] > 0 for row in worse["cv"])
    cv = json.loads(registry_text(Path(worse["registry"]) / "cv.json"))
    assert cv["folds_kind"] == "forward-chaining in time" and cv["folds"] == 2
    assert runs["good"]["cv_folds"] == "none (one grid point)"  # a one-point grid has nothing to choose


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
