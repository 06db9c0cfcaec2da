"""Item-kNN baseline in Spark: cosine similarity of items' binary user vectors (co-occurrence counts), the top
``neighbours`` per item, and user scores as the sum of the similarities of the items in their history.

Pure ``DataFrame -> DataFrame`` steps, no actions, on the gold interaction columns (``user_idx``, ``item_idx``)::

    sims = item_similarity(train, neighbours=50)
    ranked = evaluate.top_k_excluding_seen(knn_scores(train, sims), train, k)

Every interaction counts once (binary relevance, whatever its confidence), so

    similarity(a, b) = |users(a) ∩ users(b)| / sqrt(|users(a)| * |users(b)|)

and ``score(u, i) = Σ similarity(j, i)`` over the items ``j`` in ``u``'s history that keep ``i`` among their top
``neighbours`` (the sparse product user × item · item × item of ``implicit.nearest_neighbours.CosineRecommender``).
The co-occurrence self-join costs Σ over users of (items per user)², so very heavy users dominate its size.
"""

from __future__ import annotations

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql.types import DoubleType

from sparkpromo import columns as C

NEIGHBOUR_IDX = "neighbour_idx"
SIMILARITY = "similarity"
DEFAULT_NEIGHBOURS = 50


def _pairs(interactions: DataFrame) -> DataFrame:
    return interactions.select(C.USER_IDX, C.ITEM_IDX).distinct()


def item_cooccurrence(interactions: DataFrame) -> DataFrame:
    """(user_idx, item_idx, ...) -> (item_idx, neighbour_idx, cooccurrence: long): number of distinct users who
    interacted with both items, for every ordered pair of distinct items with at least one such user."""
    pairs = _pairs(interactions)
    other = pairs.select(C.USER_IDX, F.col(C.ITEM_IDX).alias(NEIGHBOUR_IDX))
    return (pairs.join(other, C.USER_IDX)
            .where(F.col(C.ITEM_IDX) != F.col(NEIGHBOUR_IDX))
            .groupBy(C.ITEM_IDX, NEIGHBOUR_IDX).agg(F.count("*").alias("cooccurrence")))


def item_similarity(interactions: DataFrame, neighbours: int = DEFAULT_NEIGHBOURS) -> DataFrame:
    """(user_idx, item_idx, ...) -> (item_idx, neighbour_idx, similarity: double): the cosine similarity of each item
    with its ``neighbours`` most similar other items (ties: lower neighbour_idx first). Self-pairs are excluded."""
    if neighbours <= 0:
        raise ValueError(f"neighbours must be > 0, got {neighbours}")
    support = _pairs(interactions).groupBy(C.ITEM_IDX).agg(F.count("*").alias("_n"))
    n_item = support.select(C.ITEM_IDX, F.col("_n").alias("_na"))
    n_neighbour = support.select(F.col(C.ITEM_IDX).alias(NEIGHBOUR_IDX), F.col("_n").alias("_nb"))
    cosine = F.col("cooccurrence") / F.sqrt(F.col("_na").cast(DoubleType()) * F.col("_nb").cast(DoubleType()))
    best = Window.partitionBy(C.ITEM_IDX).orderBy(F.desc(SIMILARITY), F.asc(NEIGHBOUR_IDX))
    return (item_cooccurrence(interactions)
            .join(n_item, C.ITEM_IDX).join(n_neighbour, NEIGHBOUR_IDX)
            .select(C.ITEM_IDX, NEIGHBOUR_IDX, cosine.alias(SIMILARITY))
            .withColumn("_rn", F.row_number().over(best))
            .where(F.col("_rn") <= neighbours)
            .drop("_rn"))


def knn_scores(history: DataFrame, similarity: DataFrame) -> DataFrame:
    """history (user_idx, item_idx, ...) + :func:`item_similarity` -> (user_idx, item_idx, score: double), the sum of
    the similarities from the user's history items to each of their neighbours. Seen items are scored too: rank
    with :func:`sparkpromo.evaluate.top_k_excluding_seen` to drop them."""
    sims = similarity.select(C.ITEM_IDX, NEIGHBOUR_IDX, SIMILARITY)
    return (_pairs(history).join(sims, C.ITEM_IDX)
            .groupBy(C.USER_IDX, F.col(NEIGHBOUR_IDX).alias(C.ITEM_IDX))
            .agg(F.sum(SIMILARITY).cast(DoubleType()).alias(C.SCORE)))
