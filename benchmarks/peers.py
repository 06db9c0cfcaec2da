"""Helpers shared by ``quality.py`` and ``speed.py``: the MovieLens loader, the ``implicit`` library's ALS as a
single-machine peer (fitted on the driver, its top-K lists handed back to Spark), and the parameter mapping.

Parameter mapping between Spark's implicit ALS and ``implicit.als.AlternatingLeastSquares`` (0.7):

* confidence: Spark uses ``c = 1 + alpha * |r|``; implicit uses the matrix values times its ``alpha`` directly,
  ``c = alpha * r`` (``cpu/als.py``: ``Cui = alpha * Cui``; the solver adds ``(c - 1) * y yᵀ`` and ``c * y``).
  "mapped" feeds implicit the values ``1 + alpha * r`` with its ``alpha = 1``: the same confidences as Spark.
  "same numbers" passes Spark's alpha unchanged, which on binary data (r = 1) gives a positive the confidence 1,
  i.e. no more weight than a missing entry (Spark's alpha 1 means confidence 2).
* regularisation: Spark's solver adds ``regParam * n`` to each row's normal equations, n = that user's (item's)
  number of interactions ("ALS-WR"); implicit adds a constant. "mapped" uses ``regParam * mean interactions per
  user``; "same numbers" uses ``regParam`` unchanged.

Not mapped: sparkpromo fits ``nonnegative=True`` (NNLS), implicit has no such option; implicit's default solver is
conjugate gradient (3 steps per row), Spark's is a direct solve. Both start from small random factors (different
generators, so the two never start from the same point).

The peer runs on 2 threads to match ``local[2]``: ``num_threads=2`` and BLAS limited to one thread
(:func:`limit_blas_threads`, the ``OPENBLAS_NUM_THREADS=1`` that implicit itself recommends).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from sparkpromo import columns as C
from sparkpromo import schemas

MAPPINGS = ("same", "mapped")


def movielens_interactions(spark: SparkSession, data_dir: str) -> DataFrame:
    """u.data (user, item, rating, unix time; tab-separated, no header) -> schemas.INTERACTIONS, confidence 1."""
    raw = spark.read.csv(str(Path(data_dir) / "u.data"), sep="\t",
                         schema="user int, item int, rating double, ts long")
    out = raw.select(F.col("user").alias(C.USER_IDX), F.col("item").alias(C.ITEM_IDX),
                     F.lit(1.0).alias(C.CONFIDENCE), F.timestamp_seconds("ts").alias(C.EVENT_TS))
    return out.select(*(F.col(f.name).cast(f.dataType) for f in schemas.INTERACTIONS.fields))


def limit_blas_threads() -> Any:
    """Limit BLAS (OpenBLAS/MKL, loaded by numpy, scipy and implicit) to one thread for the rest of the process.
    Imports scipy and implicit first: threadpoolctl only reaches the libraries loaded when it is called."""
    import scipy.sparse  # noqa: F401
    from threadpoolctl import threadpool_limits

    try:
        import implicit.cpu.als  # noqa: F401
    except ImportError:
        pass
    return threadpool_limits(limits=1, user_api="blas")


@dataclass(frozen=True)
class Interactions:
    """Train interactions on the driver: compact 0-based ids and a CSR user × item matrix of raw confidences."""
    user_ids: np.ndarray  # compact index -> user_idx
    item_ids: np.ndarray  # compact index -> item_idx
    rows: np.ndarray
    cols: np.ndarray
    values: np.ndarray

    @property
    def mean_per_user(self) -> float:
        return len(self.values) / max(1, len(self.user_ids))

    def matrix(self, values: np.ndarray | None = None) -> Any:
        from scipy.sparse import csr_matrix

        v = self.values if values is None else values
        return csr_matrix((v.astype(np.float32), (self.rows, self.cols)),
                          shape=(len(self.user_ids), len(self.item_ids)))


def collect_interactions(train: DataFrame) -> Interactions:
    """One row per (user_idx, item_idx) (confidences of repeated pairs summed) -> :class:`Interactions`."""
    got = (train.groupBy(C.USER_IDX, C.ITEM_IDX).agg(F.sum(C.CONFIDENCE).alias(C.CONFIDENCE))
           .select(C.USER_IDX, C.ITEM_IDX, C.CONFIDENCE).collect())
    data = np.array([(r[0], r[1], r[2]) for r in got], dtype=np.float64).reshape(-1, 3)
    users, rows = np.unique(data[:, 0].astype(np.int64), return_inverse=True)
    items, cols = np.unique(data[:, 1].astype(np.int64), return_inverse=True)
    return Interactions(users, items, rows, cols, data[:, 2])


def implicit_settings(params: Mapping[str, Any], inter: Interactions, mapping: str) -> dict[str, Any]:
    """Spark ALS params (rank, reg_param, alpha, max_iter) -> implicit's (factors, regularization, alpha,
    iterations) plus ``confidence_offset`` (1 when the matrix values become ``1 + alpha * r``), per ``mapping``."""
    if mapping not in MAPPINGS:
        raise ValueError(f"mapping must be one of {MAPPINGS}, got {mapping!r}")
    reg, alpha = float(params["reg_param"]), float(params["alpha"])
    same = mapping == "same"
    return {"factors": int(params["rank"]), "iterations": int(params["max_iter"]),
            "regularization": reg if same else reg * inter.mean_per_user,
            "alpha": alpha, "confidence_offset": 0.0 if same else 1.0}


def fit_implicit(inter: Interactions, settings: Mapping[str, Any], threads: int = 2, seed: int = 42,
                 use_cg: bool = True) -> tuple[Any, float]:
    """Fit implicit's CPU ALS; returns (model, fit seconds). With ``confidence_offset`` 1 the matrix holds Spark's
    confidences ``1 + alpha * r`` and implicit's own alpha is 1."""
    from implicit.cpu.als import AlternatingLeastSquares

    offset = float(settings["confidence_offset"])
    alpha = float(settings["alpha"])
    values = offset + alpha * inter.values if offset else inter.values
    model = AlternatingLeastSquares(factors=int(settings["factors"]), regularization=float(settings["regularization"]),
                                    alpha=1.0 if offset else alpha, iterations=int(settings["iterations"]),
                                    use_cg=use_cg, num_threads=threads, random_state=seed,
                                    calculate_training_loss=False)
    user_items = inter.matrix(values)
    t = time.perf_counter()
    model.fit(user_items, show_progress=False)
    return model, time.perf_counter() - t


