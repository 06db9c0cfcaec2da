"""Real data by configuration alone: run the shipped examples through the ``sparkpromo`` CLI exactly as a user would
(a YAML file, the data's path in an environment variable, nothing else), then report, per example, the offers
served per campaign and the champion's NDCG@K next to popularity's on the holdout, over several split seeds.

    python benchmarks/real_data.py --ml100k ../shared/data/ml-100k --online-retail ../shared/data/online-retail \
        [--seeds 42 7 11] [--json]

Per example: one ``sparkpromo run --config conf/examples/<name>.yaml`` (ingest → recommend, run date left at its
default, today), then ``sparkpromo train`` once per further seed (``train.seed`` seeds the random split, the CV
folds and ALS; the time split's holdout is the same for every seed). MovieLens is also trained on a time split
(the last 30 days as holdout). Every figure comes from the pipeline's own CV with the example's shipped grid,
scored on a holdout that CV never saw. Not part of the test suite (it takes minutes).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "sparkpromo.cli"]


def sparkpromo(args: list[str], env: dict[str, str]) -> dict[str, Any]:
    """Run one CLI command (as a user would) and return its ``--json`` result; a failure stops the benchmark."""
    proc = subprocess.run([*CLI, *args, "--json"], cwd=ROOT, env={**os.environ, **env}, capture_output=True, text=True,
                          check=False)
    if proc.returncode != 0:
        sys.exit(f"sparkpromo {' '.join(args)} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def quality(result: dict[str, Any], prefix: str, metric: str = "ndcg") -> dict[str, float]:
    metrics = result[f"{prefix}metrics"]
    als, pop = metrics["als"][metric], metrics["popularity"][metric]
    return {"als": als, "popularity": pop, "ratio": als / pop if pop else float("inf"),
            "champion": result[f"{prefix}champion"], "params": result[f"{prefix}params"]}


def example(name: str, env: dict[str, str], seeds: list[int], extra_splits: dict[str, list[str]]) -> dict[str, Any]:
    config = ["--config", f"conf/examples/{name}.yaml"]
    run = sparkpromo(["run", *config], env)
    offers = {cid: {"status": c["status"], "served": c["served"], "rows": c["rows"]}
              for cid, c in run["recommend.campaigns"].items()}
    splits: dict[str, list[dict[str, Any]]] = {"shipped": [quality(run, "train.")]}
    for seed in seeds[1:]:
        res = sparkpromo(["train", *config, "--set", f"train.seed={seed}", "--run-id", f"seed{seed}"], env)
        splits["shipped"].append(quality(res, ""))
    for split, sets in extra_splits.items():
        for seed in seeds:
            res = sparkpromo(["train", *config, *sets, "--set", f"train.seed={seed}",
                              "--run-id", f"{split}{seed}"], env)
            splits.setdefault(split, []).append(quality(res, ""))
    summary = {split: {"als_mean": statistics.mean(r["als"] for r in rows),
                       "als_sd": statistics.pstdev(r["als"] for r in rows),
                       "popularity_mean": statistics.mean(r["popularity"] for r in rows),
                       "ratio_mean": statistics.mean(r["ratio"] for r in rows),
                       "ratio_min": min(r["ratio"] for r in rows),
                       "champions": [r["champion"] for r in rows], "runs": rows}
               for split, rows in splits.items()}
    return {"offers": offers, "quality": summary, "train_split_shipped": run["train.counts"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ml100k", type=Path, help="folder holding MovieLens u.data")
    ap.add_argument("--online-retail", type=Path, help="folder holding the Online Retail by-day/ CSVs")
    ap.add_argument("--seeds", type=int, nargs="+", default=[42, 7, 11])
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="sparkpromo-real-") as tmp:
        if args.ml100k:
            env = {"SPARKPROMO_ML100K": str(args.ml100k.resolve()), "SPARKPROMO_LAKEHOUSE": f"{tmp}/movielens"}
            results["movielens"] = example("movielens", env, args.seeds, {
                "time_30d": ["--set", "train.split=last_days", "--set", "train.test_days=30"]})
        if args.online_retail:
            env = {"SPARKPROMO_ONLINE_RETAIL": str(args.online_retail.resolve()),
                   "SPARKPROMO_LAKEHOUSE": f"{tmp}/online-retail"}
            results["online-retail"] = example("online-retail", env, args.seeds, {})
    print("| example | split | ALS NDCG@10 (mean ± sd) | popularity | ratio (mean, min) | champions | offers |")
    print("|---|---|---|---|---|---|---|")
    for name, res in results.items():
        offers = ", ".join(f"{cid} {o['served']} users/{o['rows']} rows" for cid, o in res["offers"].items())
        for split, q in res["quality"].items():
            print(f"| {name} | {split} | {q['als_mean']:.4f} ± {q['als_sd']:.4f} | {q['popularity_mean']:.4f} | "
                  f"{q['ratio_mean']:.2f}×, {q['ratio_min']:.2f}× | {', '.join(q['champions'])} | {offers} |")
    if args.json:
        print(json.dumps(results, default=str))


if __name__ == "__main__":
    main()
