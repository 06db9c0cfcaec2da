"""Offline ranking quality against peers: sparkpromo's cross-validated implicit ALS, popularity, an item-kNN
baseline in Spark, and the ``implicit`` library's ALS, all on one holdout and scored by one piece of code.

    python benchmarks/quality.py --data ../shared/data/ml-100k [--split random|leave_last_k] [--k 10] \
        [--json] [--chart benchmarks/quality_vs_time.png]
    python benchmarks/quality.py --generate 20000 ...        # the generated sample shop instead of MovieLens

Data: ``--data`` is a folder holding MovieLens ``u.data`` (every rating is an implicit interaction of confidence 1);
``--generate N`` generates the sample shop (N events) and runs ingest, clean and features to build the gold
interactions (weighted confidences). Either way the interactions become gold/interactions in a scratch lakehouse.

Split: ``random`` = seeded 80/20 per interaction (``--test-fraction``, ``--seed``); ``leave_last_k`` = each
user's ``--leave-last`` most recent interactions. The library's :func:`sparkpromo.train.run_train` splits, runs
its CV and scores ALS and popularity; the peers get the same split from the same function
(:func:`sparkpromo.train.holdout_split`, deterministic) and every top-K list (excluding the user's training items)
is scored by :func:`sparkpromo.evaluate.evaluate_recommendations` (Spark's RankingEvaluator) for the holdout users.

Training time per contender: sparkpromo = the whole CV (folds × grid + refit; ``fit_s`` is one fit of the chosen
params); popularity = counting users per item; item-kNN = materialising the similarity table; implicit = its
``fit`` (2 threads, BLAS on one thread, see ``peers.py`` for the parameter mapping).

Not part of the test suite (it takes minutes).
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from pyspark import StorageLevel
from pyspark.ml.recommendation import ALS as SparkALS
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from sparkpromo import columns as C
from sparkpromo import evaluate as E
from sparkpromo import io
from sparkpromo import itemknn as knn
from sparkpromo.config import AppConfig, build_config, load_config
from sparkpromo.logs import setup_logging
from sparkpromo.session import build_session
from sparkpromo.train import ALS, POPULARITY, holdout_split, run_train

sys.path.insert(0, str(Path(__file__).resolve().parent))
import peers  # noqa: E402  (benchmarks/peers.py, next to this script)

log = logging.getLogger("benchmarks.quality")
ROOT = Path(__file__).resolve().parents[1]

# Grid chosen after exploring single fits on this split (rank 32-64, regParam 0.005-0.2, alpha 0.5-40, maxIter
# 10-15): on binary MovieLens interactions Spark's implicit ALS does best with a *small* alpha (0.5-2) and
# regParam 0.1-0.2 (Spark scales regParam by each user's/item's interaction count); alpha >= 10 pushes it towards
# the long tail and costs NDCG (alpha 40: 0.21). The grid keeps one weak alpha so CV has a real choice to make.
DEFAULT_RANKS = "32,64"
DEFAULT_REG = "0.1"
DEFAULT_ALPHA = "1,10"
DEFAULT_ITERS = "10"
METRIC_COLUMNS = ("ndcg", "precision", "recall", "map", "coverage", "novelty")
SPARKPROMO = "sparkpromo"
ITEM_KNN = "item-kNN"
IMPLICIT_SAME = "implicit ALS (same numbers)"
IMPLICIT_MAPPED = "implicit ALS (mapped)"


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="../shared/data/ml-100k", help="folder holding MovieLens u.data")
    p.add_argument("--generate", type=int, default=0, metavar="EVENTS",
                   help="use the generated sample shop of EVENTS events instead of --data")
    p.add_argument("--split", choices=("random", "leave_last_k"), default="random")
    p.add_argument("--test-fraction", type=float, default=0.2, help="random split: share of interactions in test")
    p.add_argument("--leave-last", type=int, default=1, help="leave_last_k split: test items per user")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--folds", type=int, default=2)
    p.add_argument("--parallelism", type=int, default=1)
    p.add_argument("--rank", default=DEFAULT_RANKS, help="comma-separated grid values")
    p.add_argument("--reg-param", default=DEFAULT_REG)
    p.add_argument("--alpha", default=DEFAULT_ALPHA)
    p.add_argument("--max-iter", default=DEFAULT_ITERS)
    p.add_argument("--neighbours", type=int, default=knn.DEFAULT_NEIGHBOURS, help="item-kNN neighbours per item")
    p.add_argument("--threads", type=int, default=2, help="implicit's num_threads (match the Spark master)")
    p.add_argument("--no-implicit", action="store_true", help="skip the implicit library's ALS")
    p.add_argument("--master", default="local[2]")
    p.add_argument("--shuffle-partitions", type=int, default=4)
    p.add_argument("--driver-memory", default="4g")
    p.add_argument("--chart", default=None, metavar="PNG", help="write NDCG@K against training time here")
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    return p.parse_args(argv)


def _train_section(args: argparse.Namespace) -> dict[str, Any]:
    return {"k": args.k, "metric": "ndcg", "folds": args.folds, "parallelism": args.parallelism,
            "seed": args.seed, "split": args.split, "test_fraction": args.test_fraction,
            "leave_last_k": args.leave_last, "champion_gate": True,
            "grid": {"rank": _ints(args.rank), "reg_param": _floats(args.reg_param),
                     "alpha": _floats(args.alpha), "max_iter": _ints(args.max_iter)}}


def _spark_section(args: argparse.Namespace) -> dict[str, Any]:
    return {"master": args.master, "shuffle_partitions": args.shuffle_partitions,
            "driver_memory": args.driver_memory, "app_name": "sparkpromo-quality"}


def make_config(args: argparse.Namespace, root: Path) -> AppConfig:
    if args.generate:  # the shipped configuration (sources of the sample shop), in a scratch lakehouse
        os.environ["SPARKPROMO_LANDING"] = str(root / "landing")
        overrides = {"lakehouse": str(root / "lakehouse"), "landing": str(root / "landing"),
                     "generate.events": args.generate, "mlflow.enabled": False}
        overrides.update({f"spark.{k}": v for k, v in _spark_section(args).items()})
        overrides.update({f"train.{k}": v for k, v in _train_section(args).items()})
        return load_config("local", ROOT / "conf", overrides=overrides)
    return build_config({
        "lakehouse": str(root / "lakehouse"),
        "landing": str(root / "landing"),
        "spark": _spark_section(args),
        "sources": {"kind": "events", "events": {"path": str(Path(args.data) / "u.data")}},
        "privacy": {"consent_without_users": "granted"},
        "train": _train_section(args),
    })


def prepare_interactions(spark: SparkSession, cfg: AppConfig, args: argparse.Namespace) -> str:
    """Write gold/interactions into the scratch lakehouse; returns the dataset's name."""
    if args.generate:
        from sparkpromo.pipeline import RunContext, generate_sample, run_stage

        ctx = RunContext("quality", dt.date(2026, 11, 1))
        generate_sample(cfg, ctx, args.generate)
        for name in ("ingest", "clean", "features"):
            run_stage(name, spark, cfg, ctx)
        return f"generated shop ({args.generate} events)"
    io.overwrite(peers.movielens_interactions(spark, args.data), cfg.table("gold", "interactions"))
    return "ml-100k"


