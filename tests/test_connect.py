"""The pipeline through a real Spark Connect server (``--remote sc://...``) gives the tables of a classic run.

The module starts a local Spark Connect server (tests/connect_server.py: a local session with Spark's Connect plugin
and the suite's Delta jars) and stops it at the end. One generated shop is run twice: classic, in this process's
session, and through the server, from ``sparkpromo`` client processes that have no JVM of their own.

Every stage runs over Connect (see README, "Spark Connect"): ingest, clean (a full one and a daily incremental
one), features, train, recommend, measure and forget, two days and a forget and an ingest after it, each compared with
a classic run.
* They use Delta through DataFrames and SQL (``MERGE INTO``, ``DESCRIBE HISTORY``, ``VACUUM``...), which need only
  the Delta extension: the ``DeltaTable`` API would need Delta's Connect server plugin
  (``io.delta:delta-connect-server_2.13``), which Maven Central as reachable from here does not serve (404 for 4.0.0
  and 4.0.1).
* Ingest's ``foreachBatch`` function runs in a Python worker of the server (``PYSPARK_PYTHON``: a Python with
  sparkpromo, pandas and pyarrow), attached to the client's session: counts, the query id and a batch's error
  travel through the session's configuration.
* Recommend's plans are cut by checkpoints over Connect: whole, they nest deeper than protobuf decodes in one message
  (``DecodeError: ... Exceeded upb_DecodeOptions_MaxDepth``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from chispa import assert_approx_df_equality, assert_df_equality
from pyspark.sql import DataFrame, Row, SparkSession
from pyspark.sql import functions as F

from sparkpromo import cli, delta_io
from sparkpromo import columns as C
from tests.cluster import CommandResult, clean_env, free_port, is_listening, run_command, stop_group, tail
from tests.conftest import registry_text

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
RUN_DATE = "2026-11-01"
RUN_ID = "c1"
SERVER_START_S = 240
STAGE_TIMEOUT_S = 900
# Both runs read the same landing files; what differs per run is when rows were ingested.
RUN_SPECIFIC = (C.INGEST_TS,)
# Stages that need a classic session (the serverless bundle runs these on a job cluster): none.
CLASSIC_ONLY: tuple[str, ...] = ()
# The second day: re-sent and new events, a row to quarantine, an updated user.
DAY_TWO, DAY_TWO_ID, NEW_EVENTS = "2026-11-02", "c2", 20
KEY_ENV, KEY = "SPARKPROMO_HMAC_KEY", "connect-test-key-0123456789"
# Gold's keys: its doubles are compared within a tolerance (sums whose order follows each session's partitioning).
GOLD_KEYS = {"interactions": (C.USER_IDX, C.ITEM_IDX), "user_features": (C.USER_ID,), "item_features": (C.ITEM_ID,),
             "id_map": (C.ID_KIND, C.ORIGINAL_ID)}


@dataclass(frozen=True)
class Lakehouses:
    root: Path
    classic: Path
    connect: Path
    config: dict[str, Path]
    results: dict[str, CommandResult]
    # gold/recommendations of the Connect lakehouse: the version recommend wrote over Connect, and the one a classic
    # recommend of the same run (--force) wrote after it.
    recommend_versions: tuple[int, int]


@pytest.fixture(scope="module")
def connect_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Spark Connect server on a free port, started for this module and stopped after it (also on failure)."""
    root = tmp_path_factory.mktemp("connect-server")
    port = free_port()
    log = root / "server.log"
    # The server's Python workers (ingest's foreachBatch function) run this interpreter, which has sparkpromo.
    env = clean_env(PYTHONPATH=os.pathsep.join([str(ROOT / "src"), str(ROOT)]), PYSPARK_PYTHON=sys.executable)
    env.pop("SPARK_REMOTE", None)
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "tests.connect_server", str(port), str(root / "checkpoints")],
                                cwd=root, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        deadline = time.monotonic() + SERVER_START_S
        while not is_listening("127.0.0.1", port):
            assert proc.poll() is None, f"the Connect server exited with {proc.returncode}:\n{tail(log)}"
            assert time.monotonic() < deadline, f"no Connect server on {port} after {SERVER_START_S}s:\n{tail(log)}"
            time.sleep(1)
        yield f"sc://127.0.0.1:{port}"
    finally:
        stop_group(proc, grace_s=20)


