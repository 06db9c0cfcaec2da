"""Train ALS with cross-validated hyper-parameters, compare it with a popularity baseline on a holdout, persist.

Flow of :func:`run_train`:

1. read gold/interactions (pinned Delta version), check there is something to learn from;
2. holdout split (``train.split``); cross-validate only on the train part, scoring top-K lists that exclude each
   fold's training items (:class:`~sparkpromo.evaluate.RankingALS` + :class:`~sparkpromo.evaluate.TopKEvaluator`);
3. CrossValidator refits the best grid point on the whole train part; that model and the popularity baseline are
   scored on the holdout (ndcg, precision, recall, map, coverage, novelty; RMSE too for explicit ratings);
4. champion gate; persist the model, params.json, cv.json, metrics.json under ``<lakehouse>/registry/<run_id>/``
   and the metrics rows in the Delta table ``<lakehouse>/metrics/model`` (the run's rows replaced, so reruns are
   idempotent); log the run to MLflow (when enabled); finally write the run id to ``<lakehouse>/registry/LATEST``,
   which the recommend stage reads (a crash before that leaves LATEST on the previous complete run).
"""

from __future__ import annotations

import json
import logging
import math
import time
from typing import Any

from pyspark import StorageLevel
from pyspark.ml.evaluation import RegressionEvaluator
from pyspark.ml.param import Param
from pyspark.ml.tuning import CrossValidator, ParamGridBuilder
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import DoubleType, StringType, StructField, StructType

from sparkpromo import columns as C
from sparkpromo import evaluate as E
from sparkpromo import io
from sparkpromo.config import AppConfig, GridConfig, TrainConfig, join_uri
from sparkpromo.logs import spark_progress, stage

log = logging.getLogger(__name__)

ALS = "als"
LATEST = "LATEST"  # <lakehouse>/registry/LATEST: the run id of the latest complete training run
POPULARITY = "popularity"
# config grid key -> ALS param name
GRID_PARAMS = {"rank": "rank", "reg_param": "regParam", "alpha": "alpha", "max_iter": "maxIter",
               "implicit_prefs": "implicitPrefs", "nonnegative": "nonnegative"}

METRICS_SCHEMA = StructType([
    StructField(C.METRIC_RUN_ID, StringType(), False),
    StructField(C.CONTENDER, StringType(), False),
    StructField(C.METRIC, StringType(), False),
    StructField(C.VALUE, DoubleType(), True),
])


class TrainError(ValueError):
    """Training cannot proceed (no data, one user, bad grid); ``str()`` is a one-line message."""


# ----------------------------------------------------------------------------------------------------------------
# Building blocks
# ----------------------------------------------------------------------------------------------------------------
def build_als(implicit: bool, seed: int, checkpoint_interval: int = 5, k: int = 10, blocks: int = 10,
              **params: Any) -> E.RankingALS:
    """The estimator cross-validated here: ALS on (user_idx, item_idx, confidence), ``coldStartStrategy="drop"``,
    implicit preferences unless ``implicit`` is false. ``params`` (any ALS param name) override these settings."""
    settings: dict[str, Any] = dict(implicitPrefs=implicit, nonnegative=False, seed=seed,
                                    checkpointInterval=checkpoint_interval, numUserBlocks=blocks,
                                    numItemBlocks=blocks, k=k)
    return E.RankingALS(**{**settings, **params})


def _grid_values(grid: GridConfig, key: str) -> list[Any]:
    raw = list(dict.fromkeys(getattr(grid, key)))  # dedupe, keep order
    if not raw:
        raise TrainError(f"train.grid.{key}: empty grid (list at least one value)")
    for v in raw:
        if key in ("implicit_prefs", "nonnegative"):
            ok = isinstance(v, bool)
        else:
            ok = (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                  and (v >= 0 if key == "reg_param" else v > 0)
                  and (float(v).is_integer() if key in ("rank", "max_iter") else True))
        if not ok:
            raise TrainError(f"train.grid.{key}: invalid value {v!r}")
    return raw


def param_grid(als: E.RankingALS, grid: GridConfig) -> list[dict[Param, Any]]:
    """The grid of ``grid`` on ``als``'s params: the cartesian product for each value of ``implicit_prefs``, alpha
    searched only for implicit ALS (explicit ALS ignores it). Raises :class:`TrainError` on an empty list or an
    out-of-range value."""
    values = {key: _grid_values(grid, key) for key in GRID_PARAMS}
    maps: list[dict[Param, Any]] = []
    for implicit in values["implicit_prefs"]:
        builder = ParamGridBuilder().baseOn({als.getParam("implicitPrefs"): implicit})
        for key in GRID_PARAMS:
            if key != "implicit_prefs" and (implicit or key != "alpha"):
                builder = builder.addGrid(als.getParam(GRID_PARAMS[key]), values[key])
        maps += builder.build()
    return maps


