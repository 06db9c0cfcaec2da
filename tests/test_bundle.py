"""The Databricks bundle: every wheel task names an existing entry point, tasks form a DAG, and each task's
parameters are accepted by the CLI."""

from __future__ import annotations

import ast
import datetime as dt
import re
from graphlib import CycleError, TopologicalSorter
from typing import Any

import pytest
import yaml

from sparkpromo import cli
from sparkpromo.config import AppConfig, load_config
from tests.conftest import CONF_DIR
from tests.test_connect import CLASSIC_ONLY

ROOT = CONF_DIR.parent


DAILY_JOBS = ("sparkpromo_daily", "sparkpromo_daily_serverless")
# Values the bundle's ${...} references take in these tests.
BUNDLE_VARS = {"${var.lakehouse}": "dbfs:/sparkpromo/lakehouse", "${var.landing}": "dbfs:/sparkpromo/landing",
               "/Workspace${workspace.file_path}/conf": str(CONF_DIR)}


def console_scripts() -> dict[str, str]:
    """name -> target, read from setup.py itself (not from whatever happens to be installed)."""
    tree = ast.parse((ROOT / "setup.py").read_text())
    stages: tuple[str, ...] = ()
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "STAGES":
            stages = ast.literal_eval(node.value)
    assert stages, "setup.py defines STAGES"
    scripts = {"sparkpromo": "sparkpromo.cli:main"}
    scripts.update({f"sparkpromo-{s}": f"sparkpromo.cli:{s}_main" for s in stages})
    text = (ROOT / "setup.py").read_text()
    assert '"sparkpromo=sparkpromo.cli:main"' in text and 'f"sparkpromo-{s}=sparkpromo.cli:{s}_main"' in text
    return scripts


def jobs() -> dict[str, dict[str, Any]]:
    bundle = yaml.safe_load((ROOT / "databricks.yml").read_text())
    out: dict[str, dict[str, Any]] = {}
    for pattern in bundle["include"]:
        for f in sorted(ROOT.glob(pattern)):
            out.update(yaml.safe_load(f.read_text())["resources"]["jobs"])
    return out


def substitute(value: str, job: dict[str, Any]) -> str:
    """Replace Databricks dynamic references with realistic values."""
    defaults = {p["name"]: p["default"] for p in job.get("parameters", [])}
    today = dt.date(2026, 11, 30)

    def ref(m: re.Match[str]) -> str:
        name = m.group(1)
        if name.startswith("job.parameters."):
            return substitute(defaults[name.removeprefix("job.parameters.")], job)
        return {"job.start_time.iso_date": today.isoformat(), "job.start_time.iso_weekday": "1"}[name]
    return re.sub(r"\{\{([^}]+)\}\}", ref, value)


def test_bundle_has_jobs() -> None:
    assert "sparkpromo_daily" in jobs()


@pytest.mark.parametrize("job_name", sorted(jobs()))
def test_wheel_tasks_call_existing_entry_points(job_name: str) -> None:
    scripts = console_scripts()
    job = jobs()[job_name]
    wheel_tasks = [t for t in job["tasks"] if "python_wheel_task" in t]
    assert wheel_tasks
    for t in wheel_tasks:
        w = t["python_wheel_task"]
        assert w["package_name"] == "sparkpromo"
        assert w["entry_point"] in scripts, f"{t['task_key']}: {w['entry_point']} not in setup.py"
        assert t.get("timeout_seconds", 0) > 0 and "max_retries" in t, t["task_key"]


@pytest.mark.parametrize("job_name", sorted(jobs()))
def test_tasks_form_a_dag(job_name: str) -> None:
    tasks = jobs()[job_name]["tasks"]
    keys = [t["task_key"] for t in tasks]
    assert len(keys) == len(set(keys)), "task keys are unique"
    graph = {t["task_key"]: {d["task_key"] for d in t.get("depends_on", [])} for t in tasks}
    for k, deps in graph.items():
        assert deps <= set(keys), f"{k} depends on an unknown task"
    try:
        order = list(TopologicalSorter(graph).static_order())
    except CycleError as e:  # pragma: no cover - the assertion message is the point
        pytest.fail(f"cycle in {job_name}: {e}")
    assert set(order) == set(keys)