def implicit_top_k(spark: SparkSession, model: Any, inter: Interactions, users: DataFrame, k: int) -> DataFrame:
    """Top ``k`` per user of ``users`` (user_idx) known to ``model``, excluding their training items
    (``filter_already_liked_items``), as (user_idx, item_idx, score, rank) — the shape of
    :func:`sparkpromo.evaluate.top_k_excluding_seen`."""
    wanted = np.array(sorted(r[0] for r in users.select(C.USER_IDX).distinct().collect()), dtype=np.int64)
    pos = np.searchsorted(inter.user_ids, wanted)
    known = (pos < len(inter.user_ids)) & (inter.user_ids[np.minimum(pos, len(inter.user_ids) - 1)] == wanted)
    rows = pos[known]
    user_items = inter.matrix()[rows]
    ids, scores = model.recommend(rows, user_items, N=k, filter_already_liked_items=True)
    out = []
    for u, item_row, score_row in zip(inter.user_ids[rows], np.atleast_2d(ids), np.atleast_2d(scores), strict=True):
        rank = 0
        for i, s in zip(item_row, score_row, strict=True):
            if i < 0 or not np.isfinite(s):
                continue
            rank += 1
            out.append((int(u), int(inter.item_ids[i]), float(s), rank))
    return spark.createDataFrame(out, f"{C.USER_IDX} int, {C.ITEM_IDX} int, {C.SCORE} double, {C.RANK} int")