def _config(root: Path, landing: Path) -> Path:
    lakehouse = root / "lakehouse"
    path = root / "run.yaml"
    path.write_text(yaml.safe_dump({
        "lakehouse": str(lakehouse), "landing": str(landing),
        "sources": {s: {"path": str(landing / s)} for s in ("events", "users", "items")},
        "generate": {"events": 1000},
        "spark": {"shuffle_partitions": 2},
        "train": {"folds": 2, "parallelism": 2,
                  "grid": {"rank": [4], "reg_param": [0.1], "alpha": [5.0], "max_iter": [5]}},
    }))
    return path


def _args(command: str, config: Path, run_date: str = RUN_DATE, run_id: str = RUN_ID) -> list[str]:
    return [command, "--conf-dir", str(ROOT / "conf"), "--config", str(config), "--run-date", run_date,
            "--run-id", run_id, "--json"]


def _client(args: list[str], url: str, cwd: Path) -> CommandResult:
    """``sparkpromo ARGS --remote URL`` in a client process (no JVM of its own)."""
    env = clean_env(PYTHONPATH=str(ROOT / "src"), **{KEY_ENV: KEY})
    env.pop("SPARK_REMOTE", None)
    return run_command([sys.executable, "-m", "sparkpromo.cli", *args, "--remote", url], env=env, cwd=cwd,
                       timeout_s=STAGE_TIMEOUT_S)


def _remote(command: str, config: Path, url: str, cwd: Path, run_date: str = RUN_DATE,
            run_id: str = RUN_ID) -> CommandResult:
    return _client(_args(command, config, run_date, run_id), url, cwd)


@pytest.fixture(scope="module")
def lakehouses(spark: SparkSession, connect_url: str, tmp_path_factory: pytest.TempPathFactory) -> Lakehouses:
    root = tmp_path_factory.mktemp("connect-runs")
    landing = root / "landing"
    classic, connect = root / "classic", root / "connect"
    classic.mkdir()
    connect.mkdir()
    configs = {"classic": _config(classic, landing), "connect": _config(connect, landing)}
    assert cli.main(_args("generate", configs["classic"])) == 0
    results: dict[str, CommandResult] = {}
    for stage in ("ingest", "clean", "features", "train"):
        assert cli.main(_args(stage, configs["classic"])) == 0, f"classic {stage} failed"
    for stage in ("ingest", "clean", "features", "train", "recommend"):
        results[stage] = _remote(stage, configs["connect"], connect_url, root)
        assert results[stage].returncode == 0, results[stage].describe()
    recs = str(connect / "lakehouse" / "gold" / "recommendations")
    over_connect = delta_io.version(spark, recs)
    with pytest.MonkeyPatch.context() as mp:  # the clients' environment: coupon codes are keyed with it
        mp.setenv(KEY_ENV, KEY)
        assert cli.main([*_args("recommend", configs["connect"]), "--force"]) == 0, "classic recommend"
    classic_version = delta_io.version(spark, recs)
    assert over_connect is not None and classic_version is not None
    return Lakehouses(root, classic / "lakehouse", connect / "lakehouse", configs, results,
                      (over_connect, classic_version))


def _table(spark: SparkSession, lakehouse: Path, layer: str, name: str) -> DataFrame:
    df = spark.read.format("delta").load(str(lakehouse / layer / name))
    return df.drop(*[c for c in RUN_SPECIFIC if c in df.columns])


@pytest.mark.parametrize("layer,name", [("bronze", "events"), ("bronze", "users"), ("bronze", "items"),
                                        ("silver", "events"), ("silver", "users"), ("silver", "items"),
                                        ("quarantine", "rows")])
def test_ingest_and_clean_over_connect_equal_classic(spark: SparkSession, lakehouses: Lakehouses, layer: str,
                                                      name: str) -> None:
    over_connect = _table(spark, lakehouses.connect, layer, name)
    classic = _table(spark, lakehouses.classic, layer, name)
    assert over_connect.count() > 0
    assert_df_equality(over_connect, classic, ignore_row_order=True, ignore_nullable=True)