@pytest.mark.parametrize("job_name", DAILY_JOBS)
def test_daily_order_and_schedules(job_name: str) -> None:
    job = jobs()[job_name]
    graph = {t["task_key"]: {d["task_key"] for d in t.get("depends_on", [])} for t in job["tasks"]}
    order = list(TopologicalSorter(graph).static_order())
    for a, b in (("ingest", "clean"), ("clean", "features"), ("features", "train"), ("train", "recommend")):
        assert order.index(a) < order.index(b)
    assert job["schedule"]["quartz_cron_expression"]
    train_gate = next(t for t in job["tasks"] if t["task_key"] == "is_train_day")
    assert train_gate["condition_task"]["left"] == "{{job.start_time.iso_weekday}}"
    recommend = next(t for t in job["tasks"] if t["task_key"] == "recommend")
    assert recommend["run_if"] == "NONE_FAILED"  # runs on the days train is skipped


@pytest.mark.parametrize("job_name", sorted(jobs()))
def test_parameters_are_accepted_by_the_cli(job_name: str) -> None:
    job = jobs()[job_name]
    scripts = console_scripts()
    parser = cli.build_parser()
    for t in job["tasks"]:
        if "python_wheel_task" not in t:
            continue
        w = t["python_wheel_task"]
        command = scripts[w["entry_point"]].rsplit(":", 1)[1].removesuffix("_main")
        params = [substitute(p, job) for p in w["parameters"]]
        parser.parse_args([command, *params])  # raises UsageError on anything the CLI doesn't know


def test_unknown_task_parameter_fails_fast() -> None:
    with pytest.raises(cli.UsageError, match="unrecognized arguments"):
        cli.build_parser().parse_args(["ingest", "--run-date", "2026-11-30", "--region", "eu"])


def _daily_tasks(job_name: str) -> dict[str, dict[str, Any]]:
    return {t["task_key"]: t for t in jobs()[job_name]["tasks"] if "python_wheel_task" in t}


def test_serverless_daily_runs_on_serverless_all_but_what_needs_a_classic_session() -> None:
    """The serverless job's split is the Connect test's: a stage that needs a classic session (none, today) would
    run on a job cluster, every other stage runs on the serverless environment, which installs the wheel."""
    job = jobs()["sparkpromo_daily_serverless"]
    environments = {e["environment_key"]: e["spec"] for e in job["environments"]}
    clusters = {c["job_cluster_key"] for c in job.get("job_clusters", [])}
    tasks = _daily_tasks("sparkpromo_daily_serverless")
    assert set(tasks) == set(_daily_tasks("sparkpromo_daily"))
    classic = {k for k, t in tasks.items() if "job_cluster_key" in t}
    assert classic == set(CLASSIC_ONLY)
    for key, task in tasks.items():
        if key in classic:
            assert task["job_cluster_key"] in clusters and "environment_key" not in task
        else:
            assert "job_cluster_key" not in task and "libraries" not in task, key
            assert "../dist/*.whl" in environments[task["environment_key"]]["dependencies"], key
    assert job["schedule"]["pause_status"] == "PAUSED"  # one daily job per lakehouse: the other one is on


@pytest.mark.parametrize("task_key", sorted(set(_daily_tasks("sparkpromo_daily_serverless")) - set(CLASSIC_ONLY)))
def test_serverless_task_gets_the_configuration_of_the_cluster_task(task_key: str,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Serverless tasks get no environment variables: their parameters give them the configuration the job cluster's
    variables (SPARKPROMO_LAKEHOUSE, SPARKPROMO_LANDING, SPARKPROMO_CONF_DIR) give the same task of the daily job."""
    def config(job_name: str) -> AppConfig:
        job = jobs()[job_name]
        params = [substitute(p, job) for p in _daily_tasks(job_name)[task_key]["python_wheel_task"]["parameters"]]
        for ref, value in BUNDLE_VARS.items():
            params = [p.replace(ref, value) for p in params]
        args = cli.build_parser().parse_args([task_key, *params])
        return load_config(args.env, args.conf_dir, args.config, cli._overrides(args.overrides))

    for var in ("SPARKPROMO_LAKEHOUSE", "SPARKPROMO_LANDING", "SPARKPROMO_CONF_DIR"):
        monkeypatch.delenv(var, raising=False)
    serverless = config("sparkpromo_daily_serverless")
    cluster = jobs()["sparkpromo_daily"]["job_clusters"][0]["new_cluster"]["spark_env_vars"]
    for var, value in cluster.items():
        for ref, sub in BUNDLE_VARS.items():
            value = value.replace(ref, sub)
        monkeypatch.setenv(var, value)
    classic = config("sparkpromo_daily")
    assert serverless.lakehouse == "dbfs:/sparkpromo/lakehouse"
    assert serverless == classic
