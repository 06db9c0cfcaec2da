"""The StructType of every Delta table sparkpromo writes (bronze takes its source's columns), defined once; the
tables themselves are declared in :mod:`sparkpromo.tables`."""

from __future__ import annotations

from pyspark.sql.types import (
    ArrayType,
    BooleanType,
    DateType,
    DoubleType,
    IntegerType,
    LongType,
    StringType,
    StructField,
    StructType,
    TimestampType,
)

from sparkpromo import columns as C

SILVER_EVENTS = StructType([
    StructField(C.EVENT_ID, StringType(), False),
    StructField(C.USER_ID, StringType(), False),
    StructField(C.ITEM_ID, StringType(), False),
    StructField(C.EVENT_TYPE, StringType(), False),
    StructField(C.EVENT_TS, TimestampType(), False),
    StructField(C.EVENT_DATE, DateType(), False),
    StructField(C.PRICE, DoubleType(), True),
    StructField(C.QUANTITY, IntegerType(), True),
    StructField(C.RATING, DoubleType(), True),
    StructField(C.SESSION_ID, StringType(), True),
])

SILVER_USERS = StructType([
    StructField(C.USER_ID, StringType(), False),
    StructField(C.SIGNUP_DATE, DateType(), True),
    StructField(C.BIRTH_MONTH, IntegerType(), True),
    StructField(C.BIRTH_DAY, IntegerType(), True),
    StructField(C.AGE_BAND, StringType(), True),
    StructField(C.COUNTRY, StringType(), True),
    StructField(C.MARKETING_CONSENT, BooleanType(), False),
])

SILVER_ITEMS = StructType([
    StructField(C.ITEM_ID, StringType(), False),
    StructField(C.CATEGORY, StringType(), True),
    StructField(C.BRAND, StringType(), True),
    StructField(C.PRICE, DoubleType(), True),
    StructField(C.STOCK, IntegerType(), True),
    StructField(C.ITEM_NAME, StringType(), True),
])

QUARANTINE = StructType([
    StructField(C.Q_SOURCE, StringType(), False),
    StructField(C.Q_RULE, StringType(), False),
    StructField(C.Q_PAYLOAD, StringType(), False),
    StructField(C.SOURCE_FILE, StringType(), True),
    StructField(C.RUN_ID, StringType(), False),
])

ID_MAP = StructType([
    StructField(C.ID_KIND, StringType(), False),
    StructField(C.ORIGINAL_ID, StringType(), False),
    StructField(C.IDX, IntegerType(), False),
])

INTERACTIONS = StructType([
    StructField(C.USER_IDX, IntegerType(), False),
    StructField(C.ITEM_IDX, IntegerType(), False),
    StructField(C.CONFIDENCE, DoubleType(), False),
    StructField(C.EVENT_TS, TimestampType(), True),  # latest interaction, for time-based splits
])

# (user_id, item_id) level interactions before the id map turns them into INTERACTIONS (features' own, no table).
RAW_INTERACTIONS = StructType([
    StructField(C.USER_ID, StringType(), False),
    StructField(C.ITEM_ID, StringType(), False),
    StructField(C.CONFIDENCE, DoubleType(), False),
    StructField(C.EVENT_TS, INTERACTIONS[C.EVENT_TS].dataType, True),
])

DQ_STATS = StructType([
    StructField(C.RUN_ID, StringType(), False),
    StructField(C.Q_SOURCE, StringType(), False),
    StructField("metric", StringType(), False),
    StructField("value", LongType(), False),
])

USER_FEATURES = StructType([
    StructField(C.USER_ID, StringType(), False),
    StructField(C.COUNTRY, StringType(), True),
    StructField(C.AGE_BAND, StringType(), True),
    StructField(C.MARKETING_CONSENT, BooleanType(), False),
    StructField(C.SIGNUP_DATE, DateType(), True),
    StructField(C.BIRTH_MONTH, IntegerType(), True),
    StructField(C.BIRTH_DAY, IntegerType(), True),
    StructField(C.DAYS_SINCE_SIGNUP, IntegerType(), True),
    StructField(C.ACTIVE_DAYS, IntegerType(), False),
    StructField(C.SESSIONS, IntegerType(), False),
    StructField(C.PURCHASES, IntegerType(), False),
    StructField(C.MONETARY, DoubleType(), False),
    StructField(C.RECENCY_DAYS, IntegerType(), True),
    StructField(C.AVG_SESSION_SECONDS, DoubleType(), False),
    StructField(C.CART_VALUE, DoubleType(), False),
    StructField(C.TOP_CATEGORY, StringType(), True),
])

ITEM_FEATURES = StructType([
    StructField(C.ITEM_ID, StringType(), False),
    StructField(C.CATEGORY, StringType(), True),
    StructField(C.BRAND, StringType(), True),
    StructField(C.PRICE, DoubleType(), True),
    StructField(C.STOCK, IntegerType(), True),
    StructField(C.PRICE_BAND, StringType(), True),
    StructField(C.POPULARITY, IntegerType(), False),
    StructField(C.CONVERSION_RATE, DoubleType(), False),
    StructField(C.ITEM_NAME, StringType(), True),
])

OFFER_TYPE = StructType([
    StructField(C.DISCOUNT_PCT, DoubleType(), True),
    StructField(C.COUPON_CODE, StringType(), True),
    StructField(C.CAMPAIGN_NAME, StringType(), True),
    StructField(C.OFFER_TEXT, StringType(), True),
])

