"""Single ALS fits on an inner split of one seed's *training part*: how the grids in ``quality.py`` were chosen
without scoring any holdout. The outer split is ``quality.py``'s (seeded random 80/20); its training part is split
again 80/20 (``--inner-seed``), each point is fitted on the inner train and scored by NDCG@K on the inner
validation (top-K lists excluding the inner training items).

    python benchmarks/grid_probe.py --data ../shared/data/ml-100k --points '[[64, 0.3, 2, 15], [32, 0.2, 1, 15]]'

A point is [rank, regParam, alpha, maxIter]; ``--confidence rating`` uses the rating as the value (binary: 1).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from harness import bare_config, session, timed, workdir  # benchmarks/ is on sys.path when a script runs
from pyspark import StorageLevel
from pyspark.ml.recommendation import ALS
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from sparkpromo import columns as C
from sparkpromo import evaluate as E
from sparkpromo.logs import setup_logging
from sparkpromo.train import build_als


def fit_and_score(als: ALS, train: DataFrame, validation: DataFrame, k: int) -> float:
    """NDCG@k on ``validation`` of ``als`` fitted on ``train`` (top-k lists excluding the training items)."""
    return E.ranking_metrics(E.as_lists(E.top_k_excluding_seen(als.fit(train), train, k)), validation, k)["ndcg"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="../shared/data/ml-100k", help="folder holding MovieLens u.data")
    p.add_argument("--points", required=True, help="JSON list of [rank, regParam, alpha, maxIter]")
    p.add_argument("--confidence", choices=("binary", "rating"), default="binary")
    p.add_argument("--seed", type=int, default=42, help="outer split seed (its holdout is never read)")
    p.add_argument("--inner-seed", type=int, default=1000)
    p.add_argument("--k", type=int, default=10)
    args = p.parse_args(argv)
    setup_logging()
    root = workdir(None, "probe")
    cfg = bare_config(root / "lakehouse", shuffle_partitions=4, spark={"driver_memory": "4g"})
    spark = session(cfg, "grid-probe")
    raw = spark.read.csv(str(Path(args.data) / "u.data"), sep="\t", schema="user int, item int, rating double, ts long")
    value = F.lit(1.0) if args.confidence == "binary" else F.col("rating")
    df = raw.select(F.col("user").alias(C.USER_IDX), F.col("item").alias(C.ITEM_IDX), value.alias(C.CONFIDENCE),
                    F.timestamp_seconds("ts").alias(C.EVENT_TS))
    inner = E.random_split(E.random_split(df, 0.2, args.seed).train, 0.2, args.inner_seed)
    train = inner.train.persist(StorageLevel.MEMORY_AND_DISK)
    validation = inner.test.persist(StorageLevel.MEMORY_AND_DISK)
    for rank, reg, alpha, iters in json.loads(args.points):
        als = build_als(True, args.seed, k=args.k, blocks=2, rank=int(rank), regParam=float(reg),
                        alpha=float(alpha), maxIter=int(iters)).als()
        seconds, ndcg = timed(fit_and_score, als, train, validation, args.k)
        print(json.dumps({"confidence": args.confidence, "rank": rank, "reg_param": reg, "alpha": alpha,
                          "max_iter": iters, f"inner_ndcg@{args.k}": round(ndcg, 4),
                          "fit_and_score_s": round(seconds, 1)}), flush=True)
    spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
