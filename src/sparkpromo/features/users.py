"""User features: sessions, activity, the open cart's value and the top category, joined with silver.users."""

from __future__ import annotations

import datetime as dt

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql.types import DoubleType, StringType

from sparkpromo import columns as C
from sparkpromo import schemas
from sparkpromo.cart import LIST_PRICE, open_lines
from sparkpromo.features.common import FeatureError, _as_of_filter, _conform
from sparkpromo.frame import Transform
from sparkpromo.schemas import USER_FEATURES

_SESSION = "_session"
# An add-to-cart counts towards the open cart for this many days.
CART_LOOKBACK_DAYS = 14


def sessionise(gap_minutes: int) -> Transform:
    """Add ``_session``: ``"s:" + session_id`` when the event has one, else ``"g:" + n`` where a user's
    session-less events start a new session ``n`` whenever the gap to the previous one exceeds ``gap_minutes``.

    The window is partitioned by ``user_id`` alone, so per-user aggregations downstream reuse its shuffle.
    """
    if gap_minutes <= 0:
        raise FeatureError(f"session_gap_minutes must be > 0, got {gap_minutes}")

    def apply(df: DataFrame) -> DataFrame:
        no_sid = F.col(C.SESSION_ID).isNull()
        w = Window.partitionBy(C.USER_ID).orderBy(no_sid, C.EVENT_TS, C.EVENT_ID)
        prev_ts, prev_no_sid = F.lag(C.EVENT_TS).over(w), F.lag(no_sid).over(w)
        gap_s = F.unix_seconds(F.col(C.EVENT_TS)) - F.unix_seconds(prev_ts)
        new = prev_ts.isNull() | (prev_no_sid != no_sid) | (gap_s > gap_minutes * 60)
        running = F.sum("_new").over(w.rowsBetween(Window.unboundedPreceding, Window.currentRow))
        return (df.withColumn("_new", F.when(new, 1).otherwise(0))
                .withColumn(_SESSION, F.when(no_sid, F.concat(F.lit("g:"), running.cast("string")))
                            .otherwise(F.concat(F.lit("s:"), F.col(C.SESSION_ID))))
                .drop("_new"))
    return apply


def _user_activity(sessions: DataFrame) -> DataFrame:
    """Per user, from sessionised events: sessions, average session span, active days, purchases, monetary, last
    event date. Aggregates per (user, session) first, then per user: both reuse the window's user partitioning."""
    is_purchase = F.col(C.EVENT_TYPE) == C.PURCHASE
    value = F.col(C.PRICE) * F.coalesce(F.col(C.QUANTITY), F.lit(1))
    per_session = sessions.groupBy(C.USER_ID, _SESSION).agg(
        (F.unix_seconds(F.max(C.EVENT_TS)) - F.unix_seconds(F.min(C.EVENT_TS))).alias("_dur"),
        F.collect_set(C.EVENT_DATE).alias("_dates"),
        F.count(F.when(is_purchase, 1)).alias("_purchases"),
        F.sum(F.when(is_purchase, value)).alias("_monetary"),  # sum ignores nulls: a null price adds nothing
    )
    return per_session.groupBy(C.USER_ID).agg(
        F.count("*").alias(C.SESSIONS),
        F.avg("_dur").alias(C.AVG_SESSION_SECONDS),
        F.size(F.array_distinct(F.flatten(F.collect_list("_dates")))).alias(C.ACTIVE_DAYS),
        F.sum("_purchases").alias(C.PURCHASES),
        F.sum("_monetary").alias(C.MONETARY),
        F.max(F.array_max("_dates")).alias("_last_date"),
    )


def _top_category(events: DataFrame) -> DataFrame:
    """Most frequent category among a user's events; ties go to the alphabetically first category."""
    counts = events.where(F.col(C.CATEGORY).isNotNull()).groupBy(C.USER_ID, C.CATEGORY).count()
    w = Window.partitionBy(C.USER_ID).orderBy(F.desc("count"), F.asc(C.CATEGORY))
    return (counts.withColumn("_rn", F.row_number().over(w)).where("_rn = 1")
            .select(C.USER_ID, F.col(C.CATEGORY).alias(C.TOP_CATEGORY)))


def _cart_value(events: DataFrame, as_of: dt.date, lookback_days: int) -> DataFrame:
    """Value of each user's open cart: the sum of its :func:`sparkpromo.cart.open_lines`."""
    return (events.transform(open_lines(as_of, lookback_days))
            .groupBy(C.USER_ID).agg(F.sum(C.LINE_VALUE).alias(C.CART_VALUE)))


def user_features(events: DataFrame, users: DataFrame | None, items: DataFrame | None, as_of: dt.date,
                  session_gap_minutes: int = 30, cart_lookback_days: int = CART_LOOKBACK_DAYS,
                  consent_without_users: bool = False) -> DataFrame:
    """One row per user (silver.users ∪ users with events), conforming to :data:`USER_FEATURES`.

    Without a users table every user's ``marketing_consent`` is ``consent_without_users`` (the configuration's
    stated ``privacy.consent_without_users``); with one, a user missing from it has none.

    Events are shuffled once, by user (the sessionising window); every per-user aggregate and the joins between
    them reuse that partitioning. ``cart_value`` is the open cart of the last ``cart_lookback_days`` days.
    """
    ev = events.where(_as_of_filter(as_of))
    if items is not None:
        ev = ev.join(items.select(C.ITEM_ID, C.CATEGORY, F.col(C.PRICE).alias(LIST_PRICE)), C.ITEM_ID, "left")
    else:
        ev = (ev.withColumn(C.CATEGORY, F.lit(None).cast(StringType()))
              .withColumn(LIST_PRICE, F.lit(None).cast(DoubleType())))
    sessions = ev.transform(sessionise(session_gap_minutes))
    activity = (_user_activity(sessions)
                .join(_cart_value(sessions, as_of, cart_lookback_days), C.USER_ID, "left")
                .join(_top_category(sessions), C.USER_ID, "left"))
    if users is not None:
        attrs = users.select(C.USER_ID, C.SIGNUP_DATE, C.BIRTH_MONTH, C.BIRTH_DAY, C.AGE_BAND, C.COUNTRY,
                             C.MARKETING_CONSENT)
        out = attrs.join(activity, C.USER_ID, "full")  # users without events, and events without a user row
    else:
        out = activity.select("*", *(F.lit(None).cast(f.dataType).alias(f.name) for f in schemas.SILVER_USERS
                                     if f.name not in (C.USER_ID, C.MARKETING_CONSENT)),
                              F.lit(consent_without_users).alias(C.MARKETING_CONSENT))
    zero = {c: 0 for c in (C.ACTIVE_DAYS, C.SESSIONS, C.PURCHASES)}
    zero.update({c: 0.0 for c in (C.MONETARY, C.AVG_SESSION_SECONDS, C.CART_VALUE)})
    out = (out.fillna(zero)
           .withColumn(C.MARKETING_CONSENT, F.coalesce(F.col(C.MARKETING_CONSENT), F.lit(False)))
           .withColumn(C.RECENCY_DAYS, F.datediff(F.lit(as_of), F.col("_last_date")))
           .withColumn(C.DAYS_SINCE_SIGNUP, F.datediff(F.lit(as_of), F.col(C.SIGNUP_DATE))))
    return _conform(out, USER_FEATURES)


__all__ = [
    "CART_LOOKBACK_DAYS", "sessionise", "user_features",
]
