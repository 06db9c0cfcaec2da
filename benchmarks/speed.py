"""Speed against peers, as ratios measured in one run on one machine (2 threads each side):

1. ALS seconds per iteration, Spark (``local[2]``) over the ``implicit`` library (``num_threads=2``, BLAS on one
   thread), on all ML-100k interactions (confidence 1), regParam 0.1 / alpha 1 mapped as in ``peers.py``. Each
   side is the slope between ``--low`` and ``--high`` iterations (fixed overhead cancels), best of ``--repeats``.
   Spark is timed with sparkpromo's settings (``nonnegative=True``: NNLS) and with Spark's default direct solver;
   implicit with its default conjugate-gradient solver and with its direct (Cholesky) solver.
2. Top-K with seen-item exclusion for all users: the cross-join-and-anti-join approach over sparkpromo's
   ``top_k_excluding_seen`` (both from ``scoring.py``/``evaluate.py``), same ALS model.
3. Start-up overhead: a fresh Python process that builds the Spark session and makes its first Delta write, as a
   share of a small full pipeline run (``sparkpromo run --sample --events N``, also a fresh process), both timed
   from process launch to exit.

    python benchmarks/speed.py --data ../shared/data/ml-100k [--ranks 64,32] [--events 5000] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pyspark.ml.recommendation import ALS
from pyspark.sql import DataFrame

from sparkpromo import columns as C
from sparkpromo.config import build_config
from sparkpromo.evaluate import top_k_excluding_seen
from sparkpromo.session import build_session

sys.path.insert(0, str(Path(__file__).resolve().parent))
import peers  # noqa: E402  (benchmarks/peers.py)
from scoring import crossjoin_top_k  # noqa: E402  (benchmarks/scoring.py)

ROOT = Path(__file__).resolve().parents[1]
REG, ALPHA = 0.1, 1.0

STARTUP_SCRIPT = """
import json, sys, time
t0 = time.perf_counter()
from sparkpromo.config import build_config
from sparkpromo.session import build_session
root = sys.argv[1]
cfg = build_config({"lakehouse": root, "sources": {"events": {"path": "unused"}},
                    "privacy": {"consent_without_users": "granted"},
                    "spark": {"master": "local[2]", "shuffle_partitions": 2}})
