"""Reruns that notice change (issue 18): a stage is skipped only when its table versions, the configuration it reads
(:data:`sparkpromo.pipeline.STAGE_CONFIG`, hashed) and the package version are all what its last success
recorded. Changing one campaign reruns recommend (and measure, whose input moved) and nothing else; changing
nothing reruns nothing; a new package version reruns every stage."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

import sparkpromo
from sparkpromo import columns as C
from sparkpromo import delta_io
from sparkpromo import tables as T
from sparkpromo.cli import main
from sparkpromo.config import AppConfig, load_config
from sparkpromo.pipeline import (
    DATED_STAGES,
    STAGE_CONFIG,
    STAGE_IO,
    STAGES,
    config_digest,
    rerun_reason,
    stage_fingerprint,
)
from tests.conftest import CONF_DIR, make_config

DAY = dt.date(2026, 11, 1)
SKIPPABLE = tuple(s for s in STAGES if s in STAGE_IO)  # every stage but ingest


def fingerprints(cfg: AppConfig) -> dict[str, dict[str, Any]]:
    return {s: stage_fingerprint(cfg, s, DAY) for s in SKIPPABLE}


def changed_stages(before: AppConfig, after: AppConfig) -> set[str]:
    old, new = fingerprints(before), fingerprints(after)
    return {s for s in SKIPPABLE if old[s] != new[s]}


@pytest.fixture(scope="module")
def base_cfg() -> AppConfig:
    return load_config("local", CONF_DIR)


def test_every_stage_declares_the_configuration_it_reads_and_every_path_resolves(base_cfg: AppConfig) -> None:
    assert set(STAGE_CONFIG) == set(SKIPPABLE) and DATED_STAGES <= set(SKIPPABLE)
    for stage, paths in STAGE_CONFIG.items():
        for path in paths:
            assert len(config_digest(base_cfg, path)) == 64, (stage, path)


def test_changing_a_campaign_a_rule_or_the_grid_changes_only_the_stages_that_read_it(base_cfg: AppConfig) -> None:
    camps = list(base_cfg.campaigns)
    offer = dataclasses.replace(camps[0].offer, discount_pct=camps[0].offer.discount_pct + 1)
    discount = dataclasses.replace(base_cfg, campaigns=(dataclasses.replace(camps[0], offer=offer), *camps[1:]))
    assert changed_stages(base_cfg, discount) == {"recommend"}  # measure does not read offers

    generic = next(i for i, c in enumerate(camps) if c.audience is not None)
    rule = dataclasses.replace(camps[generic].audience, all=())
    ruled = [*camps]
    ruled[generic] = dataclasses.replace(camps[generic], audience=rule)
    assert changed_stages(base_cfg, dataclasses.replace(base_cfg, campaigns=tuple(ruled))) == {"recommend"}

    budget = [*camps]
    budget[generic] = dataclasses.replace(camps[generic], budget=camps[generic].budget + 1)
    assert changed_stages(base_cfg, dataclasses.replace(base_cfg, campaigns=tuple(budget))) == {"recommend",
                                                                                                "measure"}
    # a campaign's end date decides whether measure gives it a share of the budgets on the next run date
    ends = [*camps]
    ends[generic] = dataclasses.replace(camps[generic], valid_to=camps[generic].valid_from)
    assert changed_stages(base_cfg, dataclasses.replace(base_cfg, campaigns=tuple(ends))) == {"recommend",
                                                                                              "measure"}
    # the coupon codes' key (clean reads it too, for pseudonyms)
    keyed = dataclasses.replace(base_cfg, privacy=dataclasses.replace(base_cfg.privacy, key_env="OTHER_KEY"))
    assert {"recommend", "clean"} <= changed_stages(base_cfg, keyed)
    grid = dataclasses.replace(base_cfg.train.grid, rank=(*base_cfg.train.grid.rank, 64))
    regrid = dataclasses.replace(base_cfg, train=dataclasses.replace(base_cfg.train, grid=grid))
    assert changed_stages(base_cfg, regrid) == {"train"}

    window = dataclasses.replace(base_cfg.features, lookback_days=30)
    assert changed_stages(base_cfg, dataclasses.replace(base_cfg, features=window)) == {"features"}
    assert changed_stages(base_cfg, base_cfg) == set()


def test_a_stage_reruns_when_its_run_date_tables_config_or_version_changed(base_cfg: AppConfig) -> None:
    recorded = {"io": {"gold.interactions": 3, "metrics.model": None}, "result": {},
                "fingerprint": stage_fingerprint(base_cfg, "recommend", DAY)}
    same = stage_fingerprint(base_cfg, "recommend", DAY)
    assert rerun_reason(recorded, {"gold.interactions": 3, "metrics.model": None}, same) is None
    moved = {"gold.interactions": 4, "metrics.model": None}
    assert rerun_reason(recorded, moved, same) == "tables:gold.interactions"
    later = stage_fingerprint(base_cfg, "recommend", DAY + dt.timedelta(days=1))
    assert rerun_reason(recorded, recorded["io"], later) == "run_date:2026-11-01->2026-11-02"
    assert stage_fingerprint(base_cfg, "train", DAY) == stage_fingerprint(base_cfg, "train", DAY.replace(day=2))
    assert rerun_reason({**recorded, "fingerprint": None}, recorded["io"], same) == "no_fingerprint"
    decided = {**same, "data": {"campaign_actions": "d1"}}
    assert rerun_reason({**recorded, "fingerprint": decided}, recorded["io"], decided) is None
    assert rerun_reason({**recorded, "fingerprint": decided}, recorded["io"],
                        {**same, "data": {"campaign_actions": "d2"}}) == "data:campaign_actions"
    assert rerun_reason({**recorded, "fingerprint": {**same, "version": "0.0.1"}}, moved, same) == \
        f"version:0.0.1->{sparkpromo.__version__};tables:gold.interactions"


def test_a_new_package_version_changes_every_stage(base_cfg: AppConfig, monkeypatch: pytest.MonkeyPatch) -> None:
    before = fingerprints(base_cfg)
    monkeypatch.setattr(sparkpromo, "__version__", "99.0.0")
    after = fingerprints(base_cfg)
    assert {s for s in SKIPPABLE if before[s] != after[s]} == set(SKIPPABLE)


# --------------------------------------------------------------------------------------------------------------
# End to end, through `sparkpromo run --json` on one small generated shop
# --------------------------------------------------------------------------------------------------------------
RUN_DATE = DAY.isoformat()
SETS = ("train.grid.rank=[4]", "train.grid.max_iter=[3]", "train.folds=2", "spark.shuffle_partitions=2")


def run_json(capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[dict[str, Any], str]:
    """``run --sample --json`` for run id r1; the JSON result and what was logged."""
    capsys.readouterr()
    sets = [a for s in SETS for a in ("--set", s)]
    code = main(["run", "--sample", "--events", "1000", "--run-id", "r1", "--json", "--conf-dir", str(CONF_DIR),
                 "--run-date", RUN_DATE, *sets, *extra])
    out = capsys.readouterr()
    assert code == 0, out.err[-2000:]
    return json.loads(out.out.strip().splitlines()[-1]), out.err


def skipped(result: dict[str, Any]) -> dict[str, bool]:
    return {s: result[f"{s}.skipped"] for s in STAGES}


def recorded_fingerprints(spark: SparkSession, cfg: AppConfig) -> dict[str, str]:
    rows = delta_io.read(spark, cfg.table("metrics", "stages")).where(F.col(C.RUN_ID) == "r1").collect()
    return {r["stage"]: r["fingerprint"] for r in rows}


@pytest.mark.slow
def test_reruns_notice_a_changed_campaign_and_a_new_version_and_nothing_else(
        spark: SparkSession, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("SPARKPROMO_LAKEHOUSE", str(tmp_path / "lakehouse"))
    monkeypatch.setenv("SPARKPROMO_LANDING", str(tmp_path / "landing"))
    monkeypatch.chdir(tmp_path)
    cfg = make_config(tmp_path)  # the CLI's lakehouse layout: only table paths are read from it
    tables = sorted({t.key for ins, outs in STAGE_IO.values() for t in ins + outs}
                    | {T.STAGE_RUNS.key, T.CAMPAIGN_METRICS.key})

    first, _ = run_json(capsys)
    assert not any(skipped(first).values())
    # Each campaign's fairness figures, next to the popularity baseline's, are kept per run in metrics/campaigns.
    stored = delta_io.read(spark, T.CAMPAIGN_METRICS.uri(cfg)).where(F.col(C.RUN_ID) == "r1").collect()
    by_campaign: dict[str, dict[str, float]] = {}
    for r in stored:
        by_campaign.setdefault(r[C.CAMPAIGN_ID], {})[r["metric"]] = r["value"]
    assert set(by_campaign) == set(first["recommend.campaigns"])
    for cid, m in by_campaign.items():
        summary = first["recommend.campaigns"][cid]
        numbers = {k: float(v) for k, v in summary.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        assert m == pytest.approx(numbers), cid
    assert any({"coverage", "gini", "baseline_coverage", "baseline_gini"} <= set(m) for m in by_campaign.values())
    versions = {t: delta_io.version(spark, T.BY_KEY[t].uri(cfg)) for t in tables}
    fps = recorded_fingerprints(spark, cfg)

    # Nothing changed: every stage is skipped and no table moves. Ingest never skips: it looks for new files
    # and, finding none, appends nothing and records nothing.
    same, _ = run_json(capsys)
    assert skipped(same) == {s: s != "ingest" for s in STAGES}
    assert same["ingest.events_rows"] == 0
    assert {t: delta_io.version(spark, T.BY_KEY[t].uri(cfg)) for t in tables} == versions
    assert same["recommend.rows"] == first["recommend.rows"]

    # One campaign's discount changes: recommend reruns because of it; measure reruns only because its input,
    # gold.recommendations, moved (it does not read offers); every other stage is skipped.
    base = yaml.safe_load((CONF_DIR / "base.yaml").read_text())
    base["campaigns"][0]["offer"]["discount_pct"] += 1
    changed = tmp_path / "campaigns.yaml"
    changed.write_text(yaml.safe_dump({"campaigns": base["campaigns"]}))
    after, log = run_json(capsys, "--config", str(changed))
    assert skipped(after) == {"ingest": False, "clean": True, "features": True, "train": True,
                              "recommend": False, "measure": False}
    assert "stage=recommend status=rerun reason=config:campaigns run_id=r1" in log
    assert "stage=measure status=rerun reason=tables:gold.recommendations run_id=r1" in log
    now = recorded_fingerprints(spark, cfg)
    assert now["recommend"] != fps["recommend"]
    assert {s: now[s] for s in now if s != "recommend"} == {s: fps[s] for s in fps if s != "recommend"}
    moved = {t for t in tables if delta_io.version(spark, T.BY_KEY[t].uri(cfg)) != versions[t]}
    # Only what recommend and measure write (measure commits nothing to a table whose rows it leaves as they were).
    assert T.RECOMMENDATIONS.key in moved and T.STAGE_RUNS.key in moved
    assert moved <= {t.key for t in (*STAGE_IO["recommend"][1], *STAGE_IO["measure"][1], T.CAMPAIGN_METRICS,
                                     T.STAGE_RUNS)}

    again, _ = run_json(capsys, "--config", str(changed))
    assert skipped(again) == {s: s != "ingest" for s in STAGES}

    # A sample of another size on the same lakehouse: its files would have the names ingest has read already, so
    # the run would go on with the old shop. It stops instead, before writing anything.
    capsys.readouterr()
    bigger = ["run", "--sample", "--events", "1200", "--run-id", "r1", "--conf-dir", str(CONF_DIR),
              "--run-date", RUN_DATE, *[a for s in SETS for a in ("--set", s)]]
    assert main(bigger) == 1
    assert "generated with other events and the lakehouse" in capsys.readouterr().err
    assert delta_io.version(spark, T.BRONZE_EVENTS.uri(cfg)) == versions[T.BRONZE_EVENTS.key]

    # With the feedback options on, measure writes its decisions after recommend read the earlier ones: the second
    # run of the same date skips both (recommend once compared the decisions table's version, which measure had
    # just moved, so every rerun ran recommend and measure again).
    feedback = ("--config", str(changed), "--set", "measure.pause_negative=true")
    run_json(capsys, *feedback)
    settled, log = run_json(capsys, *feedback)
    assert skipped(settled) == {s: s != "ingest" for s in STAGES}, log[-3000:]

    # A new package version: every stage runs again.
    old_version = sparkpromo.__version__
    monkeypatch.setattr(sparkpromo, "__version__", "99.0.0")
    upgraded, log = run_json(capsys, "--config", str(changed))
    assert skipped(upgraded) == {s: False for s in STAGES}
    assert f"stage=clean status=rerun reason=version:{old_version}->99.0.0 run_id=r1" in log
    assert upgraded["clean.events.silver_rows"] == first["clean.events.silver_rows"]


def test_one_read_of_the_run_record_gives_each_stages_latest_row_and_the_runs_own(spark: SparkSession,
                                                                                  tmp_path: Path) -> None:
    """``stage_rows`` returns one row per stage however many runs were recorded (what the manifest is built from),
    plus the asked stage's row for the asked run id; the manifest and ``last_record`` agree with it."""
    from sparkpromo.pipeline import RunContext, last_record, manifest_versions, record_stage_time, stage_rows

    cfg = make_config(tmp_path)
    silver = T.SILVER_EVENTS.key
    for run_id, stage, version in [("r1", "clean", 1), ("r1", "features", 5), ("r2", "clean", 3),
                                   ("r3", "clean", 7)]:
        ctx = RunContext(run_id, DAY)
        record_stage_time(spark, cfg, ctx, stage, 1.0, {silver: version, T.SILVER_USERS.key: None},
                          {"n": version}, {"version": "x"})
    latest, mine = stage_rows(spark, cfg, "clean", "r2")
    assert sorted((r["stage"], r[C.RUN_ID]) for r in latest) == [("clean", "r3"), ("features", "r1")]
    assert mine is not None and (mine["stage"], mine[C.RUN_ID]) == ("clean", "r2")
    assert stage_rows(spark, cfg, "clean", "r9")[1] is None
    # features reads silver, it does not own it: the manifest holds clean's latest version only
    assert manifest_versions(spark, cfg) == {T.SILVER_EVENTS.uri(cfg): 7}
    r2, newest = last_record(spark, cfg, "clean", "r2"), last_record(spark, cfg, "clean")
    assert r2 is not None and r2["result"] == {"n": 3} and r2["io"][silver] == 3
    assert newest is not None and newest["result"] == {"n": 7}


