"""Training: the seed article's worked example, grids, errors, champion gate, CV end to end on tiny data."""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import time
from pathlib import Path

import pytest
from pyspark.ml.evaluation import RegressionEvaluator
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from sparkpromo import columns as C
from sparkpromo import delta_io, schemas
from sparkpromo import evaluate as E
from sparkpromo import train as T
from sparkpromo.config import GridConfig
from sparkpromo.logs import spark_progress
from tests.conftest import make_config, registry_text

T0 = dt.datetime(2024, 1, 1)
# The seed article's 5x5 example: users u1..u5 x items 1..5, 0 = unknown.
ARTICLE = [[5, 3, 2, 0, 4], [1, 4, 0, 5, 2], [4, 0, 1, 3, 0], [0, 2, 3, 1, 4], [2, 0, 4, 5, 3]]


def inter(spark: SparkSession, rows: list[tuple[int, int, float]]) -> DataFrame:
    return spark.createDataFrame([(u, i, c, T0 + dt.timedelta(hours=n)) for n, (u, i, c) in enumerate(rows)],
                                 schemas.INTERACTIONS)


def two_tastes(spark: SparkSession) -> DataFrame:
    """Users 0-11 like items 0-5, users 12-17 like items 6-11 (each skips one item of their taste). Popularity
    pushes the first group's items on everybody, so a collaborative model should do better for users 12-17."""
    rows = [(u, i, 1.0 + (u + i) % 3) for u in range(12) for i in range(6) if i != u % 6]
    rows += [(u, i, 1.0 + (u + i) % 3) for u in range(12, 18) for i in range(6, 12) if i != 6 + u % 6]
    return inter(spark, rows)


def test_article_worked_example_explicit_als(spark: SparkSession) -> None:
    known = [(u, i, float(r)) for u, row in enumerate(ARTICLE) for i, r in enumerate(row) if r]
    train = inter(spark, known)
    # The article factorises without a sign constraint; with nonnegative=True, 5 ALS sweeps on 19 cells can stall
    # in a poor NNLS solution depending on the seed, which is not what this example is about.
    model = T.build_als(implicit=False, seed=42, blocks=1, rank=3, maxIter=5, regParam=0.05,
                        nonnegative=False).als().fit(train)
    rmse = RegressionEvaluator(metricName="rmse", labelCol=C.CONFIDENCE, predictionCol=C.PREDICTION) \
        .evaluate(model.transform(train))
    assert rmse < 0.6
    cells = spark.createDataFrame([(u, i) for u in range(5) for i in range(5)], f"{C.USER_IDX} int, {C.ITEM_IDX} int")
    preds = {(r[0], r[1]): r[2] for r in model.transform(cells).select(C.USER_IDX, C.ITEM_IDX, C.PREDICTION)
             .collect()}
    unknown = [(u, i) for u, row in enumerate(ARTICLE) for i, r in enumerate(row) if not r]
    assert len(preds) == 25
    assert all(math.isfinite(preds[c]) for c in unknown)


def test_param_grid_and_grid_errors() -> None:
    als = T.build_als(implicit=True, seed=1)
    grid = T.param_grid(als, GridConfig(rank=(2, 4), reg_param=(0.1,), alpha=(5.0, 5.0), max_iter=(3,)))
    assert len(grid) == 2  # duplicate alpha collapsed
    assert {p.name for p in grid[0]} == {"rank", "regParam", "alpha", "maxIter", "implicitPrefs", "nonnegative"}
    explicit = T.param_grid(als, GridConfig(rank=(2,), reg_param=(0.1,), alpha=(1.0, 5.0), max_iter=(3,),
                                            implicit_prefs=(False,)))
    assert len(explicit) == 1 and "alpha" not in {p.name for p in explicit[0]}
    # Both kinds: CV chooses between implicit (each alpha) and explicit (alpha not searched).
    both = T.param_grid(als, GridConfig(rank=(2,), reg_param=(0.1,), alpha=(1.0, 5.0), max_iter=(3,),
                                        implicit_prefs=(True, False)))
    assert sorted((T._describe(pm)["implicit_prefs"], T._describe(pm).get("alpha")) for pm in both) == [
        (False, None), (True, 1.0), (True, 5.0)]
    for bad, msg in ((GridConfig(rank=()), "train.grid.rank: empty grid"),
                     (GridConfig(rank=(0,)), "train.grid.rank: invalid value 0"),
                     (GridConfig(reg_param=(-0.1,)), "train.grid.reg_param: invalid value"),
                     (GridConfig(max_iter=(2.5,)), "train.grid.max_iter: invalid value"),
                     (GridConfig(alpha=(math.nan,)), "train.grid.alpha: invalid value"),
                     (GridConfig(implicit_prefs=()), "train.grid.implicit_prefs: empty grid")):
        with pytest.raises(T.TrainError, match=msg):
            T.param_grid(als, bad)


