"""Item features: price bands, popularity and conversion, joined with silver.items."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import StringType

from sparkpromo import columns as C
from sparkpromo import schemas
from sparkpromo.features.common import FeatureError, _as_of_filter, _conform
from sparkpromo.frame import Transform
from sparkpromo.schemas import ITEM_FEATURES


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def price_band_labels(bands: Sequence[float]) -> list[str]:
    """Labels for ascending thresholds, e.g. (10, 50, 200) -> ["0-10", "10-50", "50-200", "200+"]."""
    edges = [0.0, *bands]
    return [f"{_fmt(lo)}-{_fmt(hi)}" for lo, hi in zip(edges, edges[1:], strict=False)] + [f"{_fmt(edges[-1])}+"]


def with_price_band(bands: Sequence[float]) -> Transform:
    """Add ``price_band``: the label of the half-open band [lo, hi) holding ``price``; null when price is null."""
    if list(bands) != sorted(bands):
        raise FeatureError(f"price_bands must be ascending, got {list(bands)}")
    labels = price_band_labels(bands)

    def apply(df: DataFrame) -> DataFrame:
        price = F.col(C.PRICE)
        expr = F.when(price.isNull(), F.lit(None).cast(StringType()))
        for hi, label in zip(bands, labels, strict=False):
            expr = expr.when(price < F.lit(float(hi)), F.lit(label))
        return df.withColumn(C.PRICE_BAND, expr.otherwise(F.lit(labels[-1])))
    return apply


def item_features(events: DataFrame, items: DataFrame | None, as_of: dt.date,
                  price_bands: Sequence[float] = (10.0, 50.0, 200.0)) -> DataFrame:
    """One row per item (silver.items ∪ items with events), conforming to :data:`ITEM_FEATURES`.

    ``popularity`` is the number of distinct users with any event on the item; ``conversion_rate`` is distinct
    purchasers / distinct viewers (0 without viewers, capped at 1).
    """
    ev = events.where(_as_of_filter(as_of))
    user_if = lambda t: F.when(F.col(C.EVENT_TYPE) == t, F.col(C.USER_ID))  # noqa: E731
    stats = ev.groupBy(C.ITEM_ID).agg(
        F.countDistinct(C.USER_ID).alias(C.POPULARITY),
        F.countDistinct(user_if(C.VIEW)).alias("_viewers"),
        F.countDistinct(user_if(C.PURCHASE)).alias("_buyers"),
        F.avg(C.PRICE).alias("_event_price"),
    )
    ids = ev.select(C.ITEM_ID)
    if items is not None:
        ids = ids.unionByName(items.select(C.ITEM_ID))
    out = ids.distinct()
    if items is not None:
        out = out.join(items.select(C.ITEM_ID, C.CATEGORY, C.BRAND, C.PRICE, C.STOCK, C.ITEM_NAME), C.ITEM_ID, "left")
    else:
        out = out.select(C.ITEM_ID, *(F.lit(None).cast(f.dataType).alias(f.name) for f in schemas.SILVER_ITEMS
                                      if f.name != C.ITEM_ID))
    conversion = F.when(F.col("_viewers") > 0, F.least(F.col("_buyers") / F.col("_viewers"), F.lit(1.0)))
    out = (out.join(stats, C.ITEM_ID, "left")
           .withColumn(C.PRICE, F.coalesce(F.col(C.PRICE), F.col("_event_price")))
           .withColumn(C.POPULARITY, F.coalesce(F.col(C.POPULARITY), F.lit(0)))
           .withColumn(C.CONVERSION_RATE, F.coalesce(conversion, F.lit(0.0)))
           .transform(with_price_band(price_bands)))
    return _conform(out, ITEM_FEATURES)


__all__ = [
    "price_band_labels", "with_price_band", "item_features",
]