def test_train_over_connect_publishes_and_scores_popularity_as_classic(spark: SparkSession,
                                                                       lakehouses: Lakehouses) -> None:
    """The model is trained, registered and published over Connect; the popularity baseline (deterministic: seeded
    hash folds and holdout, ties broken by item) scores as in the classic run: the same lists, so the same metrics up
    to the order of floating-point sums (novelty's mean of logs), which follows each session's partitioning."""
    assert registry_text(lakehouses.connect / "registry" / "LATEST").strip() == RUN_ID
    assert (lakehouses.connect / "registry" / RUN_ID / "model" / "metadata").is_dir()

    def popularity(lakehouse: Path) -> DataFrame:
        return (spark.read.format("delta").load(str(lakehouse / "metrics" / "model"))
                .where(F.col("contender") == "popularity").drop("recorded_at", "_recorded_at"))

    assert popularity(lakehouses.connect).count() > 0
    assert_approx_df_equality(popularity(lakehouses.connect), popularity(lakehouses.classic), precision=1e-12,
                              ignore_row_order=True, ignore_nullable=True)


def test_ingest_over_connect_counts_what_it_appended(spark: SparkSession, lakehouses: Lakehouses) -> None:
    """The counts the server-side batches handed back through the session: each source's rows and its one file."""
    counts = lakehouses.results["ingest"].last_json()
    for source in ("events", "users", "items"):
        bronze = spark.read.format("delta").load(str(lakehouses.connect / "bronze" / source))
        assert counts[f"{source}_rows"] == bronze.count() > 0, source
        assert counts[f"{source}_files"] == counts[f"{source}_new_files"] == 1, source
        assert counts[f"{source}_skipped_files"] == 0, source


def test_ingest_over_connect_fails_with_the_batchs_one_line_error(lakehouses: Lakehouses, connect_url: str,
                                                                  tmp_path: Path) -> None:
    """An error a batch raises on the server reaches the client as the one line a classic ingest gives."""
    config = _config(tmp_path, lakehouses.config["classic"].parent.parent / "landing")
    result = _client([*_args("ingest", config), "--set", 'sources.events.patterns=["*.nomatch"]'], connect_url,
                     tmp_path)
    assert result.returncode == 1, result.describe()
    assert result.stderr.strip().splitlines()[-1].startswith(
        "error: ingest failed: IngestError: sources.events: no file under "), result.describe()
    assert "matches *.nomatch" in result.stderr


@pytest.mark.parametrize("name", sorted(GOLD_KEYS))
def test_features_over_connect_equal_classic(spark: SparkSession, lakehouses: Lakehouses, name: str) -> None:
    """Features runs over Connect without Delta's Connect plugin (no ``DeltaTable`` call on its path) and builds the
    gold tables a classic run builds."""
    assert lakehouses.results["features"].last_json()["mode"] == "full"
    keys = GOLD_KEYS[name]
    over_connect, classic = (_table(spark, lake, "gold", name) for lake in (lakehouses.connect, lakehouses.classic))
    order = [*keys, *sorted(c for c in classic.columns if c not in keys)]
    assert over_connect.count() > 0
    assert_approx_df_equality(over_connect.select(*order).orderBy(*keys), classic.select(*order).orderBy(*keys),
                              precision=1e-9, ignore_nullable=True)


def test_recommend_over_connect_equals_classic(spark: SparkSession, lakehouses: Lakehouses) -> None:
    """Recommend over Connect (its plans cut by checkpoints) lists the offers a classic recommend of the same run,
    model and inputs lists."""
    assert lakehouses.results["recommend"].last_json()["rows"] > 0, lakehouses.results["recommend"].stdout
    recs = str(lakehouses.connect / "gold" / "recommendations")
    over_connect, classic = (spark.read.format("delta").option("versionAsOf", v).load(recs)
                             for v in lakehouses.recommend_versions)
    assert over_connect.count() > 0
    assert_df_equality(over_connect, classic, ignore_row_order=True)


def test_classic_recommend_serves_the_model_trained_over_connect(spark: SparkSession, lakehouses: Lakehouses
                                                                ) -> None:
    recs = spark.read.format("delta").load(str(lakehouses.connect / "gold" / "recommendations"))
    assert recs.where(F.col(C.MODEL_RUN_ID) == RUN_ID).count() > 0


def test_measure_over_connect_reads_the_offers(lakehouses: Lakehouses, connect_url: str) -> None:
    result = _remote("measure", lakehouses.config["connect"], connect_url, lakehouses.root)
    assert result.returncode == 0, result.describe()
    assert "runs_measured" in result.last_json()


# The tests below change the lakehouses, so they come after every test of the first day's tables (pytest runs a
# module's tests in file order): a second day's batch cleaned incrementally, a user forgotten, then a file with that
# user's event ingested.