# ----------------------------------------------------------------------------------------------------------------
# Contenders
# ----------------------------------------------------------------------------------------------------------------
def _timed(fn: Any) -> tuple[Any, float]:
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def score(ranked: DataFrame, test: DataFrame, train: DataFrame, k: int) -> dict[str, float]:
    """The one scoring path for every contender: RankingEvaluator metrics, coverage, novelty (rounded)."""
    return {m: round(v, 4) for m, v in E.evaluate_recommendations(ranked, test, train, k).items()}


def implicit_available() -> bool:
    return importlib.util.find_spec("implicit") is not None


def peer_contenders(spark: SparkSession, train: DataFrame, test: DataFrame, k: int, params: dict[str, Any],
                    neighbours: int = knn.DEFAULT_NEIGHBOURS, threads: int = 2, seed: int = 42,
                    with_implicit: bool = True) -> dict[str, dict[str, Any]]:
    """Popularity, item-kNN and (when installed and asked for) implicit's ALS with ``params`` (rank, reg_param,
    alpha, max_iter) under both parameter mappings, scored on ``test`` users; each entry holds the metrics,
    ``train_s`` and its settings."""
    users = test.select(C.USER_IDX).distinct()
    seen_max = E.max_seen(train)
    out: dict[str, dict[str, Any]] = {}

    _, pop_s = _timed(lambda: train.groupBy(C.ITEM_IDX).agg(F.countDistinct(C.USER_IDX))
                      .write.format("noop").mode("overwrite").save())
    pop = E.popularity_top_k(train, k, users=users, seen_max=seen_max)
    out[POPULARITY] = {**score(pop, test, train, k), "train_s": round(pop_s, 2)}

    sims = knn.item_similarity(train, neighbours).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        _, knn_s = _timed(sims.count)
        history = train.join(users, C.USER_IDX, "left_semi")
        ranked = E.top_k_excluding_seen(knn.knn_scores(history, sims), train, k)
        out[ITEM_KNN] = {**score(ranked, test, train, k), "train_s": round(knn_s, 2),
                         "params": {"neighbours": neighbours, "similarity": "cosine (binary co-occurrence)"}}
    finally:
        sims.unpersist()

    if with_implicit and implicit_available():
        peers.limit_blas_threads()
        inter, prep_s = _timed(lambda: peers.collect_interactions(train))
        for name, mapping in ((IMPLICIT_SAME, "same"), (IMPLICIT_MAPPED, "mapped")):
            settings = peers.implicit_settings(params, inter, mapping)
            model, fit_s = peers.fit_implicit(inter, settings, threads=threads, seed=seed)
            ranked = peers.implicit_top_k(spark, model, inter, users, k)
            out[name] = {**score(ranked, test, train, k), "train_s": round(fit_s, 2),
                         "collect_s": round(prep_s, 2),
                         "params": {key: (round(v, 4) if isinstance(v, float) else v) for key, v in settings.items()}}
    elif with_implicit:
        log.warning("the implicit library is not installed (pip install -e '.[bench]'); skipping its ALS")
    return out