def test_training_data_errors(spark: SparkSession, tmp_path: Path) -> None:
    with pytest.raises(T.TrainError, match="no training data"):
        T.check_training_data(inter(spark, []))
    with pytest.raises(T.TrainError, match="not enough users to train: 1 user"):
        T.check_training_data(inter(spark, [(1, 1, 1.0), (1, 2, 1.0)]))
    cfg = make_config(tmp_path)
    with pytest.raises(T.TrainError, match="no interactions table"):
        T.run_train(spark, cfg, "r0")
    delta_io.overwrite(inter(spark, []), cfg.table("gold", "interactions"))
    with pytest.raises(T.TrainError, match="no training data"):
        T.run_train(spark, cfg, "r0")
    assert issubclass(T.TrainError, ValueError)


def test_champion_gate(caplog: pytest.LogCaptureFixture) -> None:
    als, pop = {"ndcg": 0.30}, {"ndcg": 0.31}
    with caplog.at_level(logging.WARNING, logger="sparkpromo.train"):
        assert T.choose_champion(als, pop, "ndcg", gate=True) == "popularity"
    assert any(r.levelno == logging.WARNING and "does not beat" in r.getMessage() for r in caplog.records)
    assert T.choose_champion(als, pop, "ndcg", gate=False) == "als"
    assert T.choose_champion({"ndcg": 0.4}, pop, "ndcg", gate=True) == "als"


