"""What the features modules share: their error, the cast to a gold schema and the point-in-time filter."""

from __future__ import annotations

import datetime as dt

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import StructType

from sparkpromo import columns as C


class FeatureError(ValueError):
    """A features-stage problem (bad weights, id overflow); ``str()`` is one line."""


def _conform(df: DataFrame, schema: StructType) -> DataFrame:
    """Select ``schema``'s columns, in its order, cast to its types."""
    return df.select(*(F.col(f.name).cast(f.dataType).alias(f.name) for f in schema.fields))


def _as_of_filter(as_of: dt.date) -> Column:
    return F.col(C.EVENT_DATE) <= F.lit(as_of)


__all__ = [
    "FeatureError",
]
