"""Optional MLflow tracking of training runs (the ``mlflow`` extra: ``pip install 'sparkpromo[mlflow]'``).

:func:`log_train_run` turns :func:`sparkpromo.train.run_train`'s result into one MLflow run in the experiment
``mlflow.experiment``: the chosen hyper-parameters and training settings as params; the input Delta versions as
params and tags, the gate's decision and the incumbent's run id as tags; holdout metrics per contender
(``als.ndcg``, ``popularity.ndcg``, ``incumbent.ndcg``, ...), data counts and timings as metrics; the whole CV table
as the artifact ``cv.json``, with one child run per grid point (its params and ``cv_mean``/``cv_std``, so MLflow's
run comparison works) and the parent's ``cv_mean``/``cv_std`` logged with the grid point's index as the step; and
the model (the published one, fitted on every interaction).

The model is logged with ``mlflow.spark.log_model`` when the full ``mlflow`` package is installed and a fitted
Spark model is passed. ``mlflow-skinny`` (what the extra installs) has no working ``mlflow.spark``, so the saved
model directory is logged as artifacts under ``model/`` instead (load it back with ``ALSModel.load``); a model on a
remote store (s3a:, abfss:, dbfs:) is recorded as the tag ``sparkpromo.model_uri`` only.

Nothing happens when ``mlflow.enabled`` is false. Tracking URI: ``mlflow.tracking_uri``, else ``MLFLOW_TRACKING_URI``,
else a local file store ``<lakehouse>/mlruns`` (``./mlruns`` when the lakehouse is remote). MLflow 3 refuses file
stores unless ``MLFLOW_ALLOW_FILE_STORE=true``; for a file store this module sets it for its own calls only.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Iterator
from typing import Any

from sparkpromo import __version__
from sparkpromo.config import AppConfig, has_scheme, local_path, redact_uri

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'sparkpromo[mlflow]'"
ALLOW_FILE_STORE = "MLFLOW_ALLOW_FILE_STORE"
_MAX_PARAM = 500  # MLflow's limit on a param value's length (6000 on newer servers; 500 is safe everywhere)


class TrackingError(RuntimeError):
    """MLflow tracking is enabled but cannot work (MLflow not installed); ``str()`` is one line."""


_MLFLOW_URI_VARS = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")


def tracking_uri(cfg: AppConfig) -> str:
    """``mlflow.tracking_uri``, else ``$MLFLOW_TRACKING_URI``, else ``file:`` ``<lakehouse>/mlruns`` for a local
    lakehouse, else ``databricks`` on a Databricks runtime. A remote lakehouse elsewhere (s3a, abfss) has no default:
    MLflow's file store cannot live there, and the driver's disk goes with the driver (:class:`TrackingError`)."""
    if cfg.mlflow.tracking_uri:
        return cfg.mlflow.tracking_uri
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    local = local_path(cfg.lakehouse)
    if local is not None:
        return (local / "mlruns").resolve().as_uri()
    if os.environ.get("DATABRICKS_RUNTIME_VERSION"):
        return "databricks"  # the workspace's own tracking server
    raise TrackingError(f"mlflow.tracking_uri: required when the lakehouse is remote ({redact_uri(cfg.lakehouse)}) "
                        "and MLFLOW_TRACKING_URI is not set; MLflow's file store cannot live there")


def _is_file_store(uri: str) -> bool:
    return uri.startswith("file:") or not has_scheme(uri)


def check_available(cfg: AppConfig) -> None:
    """Raise :class:`TrackingError` when tracking is enabled but MLflow is not importable or has nowhere to track to
    (call it before Spark starts, so a misconfiguration costs no training time)."""
    if not cfg.mlflow.enabled:
        return
    try:
        import mlflow  # noqa: F401
    except ImportError:
        raise TrackingError(f"mlflow.enabled is true but MLflow is not installed ({INSTALL_HINT})") from None
    tracking_uri(cfg)  # a remote lakehouse without a tracking URI


@contextlib.contextmanager
def _file_store_allowed(uri: str) -> Iterator[None]:
    """Let MLflow 3 open a file store for the duration of our calls, restoring the environment afterwards."""
    if not _is_file_store(uri) or ALLOW_FILE_STORE in os.environ:
        yield
        return
    os.environ[ALLOW_FILE_STORE] = "true"
    try:
        yield
    finally:
        os.environ.pop(ALLOW_FILE_STORE, None)


def _param(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    return text[:_MAX_PARAM]


def _experiment_id(client: Any, name: str) -> str:
    from mlflow.exceptions import MlflowException

    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return str(exp.experiment_id)
    try:
        return str(client.create_experiment(name))
    except MlflowException:  # created meanwhile by a concurrent run
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise
        return str(exp.experiment_id)


def _log_model(client: Any, mlflow: Any, uri: str, run_id: str, model_path: str | None, spark_model: Any) -> str:
    """Log the model; returns how: ``mlflow.spark``, ``artifacts``, ``uri-only`` or ``none``."""
    if spark_model is not None:
        try:
            import mlflow.spark as mlflow_spark
        except ImportError as e:  # mlflow-skinny: mlflow.spark needs the full package
            log.info("mlflow.spark is not available (%s); logging the saved model directory instead", e)
        else:
            # mlflow.set_tracking_uri also writes $MLFLOW_TRACKING_URI (and the registry's variable): restore the
            # environment as it was, or the next run in this process would read the default store as the user's.
            saved = {k: os.environ.get(k) for k in _MLFLOW_URI_VARS}
            previous, previous_registry = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
            try:
                mlflow.set_tracking_uri(uri)
                mlflow.set_registry_uri(uri)
                with mlflow.start_run(run_id=run_id):
                    mlflow_spark.log_model(spark_model, "model")
                return "mlflow.spark"
            except Exception as e:  # noqa: BLE001 - fall back to the saved directory below
                log.warning("mlflow.spark.log_model failed (%s); logging the saved model directory instead",
                            str(e).splitlines()[0] if str(e) else type(e).__name__)
            finally:
                mlflow.set_tracking_uri(previous)
                mlflow.set_registry_uri(previous_registry)
                for k, v in saved.items():
                    if v is None:
                        os.environ.pop(k, None)
                    else:
                        os.environ[k] = v
    if model_path is None:
        return "none"
    local = local_path(model_path)
    if local is not None and local.is_dir():
        client.log_artifacts(run_id, str(local), "model")
        return "artifacts"
    log.warning("model %s is not a local directory: recorded as the tag sparkpromo.model_uri only", model_path)
    return "uri-only"


def log_train_run(cfg: AppConfig, result: dict[str, Any], model_path: str | None, spark_model: Any = None
                  ) -> str | None:
    """Log one training run to MLflow and return its MLflow run id; None when tracking is disabled.

    ``result`` is :func:`sparkpromo.train.run_train`'s dict (``run_id``, ``champion``, ``params``, ``metrics``,
    ``cv``, ``input_versions``, ``timings``, ``counts``); ``model_path`` the saved model directory; ``spark_model``
    the fitted model (used only with the full ``mlflow`` package). Raises :class:`TrackingError` when MLflow is not
    installed; an MLflow failure after that (server down, ...) is logged as an error, the MLflow run is marked
    FAILED and None is returned: the model is already persisted, so training does not fail for tracking.
    """
    if not cfg.mlflow.enabled:
        return None
    try:
        import mlflow
        from mlflow import MlflowClient
        from mlflow.entities import Metric, Param
    except ImportError:
        raise TrackingError(f"mlflow.enabled is true but MLflow is not installed ({INSTALL_HINT})") from None

    uri = tracking_uri(cfg)
    run_id = str(result.get("run_id", ""))
    t = cfg.train
    with _file_store_allowed(uri):
        # The registry lives with the runs: MLflow 3's default registry is a sqlite file a file store cannot serve.
        client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        mlflow_run_id: str | None = None
        try:
            exp_id = _experiment_id(client, cfg.mlflow.experiment)
            versions = dict(result.get("input_versions") or {})
            tags = {"sparkpromo.run_id": run_id, "sparkpromo.champion": str(result.get("champion", "")),
                    "sparkpromo.decision": str(result.get("decision", "")),
                    "sparkpromo.incumbent_run_id": str(result.get("incumbent_run_id") or ""),
                    "sparkpromo.version": __version__, "sparkpromo.lakehouse": redact_uri(cfg.lakehouse),
                    "sparkpromo.model_uri": redact_uri(str(model_path or result.get("model_uri") or "")),
                    **{f"delta.{name}.version": str(v) for name, v in versions.items()}}
            run = client.create_run(exp_id, run_name=f"train-{run_id}", tags=tags)
            mlflow_run_id = run.info.run_id

            params = {**{k: _param(v) for k, v in (result.get("params") or {}).items()},
                      "train.k": str(t.k), "train.metric": t.metric,
                      # 0 when a one-point grid was not cross-validated, as in the registry's cv.json
                      "train.folds": str(t.folds if result.get("cv") else 0),
                      "train.split": t.split, "train.seed": str(t.seed), "train.champion_gate": str(t.champion_gate),
                      "train.search": t.search, "train.incumbent_margin": str(t.incumbent_margin),
                      **{f"input_version.{name}": str(v) for name, v in versions.items()}}
            now = int(time.time() * 1000)
            metrics = [Metric(f"{contender}.{name}", float(value), now, 0)
                       for contender, values in (result.get("metrics") or {}).items()
                       for name, value in sorted(values.items()) if value is not None]
            metrics += [Metric(f"data.{k}", float(v), now, 0) for k, v in (result.get("counts") or {}).items()]
            metrics += [Metric(f"time.{k}", float(v), now, 0) for k, v in (result.get("timings") or {}).items()]
            cv = list(result.get("cv") or [])
            for i, point in enumerate(cv):
                metrics += [Metric("cv_mean", float(point["mean"]), now, i),
                            Metric("cv_std", float(point["std"]), now, i)]
            client.log_batch(mlflow_run_id, metrics=metrics, params=[Param(k, v) for k, v in params.items()])
            client.log_dict(mlflow_run_id, {"metric": t.metric, "k": t.k, "folds": t.folds if cv else 0,
                                            "grid": [{"step": i, **p} for i, p in enumerate(cv)]}, "cv.json")
            for i, point in enumerate(cv):
                child = client.create_run(exp_id, run_name=f"train-{run_id}-cv{i:02d}",
                                          tags={"mlflow.parentRunId": mlflow_run_id, "sparkpromo.run_id": run_id,
                                                "sparkpromo.cv_step": str(i)})
                client.log_batch(child.info.run_id,
                                 metrics=[Metric("cv_mean", float(point["mean"]), now, 0),
                                          Metric("cv_std", float(point["std"]), now, 0)],
                                 params=[Param(k, _param(v)) for k, v in point.get("params", {}).items()])
                client.set_terminated(child.info.run_id, "FINISHED")
            how = _log_model(client, mlflow, uri, mlflow_run_id, model_path, spark_model)
            client.set_tag(mlflow_run_id, "sparkpromo.model_logged_as", how)
            client.set_terminated(mlflow_run_id, "FINISHED")
        except Exception as e:  # noqa: BLE001 - tracking must not fail a training whose model is persisted
            log.error("MLflow tracking to %s failed: %s", redact_uri(uri),
                      redact_uri(str(e).splitlines()[0]) if str(e) else type(e).__name__)
            if mlflow_run_id is not None:
                with contextlib.suppress(Exception):
                    client.set_terminated(mlflow_run_id, "FAILED")
            return None
    log.info("training run %s logged to MLflow run %s (%s, experiment %s)", run_id, mlflow_run_id, redact_uri(uri),
             cfg.mlflow.experiment)
    return mlflow_run_id