t1 = time.perf_counter()
spark = build_session(cfg, app_name="sparkpromo-startup")
t2 = time.perf_counter()
spark.range(10).write.format("delta").mode("overwrite").save(root + "/first")
t3 = time.perf_counter()
spark.stop()
print(json.dumps({"imports_s": t1 - t0, "session_s": t2 - t1, "first_delta_write_s": t3 - t2}))
"""


def best_of(fn: Callable[[], float], repeats: int) -> float:
    return min(fn() for _ in range(repeats))


def spark_fit_s(data: DataFrame, rank: int, iters: int, nonnegative: bool, blocks: int) -> float:
    als = ALS(userCol=C.USER_IDX, itemCol=C.ITEM_IDX, ratingCol=C.CONFIDENCE, implicitPrefs=True, rank=rank,
              maxIter=iters, regParam=REG, alpha=ALPHA, nonnegative=nonnegative, seed=42, numUserBlocks=blocks,
              numItemBlocks=blocks)
    t = time.perf_counter()
    als.fit(data).userFactors.write.format("noop").mode("overwrite").save()  # forces the last iteration
    return time.perf_counter() - t


def slope(lo_s: float, hi_s: float, lo: int, hi: int) -> float:
    """Seconds per iteration between two iteration counts."""
    return (hi_s - lo_s) / (hi - lo)


def als_per_iteration(data: DataFrame, ranks: list[int], lo: int, hi: int, repeats: int, implicit_repeats: int,
                      threads: int, blocks: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    peers.limit_blas_threads()
    inter = peers.collect_interactions(data)
    spark_fit_s(data, 8, 2, True, blocks)  # warm-up: JIT, native BLAS load
    for rank in ranks:
        params = {"rank": rank, "reg_param": REG, "alpha": ALPHA, "max_iter": lo}
        row: dict[str, Any] = {}
        for label, nonneg in (("spark_nnls", True), ("spark_cholesky", False)):
            t_lo = best_of(lambda r=rank, n=nonneg: spark_fit_s(data, r, lo, n, blocks), repeats)
            t_hi = best_of(lambda r=rank, n=nonneg: spark_fit_s(data, r, hi, n, blocks), repeats)
            row[label] = {"fit_s_low": round(t_lo, 2), "fit_s_high": round(t_hi, 2),
                          "s_per_iter": round(slope(t_lo, t_hi, lo, hi), 4)}
        for label, cg in (("implicit_cg", True), ("implicit_cholesky", False)):
            def fit(iters: int, use_cg: bool = cg, p: dict[str, Any] = params) -> float:
                settings = peers.implicit_settings({**p, "max_iter": iters}, inter, "mapped")
                return peers.fit_implicit(inter, settings, threads=threads, use_cg=use_cg)[1]
            fit(lo)  # warm-up (numba-free, but first call allocates)
            t_lo, t_hi = best_of(lambda f=fit: f(lo), implicit_repeats), best_of(lambda f=fit: f(hi), implicit_repeats)
            row[label] = {"fit_s_low": round(t_lo, 3), "fit_s_high": round(t_hi, 3),
                          "s_per_iter": round(max(slope(t_lo, t_hi, lo, hi), 1e-6), 6)}
        out[f"rank_{rank}"] = row
    return out


def topk_ratio(data: DataFrame, k: int, repeats: int) -> dict[str, float]:
    spark = data.sparkSession
    model = ALS(userCol=C.USER_IDX, itemCol=C.ITEM_IDX, ratingCol=C.CONFIDENCE, implicitPrefs=True, rank=32,
                maxIter=10, regParam=REG, alpha=ALPHA, seed=42).fit(data)

    def ours() -> float:
        t = time.perf_counter()
        top_k_excluding_seen(model, data, k).write.format("noop").mode("overwrite").save()
        return time.perf_counter() - t

    def crossjoin() -> float:
        t = time.perf_counter()
        crossjoin_top_k(spark, model, data, k).write.format("noop").mode("overwrite").save()
        return time.perf_counter() - t

    t_ours, t_cross = best_of(ours, repeats), best_of(crossjoin, repeats)
    return {"topk_exclusion_s": round(t_ours, 2), "crossjoin_antijoin_s": round(t_cross, 2)}


def _run(cmd: list[str], env: dict[str, str]) -> tuple[float, str]:
    t = time.perf_counter()
    done = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t
    if done.returncode != 0:
        raise RuntimeError(f"{cmd[:3]} failed ({done.returncode}): {done.stderr[-2000:]}")
    return wall, done.stdout


def startup_share(events: int) -> dict[str, Any]:
    env = dict(os.environ)
    with tempfile.TemporaryDirectory(prefix="sparkpromo-speed-") as tmp:
        start_wall, out = _run([sys.executable, "-c", STARTUP_SCRIPT, f"{tmp}/startup"], env)
        parts = json.loads(out.strip().splitlines()[-1])
        env.update(SPARKPROMO_LAKEHOUSE=f"{tmp}/lakehouse", SPARKPROMO_LANDING=f"{tmp}/landing")
        run_cmd = [sys.executable, "-c", "import sys; from sparkpromo.cli import main; sys.exit(main())",
                   "run", "--sample", "--events", str(events), "--run-date", "2026-11-01",
                   "--set", "spark.master=local[2]", "--set", "mlflow.enabled=false"]
        run_wall, _ = _run(run_cmd, env)
    return {"startup_process_s": round(start_wall, 2), **{k: round(v, 2) for k, v in parts.items()},
            "small_run_s": round(run_wall, 2), "small_run_events": events}


def markdown(result: dict[str, Any]) -> str:
    lines = ["| ratio | value |", "|---|---|"]
    lines += [f"| {k} | **{v:.2f}** |" for k, v in result["ratios"].items()]
    lines += ["", "| measure | value |", "|---|---|"]
    for key, v in result["measures"].items():
        if isinstance(v, dict):
            for sub, w in v.items():
                lines.append(f"| {key}.{sub} | {json.dumps(w) if isinstance(w, dict) else w} |")
        else:
            lines.append(f"| {key} | {v} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="../shared/data/ml-100k", help="folder holding MovieLens u.data")
    ap.add_argument("--ranks", default="64,32", help="ALS ranks for the per-iteration comparison")
    ap.add_argument("--low", type=int, default=5)
    ap.add_argument("--high", type=int, default=15)
    ap.add_argument("--repeats", type=int, default=1, help="Spark fits / top-K runs per measure (best kept)")
    ap.add_argument("--implicit-repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--events", type=int, default=5000, help="events of the small `run --sample`")
    ap.add_argument("--skip", default="", help="comma-separated parts to skip: als, topk, startup")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    measures: dict[str, Any] = {"master": "local[2]", "implicit_threads": args.threads}
    ratios: dict[str, float] = {}

    # first, while no Spark session of this process holds cores
    if "startup" not in skip:
        st = startup_share(args.events)
        measures["startup"] = st
        ratios["startup_share_of_small_run"] = round(st["startup_process_s"] / st["small_run_s"], 3)
    if not {"als", "topk"} <= skip:
        scratch = tempfile.mkdtemp(prefix="sparkpromo-speed-")
        cfg = build_config({"lakehouse": scratch, "sources": {"events": {"path": "unused"}},
                            "privacy": {"consent_without_users": "granted"},
                            "spark": {"master": "local[2]", "shuffle_partitions": 2}})
        spark = build_session(cfg, app_name="sparkpromo-speed")
        data = peers.movielens_interactions(spark, args.data).select(C.USER_IDX, C.ITEM_IDX, C.CONFIDENCE).cache()
        measures["interactions"] = data.count()
        blocks = spark.sparkContext.defaultParallelism
        if "als" not in skip:
            ranks = [int(r) for r in args.ranks.split(",") if r.strip()]
            als = als_per_iteration(data, ranks, args.low, args.high, args.repeats, args.implicit_repeats,
                                    args.threads, blocks)
            measures.update(als)
            for rank in ranks:
                row = als[f"rank_{rank}"]
                for ours, theirs in (("spark_nnls", "implicit_cg"), ("spark_cholesky", "implicit_cg"),
                                     ("spark_cholesky", "implicit_cholesky")):
                    ratios[f"als_s_per_iter_{ours}/{theirs}@rank{rank}"] = round(
                        row[ours]["s_per_iter"] / row[theirs]["s_per_iter"], 1)
        if "topk" not in skip:
            topk = topk_ratio(data, args.k, args.repeats)
            measures["topk"] = topk
            ratios["topk_crossjoin_antijoin/sparkpromo"] = round(
                topk["crossjoin_antijoin_s"] / topk["topk_exclusion_s"], 2)
        spark.stop()
    result = {"dataset": "ml-100k (all interactions)", "ratios": ratios, "measures": measures}
    print(markdown(result))
    if args.json:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
