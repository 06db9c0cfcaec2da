"""Smoke tests of the peer benchmark harness (benchmarks/quality.py, peers.py) on a tiny synthetic frame: the
``contenders`` JSON shape, the parameter mapping, the chart. No MovieLens; implicit only where it is needed."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
from pyspark.sql import DataFrame, SparkSession

from sparkpromo import columns as C
from sparkpromo import evaluate as E

pytestmark = pytest.mark.usefixtures("small_data_conf")
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


def test_peer_contenders_shape(harness: Any, spark: SparkSession, tiny: E.Split) -> None:
    quality, _ = harness
    got = quality.peer_contenders(spark, tiny.train, tiny.test, 3, PARAMS, neighbours=3, with_implicit=False)
    assert list(got) == [quality.POPULARITY, quality.ITEM_KNN]
    for c in got.values():
        assert set(quality.METRIC_COLUMNS) | {"train_s"} <= set(c)
        assert all(0.0 <= c[m] <= 1.0 for m in ("ndcg", "precision", "recall", "map", "coverage"))
    contenders = {quality.SPARKPROMO: {**got[quality.POPULARITY], "fit_s": 0.1, "params": PARAMS}, **got}
    report = {"dataset": "tiny", "split": "random", "k": 3, "contenders": contenders,
              "ratios": quality.ratios(contenders)}
    assert report["ratios"][f"{quality.SPARKPROMO}/{quality.POPULARITY}"] == 1.0
    json.loads(json.dumps(report))  # plain numbers only
    table = quality.markdown(report)
    assert table.startswith("| contender | ndcg@3 |") and table.count("\n| ") == len(contenders)  # one row each
    assert "CV chose rank 2" in table


def test_chart_is_written(harness: Any, tmp_path: Path) -> None:
    quality, _ = harness
    report = {"dataset": "tiny", "split": "random", "k": 3, "contenders": {
        quality.SPARKPROMO: {"ndcg": 0.4, "train_s": 30.0, "fit_s": 3.0},
        quality.POPULARITY: {"ndcg": 0.2, "train_s": 0.5}}}
    out = tmp_path / "chart.png"
    quality.chart(report, str(out))
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
