"""Gold features from silver: user features, item features, implicit interactions and the stable integer id map.

Every function here except :func:`run_features` is a pure ``DataFrame -> DataFrame`` transformation (or a factory of
one); ``run_features`` is the only place that reads and writes tables.

Point in time: every feature is computed *as of* a date. Events dated after ``as_of`` are ignored, so rerunning with
the same ``as_of`` on the same silver snapshot gives the same gold tables.

Bounded window (``features.lookback_days``, :func:`within_lookback`): :func:`run_features` reads only the silver
events of the last ``lookback_days`` days up to the decay reference (:func:`decay_reference`), and rebuilds gold
from them alone. Windowed: every interaction; the behavioural user features (``active_days``, ``sessions``,
``purchases``, ``monetary``, ``recency_days``, ``avg_session_seconds``, ``cart_value``, ``top_category``: a user
whose events all lie before the window is a cold-start user); the event-derived item features (``popularity``,
``conversion_rate``, the mean event price fallback; an item only seen before the window and absent from
silver.items drops out). Not windowed: user attributes (silver.users), item attributes (silver.items), and the id
map, which only ever grows: an id keeps its index when its events leave the window.

Missing values (explicit, and tested):

* a purchase with a null ``price`` adds nothing to ``monetary`` / ``cart_value`` (it still counts in ``purchases``);
  a null ``quantity`` counts as 1 unit (a purchase event is at least one unit);
* a user with no events (cold start) still gets a row: counts, ``monetary``, ``avg_session_seconds`` and
  ``cart_value`` are 0; ``recency_days`` and ``top_category`` are null (0 would claim "active today");
* a user seen in events but absent from silver.users has null attributes and ``marketing_consent = false``
  (no recorded consent means no consent);
* an item price comes from silver.items, else the mean event price, else null (then ``price_band`` is null);
* ``conversion_rate`` is 0 when an item has no viewers, and capped at 1;
* a rating event with a null rating is ignored; an event type without a weight is a configuration error,
  raised by :func:`interactions` before any data is read (and again, defensively, by Spark at run time).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql.types import (
    DoubleType,
    StringType,
    StructType,
)

from sparkpromo import columns as C
from sparkpromo import delta_io, schemas
from sparkpromo import tables as T
from sparkpromo.config import AppConfig
from sparkpromo.frame import Transform
from sparkpromo.schemas import ITEM_FEATURES, RAW_INTERACTIONS, USER_FEATURES

log = logging.getLogger(__name__)


INT_MAX = 2**31 - 1
USER_KIND = "user"
ITEM_KIND = "item"
ID_MAP_APP_ID = "sparkpromo.features.id_map"
_SESSION = "_session"





class FeatureError(ValueError):
    """A features-stage problem (bad weights, id overflow); ``str()`` is one line."""


def _conform(df: DataFrame, schema: StructType) -> DataFrame:
    """Select ``schema``'s columns, in its order, cast to its types."""
    return df.select(*(F.col(f.name).cast(f.dataType).alias(f.name) for f in schema.fields))


def _as_of_filter(as_of: dt.date) -> Column:
    return F.col(C.EVENT_DATE) <= F.lit(as_of)


def within_lookback(reference: dt.date, lookback_days: int) -> Transform:
    """Keep the events of the ``lookback_days`` days ending on ``reference`` (``event_date`` after
    ``reference - lookback_days``); ``lookback_days == 0`` keeps every event.

    The bound is a date literal on ``event_date``, so Delta skips files (and partitions) wholly before it."""
    if lookback_days < 0:
        raise FeatureError(f"lookback_days must be >= 0, got {lookback_days}")

    def apply(events: DataFrame) -> DataFrame:
        if lookback_days == 0:
            return events
        return events.where(F.col(C.EVENT_DATE) > F.lit(reference - dt.timedelta(days=lookback_days)))
    return apply