def spark_fit_seconds(train: DataFrame, params: dict[str, Any], seed: int, blocks: int) -> float:
    """One fit of sparkpromo's ALS settings (nonnegative, implicit preferences) with ``params``."""
    als = SparkALS(userCol=C.USER_IDX, itemCol=C.ITEM_IDX, ratingCol=C.CONFIDENCE, implicitPrefs=True,
                   nonnegative=True, seed=seed, numUserBlocks=blocks, numItemBlocks=blocks,
                   rank=int(params["rank"]), regParam=float(params["reg_param"]), alpha=float(params["alpha"]),
                   maxIter=int(params["max_iter"]))
    t = time.perf_counter()
    als.fit(train).userFactors.write.format("noop").mode("overwrite").save()
    return time.perf_counter() - t


# ----------------------------------------------------------------------------------------------------------------
# Output
# ----------------------------------------------------------------------------------------------------------------
def ratios(contenders: dict[str, dict[str, Any]], metric: str = "ndcg") -> dict[str, float]:
    """sparkpromo's ``metric`` over each other contender's (plain numbers; absent when the other is 0)."""
    ours = contenders[SPARKPROMO][metric]
    return {f"{SPARKPROMO}/{name}": round(ours / c[metric], 3) for name, c in contenders.items()
            if name != SPARKPROMO and c[metric] > 0}


def markdown(report: dict[str, Any]) -> str:
    k = report["k"]
    head = "| contender | " + " | ".join(f"{m}@{k}" if m in ("ndcg", "precision", "recall", "map") else m
                                         for m in METRIC_COLUMNS) + " | train_s |"
    lines = [head, "|" + "---|" * (len(METRIC_COLUMNS) + 2)]
    for name, c in report["contenders"].items():
        cells = " | ".join(f"{c[m]:.4f}" for m in METRIC_COLUMNS)
        label = name
        if "params" in c and name == SPARKPROMO:
            label += " (CV chose " + ", ".join(f"{p} {v}" for p, v in c["params"].items()) + ")"
        train_s = f"{c.get('train_s', 0.0):.1f}"
        if "fit_s" in c:
            train_s += f" (one fit {c['fit_s']:.1f})"
        lines.append(f"| {label} | {cells} | {train_s} |")
    if report.get("ratios"):
        lines.append("")
        lines.append(f"NDCG@{k} ratios: " + ", ".join(f"{n} **{r:.2f}×**" for n, r in report["ratios"].items()))
    return "\n".join(lines)