def test_run_train_cross_validates_and_persists(spark: SparkSession, tmp_path: Path,
                                               caplog: pytest.LogCaptureFixture) -> None:
    # Nonnegative factors, as when this example was written: with signed ones, on these 61 train rows CV prefers
    # rank 2, which loses to popularity on the holdout (0.43 against 0.48 ndcg@3).
    cfg = make_config(tmp_path, train={"k": 3, "folds": 2, "seed": 3, "test_fraction": 0.25,
                                       "grid": {"rank": [2, 4], "reg_param": [0.05], "alpha": [5.0],
                                                "max_iter": [5], "nonnegative": [True]}})
    delta_io.overwrite(two_tastes(spark), cfg.table("gold", "interactions"))
    with caplog.at_level(logging.INFO, logger="sparkpromo"):
        res = T.run_train(spark, cfg, "r1")

    # Progress: every fold x grid point is fitted and scored, in order, then the best point is refitted.
    progress = [r.getMessage() for r in caplog.records if r.getMessage().startswith("CV fold")]
    assert [m.split(":")[0] for m in progress if "fitted" in m] == [
        "CV fold 1/2, grid point 1/2 rank=2 regParam=0.05 alpha=5.0 maxIter=5",
        "CV fold 1/2, grid point 2/2 rank=4 regParam=0.05 alpha=5.0 maxIter=5",
        "CV fold 2/2, grid point 1/2 rank=2 regParam=0.05 alpha=5.0 maxIter=5",
        "CV fold 2/2, grid point 2/2 rank=4 regParam=0.05 alpha=5.0 maxIter=5"]
    assert [m.split(":")[0] for m in progress if "ndcg@3=" in m] == [
        "CV fold 1/2, grid point 1/2", "CV fold 1/2, grid point 2/2", "CV fold 2/2, grid point 1/2",
        "CV fold 2/2, grid point 2/2"]
    assert any(r.getMessage().startswith("CV refit of the best grid point") for r in caplog.records)

    assert res["run_id"] == "r1" and res["champion"] in ("als", "popularity")
    assert [row["params"]["rank"] for row in res["cv"]] == [2, 4]
    assert all(math.isfinite(row["mean"]) and math.isfinite(row["std"]) for row in res["cv"])
    assert res["params"] in [row["params"] for row in res["cv"]]
    for contender in ("als", "popularity"):
        assert set(res["metrics"][contender]) == {"ndcg", "precision", "recall", "map", "coverage", "novelty"}
        assert all(math.isfinite(v) for v in res["metrics"][contender].values())
    assert res["metrics"]["als"]["ndcg"] > res["metrics"]["popularity"]["ndcg"]
    assert res["input_versions"]["gold.interactions"] == 0
    assert res["counts"]["train_rows"] + res["counts"]["test_rows"] <= res["counts"]["rows"]

    registry = Path(res["registry"])
    params = json.loads(registry_text(registry / "params.json"))
    assert params["champion"] == res["champion"] and params["params"] == res["params"]
    assert len(json.loads(registry_text(registry / "cv.json"))["grid"]) == 2
    assert (registry / "model" / "metadata").is_dir()
    assert registry_text(registry.parent / "LATEST").strip() == "r1"
    # No silver events and no model in service: the two contenders' six metrics, and the decision.
    assert res["decision"] == T.FIRST_MODEL and res["served_exclusion"].startswith("not computed")
    metrics_uri = cfg.table("metrics", "model")
    n = delta_io.read(spark, metrics_uri).where(F.col(C.RUN_ID) == "r1").count()
    assert n == 13
    # idempotent: writing the run's rows again replaces them
    rows = spark.createDataFrame(T.metrics_rows("r1", res["metrics"], res["decision"]), schemas.MODEL_METRICS)
    delta_io.replace_partition(rows, metrics_uri, {C.RUN_ID: "r1"})
    assert delta_io.read(spark, metrics_uri).count() == n


def test_run_train_explicit_ratings_reports_rmse(spark: SparkSession, tmp_path: Path) -> None:
    base = make_config(tmp_path)
    cfg = make_config(tmp_path, sources={"kind": "ratings", "events": {"path": base.sources.events.path,
                                                                       "columns": {"rating": "stars"}}},
                      train={"k": 2, "folds": 2, "test_fraction": 0.3,
                             "grid": {"rank": [3], "reg_param": [0.05], "alpha": [1.0], "max_iter": [4],
                                      "implicit_prefs": [False]}})
    known = [(u, i, float(r)) for u, row in enumerate(ARTICLE) for i, r in enumerate(row) if r]
    rows = known + [(u + 5, i, r) for u, i, r in known]  # two copies of the matrix' users
    delta_io.overwrite(inter(spark, rows), cfg.table("gold", "interactions"))
    res = T.run_train(spark, cfg, "explicit")
    assert math.isfinite(res["metrics"]["als"]["rmse"])
    assert "alpha" not in res["params"] and res["params"]["implicit_prefs"] is False