def test_a_records_time_is_the_real_instant_whatever_the_drivers_time_zone(spark: SparkSession, tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """A driver in New York and one in UTC record the same instant: the later record is the latest, as the
    manifest and the next stage's read take it (Spark reads a naive Python datetime as the driver's local time)."""
    import time

    from sparkpromo.pipeline import RunContext, record_stage_time

    cfg = make_config(tmp_path)
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        before = dt.datetime.now(dt.UTC).replace(tzinfo=None)
        record_stage_time(spark, cfg, RunContext("r1", DAY), "clean", 1.0, {}, {}, {})
        after = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()
    # the session's time zone is UTC: the text of the stored instant is its UTC wall-clock time
    stored = delta_io.read(spark, T.STAGE_RUNS.uri(cfg)).select(F.date_format("finished_at", "yyyy-MM-dd HH:mm:ss")
                                                                ).first()[0]
    assert before.replace(microsecond=0) <= dt.datetime.fromisoformat(stored) <= after


def test_the_run_record_is_compacted_as_runs_add_small_files(spark: SparkSession, tmp_path: Path) -> None:
    """``metrics/stages`` (read whole by every stage) is declared with Delta's auto compaction: once enough small
    files gather (50 by default, 4 here), a write is followed by a compaction, so the file count stays bounded; the
    records read back the same."""
    from delta.tables import DeltaTable

    from sparkpromo.pipeline import RunContext, last_record, record_stage_time, stage_rows

    cfg = make_config(tmp_path)
    uri = T.STAGE_RUNS.uri(cfg)
    key = "spark.databricks.delta.autoCompact.minNumFiles"
    before = spark.conf.get(key, None)
    spark.conf.set(key, "4")
    try:
        for n in range(9):
            record_stage_time(spark, cfg, RunContext(f"r{n}", DAY), "clean", 1.0, {T.SILVER_EVENTS.key: n}, {"n": n},
                              {"version": "x"})
    finally:
        if before is None:
            spark.conf.unset(key)
        else:
            spark.conf.set(key, before)
    table = DeltaTable.forPath(spark, uri)
    assert table.detail().first()["properties"].get("delta.autoOptimize.autoCompact") == "true"
    assert "OPTIMIZE" in {r["operation"] for r in table.history().collect()}
    assert len(delta_io.read(spark, uri).inputFiles()) < 4
    assert delta_io.read(spark, uri).count() == 9
    latest, mine = stage_rows(spark, cfg, "clean", "r3")
    assert [r[C.RUN_ID] for r in latest] == ["r8"] and mine is not None and mine[C.RUN_ID] == "r3"
    assert last_record(spark, cfg, "clean") == {"io": {T.SILVER_EVENTS.key: 8}, "result": {"n": 8},
                                                "fingerprint": {"version": "x"}}


def test_a_runs_stages_query_the_run_record_once_and_again_after_any_other_commit(
        spark: SparkSession, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Between two stages of a run, ``metrics/stages`` changes only by the row the first one wrote: the next read is
    the last one plus that row, with no query of the table. Any other commit (another process's record), or the
    table recreated at the same path, makes the next read query the table again, and see what changed. A first
    record of a run id and stage is an append; a rerun's record replaces its row."""
    import shutil

    from delta.tables import DeltaTable

    from sparkpromo import run_records, schemas
    from sparkpromo.pipeline import RunContext, manifest_versions, record_stage_time, stage_rows

    cfg = make_config(tmp_path)
    uri = T.STAGE_RUNS.uri(cfg)
    silver = T.SILVER_EVENTS.key
    queried: list[str | None] = []
    query = run_records._query
    monkeypatch.setattr(run_records, "_query", lambda *a: queried.append(a[3]) or query(*a))
    r1 = RunContext("r1", DAY)

    def record(stage: str, n: int, ctx: RunContext = r1) -> None:
        record_stage_time(spark, cfg, ctx, stage, 1.0, {silver: n}, {"n": n}, {"version": "x"})

    def result(row: Any) -> Any:
        return None if row is None else json.loads(row["result"])

    assert stage_rows(spark, cfg, "clean", "r1") == ([], None)  # no table yet
    record("clean", 1)
    latest, mine = stage_rows(spark, cfg, "features", "r1")
    assert [(r["stage"], result(r)) for r in latest] == [("clean", {"n": 1})] and mine is None
    record("features", 2)
    latest, mine = stage_rows(spark, cfg, "features", "r1")
    assert sorted(r["stage"] for r in latest) == ["clean", "features"] and result(mine) == {"n": 2}
    assert manifest_versions(spark, cfg) == {T.SILVER_EVENTS.uri(cfg): 1}
    assert queried == []
    # What the reads answered without a query is what a query of the table gives.
    commit = delta_io.latest_commit(spark, uri)
    assert commit is not None
    fresh = query(spark, uri, commit, "r1")
    assert {s: r.asDict() for s, r in fresh.latest.items()} == {r["stage"]: r.asDict() for r in latest}
    assert fresh.runs["r1"]["features"].asDict() == mine.asDict()

    def foreign(run_id: str, n: int) -> Any:  # a record another process could have written
        return spark.createDataFrame([(run_id, DAY, "clean", 1.0, dt.datetime(2099, 1, 1) + dt.timedelta(minutes=n),
                                       "{}", json.dumps({"n": n}), None)], schemas.STAGE_RUNS)

    # Another writer's commit: the next read queries, and sees its row.
    delta_io.append(foreign("r2", 9), uri)
    latest, mine = stage_rows(spark, cfg, "clean", "r2")
    assert queried == ["r2"] and result(mine) == {"n": 9}
    assert [r[C.RUN_ID] for r in latest if r["stage"] == "clean"] == ["r2"]

    # A rerun's record replaces its row (this read has not seen r1's rows, so it cannot tell it is a first one).
    record("clean", 3)
    ops = [(r["operation"], r["operationParameters"]["mode"])
           for r in DeltaTable.forPath(spark, uri).history().orderBy("version").collect()]
    assert ops[:2] == [("WRITE", "Append"), ("WRITE", "Append")] and ops[-1] == ("WRITE", "Overwrite")
    rows = delta_io.read(spark, uri).where((F.col(C.RUN_ID) == "r1") & (F.col("stage") == "clean")).collect()
    assert [json.loads(r["result"]) for r in rows] == [{"n": 3}]

    # The table recreated at the same path, up to the version the last read had: a query tells them apart.
    stage_rows(spark, cfg)  # the read now knows its commit's time
    version = delta_io.version(spark, uri)
    assert version is not None
    shutil.rmtree(uri)
    for n in range(100, 101 + version):
        delta_io.append(foreign("r3", n), uri)
    assert delta_io.version(spark, uri) == version
    queried.clear()
    latest, _ = stage_rows(spark, cfg)
    assert queried == [None] and [result(r) for r in latest] == [{"n": 100 + version}]


def test_a_clean_records_the_bronze_version_it_read_not_an_append_made_while_it_ran(
        spark: SparkSession, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another process's ingest commits while clean runs: clean's record names the bronze version clean read, so a
    rerun of the run id is not skipped and cleans the rows that came in meanwhile (recorded at the latest version,
    the rerun would have been skipped with those rows never cleaned)."""
    from concurrent.futures import ThreadPoolExecutor

    from sparkpromo import pipeline
    from sparkpromo.ingest import run_ingest
    from sparkpromo.pipeline import RunContext, last_record, run_stage

    landing = tmp_path / "landing"
    header = "event_id,user_id,product_id,event_type,event_time,price,quantity,session_id\n"

    def events(name: str, first: int, n: int) -> None:
        (landing / "events" / name).write_text(header + "".join(
            f"e{k},u{k % 2},p{k % 2},view,2026-11-01T10:{k:02d}:00Z,5,1,s{k}\n" for k in range(first, first + n)))

    for d in ("events", "users", "items"):
        (landing / d).mkdir(parents=True)
    events("a.csv", 0, 4)
    (landing / "users" / "u.jsonl").write_text("".join(
        f'{{"user_id": "u{k}", "signup_date": "2026-01-01", "country": "DE", "marketing_consent": true}}\n'
        for k in range(2)))
    (landing / "items" / "i.csv").write_text("product_id,category,brand,price,stock\np0,books,a,5,3\np1,toys,b,7,2\n")
    cfg, ctx = make_config(tmp_path), RunContext("r1", DAY)
    bronze = cfg.table("bronze", "events")
    run_stage("ingest", spark, cfg, ctx)
    read_at = delta_io.version(spark, bronze)
    clean = pipeline.run_clean

    def clean_then_another_ingest(*args: Any, **kwargs: Any) -> dict[str, Any]:
        result = clean(*args, **kwargs)
        events("b.csv", 4, 2)
        # A thread of its own starts with no pinned versions, as another process would.
        with ThreadPoolExecutor(1) as pool:
            assert pool.submit(run_ingest, spark, cfg, "other").result()["events_rows"] == 2
        return result

    monkeypatch.setattr(pipeline, "run_clean", clean_then_another_ingest)
    first = run_stage("clean", spark, cfg, ctx)
    monkeypatch.undo()
    assert first["events.bronze_rows"] == 4
    latest = delta_io.version(spark, bronze)
    assert read_at is not None and latest is not None and latest > read_at
    record = last_record(spark, cfg, "clean", "r1")
    assert record is not None and record["io"][T.BRONZE_EVENTS.key] == read_at

    again = run_stage("clean", spark, cfg, ctx)
    assert again["skipped"] is False and again["events.bronze_rows"] == 6
    assert again["events.run_bronze_rows"] == 2 and again["mode"] == "incremental"
    record = last_record(spark, cfg, "clean", "r1")
    assert record is not None and record["io"][T.BRONZE_EVENTS.key] == latest