def chart(report: dict[str, Any], path: str) -> None:
    """NDCG@K against training time (log scale) per contender, matplotlib Agg."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.5), dpi=120)
    for name, c in report["contenders"].items():
        x = max(c.get("train_s", 0.0), 0.01)
        ax.scatter([x], [c["ndcg"]], s=40, zorder=3)
        label = f"{name} (CV)" if "fit_s" in c else name
        ax.annotate(label, (x, c["ndcg"]), textcoords="offset points", xytext=(6, 4), fontsize=8)
        if "fit_s" in c:  # the pipeline's CV vs one fit of the chosen params
            ax.scatter([c["fit_s"]], [c["ndcg"]], s=40, facecolors="none", edgecolors="grey", zorder=3)
            ax.annotate(f"{name}: one fit", (c["fit_s"], c["ndcg"]), textcoords="offset points",
                        xytext=(6, -10), fontsize=7, color="grey")
            ax.plot([c["fit_s"], x], [c["ndcg"], c["ndcg"]], color="grey", lw=0.6, ls=":")
    ax.set_xscale("log")
    ax.set_xlabel("training time, seconds (log scale; 2 threads)")
    ax.set_ylabel(f"NDCG@{report['k']}")
    ax.set_title(f"{report['dataset']}, {report['split']}: quality vs training time", fontsize=10)
    ax.grid(True, which="both", lw=0.3, alpha=0.6)
    ax.set_ylim(0, 1.15 * max(c["ndcg"] for c in report["contenders"].values()))
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging()
    root = Path(tempfile.mkdtemp(prefix="sparkpromo-quality-"))
    try:
        cfg = make_config(args, root)
        spark = build_session(cfg, app_name="sparkpromo-quality")
        dataset = prepare_interactions(spark, cfg, args)
        t0 = time.perf_counter()
        result = run_train(spark, cfg, run_id="quality")
        wall = time.perf_counter() - t0
        als, params = result["metrics"][ALS], result["params"]

        data = io.read(spark, cfg.table("gold", "interactions"))
        split = holdout_split(data, cfg.train)  # the split run_train used (deterministic)
        train = split.train.persist(StorageLevel.MEMORY_AND_DISK)
        test = split.test.persist(StorageLevel.MEMORY_AND_DISK)
        blocks = max(1, min(cfg.spark.shuffle_partitions, spark.sparkContext.defaultParallelism))
        fit_s = spark_fit_seconds(train, params, args.seed, blocks)
        others = peer_contenders(spark, train, test, args.k, params, neighbours=args.neighbours,
                                 threads=args.threads, seed=args.seed, with_implicit=not args.no_implicit)
        pop_train = result["metrics"][POPULARITY]
        if abs(pop_train["ndcg"] - others[POPULARITY]["ndcg"]) > 1e-4:  # same split and code; others are rounded
            log.warning("popularity NDCG differs between run_train (%.6f) and the harness (%.6f)",
                        pop_train["ndcg"], others[POPULARITY]["ndcg"])
        contenders = {SPARKPROMO: {**{m: round(als[m], 4) for m in METRIC_COLUMNS},
                                   "train_s": result["timings"]["cv_s"], "fit_s": round(fit_s, 2),
                                   "params": params}, **others}
        if args.split == "random":
            split_text = f"random {1 - args.test_fraction:.0%}/{args.test_fraction:.0%} seed={args.seed}"
        else:
            split_text = f"leave last {args.leave_last} per user"
        report = {"dataset": dataset, "split": split_text, "k": args.k, "contenders": contenders,
                  "ratios": ratios(contenders), "cv": result["cv"], "champion": result["champion"],
                  "wall_s": round(wall, 1), "counts": result["counts"]}
        train.unpersist()
        test.unpersist()
        print(markdown(report))
        print(f"\nCV ({args.folds} folds x {len(result['cv'])} grid points, refit included): "
              f"{result['timings']['cv_s']:.1f} s; total run_train: {wall:.1f} s; champion: {result['champion']}")
        for row in result["cv"]:
            print(f"  {row['params']}: ndcg@{args.k} {row['mean']:.4f} ± {row['std']:.4f}")
        if args.chart:
            chart(report, args.chart)
            print(f"chart: {args.chart}")
        if args.json:
            print(json.dumps(report, sort_keys=False))
        spark.stop()
        return 0
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