@dataclass(frozen=True)
class DayTwo:
    clean: CommandResult
    features: CommandResult
    quarantined_id: str


def _write_day_two(landing: Path, seen: list[Row]) -> str:
    """A second landing batch: 20 events of the first re-sent; new views, on the run's first day, of the
    (event id, user, item)s in ``seen`` (rows the first clean kept); one with an unknown event type (quarantined; its
    id is returned); and the first user's export again with another country."""
    lines = (landing / "events" / "part-00000.csv").read_text(encoding="utf-8").splitlines()
    new = [f"{e}x,{u},{i},view,2026-11-01T10:{n:02d}:00Z,,,s-day2" for n, (e, u, i) in enumerate(seen)]
    bad = f"{seen[0][0]}bad,{seen[0][1]},{seen[0][2]},click,2026-11-01T11:00:00Z,,,s-day2"
    header, body = lines[0], [*lines[1:21], *new, bad]
    (landing / "events" / "day2.csv").write_text("\n".join([header, *body]) + "\n", encoding="utf-8")
    first = json.loads((landing / "users" / "users.jsonl").read_text(encoding="utf-8").splitlines()[0])
    first["country"] = "FR" if first.get("country") != "FR" else "DE"
    (landing / "users" / "users-day2.jsonl").write_text(json.dumps(first) + "\n", encoding="utf-8")
    return f"{seen[0][0]}bad"


@pytest.fixture(scope="module")
def day_two(spark: SparkSession, lakehouses: Lakehouses, connect_url: str) -> DayTwo:
    """Day two: ingest, clean and features classic for one lakehouse and over Connect for the other. The clean is
    incremental: a MERGE into silver and quarantine, which Delta's SQL runs over Connect."""
    seen = (_table(spark, lakehouses.classic, "silver", "events").orderBy(C.EVENT_ID)
            .select(C.EVENT_ID, C.USER_ID, C.ITEM_ID).limit(NEW_EVENTS).collect())
    quarantined = _write_day_two(lakehouses.config["classic"].parent.parent / "landing", seen)
    results = {}
    for stage in ("ingest", "clean", "features"):
        assert cli.main(_args(stage, lakehouses.config["classic"], DAY_TWO, DAY_TWO_ID)) == 0, f"classic {stage}"
        results[stage] = _remote(stage, lakehouses.config["connect"], connect_url, lakehouses.root,
                                 run_date=DAY_TWO, run_id=DAY_TWO_ID)
        assert results[stage].returncode == 0, results[stage].describe()
    return DayTwo(results["clean"], results["features"], quarantined)


@pytest.mark.parametrize("name", ["events", "users"])
def test_day_two_ingest_over_connect_equals_classic(spark: SparkSession, day_two: DayTwo, lakehouses: Lakehouses,
                                                    name: str) -> None:
    """The second ingest over Connect appended the new files once, as the classic one did."""
    over_connect = _table(spark, lakehouses.connect, "bronze", name)
    assert over_connect.select(C.SOURCE_FILE).distinct().count() == 2
    assert_df_equality(over_connect, _table(spark, lakehouses.classic, "bronze", name), ignore_row_order=True,
                       ignore_nullable=True)


@pytest.mark.parametrize("layer,name", [("silver", "events"), ("silver", "users"), ("quarantine", "rows")])
def test_incremental_clean_over_connect_equals_classic(spark: SparkSession, day_two: DayTwo, lakehouses: Lakehouses,
                                                       layer: str, name: str) -> None:
    """Both day-two cleans were incremental and took the batch in; the tables are equal."""
    assert day_two.clean.last_json()["mode"] == "incremental", day_two.clean.stdout
    last = spark.sql(f"DESCRIBE HISTORY {delta_io.table_ref(str(lakehouses.connect / layer / name))} LIMIT 1")
    assert last.first()["operation"] == "MERGE"
    over_connect = _table(spark, lakehouses.connect, layer, name)
    classic = _table(spark, lakehouses.classic, layer, name)
    assert_df_equality(over_connect, classic, ignore_row_order=True, ignore_nullable=True)


def test_day_two_batch_reached_silver_and_quarantine(spark: SparkSession, day_two: DayTwo,
                                                     lakehouses: Lakehouses) -> None:
    events = _table(spark, lakehouses.connect, "silver", "events")
    assert events.where(F.col(C.EVENT_ID).endswith("x")).count() == NEW_EVENTS
    quarantine = _table(spark, lakehouses.connect, "quarantine", "rows")
    assert quarantine.where(F.col(C.Q_PAYLOAD).contains(day_two.quarantined_id)).count() == 1