def _describe(param_map: dict[Param, Any]) -> dict[str, Any]:
    names = {v: k for k, v in GRID_PARAMS.items()}
    return {names[p.name]: v for p, v in sorted(param_map.items(), key=lambda kv: kv[0].name)}


def holdout_split(df: DataFrame, t: TrainConfig) -> E.Split:
    """The holdout split chosen by ``train.split``."""
    if t.split == "random":
        return E.random_split(df, t.test_fraction, t.seed)
    if t.split == "last_days":
        return E.last_days_split(df, t.test_days)
    if t.split == "leave_last_k":
        return E.leave_last_k_split(df, t.leave_last_k)
    raise TrainError(f"train.split: unknown split {t.split!r}")


def check_training_data(df: DataFrame) -> dict[str, int]:
    """Rows, users and items of the interactions (one aggregate); :class:`TrainError` when ALS cannot learn."""
    row = df.agg(F.count("*").alias("rows"), F.countDistinct(C.USER_IDX).alias("users"),
                 F.countDistinct(C.ITEM_IDX).alias("items")).first()
    stats = {k: int(row[k]) for k in ("rows", "users", "items")} if row else {"rows": 0, "users": 0, "items": 0}
    if stats["rows"] == 0:
        raise TrainError("no training data: the interactions table is empty")
    if stats["users"] < 2:
        raise TrainError(f"not enough users to train: {stats['users']} user(s), need at least 2")
    if stats["items"] < 2:
        raise TrainError(f"not enough items to train: {stats['items']} item(s), need at least 2")
    return stats


def choose_champion(als: dict[str, float], popularity: dict[str, float], metric: str, gate: bool) -> str:
    """"als" if ALS beats popularity on ``metric``; otherwise a WARNING and "popularity" when the gate is on."""
    if als[metric] > popularity[metric]:
        return ALS
    log.warning("ALS does not beat the popularity baseline on %s (%.4f <= %.4f)%s", metric, als[metric],
                popularity[metric], "; champion is popularity" if gate else "; gate off, keeping ALS")
    return POPULARITY if gate else ALS


def metrics_rows(run_id: str, metrics: dict[str, dict[str, float]]) -> list[tuple[str, str, str, float]]:
    return [(run_id, contender, name, float(value)) for contender, values in metrics.items()
            for name, value in sorted(values.items())]


def write_text(spark: SparkSession, uri: str, text: str) -> None:
    """Write a small text file through Hadoop's FileSystem, so any lakehouse URI (local, s3a, abfss, dbfs) works."""
    jvm = spark.sparkContext._jvm
    path = jvm.org.apache.hadoop.fs.Path(uri)
    fs = path.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())
    out = fs.create(path, True)
    try:
        out.write(bytearray(text.encode("utf-8")))
    finally:
        out.close()


def registry_uri(cfg: AppConfig, run_id: str) -> str:
    return join_uri(cfg.lakehouse, "registry", run_id)