# ----------------------------------------------------------------------------------------------------------------
# User features
# ----------------------------------------------------------------------------------------------------------------
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
    """Value of each user's open cart: items added to the cart in the last ``lookback_days`` days and not bought
    since; the value is the latest cart event's price (else the catalogue price) times its quantity (null = 1)."""
    is_cart = (F.col(C.EVENT_TYPE) == C.ADD_TO_CART) & (
        F.col(C.EVENT_DATE) > F.date_sub(F.lit(as_of), lookback_days))
    line_value = F.coalesce(F.col(C.PRICE), F.col("_list_price")) * F.coalesce(F.col(C.QUANTITY), F.lit(1))
    per_item = events.groupBy(C.USER_ID, C.ITEM_ID).agg(
        F.max(F.when(is_cart, F.col(C.EVENT_TS))).alias("_cart_ts"),
        F.max(F.when(F.col(C.EVENT_TYPE) == C.PURCHASE, F.col(C.EVENT_TS))).alias("_buy_ts"),
        F.max_by(F.when(is_cart, line_value), F.when(is_cart, F.col(C.EVENT_TS))).alias("_value"),
    )
    open_ = F.col("_cart_ts").isNotNull() & (F.col("_buy_ts").isNull() | (F.col("_buy_ts") < F.col("_cart_ts")))
    return per_item.where(open_).groupBy(C.USER_ID).agg(F.sum("_value").alias(C.CART_VALUE))


def user_features(events: DataFrame, users: DataFrame | None, items: DataFrame | None, as_of: dt.date,
                  session_gap_minutes: int = 30, cart_lookback_days: int = 14,
                  consent_without_users: bool = False) -> DataFrame:
    """One row per user (silver.users ∪ users with events), conforming to :data:`USER_FEATURES`.

    Without a users table every user's ``marketing_consent`` is ``consent_without_users`` (the configuration's
    stated ``privacy.consent_without_users``); with one, a user missing from it has none.

    Events are shuffled once, by user (the sessionising window); every per-user aggregate and the joins between
    them reuse that partitioning. ``cart_value`` is the open cart of the last ``cart_lookback_days`` days.
    """
    ev = events.where(_as_of_filter(as_of))
    if items is not None:
        ev = ev.join(items.select(C.ITEM_ID, C.CATEGORY, F.col(C.PRICE).alias("_list_price")), C.ITEM_ID, "left")
    else:
        ev = (ev.withColumn(C.CATEGORY, F.lit(None).cast(StringType()))
              .withColumn("_list_price", F.lit(None).cast(DoubleType())))
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


# ----------------------------------------------------------------------------------------------------------------
# Item features
# ----------------------------------------------------------------------------------------------------------------
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


# ----------------------------------------------------------------------------------------------------------------
# Interactions
# ----------------------------------------------------------------------------------------------------------------
def check_event_weights(event_weights: Mapping[str, float]) -> None:
    """Raise :class:`FeatureError` unless every canonical event type has a positive weight and no key is unknown."""
    unknown = sorted(set(event_weights) - set(C.ALL_EVENT_TYPES))
    if unknown:
        raise FeatureError(f"event_weights: unknown event type(s) {', '.join(unknown)}")
    missing = [t for t in C.EVENT_TYPES if t not in event_weights]
    if missing:
        raise FeatureError(f"event_weights: no weight for event type(s) {', '.join(missing)}")
    bad = sorted(t for t, w in event_weights.items() if not (w > 0 and math.isfinite(w)))
    if bad:
        raise FeatureError(f"event_weights: weights must be positive and finite ({', '.join(bad)})")


# Decay never goes below this: an event more than 20 half-lives old counts as much as one exactly 20 half-lives old.
# float32 (what ALS casts confidences to) keeps it, and every weight times it, far above its smallest normal.
MIN_DECAY = 2.0 ** -20


def decay_reference(as_of: dt.date, last_event_date: dt.date | None) -> dt.date:
    """The date ages are counted from: the earlier of the run's date and the data's last event date, so that a
    replay of an old log weighs its last days fully instead of decaying everything to nothing."""
    return as_of if last_event_date is None else min(as_of, last_event_date)


