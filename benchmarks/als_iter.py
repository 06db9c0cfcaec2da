"""Spark ALS seconds per iteration on MovieLens 100k, as the slope between two maxIter values (fixed overhead —
job setup, data partitioning, factor initialisation — cancels out).

    .venv/bin/python benchmarks/als_iter.py --data ../shared/data/ml-100k [--rank 32] [--low 5] [--high 15] [--json]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from harness import bare_config, best_time, emit, session  # benchmarks/ is on sys.path when a script runs
from pyspark.ml.recommendation import ALS
from pyspark.sql import functions as F


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="../shared/data/ml-100k")
    ap.add_argument("--rank", type=int, default=32)
    ap.add_argument("--low", type=int, default=5)
    ap.add_argument("--high", type=int, default=15)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--master", default="local[2]")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    scratch = Path("/tmp/sparkpromo-als-iter")
    spark = session(bare_config(scratch, args.master), "als-iter")
    data = (spark.read.option("sep", "\t").csv(str(Path(args.data) / "u.data"))
            .select(F.col("_c0").cast("int").alias("u"), F.col("_c1").cast("int").alias("i"),
                    F.lit(1.0).alias("r")).cache())
    n = data.count()
    blocks = spark.sparkContext.defaultParallelism

    def fit_seconds(iters: int) -> float:
        als = ALS(userCol="u", itemCol="i", ratingCol="r", implicitPrefs=True, rank=args.rank, maxIter=iters,
                  regParam=0.1, alpha=1.0, seed=42, numUserBlocks=blocks, numItemBlocks=blocks)
        return best_time(lambda: als.fit(data).userFactors.count(), args.repeats)  # the last iteration's factors

    fit_seconds(2)  # warm-up (JIT, native BLAS load) outside the measurement
    lo, hi = fit_seconds(args.low), fit_seconds(args.high)
    per_iter = (hi - lo) / (args.high - args.low)
    result = {"ratings": n, "rank": args.rank, "master": args.master, "fit_s_low": round(lo, 2),
              "fit_s_high": round(hi, 2), "iters_low": args.low, "iters_high": args.high,
              "seconds_per_iteration": round(per_iter, 3),
              "fixed_overhead_s": round(lo - per_iter * args.low, 2),
              "iteration_share_at_high": round(per_iter * args.high / hi, 3)}
    spark.stop()
    emit(result, args.json)


if __name__ == "__main__":
    main()
