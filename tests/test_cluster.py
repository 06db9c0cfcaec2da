"""The pipeline on a real Spark standalone cluster gives the same tables as in local mode; spark-submit.sh refuses
bad input in one line, before Spark starts.

The slow part starts a master and two one-core workers on 127.0.0.1 from the installed pyspark (tests/cluster.py),
submits ``run --sample`` through ``./spark-submit.sh`` (the wheel on --py-files, Delta from its Maven coordinates),
runs the same pipeline in local mode on an identical generated shop, and compares the two lakehouses table by
table with the suite's own local SparkSession.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import DoubleType, FloatType

from sparkpromo import cli
from sparkpromo import columns as C
from sparkpromo.ingest import FILE_MTIME
from tests.cluster import SPARK_HOME, CommandResult, StandaloneCluster, clean_env, free_port, run_command
from tests.conftest import SHORT_JVM_OPTS, SMALL_DATA_CONF

ROOT = Path(__file__).resolve().parents[1]
SUBMIT_SH = ROOT / "spark-submit.sh"

# The stages both runs execute, in pipeline order. The goal is the whole pipeline; if a stage is broken or not
# built yet (``stage 'features' is not built yet``), cut this back (e.g. to "ingest,clean"): every comparison of a
# stage that did not run is skipped, so switching between the two is this one constant.
STAGES = "ingest,clean,features,train,recommend"
RUN_DATE = "2026-11-01"
EVENTS = 4000
# Passed to *both* runs, so they differ only in where they run. A one-point grid and 2 folds keep training small;
# 4 shuffle partitions (cluster.yaml says 64, sized for real clusters) also bound the ALS blocks, which follow
# spark.shuffle_partitions: 64 blocks for ~100 users made the cluster's train stage take ~9 minutes on 2 cores.
COMMON_SETS = ("train.grid.rank=[4]", "train.grid.max_iter=[5]", "train.folds=2", "spark.shuffle_partitions=4")
# Performance only, results do not depend on them: Delta rebuilds table snapshots with 50 tasks by default
# (session.py sets 2 in local mode, but never overrides what a launcher owns), no driver UI is needed, the suite's
# small-data settings (interpreted expressions; the local run has them from the suite's session), and the short
# JVMs' options in the driver and both executors (the cluster's setup 0.84x; Java's floating point is the same on
# either compiler).
SUBMIT_CONF = ("spark.databricks.delta.snapshotPartitions=2", "spark.ui.enabled=false",
               "spark.ui.showConsoleProgress=false", *(f"{k}={v}" for k, v in SMALL_DATA_CONF.items()),
               *(f"spark.{side}.extraJavaOptions={SHORT_JVM_OPTS}" for side in ("driver", "executor")))
# Each run, generously: CI has 2 shared cores (a quiet machine needs a few minutes for both).
RUN_TIMEOUT_S = 1500

# Deterministic stages are compared exactly, except for floating-point sums whose order depends on partitioning.
FLOAT_REL_TOL = 1e-9
# ALS is not deterministic across partitionings: the factors come from ALS's blocked solver, whose blocks, summation
# order and random initialisation per block depend on how the ratings are partitioned, so local[2] and two
# executors give slightly different factors and hence rankings. The holdout split and CV folds are seeded hashes of
# (user, item) and the popularity baseline breaks ties by item index, so those *are* identical. Hence ALS metrics
# within a tolerance, popularity metrics exactly:
ALS_METRIC_ABS_TOL = {"ndcg": 0.05, "map": 0.05, "precision": 0.05, "recall": 0.05, "coverage": 0.1}
ALS_METRIC_REL_TOL = 0.15  # any other recorded metric (novelty: mean self-information, not bounded by 1)
# With an ALS champion, per campaign the same users must be served and at least this share of (user, item) pairs
# (Jaccard) must agree; with a popularity champion (deterministic ranking) every row must agree.
MIN_PAIR_OVERLAP = 0.7

# Where, from which file version and when a row was ingested: paths and times differ between the runs.
BRONZE_METADATA = (C.SOURCE_FILE, FILE_MTIME, C.INGEST_TS)
SILVER = ("events", "users", "items")
GOLD = ("id_map", "interactions", "user_features", "item_features")


def _stages() -> list[str]:
    return [s.strip() for s in STAGES.split(",") if s.strip()]


def needs(stage: str) -> None:
    if stage not in _stages():
        pytest.skip(f"stage {stage!r} is not in STAGES ({STAGES})")


# ----------------------------------------------------------------------------------------------------------------
# The two runs
# ----------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Run:
    lakehouse: Path
    landing: Path
    result: CommandResult
    output: dict[str, Any]

    def table(self, layer: str, name: str) -> str:
        return str(self.lakehouse / layer / name)


@dataclass(frozen=True)
class Runs:
    cluster: Run
    local: Run
    app: dict[str, Any]  # the master's record of the cluster run's application
    executor_dirs: dict[int, list[Path]]  # worker number -> that worker's executor directories for the app


def _pipeline_args() -> list[str]:
    sets = [a for s in COMMON_SETS for a in ("--set", s)]
    return ["run", "--sample", "--events", str(EVENTS), "--run-date", RUN_DATE, "--json", "--stages", STAGES, *sets]


def _dirs(root: Path) -> tuple[Path, Path]:
    root.mkdir(parents=True, exist_ok=True)
    return root / "lakehouse", root / "landing"


def _check(result: CommandResult, what: str, log_dir: Path, cluster: StandaloneCluster | None = None) -> dict[str, Any]:
    """The run's --json output; a failed run fails the test with its output (and the cluster's logs). Both outputs
    are also kept in ``log_dir`` (pytest keeps its last three base temp directories) for a post-mortem."""
    (log_dir / f"{what}-run.out").write_text(result.stdout)
    (log_dir / f"{what}-run.err").write_text(result.stderr)
    if result.returncode != 0:
        logs = f"\n--- cluster logs ---\n{cluster.logs()}" if cluster else ""
        pytest.fail(f"the {what} run failed:\n{result.describe()}{logs}", pytrace=False)
    return result.last_json()


@pytest.fixture(scope="module")
def standalone(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """A master and two one-core, 1 GiB workers; every process is stopped when the module is done (or fails)."""
    cluster = StandaloneCluster(tmp_path_factory.mktemp("standalone"), workers=2, worker_cores=1, worker_memory="1g")
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


def _run_in_process(spark: SparkSession, argv: list[str], env: dict[str, str]) -> CommandResult:
    """``sparkpromo <argv>`` in this process, on the suite's warm session (a cold subprocess JVM would cost the
    2-core machine several CPU-minutes more, alongside the cluster run); stdout and stderr are captured as a
    subprocess's would be. The session's shuffle partitions, which the run sets, are restored afterwards."""
    out, err, t0 = io.StringIO(), io.StringIO(), time.monotonic()
    partitions = spark.conf.get("spark.sql.shuffle.partitions")
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("SPARK_REMOTE", raising=False)
        for k, v in env.items():
            mp.setenv(k, v)
        mp.chdir(ROOT)
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                code = cli.main(argv)
        finally:
            spark.conf.set("spark.sql.shuffle.partitions", partitions)
    return CommandResult(["sparkpromo", *argv], code, out.getvalue(), err.getvalue(), time.monotonic() - t0)


@pytest.fixture(scope="module")
def runs(spark: SparkSession, standalone: StandaloneCluster, tmp_path_factory: pytest.TempPathFactory) -> Runs:
    work = tmp_path_factory.mktemp("runs")

    c_lakehouse, c_landing = _dirs(work / "cluster")
    env = clean_env(SPARK_HOME=str(SPARK_HOME), SPARK_LOCAL_IP="127.0.0.1", SPARK_LOCAL_DIRS=str(work / "tmp"),
                    SPARKPROMO_LAKEHOUSE=str(c_lakehouse), SPARKPROMO_LANDING=str(c_landing))
    env.pop("SPARKPROMO_WHEEL", None)  # let spark-submit.sh build and ship the wheel, as in production
    c_cmd = [str(SUBMIT_SH), "--master", standalone.master_url, "--conf", "spark.executor.memory=768m",
             "--conf", "spark.cores.max=2", *(a for c in SUBMIT_CONF for a in ("--conf", c)),
             *_pipeline_args(), "--env", "cluster"]
    l_lakehouse, l_landing = _dirs(work / "local")
    # The local-mode run: the same arguments in this process, while the cluster run goes on in its own processes.
    with ThreadPoolExecutor(max_workers=1) as pool:
        c_future = pool.submit(run_command, c_cmd, env=env, cwd=ROOT, timeout_s=RUN_TIMEOUT_S)
        l_result = _run_in_process(spark, [*_pipeline_args(), "--env", "local"],
                                   {"SPARKPROMO_LAKEHOUSE": str(l_lakehouse), "SPARKPROMO_LANDING": str(l_landing)})
        c_result = c_future.result()
    cluster_run = Run(c_lakehouse, c_landing, c_result, _check(c_result, "cluster", standalone.log_dir, standalone))

    # The master's record of the application (the only one on this private cluster; the session names it
    # "sparkpromo", overriding spark-submit's --name), and the executors each worker launched for it.
    state = standalone.state() or {}
    apps = [*state.get("completedapps", []), *state.get("activeapps", [])]
    assert len(apps) == 1, f"expected one application on the master, got {apps}\n{state}"
    executor_dirs = {i: sorted(p for p in (standalone.worker_dir(i) / apps[0]["id"]).glob("*") if p.is_dir())
                     for i in range(1, standalone.workers + 1)}

    local_run = Run(l_lakehouse, l_landing, l_result, _check(l_result, "local", standalone.log_dir))
    print(f"cluster run {cluster_run.result.seconds:.0f}s, local run {local_run.result.seconds:.0f}s")
    return Runs(cluster_run, local_run, apps[0], executor_dirs)


# ----------------------------------------------------------------------------------------------------------------
# Comparison helpers
# ----------------------------------------------------------------------------------------------------------------
def _read(spark: SparkSession, path: str, drop: tuple[str, ...] = ()) -> tuple[list[str], list[int], list[tuple]]:
    """Columns (sorted by name, ``drop`` left out), the indexes of the floating-point ones, and every row, sorted by
    the other columns first (so float noise cannot reorder rows that the exact columns tell apart)."""
    df = spark.read.format("delta").load(path)
    cols = sorted(c for c in df.columns if c not in drop)
    floats = [i for i, c in enumerate(cols) if isinstance(df.schema[c].dataType, (DoubleType, FloatType))]
    rows = [tuple(r) for r in df.select(*cols).collect()]

    def key(row: tuple) -> tuple:
        exact = tuple((v is None, str(v)) for i, v in enumerate(row) if i not in floats)
        approx = tuple((row[i] is None, round(row[i], 6) if row[i] is not None else 0.0) for i in floats)
        return exact + approx

    return cols, floats, sorted(rows, key=key)


def _same_value(a: Any, b: Any, is_float: bool) -> bool:
    if is_float and a is not None and b is not None:
        return (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=FLOAT_REL_TOL, abs_tol=1e-12)
    return bool(a == b)


def assert_same_table(spark: SparkSession, runs: Runs, layer: str, name: str, drop: tuple[str, ...] = ()) -> int:
    """The cluster's and the local run's ``layer/name`` hold the same rows (floats to FLOAT_REL_TOL); returns the
    row count."""
    c_cols, floats, c_rows = _read(spark, runs.cluster.table(layer, name), drop)
    l_cols, _, l_rows = _read(spark, runs.local.table(layer, name), drop)
    what = f"{layer}.{name}"
    assert c_cols == l_cols, f"{what}: columns differ: cluster {c_cols} vs local {l_cols}"
    assert len(c_rows) == len(l_rows), f"{what}: {len(c_rows)} rows on the cluster vs {len(l_rows)} locally"
    diffs = [(c, loc) for c, loc in zip(c_rows, l_rows, strict=True)
             if not all(_same_value(a, b, i in floats) for i, (a, b) in enumerate(zip(c, loc, strict=True)))]
    shown = "\n".join(f"  cluster {dict(zip(c_cols, c, strict=True))}\n  local   {dict(zip(c_cols, loc, strict=True))}"
                      for c, loc in diffs[:3])
    assert not diffs, f"{what}: {len(diffs)} of {len(c_rows)} rows differ, e.g.\n{shown}"
    return len(c_rows)


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _metrics(spark: SparkSession, run: Run) -> dict[tuple[str, str], float]:
    rows = spark.read.format("delta").load(run.table("metrics", "model")).collect()
    return {(r[C.CONTENDER], r[C.METRIC]): r[C.VALUE] for r in rows}


def _files(landing: Path) -> dict[str, str]:
    return {str(p.relative_to(landing)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(landing.rglob("*")) if p.is_file()}


# ----------------------------------------------------------------------------------------------------------------
# Cluster vs local
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_cluster_run_used_both_workers(runs: Runs) -> None:
    assert runs.app["cores"] == 2, runs.app
    assert runs.app.get("state") in ("FINISHED", "RUNNING"), runs.app
    for worker, dirs in runs.executor_dirs.items():
        assert dirs, f"worker {worker} launched no executor for {runs.app['id']}"


@pytest.mark.slow
def test_executors_ran_the_shipped_environment(runs: Runs) -> None:
    """Each executor unpacked the environment archive into its own working directory (not the driver's) and
    found only the wheel's dependencies there, no Spark: pyspark comes from the workers' Spark installation."""
    for worker, dirs in runs.executor_dirs.items():
        for d in dirs:
            env = d / "env"
            assert (env / "bin" / "python").exists(), f"worker {worker}: no unpacked environment in {d}"
            site = list(env.glob("lib/python*/site-packages"))
            assert site and (site[0] / "yaml").is_dir() and not (site[0] / "pyspark").exists(), site
            assert not d.resolve().is_relative_to(ROOT)


@pytest.mark.slow
def test_cluster_run_logs_its_progress_on_stderr(runs: Runs) -> None:
    """Under spark-submit, sparkpromo's own stage lines reach stderr, one start and one end per stage."""
    err = runs.cluster.result.stderr
    for stage in _stages():
        assert err.count(f"stage={stage} status=end") == 1, err[-3000:]


@pytest.mark.slow
def test_both_runs_read_the_same_generated_shop(runs: Runs) -> None:
    cluster, local = _files(runs.cluster.landing), _files(runs.local.landing)
    assert cluster and cluster == local
    assert runs.cluster.output["generated_events"] == runs.local.output["generated_events"] == EVENTS


@pytest.mark.slow
def test_stage_counts_reported_are_equal(runs: Runs) -> None:
    """Every count the deterministic stages report (not timings, paths or model figures) is the same."""
    deterministic = ("ingest.", "clean.", "features.", "train.counts.")

    def counts(run: Run) -> dict[str, Any]:
        return {k: v for k, v in _flatten(run.output).items()
                if k.startswith(deterministic) and isinstance(v, int) and not isinstance(v, bool)}

    cluster, local = counts(runs.cluster), counts(runs.local)
    assert cluster.get("ingest.events_rows") == EVENTS
    assert cluster == local


@pytest.mark.slow
@pytest.mark.parametrize("source", SILVER)
def test_bronze_tables_are_equal(spark: SparkSession, runs: Runs, source: str) -> None:
    needs("ingest")
    n = assert_same_table(spark, runs, "bronze", source, drop=BRONZE_METADATA)
    assert n > 0


@pytest.mark.slow
@pytest.mark.parametrize("name", SILVER)
def test_silver_tables_are_equal(spark: SparkSession, runs: Runs, name: str) -> None:
    needs("clean")
    assert assert_same_table(spark, runs, "silver", name) > 0


@pytest.mark.slow
def test_quarantine_counts_per_rule_are_equal(spark: SparkSession, runs: Runs) -> None:
    needs("clean")

    def per_rule(run: Run) -> dict[tuple[str, str], int]:
        q = spark.read.format("delta").load(run.table("quarantine", "rows"))
        return {(r[0], r[1]): r[2] for r in q.groupBy(C.Q_SOURCE, C.Q_RULE).count().collect()}

    cluster = per_rule(runs.cluster)
    assert cluster, "the generated shop is dirty: something must be quarantined"
    assert cluster == per_rule(runs.local)
    assert_same_table(spark, runs, "metrics", "data_quality")


@pytest.mark.slow
@pytest.mark.parametrize("name", GOLD)
def test_gold_tables_are_equal(spark: SparkSession, runs: Runs, name: str) -> None:
    needs("features")
    assert assert_same_table(spark, runs, "gold", name) > 0


@pytest.mark.slow
def test_model_metrics_agree(spark: SparkSession, runs: Runs) -> None:
    needs("train")
    cluster, local = _metrics(spark, runs.cluster), _metrics(spark, runs.local)
    assert cluster.keys() == local.keys() and ("als", "ndcg") in cluster
    for (contender, metric), value in sorted(cluster.items()):
        other = local[(contender, metric)]
        if value is None or other is None:  # the gate's decision row: its metric names the decision, no value
            assert value is None and other is None, f"{contender} {metric}: cluster {value} vs local {other}"
            continue
        if contender.startswith("als"):  # see ALS_METRIC_ABS_TOL: partition-dependent
            tol = ALS_METRIC_ABS_TOL.get(metric)
            ok = (abs(value - other) <= tol if tol is not None
                  else math.isclose(value, other, rel_tol=ALS_METRIC_REL_TOL))
        else:  # the popularity baseline on a hash-based split: deterministic
            ok = math.isclose(value, other, rel_tol=FLOAT_REL_TOL, abs_tol=1e-12)
        assert ok, f"{contender} {metric}: cluster {value} vs local {other}"


@pytest.mark.slow
def test_recommendations_have_the_same_shape(spark: SparkSession, runs: Runs) -> None:
    needs("recommend")
    pair_cols = (C.CAMPAIGN_ID, C.USER_ID, C.ITEM_ID)

    def read(run: Run) -> tuple[set[tuple], dict[str, set[str]], bool]:
        df = spark.read.format("delta").load(run.table("gold", "recommendations")).where(F.col(C.RUN_DATE) == RUN_DATE)
        rows = df.select(*pair_cols, C.RANK, C.SOURCE, C.IS_CONTROL, C.DELIVERED).collect()
        users: dict[str, set[str]] = {}
        for r in rows:
            users.setdefault(r[C.CAMPAIGN_ID], set()).add(r[C.USER_ID])
        uses_als = any(r[C.SOURCE] == "als" for r in rows)
        return {tuple(r) for r in rows}, users, uses_als

    c_rows, c_users, c_als = read(runs.cluster)
    l_rows, l_users, l_als = read(runs.local)
    assert c_rows, "the cluster run wrote no recommendations"
    assert c_users.keys() == l_users.keys(), "different campaigns got recommendations"
    for campaign, users in c_users.items():
        assert users == l_users[campaign], f"campaign {campaign}: different users served"
    if not (c_als or l_als):  # popularity, segment and bundle candidates only: deterministic, every row agrees
        assert c_rows == l_rows
        return
    c_pairs, l_pairs = {r[:3] for r in c_rows}, {r[:3] for r in l_rows}
    overlap = len(c_pairs & l_pairs) / len(c_pairs | l_pairs)
    assert overlap >= MIN_PAIR_OVERLAP, f"only {overlap:.0%} of (campaign, user, item) pairs agree"


# ----------------------------------------------------------------------------------------------------------------
# spark-submit.sh pre-flight: one line on stderr, exit code 2, and Spark never starts
# ----------------------------------------------------------------------------------------------------------------
FAKE_SUBMIT = """#!/usr/bin/env bash
# A stand-in spark-submit: answers --version like the real one, records every other call and fails.
echo "$*" >> "$(dirname "$0")/calls.log"
if [ "$1" = "--version" ]; then
  echo "Welcome to Spark version {version}" >&2
  echo "Using Scala version 2.13.16, OpenJDK 64-Bit Server VM, 17" >&2
  exit 0
fi
echo "fake spark-submit: would have started Spark" >&2
# What the Python driver writes, as spark-submit passes it on: stdout and stderr merged on stdout.
echo "2026-11-01T10:00:00 INFO run=r1 sparkpromo.logs: stage=clean status=end elapsed_s=1.0"
echo '{"clean": {"silver_rows": 3}}'
echo "error: clean failed: Boom"
exit 99
"""


def fake_spark_home(root: Path, spark_version: str) -> Path:
    home = root / f"spark-{spark_version}"
    (home / "bin").mkdir(parents=True)
    script = home / "bin" / "spark-submit"
    script.write_text(FAKE_SUBMIT.replace("{version}", spark_version))
    script.chmod(0o755)
    return home


def submit(tmp_path: Path, *args: str, spark_version: str | None = None, **env: str) -> tuple[CommandResult, Path]:
    """Run spark-submit.sh against a fake SPARK_HOME (the installed pyspark's version unless told otherwise) and a
    stand-in wheel; returns the result and the fake's call log."""
    home = fake_spark_home(tmp_path, spark_version or version("pyspark"))
    wheel = tmp_path / "sparkpromo-0.0.0-py3-none-any.whl"
    wheel.write_bytes(b"")
    full_env = clean_env(SPARK_HOME=str(home), SPARKPROMO_WHEEL=str(wheel), SPARK_LOG_LEVEL="WARN")
    full_env.update(env)
    return run_command([str(SUBMIT_SH), *args], env=full_env, cwd=tmp_path, timeout_s=120), home / "bin" / "calls.log"


def assert_refused(result: CommandResult, calls: Path, *needles: str) -> str:
    assert result.returncode == 2, result.describe()
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("spark-submit.sh: "), result.describe()
    for needle in needles:
        assert needle in lines[0], result.describe()
    assert result.stdout == ""
    called = calls.read_text().splitlines() if calls.exists() else []
    assert all(c == "--version" for c in called), f"Spark was started: {called}"
    return lines[0]


def test_submit_unreachable_master(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    result, calls = submit(tmp_path, "--master", f"spark://127.0.0.1:{port}", "run", "--sample")
    assert_refused(result, calls, "not reachable", f"127.0.0.1:{port}")


def test_submit_unknown_job(tmp_path: Path) -> None:
    result, calls = submit(tmp_path, "nosuchjob", "--json")
    assert_refused(result, calls, "unknown job 'nosuchjob'")
    assert not calls.exists()  # refused before even asking Spark its version


def test_submit_missing_wheel(tmp_path: Path) -> None:
    result, calls = submit(tmp_path, "--master", "local[1]", "clean", SPARKPROMO_WHEEL="/nonexistent/sparkpromo.whl")
    assert_refused(result, calls, "wheel not found", "/nonexistent/sparkpromo.whl")


def test_submit_wrong_spark_version(tmp_path: Path) -> None:
    result, calls = submit(tmp_path, "--master", "local[1]", "run", "--sample", spark_version="3.5.1")
    line = assert_refused(result, calls, "Spark 3.5.1", "does not match", f"delta-spark {version('delta-spark')}")
    assert "SPARK_HOME" in line


def test_submit_missing_spark_submit(tmp_path: Path) -> None:
    result, calls = submit(tmp_path, "run", SPARK_HOME=str(tmp_path / "no-spark-here"))
    assert_refused(result, calls, "spark-submit not found", "SPARK_HOME")


def submitted(calls: Path) -> str:
    """The one call the fake spark-submit received besides ``--version``."""
    return next(c for c in calls.read_text().splitlines() if c != "--version")


def test_submit_gives_a_local_driver_the_local_jvm_settings(tmp_path: Path) -> None:
    from sparkpromo.session import LOCAL_JVM

    result, calls = submit(tmp_path, "--master", "local[1]", "--conf", "spark.sql.codegen.cache.maxEntries=50",
                           "clean", "--run-date", "2026-11-01")
    assert result.returncode == 99, result.describe()  # the fake's own exit code: the job was submitted
    line = submitted(calls)
    ours = [f"--conf {k}={v}" for k, v in LOCAL_JVM.items()]
    assert all(o in line for o in ours), line
    # A --conf of the caller's for the same key comes after ours (spark-submit keeps the last one).
    assert line.index("spark.sql.codegen.cache.maxEntries=50") > line.index(ours[0])
    assert line.endswith("jobs/clean.py --run-date 2026-11-01")

    archive = tmp_path / "env.tar.gz"
    archive.write_bytes(b"")
    result, calls = submit(tmp_path / "yarn", "--master", "yarn", "clean", SPARKPROMO_ENV_ARCHIVE=str(archive))
    assert result.returncode == 99, result.describe()
    assert "UseParallelGC" not in submitted(calls) and "codegen" not in submitted(calls)  # a cluster's own choice


def test_submit_takes_relative_paths_from_where_it_was_called(tmp_path: Path) -> None:
    """The script works from its own directory; a relative path the caller gives still means the caller's file."""
    result, calls = submit(tmp_path, "--master", "local[1]", "clean", "--config", "mine.yaml",
                           "--conf-dir=confs", "--run-date", "2026-11-01",
                           SPARKPROMO_WHEEL="sparkpromo-0.0.0-py3-none-any.whl")
    assert result.returncode == 99, result.describe()
    line = submitted(calls)
    assert f"--py-files {tmp_path}/sparkpromo-0.0.0-py3-none-any.whl" in line, line
    assert line.endswith(f"jobs/clean.py --config {tmp_path}/mine.yaml --conf-dir={tmp_path}/confs "
                         "--run-date 2026-11-01"), line


def test_submit_routes_the_drivers_log_lines_to_stderr(tmp_path: Path) -> None:
    """spark-submit merges the Python driver's stderr into its stdout; spark-submit.sh sends sparkpromo's log lines
    and one-line errors back to stderr, leaves the job's output (the --json object) alone on stdout, and keeps
    spark-submit's exit code."""
    result, _ = submit(tmp_path, "--master", "local[1]", "clean", "--json")
    assert result.returncode == 99, result.describe()
    assert result.stdout.splitlines() == ['{"clean": {"silver_rows": 3}}'], result.describe()
    err = result.stderr.splitlines()
    assert "2026-11-01T10:00:00 INFO run=r1 sparkpromo.logs: stage=clean status=end elapsed_s=1.0" in err, err
    assert err[-1] == "error: clean failed: Boom", err


def test_submit_ships_a_packed_environment_to_a_cluster(tmp_path: Path) -> None:
    """A non-local master gets the environment archive on --archives and starts ./env/bin/python from it; the
    driver does too in cluster deploy mode; a local master ships no archive and uses the venv itself."""
    archive = tmp_path / "sparkpromo-env.tar.gz"
    archive.write_bytes(b"")
    for mode, driver in (("client", str(ROOT / ".venv" / "bin" / "python")), ("cluster", "./env/bin/python")):
        result, calls = submit(tmp_path / mode, "--master", "yarn", "--deploy-mode", mode, "clean",
                               SPARKPROMO_ENV_ARCHIVE=str(archive), PYTHON=str(ROOT / ".venv" / "bin" / "python"))
        assert result.returncode == 99, result.describe()
        line = submitted(calls)
        shipped = f"{archive}#env" + (",build/submit-env/conf.tar.gz#conf" if mode == "cluster" else "")
        assert f"--archives {shipped} " in line, line
        assert "--conf spark.pyspark.python=./env/bin/python" in line, line
        assert f"--conf spark.pyspark.driver.python={driver} " in line, line

    result, calls = submit(tmp_path / "local", "--master", "local[1]", "clean", SPARKPROMO_ENV_ARCHIVE=str(archive))
    assert result.returncode == 99, result.describe()
    assert "--archives" not in submitted(calls) and "./env/bin/python" not in submitted(calls)

    result, calls = submit(tmp_path / "missing", "--master", "yarn", "clean",
                           SPARKPROMO_ENV_ARCHIVE=str(tmp_path / "nope.tar.gz"))
    assert_refused(result, calls, "environment archive not found", "nope.tar.gz")
