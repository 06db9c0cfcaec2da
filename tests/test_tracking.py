"""Optional MLflow tracking of a training run, against local file stores (no Spark needed)."""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import make_config

from sparkpromo import tracking
from sparkpromo.config import AppConfig
from tests.measure import record

RESULT: dict[str, Any] = {
    "run_id": "20261129", "champion": "als",
    "params": {"alpha": 5.0, "max_iter": 5, "rank": 8, "reg_param": 0.05},
    "metrics": {"als": {"ndcg": 0.31, "precision": 0.12, "coverage": 0.8},
                "popularity": {"ndcg": 0.22, "precision": 0.09, "coverage": 0.1}},
    "cv": [{"params": {"rank": r, "reg_param": 0.05, "alpha": 5.0, "max_iter": 5}, "mean": 0.2 + r / 100,
            "std": 0.01} for r in (4, 8)],
    "input_versions": {"gold.interactions": 3, "gold.id_map": 1},
    "timings": {"cv_s": 12.5, "total_s": 20.0},
    "counts": {"rows": 1000, "users": 50, "items": 20, "train_rows": 800, "test_rows": 150},
}


def _cfg(root: Path, **mlflow: Any) -> AppConfig:
    return make_config(root, mlflow={"enabled": True, "experiment": "sparkpromo-test", **mlflow})


def _model_dir(root: Path) -> Path:
    model = root / "registry" / "20261129" / "model"
    (model / "metadata").mkdir(parents=True)
    (model / "metadata" / "part-00000").write_text('{"class":"org.apache.spark.ml.recommendation.ALSModel"}')
    return model


