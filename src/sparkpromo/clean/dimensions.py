"""Users and items: row-level rules, age bands and their silver shape. Pure transforms."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from sparkpromo import columns as C
from sparkpromo import delta_io
from sparkpromo import tables as T
from sparkpromo.clean.checks import CleanError
from sparkpromo.clean.rules import (
    _BIRTH,
    _PRICE,
    _SIGNUP,
    _STOCK,
    EXCLUDED,
    INVALID_STOCK,
    MALFORMED_DATE,
    MALFORMED_NUMBER,
    MALFORMED_RECORD,
    MALFORMED_VALUE,
    MISSING_FIELD,
    NEGATIVE_PRICE,
    OVERSIZED_FIELD,
    REQUIRED,
    accepted,
    canonicalise,
    excluded,
    first_rule,
    malformed,
    missing_any,
    oversized_any,
    parse_bool,
    parse_double,
)
from sparkpromo.config import AppConfig
from sparkpromo.frame import Transform
from sparkpromo.ingest import CORRUPT

__all__ = [
    "age_band", "band_changed", "age_band_movers", "classify_users", "silver_users", "users_consent",
    "classify_items", "silver_items"
]


def age_band(birth: Column, as_of: dt.date) -> Column:
    years = F.floor(F.months_between(F.lit(as_of), birth) / 12)
    return (F.when(birth.isNull() | (years < 0), F.lit("unknown"))
            .when(years < 18, "<18").when(years < 25, "18-24").when(years < 35, "25-34")
            .when(years < 45, "35-44").when(years < 55, "45-54").when(years < 65, "55-64").otherwise("65+"))


def band_changed(silver_users: DataFrame, as_of: dt.date) -> Transform:
    """Canonical bronze users rows -> the ids (distinct) whose age band as of ``as_of`` is not the one
    ``silver_users`` holds: a birthday has moved them to the next band since the clean that judged them."""
    def step(canon: DataFrame) -> DataFrame:
        born = canon.select(C.USER_ID, F.try_to_timestamp(F.col(C.BIRTH_DATE)).cast("date").alias(_BIRTH))
        return (born.where(F.col(_BIRTH).isNotNull())
                .join(silver_users.select(C.USER_ID, C.AGE_BAND), C.USER_ID)
                .where(age_band(F.col(_BIRTH), as_of) != F.col(C.AGE_BAND)).select(C.USER_ID).distinct())
    return step


def age_band_movers(spark: SparkSession, cfg: AppConfig, now: dt.datetime, version: int | None = None) -> DataFrame:
    """:func:`band_changed` over bronze users (at ``version``) and silver users: the users an incremental clean
    as of ``now`` re-judges although no new row of theirs arrived, so that silver equals a rebuild as of ``now``."""
    src = cfg.sources.users
    if src is None:
        raise ValueError("age_band_movers needs a users source (sources.users)")
    canon = delta_io.read(spark, T.BRONZE_USERS.uri(cfg), version=version).transform(canonicalise("users", src))
    return canon.transform(band_changed(delta_io.read(spark, T.SILVER_USERS.uri(cfg)), now.date()))


def classify_users(max_len: int, exclude: Mapping[str, str] | None = None) -> Transform:
    def step(df: DataFrame) -> DataFrame:
        df = (df.withColumn(_SIGNUP, F.try_to_timestamp(F.col(C.SIGNUP_DATE)).cast("date"))
              .withColumn(_BIRTH, F.try_to_timestamp(F.col(C.BIRTH_DATE)).cast("date"))
              .withColumn(C.COUNTRY, F.upper(F.col(C.COUNTRY)))
              .withColumn("_consent", parse_bool(F.col(C.MARKETING_CONSENT))))
        rule = first_rule(
            (F.col(CORRUPT).isNotNull(), MALFORMED_RECORD),
            (excluded(exclude or {}), EXCLUDED),
            (missing_any(REQUIRED["users"]), MISSING_FIELD),
            (oversized_any([C.USER_ID, C.COUNTRY], max_len), OVERSIZED_FIELD),
            (malformed(C.SIGNUP_DATE, _SIGNUP) | malformed(C.BIRTH_DATE, _BIRTH), MALFORMED_DATE),
            (malformed(C.MARKETING_CONSENT, "_consent"), MALFORMED_VALUE),
        )
        return df.withColumn(C.Q_RULE, rule)
    return step


def silver_users(as_of: dt.date, consent_without_column: bool | None = None) -> Transform:
    """Typed users. The birth date is reduced to month and day (plus a coarse age band) at this boundary, and a
    missing consent means no consent. ``consent_without_column`` (``privacy.consent_without_users``) is every
    user's consent when the source has no consent column at all."""
    consent = (F.lit(consent_without_column) if consent_without_column is not None
               else F.coalesce(F.col("_consent"), F.lit(False)))

    def step(df: DataFrame) -> DataFrame:
        return accepted(df).select(
            F.col(C.USER_ID), F.col(_SIGNUP).alias(C.SIGNUP_DATE),
            F.month(_BIRTH).alias(C.BIRTH_MONTH), F.dayofmonth(_BIRTH).alias(C.BIRTH_DAY),
            age_band(F.col(_BIRTH), as_of).alias(C.AGE_BAND), F.col(C.COUNTRY),
            consent.alias(C.MARKETING_CONSENT))
    return step


def users_consent(cfg: AppConfig, bronze_columns: Sequence[str]) -> bool | None:
    """The consent every user gets when the users source has no consent column (None: the column is there).
    Raises :class:`CleanError` when it has none and the configuration does not say."""
    src = cfg.sources.users
    if src is None or src.columns.get(C.MARKETING_CONSENT, C.MARKETING_CONSENT) in bronze_columns:
        return None
    stated = cfg.privacy.consent_default()
    if stated is None:
        raise CleanError(f"sources.users: {src.path} has no {C.MARKETING_CONSENT} column; say whether these users "
                         "consented to marketing with privacy.consent_without_users: granted or denied")
    return stated


def classify_items(max_len: int, exclude: Mapping[str, str] | None = None) -> Transform:
    def step(df: DataFrame) -> DataFrame:
        df = (df.withColumn(_PRICE, parse_double(F.col(C.PRICE)))
              .withColumn(_STOCK, parse_double(F.col(C.STOCK)))
              .withColumn(C.CATEGORY, F.lower(F.col(C.CATEGORY))))
        rule = first_rule(
            (F.col(CORRUPT).isNotNull(), MALFORMED_RECORD),
            (excluded(exclude or {}), EXCLUDED),
            (missing_any(REQUIRED["items"]), MISSING_FIELD),
            (oversized_any([C.ITEM_ID, C.CATEGORY, C.BRAND, C.ITEM_NAME], max_len), OVERSIZED_FIELD),
            (malformed(C.PRICE, _PRICE) | malformed(C.STOCK, _STOCK), MALFORMED_NUMBER),
            (F.col(_PRICE) < 0, NEGATIVE_PRICE),
            ((F.col(_STOCK) < 0) | (F.col(_STOCK) > 2_147_483_647) | (F.col(_STOCK) != F.floor(F.col(_STOCK))),
             INVALID_STOCK),
        )
        return df.withColumn(C.Q_RULE, rule)
    return step


def silver_items(df: DataFrame) -> DataFrame:
    return accepted(df).select(F.col(C.ITEM_ID), F.col(C.CATEGORY), F.col(C.BRAND),
                               F.col(_PRICE).alias(C.PRICE), F.col(_STOCK).cast("int").alias(C.STOCK),
                               F.col(C.ITEM_NAME))