RECOMMENDATIONS = StructType([
    StructField(C.CAMPAIGN_ID, StringType(), False),
    StructField(C.RUN_DATE, DateType(), False),
    StructField(C.USER_ID, StringType(), False),
    StructField(C.ITEM_ID, StringType(), False),
    StructField(C.RANK, IntegerType(), False),
    StructField(C.SCORE, DoubleType(), True),
    StructField(C.RAW_SCORE, DoubleType(), True),
    StructField(C.SOURCE, StringType(), False),
    StructField(C.IS_CONTROL, BooleanType(), False),
    StructField(C.DELIVERED, BooleanType(), False),
    StructField(C.MODEL_RUN_ID, StringType(), True),
    StructField(C.OFFER, OFFER_TYPE, True),
    StructField(C.REASON, ArrayType(StringType()), True),
    StructField(C.RUN_ID, StringType(), True),
])

MODEL_METRICS = StructType([
    StructField(C.RUN_ID, StringType(), False),
    StructField(C.CONTENDER, StringType(), False),
    StructField(C.METRIC, StringType(), False),
    StructField(C.VALUE, DoubleType(), True),
])

OUTCOMES = StructType([
    StructField(C.CAMPAIGN_ID, StringType(), False),
    StructField(C.RUN_DATE, DateType(), False),
    StructField(C.MEASURED_ON, DateType(), False),
    StructField(C.WINDOW_END, DateType(), False),
    StructField(C.STATUS, StringType(), False),
    StructField(C.IN_CONFIG, BooleanType(), False),
    StructField(C.CAMPAIGN_TYPE, StringType(), True),
    StructField(C.USERS_TREATED, LongType(), False),
    StructField(C.USERS_CONTROL, LongType(), False),
    StructField(C.CONVERSIONS_TREATED, LongType(), True),
    StructField(C.CONVERSIONS_CONTROL, LongType(), True),
    *(StructField(name, DoubleType(), True) for name in (
        C.CONVERSION_TREATED, C.CONVERSION_CONTROL, C.UPLIFT, C.UPLIFT_RELATIVE, C.UPLIFT_CI_LOW, C.UPLIFT_CI_HIGH,
        C.OFFER_CONVERSION_TREATED, C.OFFER_CONVERSION_CONTROL, C.OFFER_UPLIFT, C.OFFER_UPLIFT_CI_LOW,
        C.OFFER_UPLIFT_CI_HIGH, C.REVENUE_TREATED, C.REVENUE_CONTROL, C.REVENUE_UPLIFT, C.REVENUE_UPLIFT_CI_LOW,
        C.REVENUE_UPLIFT_CI_HIGH, C.INCREMENTAL_CONVERSIONS, C.INCREMENTAL_REVENUE, C.DISCOUNT_COST,
        C.INCREMENTAL_ROI, C.AUUC, C.AUUC_RANDOM, C.QINI_COEFFICIENT)),
    StructField(C.RUN_ID, StringType(), True),
])

UPLIFT = StructType([
    StructField(C.CAMPAIGN_ID, StringType(), False),
    StructField(C.RUN_DATE, DateType(), False),
    StructField(C.DECILE, IntegerType(), False),
    StructField(C.MEASURED_ON, DateType(), False),
    StructField(C.USERS_TREATED, LongType(), False),
    StructField(C.USERS_CONTROL, LongType(), False),
    StructField(C.CONVERSIONS_TREATED, LongType(), False),
    StructField(C.CONVERSIONS_CONTROL, LongType(), False),
    StructField(C.UPLIFT, DoubleType(), True),
    StructField(C.CUM_SHARE, DoubleType(), False),
    StructField(C.QINI, DoubleType(), True),
    StructField(C.QINI_RANDOM, DoubleType(), True),
    StructField(C.RUN_ID, StringType(), True),
])

ACTIONS = StructType([
    StructField(C.MEASURED_ON, DateType(), False),
    StructField(C.CAMPAIGN_ID, StringType(), False),
    StructField(C.ACTION, StringType(), False),
    StructField(C.ACTION_VALUE, DoubleType(), True),
    StructField(C.ACTION_REASON, StringType(), False),
    StructField(C.RUN_ID, StringType(), True),
])

STAGE_RUNS = StructType([
    StructField(C.RUN_ID, StringType(), True),
    StructField(C.RUN_DATE, DateType(), True),
    StructField("stage", StringType(), True),
    StructField("elapsed_s", DoubleType(), True),
    StructField("finished_at", TimestampType(), True),
    StructField("io_versions", StringType(), True),
    StructField("result", StringType(), True),
    StructField("fingerprint", StringType(), True),
])

CAMPAIGN_METRICS = StructType([
    StructField(C.RUN_ID, StringType(), True),
    StructField(C.RUN_DATE, DateType(), True),
    StructField(C.CAMPAIGN_ID, StringType(), True),
    StructField("metric", StringType(), True),
    StructField("value", DoubleType(), True),
])

CLEAN_STATE = StructType([
    StructField(C.RUN_ID, StringType(), True),
    StructField("finished_at", TimestampType(), True),
    StructField("mode", StringType(), True),
    StructField("bronze_versions", StringType(), True),
    StructField("output_versions", StringType(), True),
    StructField("settings", StringType(), True),
    StructField("result", StringType(), True),
])

FORGOTTEN = StructType([
    StructField(C.ID_HASH, StringType(), True),
    StructField(C.FORGOTTEN_AT, TimestampType(), True),
])