@pytest.mark.parametrize("name", sorted(GOLD_KEYS))
def test_day_two_features_over_connect_equal_classic(spark: SparkSession, day_two: DayTwo, lakehouses: Lakehouses,
                                                     name: str) -> None:
    keys = GOLD_KEYS[name]
    over_connect, classic = (_table(spark, lake, "gold", name) for lake in (lakehouses.connect, lakehouses.classic))
    order = [*keys, *sorted(c for c in classic.columns if c not in keys)]
    assert_approx_df_equality(over_connect.select(*order).orderBy(*keys), classic.select(*order).orderBy(*keys),
                              precision=1e-9, ignore_nullable=True)


@pytest.fixture(scope="module")
def forgotten(day_two: DayTwo, lakehouses: Lakehouses, connect_url: str) -> tuple[str, CommandResult]:
    """The first event's user forgotten: classic in one lakehouse, over Connect (merges, purge and vacuum in Delta's
    SQL) in the other."""
    landing = lakehouses.config["classic"].parent.parent / "landing"
    user = (landing / "events" / "part-00000.csv").read_text(encoding="utf-8").splitlines()[1].split(",")[1]
    args = {lake: ["forget", "--user", user, "--conf-dir", str(ROOT / "conf"), "--config",
                   str(lakehouses.config[lake]), "--json"] for lake in ("classic", "connect")}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(KEY_ENV, KEY)
        assert cli.main(args["classic"]) == 0
    result = _client(args["connect"], connect_url, lakehouses.root)
    assert result.returncode == 0, result.describe()
    return user, result


FORGET_TABLES = [("bronze", "events"), ("bronze", "users"), ("silver", "events"), ("silver", "users"),
                 ("quarantine", "rows"), ("gold", "id_map")]


@pytest.mark.parametrize("layer,name", FORGET_TABLES)
def test_forget_over_connect_equals_classic(spark: SparkSession, forgotten: tuple[str, CommandResult],
                                            lakehouses: Lakehouses, layer: str, name: str) -> None:
    over_connect = _table(spark, lakehouses.connect, layer, name)
    classic = _table(spark, lakehouses.classic, layer, name)
    assert_df_equality(over_connect, classic, ignore_row_order=True, ignore_nullable=True)


def test_forget_over_connect_erases_the_user(spark: SparkSession, forgotten: tuple[str, CommandResult],
                                             lakehouses: Lakehouses) -> None:
    user, result = forgotten
    assert result.last_json()["deleted.silver.events"] > 0, result.stdout
    for layer, name in (("bronze", "events"), ("silver", "events"), ("gold", "recommendations")):
        df = _table(spark, lakehouses.connect, layer, name)
        assert df.where(F.col(C.USER_ID) == user).count() == 0, f"{layer}/{name}"
    hashes = [spark.read.format("delta").load(str(lake / "privacy" / "forgotten")).select("id_hash")
              for lake in (lakehouses.connect, lakehouses.classic)]
    assert hashes[0].count() == 1
    assert_df_equality(hashes[0], hashes[1])


def test_ingest_over_connect_keeps_a_forgotten_user_out(spark: SparkSession, forgotten: tuple[str, CommandResult],
                                                        lakehouses: Lakehouses, connect_url: str) -> None:
    """A file that arrives after the forget and holds the user's event: ingest over Connect drops the row (the key
    that hashes forgotten ids travels to the server with the batch function) and counts it."""
    user = forgotten[0]
    landing = lakehouses.config["classic"].parent.parent / "landing"
    header = (landing / "events" / "part-00000.csv").read_text(encoding="utf-8").splitlines()[0]
    (landing / "events" / "day3.csv").write_text(
        f"{header}\nday3-1,{user},p00001,view,2026-11-02T10:00:00Z,,,s-day3\n", encoding="utf-8")
    result = _remote("ingest", lakehouses.config["connect"], connect_url, lakehouses.root, run_date="2026-11-03",
                     run_id="c3")
    assert result.returncode == 0, result.describe()
    counts = result.last_json()
    assert (counts["events_new_files"], counts["events_forgotten"], counts["events_rows"]) == (1, 1, 0)
    bronze = _table(spark, lakehouses.connect, "bronze", "events")
    assert bronze.where(F.col(C.USER_ID) == user).count() == 0