def interactions(as_of: dt.date, kind: str = "events", event_weights: Mapping[str, float] | None = None,
                 half_life_days: float = 30.0, max_count_per_type: int = 10, decay_from: dt.date | None = None,
                 min_rating: float = 0.0) -> Transform:
    """Silver events -> one row per (user_id, item_id): ``confidence`` and the latest ``event_ts``.

    ``kind="events"`` (implicit): confidence = Σ_type weight[type] × Σ_{the type's ``max_count_per_type`` most
    recent events} max(2^(-age_days / half_life_days), MIN_DECAY), i.e. weight × min(count, cap) × the mean decay
    of the events kept; ``age_days`` = whole days from ``event_date`` to ``decay_from`` (default ``as_of``; see
    :func:`decay_reference`), computed in double. Rating events are weighted like any other type (they need a
    weight).

    ``kind="ratings"``: confidence = the latest non-null rating of the pair (ties: highest event_id), pairs whose
    rating is below ``min_rating`` left out. Train fits it as explicit ALS, or as implicit ALS with confidence
    1 + alpha × rating.
    """
    if kind not in ("events", "ratings"):
        raise FeatureError(f"kind must be 'events' or 'ratings', got {kind!r}")
    if kind == "ratings":
        return _rating_interactions(as_of, min_rating)
    weights = dict(event_weights or {})
    check_event_weights(weights)
    if half_life_days <= 0:
        raise FeatureError(f"half_life_days must be > 0, got {half_life_days}")
    if max_count_per_type <= 0:
        raise FeatureError(f"max_count_per_type must be > 0, got {max_count_per_type}")
    weight_map = F.create_map(*(x for t, w in sorted(weights.items()) for x in (F.lit(t), F.lit(float(w)))))

    def apply(events: DataFrame) -> DataFrame:
        w = weight_map[F.col(C.EVENT_TYPE)]
        checked = F.when(w.isNull(), F.raise_error(F.concat(F.lit("no event weight for event type "),
                                                           F.col(C.EVENT_TYPE)))).otherwise(w)
        recent = Window.partitionBy(C.USER_ID, C.ITEM_ID, C.EVENT_TYPE).orderBy(F.desc(C.EVENT_TS),
                                                                               F.desc(C.EVENT_ID))
        age = F.greatest(F.datediff(F.lit(decay_from or as_of), F.col(C.EVENT_DATE)), F.lit(0)).cast("double")
        decay = F.greatest(F.pow(F.lit(2.0), -age / F.lit(float(half_life_days))), F.lit(MIN_DECAY))
        out = (events.where(_as_of_filter(as_of))
               .withColumn("_rn", F.row_number().over(recent))
               .where(F.col("_rn") <= max_count_per_type)
               .groupBy(C.USER_ID, C.ITEM_ID)
               .agg(F.sum(checked * decay).alias(C.CONFIDENCE), F.max(C.EVENT_TS).alias(C.EVENT_TS)))
        return _conform(out, RAW_INTERACTIONS)
    return apply


def _rating_interactions(as_of: dt.date, min_rating: float) -> Transform:
    def apply(events: DataFrame) -> DataFrame:
        latest = Window.partitionBy(C.USER_ID, C.ITEM_ID).orderBy(F.desc(C.EVENT_TS), F.desc(C.EVENT_ID))
        out = (events.where(_as_of_filter(as_of) & (F.col(C.EVENT_TYPE) == C.RATING_EVENT)
                            & F.col(C.RATING).isNotNull())
               .withColumn("_rn", F.row_number().over(latest))
               .where((F.col("_rn") == 1) & (F.col(C.RATING) >= F.lit(float(min_rating))))
               .select(C.USER_ID, C.ITEM_ID, F.col(C.RATING).alias(C.CONFIDENCE), C.EVENT_TS))
        return _conform(out, RAW_INTERACTIONS)
    return apply


