"""The popularity prior: ALS score + w * ln(1 + the item's distinct users), w chosen by CV (0 = plain ALS) without
extra ALS fits, recorded in the registry and applied by evaluation, the gate and serving alike."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import pytest
from chispa import assert_df_equality
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from sparkpromo import columns as C
from sparkpromo import delta_io
from sparkpromo import evaluate as E
from sparkpromo import train as T
from sparkpromo.config import ConfigError, load_config
from sparkpromo.recommend import registry as R
from sparkpromo.recommend.candidates import als_candidates
from sparkpromo.train.gate import load_incumbent
from tests.conftest import CONF_DIR, make_config, registry_text
from tests.test_train import inter, two_tastes

SCORES = f"{C.USER_IDX} int, {C.ITEM_IDX} int, {C.SCORE} double"


def test_popularity_prior_adds_the_weighted_log_of_distinct_users(spark: SparkSession) -> None:
    # item 1: users 1, 2, 3 (user 1 twice); item 2: user 1; item 3: no training user
    train = inter(spark, [(1, 1, 1.0), (1, 1, 2.0), (2, 1, 1.0), (3, 1, 1.0), (1, 2, 1.0)])
    prior = E.popularity_prior(train, 0.5)
    assert prior is not None
    expected = spark.createDataFrame([(1, 0.5 * math.log(4.0)), (2, 0.5 * math.log(2.0))],
                                     f"{C.ITEM_IDX} int, {E.PRIOR} double")
    assert_df_equality(prior, expected, ignore_row_order=True, ignore_nullable=True)
    assert E.popularity_prior(train, 0.0) is None

    candidates = spark.createDataFrame([(7, 1, 1.0), (7, 2, 2.0), (7, 3, 3.0)], SCORES)
    got = candidates.transform(E.with_prior(prior))
    want = spark.createDataFrame([(7, 1, 1.0 + 0.5 * math.log(4.0)), (7, 2, 2.0 + 0.5 * math.log(2.0)),
                                  (7, 3, 3.0)], SCORES)
    assert_df_equality(got, want, ignore_row_order=True, ignore_nullable=True)
    assert_df_equality(candidates.transform(E.with_prior(None)), candidates)


def _fitted(spark: SparkSession) -> tuple[DataFrame, object]:
    train = two_tastes(spark)
    model = T.build_als(True, seed=3, blocks=1, rank=3, maxIter=5).als().fit(train)
    return train, model


def test_a_zero_prior_is_plain_als_and_a_heavy_one_ranks_by_popularity(spark: SparkSession) -> None:
    train, model = _fitted(spark)
    users = train.select(C.USER_IDX).distinct()
    plain = E.top_k_excluding_seen(model, train, k=3, users=users)
    assert_df_equality(E.top_k_excluding_seen(model, train, k=3, users=users,
                                              prior=E.popularity_prior(train, 0.0)), plain,
                       ignore_row_order=True, ignore_nullable=True)
    # A weight that dwarfs every ALS score: each user's list is ordered by popularity first.
    heavy = E.top_k_excluding_seen(model, train, k=1, users=users, prior=E.popularity_prior(train, 1000.0))
    pop = (E.item_popularity(train).withColumnRenamed(C.SCORE, "_pop"))
    best_unseen = (users.crossJoin(pop).join(train.select(C.USER_IDX, C.ITEM_IDX), [C.USER_IDX, C.ITEM_IDX],
                                             "left_anti")
                   .groupBy(C.USER_IDX).agg(F.max("_pop").alias("_pop")))
    got = heavy.join(pop, C.ITEM_IDX).select(C.USER_IDX, "_pop")
    assert_df_equality(got, best_unseen, ignore_row_order=True, ignore_nullable=True, ignore_column_order=True)
    assert heavy.join(plain.where(F.col(C.RANK) == 1), [C.USER_IDX, C.ITEM_IDX], "left_anti").count() > 0, \
        "the prior changed nobody's first item: this data does not test it"


def test_cv_fits_als_once_for_all_prior_weights_and_scores_each(spark: SparkSession, tmp_path: Path,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    t = make_config(tmp_path, train={"k": 3, "folds": 2, "seed": 3, "parallelism": 2,
                                     "grid": {"rank": [3], "reg_param": [0.05], "alpha": [5.0], "max_iter": [5],
                                              "prior_weight": [0.0, 0.5, 1000.0]}}).train
    data = two_tastes(spark).select(C.USER_IDX, C.ITEM_IDX, C.CONFIDENCE).transform(E.assign_folds(t.folds, t.seed))
    estimator = T.build_als(True, t.seed, t.checkpoint_interval, t.k, blocks=1)
    grid = T.search_space(estimator, t)
    assert [pm[estimator.getParam(E.PRIOR_WEIGHT)] for pm in grid] == [0.0, 0.5, 1000.0]
    assert E.als_fits(grid) == 1
    evaluator = E.TopKEvaluator(metricName=t.metric, k=t.k)
    estimator.progress = evaluator.progress = E.CVProgress(t.folds, len(grid), E.als_fits(grid))
    with caplog.at_level(logging.INFO, logger="sparkpromo"):
        classic = T.cross_validate(estimator, grid, evaluator, data, t)
    fits = [r.getMessage().split(":")[0] for r in caplog.records if "fitted" in r.getMessage()]
    assert [f.split(" rank=")[0] for f in fits] == ["CV fold 1/2, fit 1/1", "CV fold 2/2, fit 1/1",
                                                   "CV refit of the best grid point on all folds"]
    scored = [r.getMessage().split(":")[0] for r in caplog.records if "ndcg@3=" in r.getMessage()]
    assert len(scored) == 6
    # Three weights, three different scores from one fitted model per fold; the chosen weight is the best mean.
    assert len(set(classic.avg_metrics)) == 3
    best = max(range(3), key=lambda i: classic.avg_metrics[i])
    assert classic.best_model.prior_weight == [0.0, 0.5, 1000.0][best]
    # The fold loop (temporal splits, Spark Connect) shares the fits the same way and scores the same.
    loop = E.cross_validate_folds(estimator, grid, evaluator, T.random_folds(data, t.folds), data, 1)
    assert loop.avg_metrics == pytest.approx(classic.avg_metrics, abs=1e-9)


def test_a_negative_prior_weight_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"train\.grid\.prior_weight"):
        load_config(conf_dir=str(CONF_DIR), overrides={"train.grid.prior_weight": [0.0, -0.1]})


def test_train_records_the_chosen_weight_and_serving_reads_it(spark: SparkSession, tmp_path: Path) -> None:
    cfg = make_config(tmp_path, train={"k": 3, "folds": 2, "seed": 3, "test_fraction": 0.25,
                                       "grid": {"rank": [3], "reg_param": [0.05], "alpha": [5.0], "max_iter": [5],
                                                "prior_weight": [0.0, 1000.0]}})
    assert R.prior_weight(spark, cfg, None) == 0.0
    delta_io.overwrite(two_tastes(spark), cfg.table("gold", "interactions"))
    res = T.run_train(spark, cfg, "p1")
    assert [row["params"]["prior_weight"] for row in res["cv"]] == [0.0, 1000.0]
    chosen = res["params"]["prior_weight"]
    assert chosen == max(res["cv"], key=lambda row: row["mean"])["params"]["prior_weight"]
    params = json.loads(registry_text(Path(res["registry"]) / "params.json"))
    assert params["params"]["prior_weight"] == chosen
    assert R.prior_weight(spark, cfg, "p1") == chosen
    # The next run's gate scores the model in service with the weight it was chosen with.
    incumbent, registered = load_incumbent(spark, cfg, "p2")
    assert registered and incumbent is not None and incumbent.prior_weight == chosen

    # Serving adds the same prior, from the interactions' popularity, to the published model's candidates.
    _, model, _ = R.load_champion(spark, cfg)
    data = delta_io.read(spark, cfg.table("gold", "interactions"))
    users = spark.createDataFrame([(0,), (13,)], f"{C.USER_IDX} int")
    prior = E.popularity_prior(data, 0.25)
    got = users.transform(als_candidates(model, 4, prior))
    plain = users.transform(als_candidates(model, 4))
    want = (plain.join(prior, C.ITEM_IDX, "left")
            .select(C.USER_IDX, C.ITEM_IDX, (F.col(C.SCORE) + F.coalesce(F.col(E.PRIOR), F.lit(0.0))).alias(C.SCORE)))
    assert_df_equality(got, want, ignore_row_order=True, ignore_nullable=True, ignore_column_order=True)


def test_an_older_registry_run_without_a_prior_reads_as_zero(spark: SparkSession, tmp_path: Path) -> None:
    cfg = make_config(tmp_path)
    R.write_text(spark, str(tmp_path / "lakehouse" / "registry" / "old" / "params.json"),
                 json.dumps({"champion": "als", "params": {"rank": 8}}))
    assert R.prior_weight(spark, cfg, "old") == 0.0
    R.write_text(spark, str(tmp_path / "lakehouse" / "registry" / "bad" / "params.json"),
                 json.dumps({"champion": "als", "params": {"prior_weight": "much"}}))
    with pytest.raises(R.RecommendError, match="prior_weight"):
        R.prior_weight(spark, cfg, "bad")