def test_a_one_point_grid_is_fitted_without_folds(spark: SparkSession, tmp_path: Path,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    """Nothing to choose, so no fold is fitted: one fit on the train part (for the holdout metrics) and the refit
    on all interactions, and cv.json says why it holds no scores."""
    cfg = make_config(tmp_path, train={"k": 3, "folds": 3, "seed": 3, "test_fraction": 0.25,
                                       "grid": {"rank": [4], "reg_param": [0.05], "alpha": [5.0], "max_iter": [5],
                                                "nonnegative": [True]}})
    delta_io.overwrite(two_tastes(spark), cfg.table("gold", "interactions"))
    with caplog.at_level(logging.INFO, logger="sparkpromo"):
        res = T.run_train(spark, cfg, "one")
    assert not [r for r in caplog.records if r.getMessage().startswith("CV fold")]
    assert any("one grid point" in r.getMessage() and "no folds" in r.getMessage() for r in caplog.records)
    assert res["cv"] == [] and res["cv_folds"] == "none (one grid point)"
    assert res["params"]["rank"] == 4 and res["counts"]["holdout_model_users"] > 0
    assert all(math.isfinite(v) for v in res["metrics"]["als"].values())
    cv = json.loads(registry_text(Path(res["registry"]) / "cv.json"))
    assert cv["grid"] == [] and cv["folds"] == 0 and "not cross-validated" in cv["note"]


def test_ratings_cv_chooses_between_implicit_and_explicit(spark: SparkSession, tmp_path: Path) -> None:
    """With both kinds in the grid, CV scores each by the ranking metric and the best mean wins; the chosen kind
    is recorded, and RMSE is reported only for an explicit champion."""
    base = make_config(tmp_path)
    cfg = make_config(tmp_path, sources={"kind": "ratings", "events": {"path": base.sources.events.path,
                                                                       "columns": {"rating": "stars"}}},
                      train={"k": 3, "folds": 2, "seed": 3, "test_fraction": 0.25,
                             "grid": {"rank": [4], "reg_param": [0.05], "alpha": [1.0], "max_iter": [5],
                                      "implicit_prefs": [True, False]}})
    delta_io.overwrite(two_tastes(spark), cfg.table("gold", "interactions"))
    res = T.run_train(spark, cfg, "both")
    kinds = {row["params"]["implicit_prefs"]: row["mean"] for row in res["cv"]}
    assert set(kinds) == {True, False}
    assert res["params"]["implicit_prefs"] is max(kinds, key=lambda kind: kinds[kind])
    assert ("rmse" in res["metrics"]["als"]) is (not res["params"]["implicit_prefs"])
    params = json.loads(registry_text(Path(res["registry"]) / "params.json"))
    assert params["implicit_prefs"] is res["params"]["implicit_prefs"]


def test_spark_progress_reports_running_stages(spark: SparkSession, caplog: pytest.LogCaptureFixture) -> None:
    """A long action logs its elapsed time and the task progress of its stages while it runs."""
    with caplog.at_level(logging.INFO, logger="sparkpromo"), spark_progress(spark, "slow job", every_s=0.3):
        spark.range(2).repartition(2).foreach(lambda _: time.sleep(1.5))
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("slow job: running for")]
    assert lines, "no progress line while the job ran"
    assert any("tasks" in line and "/2 tasks" in line for line in lines)


def test_fold_loop_used_over_connect_scores_as_cross_validator(spark: SparkSession, tmp_path: Path) -> None:
    """Over Spark Connect train cross-validates with its own loop over the ``_fold`` folds instead of
    ``CrossValidator``: on the same data and grid it gives the same scores and the same chosen point."""
    t = make_config(tmp_path, train={"k": 3, "folds": 2, "seed": 3, "parallelism": 1,
                                     "grid": {"rank": [2, 4], "reg_param": [0.05], "alpha": [5.0], "max_iter": [5],
                                              "nonnegative": [True]}}).train
    data = two_tastes(spark).select(C.USER_IDX, C.ITEM_IDX, C.CONFIDENCE).transform(E.assign_folds(t.folds, t.seed))
    estimator = T.build_als(True, t.seed, t.checkpoint_interval, t.k, blocks=2)
    grid = T.search_space(estimator, t)
    evaluator = E.TopKEvaluator(metricName=t.metric, k=t.k)

    classic = T.cross_validate(estimator, grid, evaluator, data, t)
    loop = E.cross_validate_folds(estimator, grid, evaluator, T.random_folds(data, t.folds), data, 1)

    assert loop.avg_metrics == pytest.approx(classic.avg_metrics, abs=1e-9)
    assert loop.std_metrics == pytest.approx(classic.std_metrics, abs=1e-9)
    assert loop.best_model.als_model.rank == classic.best_model.als_model.rank