# ----------------------------------------------------------------------------------------------------------------
# Stage
# ----------------------------------------------------------------------------------------------------------------
def run_train(spark: SparkSession, cfg: AppConfig, run_id: str) -> dict[str, Any]:
    """Cross-validate, evaluate against popularity, persist; returns the result dict the CLI prints."""
    t = cfg.train
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    with stage("train", run_id=run_id) as counts:
        # ALS blocks scale with the cores actually there, not with the shuffle width (64 blocks on 4k rows is all
        # overhead): one block per core, never more than the shuffle partitions.
        blocks = max(1, min(cfg.spark.shuffle_partitions, spark.sparkContext.defaultParallelism))
        estimator = build_als(True, t.seed, t.checkpoint_interval, t.k, blocks=blocks)
        grid = param_grid(estimator, t.grid)  # fail on a bad grid before touching data
        inter_uri, map_uri = cfg.table("gold", "interactions"), cfg.table("gold", "id_map")
        versions = {"gold.interactions": io.version(spark, inter_uri), "gold.id_map": io.version(spark, map_uri)}
        if versions["gold.interactions"] is None:
            raise TrainError(f"no training data: no interactions table at {inter_uri} (run features first)")
        data = io.read(spark, inter_uri, version=versions["gold.interactions"])
        counts.update(check_training_data(data))

        split = holdout_split(data, t)
        # The train part feeds every CV fold (CrossValidator caches each fold's slices, but they are all computed
        # from this frame), the final refit, the seen-item exclusion and both baselines: persist it once instead of
        # re-reading and re-splitting Delta files each time. The holdout is scanned for both contenders.
        train = split.train.transform(E.assign_folds(t.folds, t.seed)).persist(StorageLevel.MEMORY_AND_DISK)
        test = split.test.persist(StorageLevel.MEMORY_AND_DISK)
        try:
            counts["train_rows"], counts["test_rows"] = train.count(), test.count()
            if counts["test_rows"] == 0:
                raise TrainError(f"the {t.split} holdout split left no test interactions")
            if train.select(C.USER_IDX).distinct().limit(2).count() < 2:
                raise TrainError("not enough users to train after the holdout split: need at least 2")
            timings["prepare_s"] = round(time.perf_counter() - t0, 2)

            t1 = time.perf_counter()
            evaluator = E.TopKEvaluator(metricName=t.metric, k=t.k)
            estimator.progress = evaluator.progress = E.CVProgress(t.folds, len(grid))
            cv = CrossValidator(estimator=estimator, estimatorParamMaps=grid, evaluator=evaluator,
                                numFolds=t.folds, foldCol=C.FOLD, parallelism=t.parallelism, seed=t.seed)
            log.info("CV: %d folds x %d grid points, scored by %s@%d", t.folds, len(grid), t.metric, t.k)
            with spark_progress(spark, "CV"):
                cv_model = cv.fit(train)  # also refits the best grid point on the whole train part
            best: E.RankingALSModel = cv_model.bestModel
            timings["cv_s"] = round(time.perf_counter() - t1, 2)
            cv_table = [{"params": _describe(pm), "mean": float(m), "std": float(s)}
                        for pm, m, s in zip(grid, cv_model.avgMetrics, cv_model.stdMetrics, strict=True)]
            best_index = max(range(len(grid)), key=lambda i: cv_model.avgMetrics[i])
            params = _describe(grid[best_index])
            implicit = bool(params["implicit_prefs"])

            t2 = time.perf_counter()
            users = test.select(C.USER_IDX).distinct()
            als_ranked = E.top_k_excluding_seen(best.als_model, train, t.k, users=users, seen_max=best.seen_max,
                                                n_users=best.n_users)
            pop_ranked = E.popularity_top_k(train, t.k, users=users, seen_max=best.seen_max)
            metrics = {ALS: E.evaluate_recommendations(als_ranked, test, train, t.k),
                       POPULARITY: E.evaluate_recommendations(pop_ranked, test, train, t.k)}
            if not implicit:
                rmse = RegressionEvaluator(metricName="rmse", labelCol=C.CONFIDENCE, predictionCol=C.PREDICTION)
                metrics[ALS]["rmse"] = rmse.evaluate(best.als_model.transform(test))
            champion = choose_champion(metrics[ALS], metrics[POPULARITY], t.metric, t.champion_gate)
            timings["evaluate_s"] = round(time.perf_counter() - t2, 2)
        finally:
            train.unpersist()
            test.unpersist()

        t3 = time.perf_counter()
        registry = registry_uri(cfg, run_id)
        model_uri = join_uri(registry, "model")
        best.als_model.write().overwrite().save(model_uri)
        params_doc = {"run_id": run_id, "champion": champion, "params": params, "implicit_prefs": implicit,
                      "k": t.k, "metric": t.metric, "seed": t.seed, "input_versions": versions}
        write_text(spark, join_uri(registry, "params.json"), json.dumps(params_doc, indent=2, sort_keys=True))
        write_text(spark, join_uri(registry, "cv.json"), json.dumps(
            {"metric": t.metric, "k": t.k, "folds": t.folds, "grid": cv_table}, indent=2, sort_keys=True))
        write_text(spark, join_uri(registry, "metrics.json"), json.dumps(metrics, indent=2, sort_keys=True))
        rows = spark.createDataFrame(metrics_rows(run_id, metrics), METRICS_SCHEMA)
        io.replace_partition(rows, cfg.table("metrics", "model"), {C.METRIC_RUN_ID: run_id}, name="metrics.model")
        timings["persist_s"] = round(time.perf_counter() - t3, 2)
        timings["total_s"] = round(time.perf_counter() - t0, 2)
        counts.update(champion=champion, **{f"{ALS}_{t.metric}": round(metrics[ALS][t.metric], 4),
                                            f"{POPULARITY}_{t.metric}": round(metrics[POPULARITY][t.metric], 4)})
    result = {"run_id": run_id, "champion": champion, "params": params, "metrics": metrics, "cv": cv_table,
              "input_versions": versions, "timings": timings, "model_uri": model_uri, "registry": registry,
              "counts": {k: counts[k] for k in ("rows", "users", "items", "train_rows", "test_rows")}}
    from sparkpromo.tracking import log_train_run

    result["mlflow_run_id"] = log_train_run(cfg, result, model_uri, best.als_model)
    # Published last: recommend only ever sees a model whose files and metrics are complete.
    write_text(spark, join_uri(cfg.lakehouse, "registry", LATEST), run_id)
    return result
