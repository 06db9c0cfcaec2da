"""StructTypes of the silver and gold tables, defined once."""

from __future__ import annotations

from pyspark.sql.types import (
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

DQ_STATS = StructType([
    StructField(C.RUN_ID, StringType(), False),
    StructField(C.Q_SOURCE, StringType(), False),
    StructField("metric", StringType(), False),
    StructField("value", LongType(), False),
])
