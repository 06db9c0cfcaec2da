"""The train stage: :func:`run_train`."""

from __future__ import annotations

import contextlib
import json
import logging
import time
from typing import Any

from pyspark import StorageLevel
from pyspark.ml.evaluation import RegressionEvaluator
from pyspark.sql import SparkSession

from sparkpromo import columns as C
from sparkpromo import delta_io
from sparkpromo import evaluate as E
from sparkpromo import recommend as R
from sparkpromo import tables as T
from sparkpromo.config import AppConfig, join_uri
from sparkpromo.frame import local_rows
from sparkpromo.logs import spark_progress
from sparkpromo.schemas import MODEL_METRICS
from sparkpromo.session import default_parallelism
from sparkpromo.train.gate import (
    gate_decision,
    gate_holdout,
    load_incumbent,
    read_purchases,
    score_gate,
    served_metrics,
)
from sparkpromo.train.search import (
    ALS,
    CHALLENGER,
    GATE,
    HOLDOUT_METRICS_FROM,
    INCUMBENT,
    KEPT_INCUMBENT,
    LATEST,
    POPULARITY,
    PUBLISHED_MODEL,
    TrainError,
    _describe,
    build_als,
    check_training_data,
    choose_champion,
    cross_validate,
    holdout_split,
    metrics_rows,
    refit_on_all,
    registry_uri,
    search_space,
    temporal_cv,
)

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------------------------------
# Stage
# ----------------------------------------------------------------------------------------------------------------
def run_train(spark: SparkSession, cfg: AppConfig, run_id: str) -> dict[str, Any]:
    """Cross-validate, evaluate against popularity and the model in service, persist, publish when it is not
    worse; returns the result dict the CLI prints."""
    t = cfg.train
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    # run_stage logs the stage's start and end; a second pair here was noise.
    with contextlib.nullcontext({"run_id": run_id}) as counts:
        # ALS blocks scale with the cores actually there, not with the shuffle width (64 blocks on 4k rows is all
        # overhead): one block per core, never more than the shuffle partitions.
        blocks = max(1, min(cfg.spark.shuffle_partitions, default_parallelism(spark, cfg.spark.shuffle_partitions)))
        estimator = build_als(True, t.seed, t.checkpoint_interval, t.k, blocks=blocks)
        grid = search_space(estimator, t)  # fail on a bad grid before touching data
        inter_uri, map_uri = T.INTERACTIONS.uri(cfg), T.ID_MAP.uri(cfg)
        versions = {"gold.interactions": delta_io.version(spark, inter_uri),
                    "gold.id_map": delta_io.version(spark, map_uri)}
        if versions["gold.interactions"] is None:
            raise TrainError(f"no training data: no interactions table at {inter_uri} (run features first)")
        data = delta_io.read(spark, inter_uri, version=versions["gold.interactions"])
        counts.update(check_training_data(data))
        purchased, served_note = read_purchases(spark, cfg, versions)
        incumbent, registered = load_incumbent(spark, cfg)
        folds_kind = ("none (one grid point)" if len(grid) == 1
                      else "forward-chaining in time" if temporal_cv(t) else "random")

        split = holdout_split(data, t)
        # The train part feeds every CV fold (each fold's slices are cached, but they are all computed from this
        # frame), the final refit, the seen-item exclusion and every contender: persist it once instead of
        # re-reading and re-splitting Delta files each time. The holdout is scanned for every contender.
        train = (split.train if temporal_cv(t) else split.train.transform(E.assign_folds(t.folds, t.seed))) \
            .persist(StorageLevel.MEMORY_AND_DISK)
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
            if len(grid) > 1:
                estimator.progress = evaluator.progress = E.CVProgress(t.folds, len(grid))
                log.info("CV: %d %s folds x %d %s points, scored by %s@%d", t.folds, folds_kind, len(grid),
                         t.search, t.metric, t.k)
            else:
                log.info("CV: one grid point (%s), nothing to choose: fitted on the train part, no folds",
                         _describe(grid[0]))
            with spark_progress(spark, "CV"):
                cv = cross_validate(estimator, grid, evaluator, train, t)  # refits the best point on all of train
            best = cv.best_model
            timings["cv_s"] = round(time.perf_counter() - t1, 2)
            cv_table = [{"params": _describe(pm), "mean": m, "std": sd}
                        for pm, m, sd in zip(grid, cv.avg_metrics, cv.std_metrics, strict=True)] if cv.avg_metrics \
                else []
            best_index = max(range(len(grid)), key=lambda i: cv.avg_metrics[i]) if cv.avg_metrics else 0
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
            if purchased is not None:
                served, served_note = served_metrics(best.als_model, train, test, purchased, t.k, best.seen_max,
                                                     best.n_users)
                metrics.update(served)
            held = None if incumbent is None else gate_holdout(spark, inter_uri, incumbent, test)
            incumbent_metrics = challenger_metrics = None
            if incumbent is not None and held is not None and held.test is not None:
                try:
                    scores = score_gate(incumbent, best.als_model if champion == ALS else None, train, test,
                                        held.test, t.k, metrics[POPULARITY], metrics[champion])
                    if scores is not None:
                        incumbent_metrics, challenger_metrics = scores
                finally:
                    if held.test is not test:
                        held.test.unpersist()
            timings["evaluate_s"] = round(time.perf_counter() - t2, 2)
        finally:
            train.unpersist()
            test.unpersist()

        no_fresh_holdout = held is not None and held.test is None
        if incumbent_metrics is not None and challenger_metrics is not None:
            metrics[INCUMBENT], metrics[CHALLENGER] = incumbent_metrics, challenger_metrics
        elif not no_fresh_holdout:
            incumbent = held = None  # an incumbent that cannot be scored counts as none
        if held is not None and held.rows is not None:
            metrics[GATE] = {"holdout_rows": float(held.rows), "holdout_users": float(held.users or 0)}
        new_score = (challenger_metrics or metrics[champion])[t.metric]
        incumbent_score = None if incumbent_metrics is None else incumbent_metrics[t.metric]
        decision = gate_decision(new_score, incumbent_score, t.incumbent_margin, registered, t.metric,
                                 fresh_holdout=not no_fresh_holdout)
        incumbent_run = None if incumbent is None else incumbent.run_id
        log.info("gate on %s (%s): new champion %s %.4f, model in service %s %s: %s", t.metric,
                 "no gate holdout" if held is None else held.note, champion, new_score, incumbent_run or "(none)",
                 "-" if incumbent_score is None else f"{incumbent_score:.4f}", decision)

        t3 = time.perf_counter()
        published = refit_on_all(estimator, grid[best_index], data)
        counts["published_model_users"] = published.userFactors.count()
        counts["holdout_model_users"] = best.als_model.userFactors.count()
        timings["refit_s"] = round(time.perf_counter() - t3, 2)

        t4 = time.perf_counter()
        # The entry in service is never rewritten: a rerun of its run writes the next attempt's entry.
        entry = R.next_entry(*R.run_entries(spark, cfg, run_id), _latest(spark, cfg))
        registry = registry_uri(cfg, entry)
        model_uri = join_uri(registry, "model")
        published.write().overwrite().save(model_uri)
        gate = {"decision": decision, "incumbent_run_id": incumbent_run, f"incumbent_{t.metric}": incumbent_score,
                f"challenger_{t.metric}": None if challenger_metrics is None else challenger_metrics[t.metric],
                "incumbent_margin": t.incumbent_margin,
                "gate_holdout": None if held is None else held.note,
                "gate_holdout_rows": None if held is None else held.rows,
                "gate_holdout_users": None if held is None else held.users}
        lineage = {"published_model": PUBLISHED_MODEL, "holdout_metrics_from": HOLDOUT_METRICS_FROM,
                   "cv_folds": folds_kind, "search": t.search, "served_exclusion": served_note}
        params_doc = {"run_id": run_id, "registry_entry": entry, "champion": champion, "params": params,
                      "implicit_prefs": implicit, "k": t.k, "metric": t.metric, "seed": t.seed,
                      "input_versions": versions, **gate, **lineage}
        R.write_text(spark, join_uri(registry, "cv.json"), json.dumps(
            {"metric": t.metric, "k": t.k, "folds": t.folds if cv_table else 0, "folds_kind": folds_kind,
             "search": t.search, "grid": cv_table,
             **({} if cv_table else {"note": f"one grid point ({params}): nothing to choose, not cross-validated"})},
            indent=2, sort_keys=True))
        R.write_text(spark, join_uri(registry, "metrics.json"), json.dumps(metrics, indent=2, sort_keys=True))
        rows = local_rows(spark, metrics_rows(entry, metrics, decision), MODEL_METRICS)
        if T.migrate_legacy_run_id(spark, T.MODEL_METRICS, cfg):
            log.info("metrics/model: renamed its run-id column %s to %s", C.LEGACY_RUN_ID, C.RUN_ID)
        delta_io.replace_partition(rows, T.MODEL_METRICS.uri(cfg), {C.RUN_ID: entry}, name=T.MODEL_METRICS.key)
        # Last: an entry with a params.json is complete (recommend.run_entries).
        R.write_text(spark, join_uri(registry, "params.json"), json.dumps(params_doc, indent=2, sort_keys=True))
        timings["persist_s"] = round(time.perf_counter() - t4, 2)
        timings["total_s"] = round(time.perf_counter() - t0, 2)
        counts.update(champion=champion, decision=decision,
                      **{f"{ALS}_{t.metric}": round(metrics[ALS][t.metric], 4),
                         f"{POPULARITY}_{t.metric}": round(metrics[POPULARITY][t.metric], 4)})
    result = {"run_id": run_id, "champion": champion, **gate, "params": params, "metrics": metrics,
              "cv": cv_table, "input_versions": versions, "timings": timings, "model_uri": model_uri,
              "registry": registry, "registry_entry": entry, **lineage,
              "counts": {k: counts[k] for k in ("rows", "users", "items", "train_rows", "test_rows",
                                                "published_model_users", "holdout_model_users")}}
    from sparkpromo.tracking import log_train_run

    result["mlflow_run_id"] = log_train_run(cfg, result, model_uri, published)
    if decision == KEPT_INCUMBENT:
        log.warning("registry/LATEST stays on run %s; run %s is in the registry as %s, unpublished", incumbent_run,
                    run_id, entry)
    else:
        # Published last: recommend only ever sees a model whose files and metrics are complete.
        R.write_text(spark, join_uri(cfg.lakehouse, "registry", LATEST), entry)
    return result


def _latest(spark: SparkSession, cfg: AppConfig) -> str | None:
    """The entry in service; None when there is none or LATEST is malformed (then it names none of a run's entries,
    which are valid ids)."""
    try:
        return R.latest_run_id(spark, cfg)
    except R.RecommendError:
        return None


__all__ = [
    "run_train",
]
