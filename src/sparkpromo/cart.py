"""The open cart, one definition for the user features (``cart_value``) and the cart-threshold campaign."""

from __future__ import annotations

import datetime as dt

from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import DoubleType

from sparkpromo import columns as C
from sparkpromo.frame import Transform

__all__ = ["LIST_PRICE", "open_lines"]

# The catalogue price, joined onto events by the caller (null when the item or its price is unknown).
LIST_PRICE = "_list_price"


def open_lines(as_of: dt.date, lookback_days: int) -> Transform:
    """Events up to ``as_of`` with :data:`LIST_PRICE` -> open cart lines ``(user_id, item_id, line_value)``.

    A line is open when the item's latest ``add_to_cart`` in ``(as_of - lookback_days, as_of]`` is later than the
    user's latest purchase of that item. Its value is that cart event's price (else the catalogue price) times its
    quantity (null = 1), the larger of two cart events at the same instant (a total order: the result does not
    depend on partitioning); a line with no known price is worth 0.
    """
    def apply(events: DataFrame) -> DataFrame:
        is_cart = (F.col(C.EVENT_TYPE) == C.ADD_TO_CART) & (
            F.col(C.EVENT_DATE) > F.date_sub(F.lit(as_of), lookback_days))
        value = (F.coalesce(F.col(C.PRICE), F.col(LIST_PRICE), F.lit(0.0))
                 * F.coalesce(F.col(C.QUANTITY), F.lit(1))).cast(DoubleType())
        per_item = events.groupBy(C.USER_ID, C.ITEM_ID).agg(
            F.max(F.when(is_cart, F.col(C.EVENT_TS))).alias("_cart_ts"),
            F.max(F.when(F.col(C.EVENT_TYPE) == C.PURCHASE, F.col(C.EVENT_TS))).alias("_buy_ts"),
            F.max_by(F.when(is_cart, value), F.when(is_cart, F.struct(F.col(C.EVENT_TS), value))).alias(C.LINE_VALUE))
        is_open = F.col("_cart_ts").isNotNull() & (F.col("_buy_ts").isNull() | (F.col("_buy_ts") < F.col("_cart_ts")))
        return per_item.where(is_open).select(C.USER_ID, C.ITEM_ID, C.LINE_VALUE)
    return apply