# ----------------------------------------------------------------------------------------------------------------
# Stable integer ids
# ----------------------------------------------------------------------------------------------------------------
def extend_id_map(existing: DataFrame, ids: DataFrame, kind: str) -> DataFrame:
    """The rows to append to gold.id_map for ``kind``: ids (first column of ``ids``) not yet mapped, numbered
    after the kind's current max idx in ``original_id`` order. Existing ids are never renumbered; nulls are
    skipped. Evaluating the result fails if an idx would exceed the Int range (ALS needs Int ids)."""
    mapped = existing.where(F.col(C.ID_KIND) == kind)
    base = mapped.agg(F.coalesce(F.max(C.IDX).cast("long"), F.lit(-1).cast("long")).alias("_base"))
    new = (ids.select(F.col(ids.columns[0]).cast(StringType()).alias(C.ORIGINAL_ID))
           .where(F.col(C.ORIGINAL_ID).isNotNull()).distinct()
           .join(mapped.select(C.ORIGINAL_ID), C.ORIGINAL_ID, "left_anti"))
    idx = F.col("_base") + F.col("_pos") + F.lit(1)
    checked = F.when(idx > INT_MAX, F.raise_error(F.concat(
        F.lit(f"id map overflow: {kind} idx exceeds the Int range (2^31-1) at original_id "),
        F.col(C.ORIGINAL_ID)))).otherwise(idx)
    out = (new.transform(sorted_positions(C.ORIGINAL_ID)).crossJoin(base)
           .select(F.lit(kind).alias(C.ID_KIND), C.ORIGINAL_ID, checked.alias(C.IDX)))
    return _conform(out, schemas.ID_MAP)


def sorted_positions(key: str) -> Transform:
    """Distinct, non-null ``key`` values -> the same rows plus ``_pos``: the 0-based position of each in ``key``
    order, numbered consecutively.

    Not a window over the whole frame (one partition; a first run maps every id at once): the values are range
    partitioned, numbered inside each range by a window partitioned by the range, and offset by the sizes of the
    ranges before it (a frame of one row per range). Both uses of the range exchange are one reused exchange, so
    they see the same ranges."""
    def apply(df: DataFrame) -> DataFrame:
        ranged = df.repartitionByRange(key).withColumn("_part", F.spark_partition_id())
        numbered = ranged.withColumn("_row", F.row_number().over(Window.partitionBy("_part").orderBy(key)))
        sizes = numbered.groupBy("_part").agg(F.max("_row").alias("_n"))
        offsets = (sizes.alias("a").join(sizes.alias("b"), F.col("b._part") < F.col("a._part"), "left")
                   .groupBy(F.col("a._part").alias("_part"))
                   .agg(F.coalesce(F.sum("b._n"), F.lit(0)).cast("long").alias("_off")))
        return (numbered.join(F.broadcast(offsets), "_part")
                .select(*df.columns, (F.col("_off") + F.col("_row") - F.lit(1)).alias("_pos")))
    return apply


def index_interactions(raw: DataFrame, id_map: DataFrame) -> DataFrame:
    """(user_id, item_id, confidence, event_ts) -> schemas.INTERACTIONS via the id map (inner join: an unmapped
    id drops its rows, so map every id first with :func:`extend_id_map`)."""
    def side(kind: str, id_col: str, idx_col: str) -> DataFrame:
        return id_map.where(F.col(C.ID_KIND) == kind).select(F.col(C.ORIGINAL_ID).alias(id_col),
                                                             F.col(C.IDX).alias(idx_col))
    out = (raw.join(side(USER_KIND, C.USER_ID, C.USER_IDX), C.USER_ID)
           .join(side(ITEM_KIND, C.ITEM_ID, C.ITEM_IDX), C.ITEM_ID))
    return _conform(out, schemas.INTERACTIONS)


# ----------------------------------------------------------------------------------------------------------------
# Stage
# ----------------------------------------------------------------------------------------------------------------
def _read_optional(spark: SparkSession, uri: str) -> DataFrame | None:
    return delta_io.read(spark, uri) if delta_io.is_delta(spark, uri) else None


def _rows_written(spark: SparkSession, uri: str) -> int:
    """Rows written by the table's latest commit, from the Delta log (no data scan)."""
    from delta.tables import DeltaTable

    row = DeltaTable.forPath(spark, uri).history(1).select("operationMetrics").first()
    metrics = (row[0] or {}) if row else {}
    return int(metrics.get("numOutputRows", 0))