def _client(uri: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    from mlflow import MlflowClient

    monkeypatch.setenv(tracking.ALLOW_FILE_STORE, "true")  # MLflow 3 reads file stores only when allowed
    return MlflowClient(tracking_uri=uri)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv(tracking.ALLOW_FILE_STORE, raising=False)


def test_disabled_does_nothing(tmp_path: Path) -> None:
    cfg = make_config(tmp_path)
    assert not cfg.mlflow.enabled
    assert tracking.log_train_run(cfg, RESULT, None) is None
    assert not (Path(cfg.lakehouse) / "mlruns").exists()


def test_logs_params_metrics_cv_and_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("mlflow")
    cfg = _cfg(tmp_path)
    model = _model_dir(Path(cfg.lakehouse))
    run_id = tracking.log_train_run(cfg, RESULT, str(model))
    assert run_id is not None
    assert tracking.ALLOW_FILE_STORE not in os.environ  # the opt-in was scoped to our calls
    uri = (Path(cfg.lakehouse) / "mlruns").resolve().as_uri()
    assert tracking.tracking_uri(cfg) == uri
    client = _client(uri, monkeypatch)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.info.experiment_id == client.get_experiment_by_name("sparkpromo-test").experiment_id
    p, m, t = run.data.params, run.data.metrics, run.data.tags
    assert (p["rank"], p["reg_param"], p["train.metric"], p["input_version.gold.interactions"]) == (
        "8", "0.05", "ndcg", "3")
    assert p["train.folds"] == str(cfg.train.folds)  # cross-validated: the configured folds
    assert m["als.ndcg"] == pytest.approx(0.31) and m["popularity.ndcg"] == pytest.approx(0.22)
    assert m["data.rows"] == 1000 and m["time.cv_s"] == pytest.approx(12.5)
    assert t["sparkpromo.run_id"] == "20261129" and t["delta.gold.id_map.version"] == "1"
    assert t["sparkpromo.model_logged_as"] == "artifacts"
    steps = client.get_metric_history(run_id, "cv_mean")
    assert sorted((h.step, round(h.value, 4)) for h in steps) == [(0, 0.24), (1, 0.28)]
    children = client.search_runs([run.info.experiment_id], f"tags.mlflow.parentRunId = '{run_id}'")
    assert sorted(c.data.params["rank"] for c in children) == ["4", "8"]
    assert {a.path for a in client.list_artifacts(run_id)} == {"cv.json", "model"}
    assert [a.path for a in client.list_artifacts(run_id, "model/metadata")] == ["model/metadata/part-00000"]


def test_tracking_uri_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("mlflow")
    from_env = (tmp_path / "env-store").as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", from_env)
    cfg = _cfg(tmp_path / "a")
    assert tracking.tracking_uri(cfg) == from_env
    run_id = tracking.log_train_run(cfg, {**RESULT, "cv": []}, None)
    run = _client(from_env, monkeypatch).get_run(run_id)
    assert run.data.tags["sparkpromo.model_logged_as"] == "none"
    assert run.data.params["train.folds"] == "0"  # a run with no CV table was not cross-validated
    assert not (Path(cfg.lakehouse) / "mlruns").exists()
    explicit = (tmp_path / "cfg-store").as_uri()
    assert tracking.tracking_uri(_cfg(tmp_path / "b", tracking_uri=explicit)) == explicit  # config beats env


def test_a_remote_model_uri_is_recorded_without_its_secrets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("mlflow")
    store = (tmp_path / "store").as_uri()
    cfg = _cfg(tmp_path / "a", tracking_uri=store)
    remote = "https://user:pass@store.example.com/registry/20261129/model?sig=abc123"
    run_id = tracking.log_train_run(cfg, {**RESULT, "cv": [], "model_uri": remote}, None)
    tag = _client(store, monkeypatch).get_run(run_id).data.tags["sparkpromo.model_uri"]
    assert tag == "https://***@store.example.com/registry/20261129/model?sig=***"


def test_a_remote_lakehouse_needs_a_tracking_uri(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """MLflow's default store lives under the lakehouse; a remote lakehouse has no file store to offer, so it needs
    a configured URI (or the workspace's own server on Databricks), never the driver's ./mlruns."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("DATABRICKS_RUNTIME_VERSION", raising=False)
    remote = dataclasses.replace(_cfg(tmp_path), lakehouse="s3a://key:secret@shop/lake")
    needs = r"^mlflow.tracking_uri: required when the lakehouse is remote"
    with pytest.raises(tracking.TrackingError, match=needs) as e:
        tracking.tracking_uri(remote)
    assert "secret" not in str(e.value) and "\n" not in str(e.value)
    monkeypatch.setenv("DATABRICKS_RUNTIME_VERSION", "16.4")
    assert tracking.tracking_uri(remote) == "databricks"
    monkeypatch.delenv("DATABRICKS_RUNTIME_VERSION")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.internal:5000")
    assert tracking.tracking_uri(remote) == "http://mlflow.internal:5000"
    local = _cfg(tmp_path / "elsewhere")
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert tracking.tracking_uri(local) == (Path(local.lakehouse) / "mlruns").resolve().as_uri()


def test_enabled_without_mlflow_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "mlflow", None)  # import mlflow now raises ImportError
    cfg = _cfg(tmp_path)
    with pytest.raises(tracking.TrackingError, match=r"sparkpromo\[mlflow\]"):
        tracking.check_available(cfg)
    with pytest.raises(tracking.TrackingError, match="not installed"):
        tracking.log_train_run(cfg, RESULT, None)


@pytest.mark.parametrize(("uri", "expected"), [
    ("https://user:pass@mlflow.example.com/api", "https://***@mlflow.example.com/api"),
    ("http://tok@10.0.0.1:5000", "http://***@10.0.0.1:5000"),
    ("databricks://profile", "databricks://profile"),
    ("https://h/x?sig=abc123&other=1", "https://h/x?sig=***&other=1"),
    ("file:///tmp/mlruns", "file:///tmp/mlruns"),
])
def test_uri_credentials_redacted(uri: str, expected: str) -> None:
    from sparkpromo.config import redact_uri

    assert redact_uri(uri) == expected
    assert redact_uri(f"tracking to {uri} failed") == f"tracking to {expected} failed"


def test_tracking_failure_logs_no_credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             caplog: pytest.LogCaptureFixture) -> None:
    # Nothing listens on port 9: the client fails at once (no retries), and the failure is logged with its URI.
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    cfg = _cfg(tmp_path, tracking_uri="http://alice:s3cr3t-pw@127.0.0.1:9")
    with caplog.at_level("INFO"):
        assert tracking.log_train_run(cfg, RESULT, None) is None
    assert "http://***@127.0.0.1:9" in caplog.text
    assert "s3cr3t-pw" not in caplog.text and "alice" not in caplog.text
    record("security", "MLflow tracking URI with user:password, server unreachable (the failure is logged)",
           len(caplog.records), f"{len(caplog.records)} log records, URI logged as http://***@127.0.0.1:9, 0 hold "
           "the user or password", "redacted")


def test_log_handler_redacts_uris_from_any_module(capsys: pytest.CaptureFixture[str]) -> None:
    import logging

    from sparkpromo.logs import setup_logging

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        setup_logging(False, "r1")
        logging.getLogger("some.library").warning("connecting to %s", "https://bob:hunter2@host/x")
        err = capsys.readouterr().err
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    assert "https://***@host/x" in err and "hunter2" not in err, err



def test_logging_a_model_leaves_the_mlflow_environment_as_it_was(tmp_path: Path) -> None:
    """The model is logged through the global MLflow API (mlflow.set_tracking_uri writes $MLFLOW_TRACKING_URI):
    afterwards the environment is as before, so a second run in the same process still tracks to its own store."""
    pytest.importorskip("mlflow")
    cfg = _cfg(tmp_path)
    # Not a Spark model: mlflow.spark fails to log it and the saved directory is logged instead.
    run_id = tracking.log_train_run(cfg, RESULT, str(_model_dir(Path(cfg.lakehouse))), spark_model=object())
    assert run_id is not None
    assert "MLFLOW_TRACKING_URI" not in os.environ and "MLFLOW_REGISTRY_URI" not in os.environ
    again = tracking.log_train_run(_cfg(tmp_path / "b"), RESULT, None)
    assert again is not None and tracking.tracking_uri(_cfg(tmp_path / "b")).startswith("file:")
