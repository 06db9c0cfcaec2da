"""Smoke tests of the peer benchmark harness (benchmarks/quality.py, peers.py) on a tiny synthetic frame: tuning
on training folds only, the mean ± sd summary, the parameter mapping, the chart. No MovieLens; implicit only where
it is needed."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from sparkpromo import columns as C
from sparkpromo import evaluate as E

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def harness() -> Any:
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import peers
        import quality
        yield quality, peers
    finally:
        sys.path.remove(str(BENCHMARKS))


@pytest.fixture(scope="module")
def tiny(spark: SparkSession) -> E.Split:
    # 8 users, 10 items: user u likes items u..u+4 (mod 10) plus the popular item 0.
    rows = sorted({(u, i % 10, 1.0) for u in range(8) for i in (*range(u, u + 5), 0)})
    df = spark.createDataFrame(rows, f"{C.USER_IDX} int, {C.ITEM_IDX} int, {C.CONFIDENCE} double")
    return E.random_split(df, 0.3, seed=1)


PARAMS = {"rank": 2, "reg_param": 0.1, "alpha": 1.0, "max_iter": 2}


def test_peer_contenders_are_tuned_on_training_folds(harness: Any, spark: SparkSession, tiny: E.Split) -> None:
    quality, _ = harness
    folds = quality.cv_folds(tiny.train, "random", 2, seed=3)
    got = quality.peer_contenders(spark, tiny.train, tiny.test, folds, 3, knn_grid={"neighbours": [1, 3]},
                                  implicit_grid=None)
    assert list(got) == [quality.POPULARITY, quality.ITEM_KNN]
    for c in got.values():
        assert set(quality.METRIC_COLUMNS) | {"tune_s", "params"} <= set(c)
        assert all(0.0 <= c[m] <= 1.0 for m in ("ndcg", "precision", "recall", "map", "coverage"))
    knn = got[quality.ITEM_KNN]
    assert [row["params"] for row in knn["cv"]] == [{"neighbours": 1}, {"neighbours": 3}]
    best = max(knn["cv"], key=lambda row: row["mean"])
    assert knn["params"] == best["params"]  # the holdout played no part in the choice
    json.loads(json.dumps(got))  # plain numbers only


def test_cv_folds_stay_inside_the_training_part(harness: Any, spark: SparkSession, tiny: E.Split) -> None:
    quality, _ = harness
    folds = quality.cv_folds(tiny.train, "random", 2, seed=3)
    pairs = {(r[C.USER_IDX], r[C.ITEM_IDX]) for r in tiny.train.collect()}
    validations = [{(r[C.USER_IDX], r[C.ITEM_IDX]) for r in f.test.collect()} for f in folds]
    assert validations[0] | validations[1] == pairs and not validations[0] & validations[1]
    for fold, validation in zip(folds, validations, strict=True):
        assert {(r[C.USER_IDX], r[C.ITEM_IDX]) for r in fold.train.collect()} == pairs - validation
    timed = tiny.train.withColumn(C.EVENT_TS, F.timestamp_seconds(F.col(C.ITEM_IDX) * 86400 + F.col(C.USER_IDX)))
    for fold in quality.cv_folds(timed, "leave_last_k", 2, seed=3):
        last_train = fold.train.agg(F.max(C.EVENT_TS)).first()[0]
        first_validation = fold.test.agg(F.min(C.EVENT_TS)).first()[0]
        assert last_train < first_validation  # forward-chaining: never validated on older data


def test_summary_is_mean_and_sd_over_runs(harness: Any, tmp_path: Path) -> None:
    quality, _ = harness
    def run(ours: float, pop: float) -> dict[str, Any]:
        base = dict.fromkeys(quality.METRIC_COLUMNS, 0.1)
        return {"contenders": {quality.SPARKPROMO: {**base, "ndcg": ours, "tune_s": 10.0, "params": {"rank": 2}},
                               quality.POPULARITY: {**base, "ndcg": pop, "tune_s": 1.0, "params": {}}}}
    summary = quality.summarise([run(0.40, 0.20), run(0.44, 0.20)])
    assert summary[quality.SPARKPROMO]["ndcg"] == {"mean": 0.42, "sd": round(0.04 / 2 ** 0.5, 4)}
    assert summary[quality.POPULARITY]["ndcg"] == {"mean": 0.2, "sd": 0.0}
    assert quality.ratios(summary) == {f"{quality.SPARKPROMO}/{quality.POPULARITY}": 2.1}
    goals = quality.targets(summary)
    assert goals["over_popularity_at_least_1.9"] and not goals["ndcg_at_least_0.44"]
    table = quality.markdown(summary, 10, 2)
    assert table.startswith("| contender | ndcg@10 |") and table.count("\n| ") == 2
    assert "0.4200 ± 0.0283" in table and "rank 2 (×2)" in table
    out = tmp_path / "chart.png"
    quality.chart(summary, 10, "tiny", str(out))
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_implicit_parameter_mapping(harness: Any, spark: SparkSession, tiny: E.Split) -> None:
    _, peers = harness
    inter = peers.collect_interactions(tiny.train)
    assert len(inter.values) == tiny.train.count()
    same = peers.implicit_settings(PARAMS, inter, "same")
    mapped = peers.implicit_settings(PARAMS, inter, "mapped")
    assert same["regularization"] == 0.1 and same["confidence_offset"] == 0.0
    assert mapped["regularization"] == pytest.approx(0.1 * len(inter.values) / len(inter.user_ids))
    assert mapped["confidence_offset"] == 1.0  # implicit sees 1 + alpha * r, as Spark's confidence
    with pytest.raises(ValueError, match="mapping"):
        peers.implicit_settings(PARAMS, inter, "other")


def test_implicit_top_k_excludes_training_items(harness: Any, spark: SparkSession, tiny: E.Split) -> None:
    pytest.importorskip("implicit")
    _, peers = harness
    peers.limit_blas_threads()
    inter = peers.collect_interactions(tiny.train)
    model, _ = peers.fit_implicit(inter, peers.implicit_settings(PARAMS, inter, "mapped"), threads=1)
    users = tiny.train.select(C.USER_IDX).distinct()
    ranked: DataFrame = peers.implicit_top_k(spark, model, inter, users, k=3)
    rows = ranked.collect()
    seen = {(r[C.USER_IDX], r[C.ITEM_IDX]) for r in tiny.train.collect()}
    assert rows and not {(r[C.USER_IDX], r[C.ITEM_IDX]) for r in rows} & seen
    assert {r[C.RANK] for r in rows} <= {1, 2, 3}


@pytest.mark.slow
def test_daily_benchmark_times_one_new_day_against_a_full_rebuild(spark: SparkSession, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """benchmarks/daily.py at a tiny size: the new day's run ingests exactly that day's batch, the rebuild covers
    the whole history, the ratio is reported, and so is a day that brings five events. (Its targets are for 1M
    events and are not checked here.)"""
    monkeypatch.setenv("SPARKPROMO_LAKEHOUSE", str(tmp_path / "unused"))  # restored: the script sets both
    monkeypatch.setenv("SPARKPROMO_LANDING", str(tmp_path / "unused"))
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import daily
    finally:
        sys.path.remove(str(BENCHMARKS))
    assert daily.main(["--events", "2000", "--days", "2", "--warm-up-days", "0", "--tiny-day", "5",
                       "--shuffle-partitions", "2", "--workdir", str(tmp_path), "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    # 2 history days of ~1000 events, then the timed day, as large (no warm-up day: the script's warm-up runs the
    # same stages as the timed day, which this test already runs once)
    assert result["2d.warm_up_days"] == 0 and 0 < result["2d.events_new"] < result["2d.events_history"]
    assert result["2d.ingest.events_rows"] == result["2d.events_new"]  # only the timed day's file was loaded
    assert result["2d.features.mode"] == "incremental"  # it builds on the history build's features
    assert result["2d.full.clean.events.silver_rows"] > 0
    assert result["2d.incremental_s"] > 0 and result["2d.full_rebuild_s"] > 0
    assert result["2d.ratio"] == pytest.approx(result["2d.incremental_s"] / result["2d.full_rebuild_s"], abs=0.01)
    # The rebuild is a real full refresh only once run_stage takes full_refresh (clean's MERGE, issue 18).
    assert result["full_rebuild_mode"] == "full_refresh"
    # The tiny day after the rebuild: five events of the next day's export, built on the rebuild incrementally.
    assert result["2d.tiny.ingest.events_rows"] == 5
    assert result["2d.tiny.clean.mode"] == result["2d.tiny.features.mode"] == "incremental"
    assert result["2d.tiny.clean.events.silver_rows"] > result["2d.full.clean.events.silver_rows"]
    assert result["2d.tiny_ratio"] == pytest.approx(result["2d.tiny_day_s"] / result["2d.full_rebuild_s"], abs=0.01)


def test_day_ab_sets_variant_bs_constants_only_inside_its_runs() -> None:
    """benchmarks/day_ab.py's variant B: module constants set for B's runs and restored after, even when a run
    fails; a constant the module lacks, or one named without its module, is refused; no variant B, a Spark setting
    for B alone (the one session is built once) and no round are argument errors (exit 2), before any work."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import day_ab
    finally:
        sys.path.remove(str(BENCHMARKS))
    from sparkpromo import frame

    before = frame.BROADCAST_KEYS
    with day_ab.constants(["sparkpromo.frame.BROADCAST_KEYS=-1"]):
        assert frame.BROADCAST_KEYS == -1
    assert frame.BROADCAST_KEYS == before
    with pytest.raises(RuntimeError), day_ab.constants(["sparkpromo.frame.BROADCAST_KEYS=5"]):
        raise RuntimeError("a failed run")
    assert frame.BROADCAST_KEYS == before
    with pytest.raises(SystemExit, match="has no NO_SUCH"), day_ab.constants(["sparkpromo.frame.NO_SUCH=1"]):
        pass
    with pytest.raises(SystemExit, match="package.module.NAME"), day_ab.constants(["BROADCAST_KEYS=1"]):
        pass
    for argv in (["--events", "10"], ["--b-set", "spark.shuffle_partitions=4"],
                 ["--rounds", "0", "--b-constant", "sparkpromo.frame.BROADCAST_KEYS=-1"]):
        with pytest.raises(SystemExit) as exit_info:
            day_ab.main(argv)
        assert exit_info.value.code == 2, argv