def run_features(spark: SparkSession, cfg: AppConfig, run_id: str, as_of: dt.date | None = None) -> dict[str, Any]:
    """Read silver, write gold/{user_features,item_features,interactions} (overwrite) and append new ids to
    gold/id_map. ``as_of`` defaults to the latest silver event date (reproducible reruns). Only the events of the
    ``features.lookback_days`` window ending at the decay reference are read (see the module docstring for which
    features that bounds). Returns counts."""
    # run_stage logs the stage's start and end; a second pair here was noise.
    with contextlib.nullcontext({"run_id": run_id}) as counts:
        events_uri = T.SILVER_EVENTS.uri(cfg)
        if not delta_io.is_delta(spark, events_uri):
            raise FeatureError(f"no silver events table at {events_uri} (run clean first)")
        events = delta_io.read(spark, events_uri)
        users = _read_optional(spark, T.SILVER_USERS.uri(cfg))
        items = _read_optional(spark, T.SILVER_ITEMS.uri(cfg))
        last = events.agg(F.max(C.EVENT_DATE)).first()
        last_date: dt.date | None = last[0] if last else None
        if as_of is None:
            as_of = last_date or dt.datetime.now(dt.UTC).date()
        decay_from = decay_reference(as_of, last_date)
        counts.update(as_of=as_of.isoformat(), decay_from=decay_from.isoformat())
        if decay_from < as_of:
            log.info("the data ends %d day(s) before the run date: interactions decay from its last event, %s",
                     (as_of - decay_from).days, decay_from)
        f = cfg.features
        events = events.transform(within_lookback(decay_from, f.lookback_days))
        if f.lookback_days:
            log.info("features from the events of %s to %s (features.lookback_days=%d)",
                     decay_from - dt.timedelta(days=f.lookback_days - 1), as_of, f.lookback_days)
        raw = events.transform(interactions(as_of, cfg.sources.kind, f.event_weights, f.half_life_days,
                                            f.max_count_per_type, decay_from, f.min_rating)).persist()

        # Id map: new rows are computed against one pinned version of the map; the append carries that version
        # as its txnVersion, so a retried or concurrent run that read the same version cannot append twice, and a
        # rerun after a crash finds nothing new to append.
        map_uri = T.ID_MAP.uri(cfg)
        map_version = delta_io.version(spark, map_uri)
        existing = (delta_io.read(spark, map_uri, version=map_version) if map_version is not None
                    else spark.createDataFrame([], schemas.ID_MAP))
        user_ids = raw.select(C.USER_ID)
        if users is not None:
            user_ids = user_ids.unionByName(users.select(C.USER_ID))
        new_rows = (extend_id_map(existing, user_ids, USER_KIND)
                    .unionByName(extend_id_map(existing, raw.select(C.ITEM_ID), ITEM_KIND))).persist()
        new_counts = {r[0]: int(r[1]) for r in new_rows.groupBy(C.ID_KIND).count().collect()}  # <= 2 rows
        new_users, new_items = new_counts.get(USER_KIND, 0), new_counts.get(ITEM_KIND, 0)
        if new_users or new_items:
            delta_io.append(new_rows, map_uri, app_id=ID_MAP_APP_ID,
                            txn_version=(map_version if map_version is not None else -1) + 1, name=T.ID_MAP.key)
        new_rows.unpersist()
        id_map = delta_io.read(spark, map_uri) if delta_io.is_delta(spark, map_uri) else existing

        # Checked before the first gold write: a failed check leaves every gold table as the last run left it.
        indexed = index_interactions(raw, id_map).persist()
        n_inter, raw_count = indexed.count(), raw.count()
        if n_inter != raw_count:
            raise FeatureError(f"id map is missing ids: {raw_count - n_inter} interaction(s) unmapped "
                               "(a concurrent features run?); nothing was written to gold; rerun features")
        delta_io.overwrite(indexed, T.INTERACTIONS.uri(cfg), name=T.INTERACTIONS.key)
        indexed.unpersist()
        raw.unpersist()
        delta_io.overwrite(user_features(events, users, items, as_of, f.session_gap_minutes,
                                   consent_without_users=cfg.privacy.consent_default() is True),
                           T.USER_FEATURES.uri(cfg), name=T.USER_FEATURES.key)
        delta_io.overwrite(item_features(events, items, as_of, f.price_bands),
                           T.ITEM_FEATURES.uri(cfg), name=T.ITEM_FEATURES.key)
        counts.update(
            interactions=n_inter,
            users=_rows_written(spark, T.USER_FEATURES.uri(cfg)),
            items=_rows_written(spark, T.ITEM_FEATURES.uri(cfg)),
            new_user_ids=new_users,
            new_item_ids=new_items,
        )
    return counts
