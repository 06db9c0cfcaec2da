"""Keyed pseudonyms computed in Spark equal Python's hmac; the key only comes from the environment."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from sparkpromo import columns as C
from sparkpromo.privacy import PrivacyError, hmac_key, keyed_hash, pseudonym, pseudonymise_users

KEY_ENV = "SPARKPROMO_TEST_HMAC_KEY"


@pytest.mark.parametrize("key", [b"0123456789abcdef", b"k" * 64, b"a-very-long-key-" * 8])
def test_spark_hmac_matches_python(spark: SparkSession, key: bytes) -> None:
    ids = ["u000001", "", "ünïcödé", "x" * 300]
    got = dict(keyed_hash(spark.createDataFrame([(i,) for i in ids], "id string"), F.col("id"), "h", key)
               .select("id", "h").collect())
    assert got == {i: hmac.new(key, i.encode(), hashlib.sha256).hexdigest() for i in ids}


def test_key_from_environment_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)
    with pytest.raises(PrivacyError, match=KEY_ENV):
        hmac_key(KEY_ENV)
    monkeypatch.setenv(KEY_ENV, "short")
    with pytest.raises(PrivacyError, match="shorter than 16"):
        hmac_key(KEY_ENV)
    monkeypatch.setenv(KEY_ENV, "0123456789abcdef")
    assert hmac_key(KEY_ENV) == b"0123456789abcdef"


def test_pseudonymise_frames(spark: SparkSession, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, "0123456789abcdef")
    events = spark.createDataFrame([("u1", "p1")], "user_id string, item_id string")
    items = spark.createDataFrame([("p1",)], "item_id string")
    out = pseudonymise_users({"events": events, "items": items}, KEY_ENV)
    assert out["events"].first()[C.USER_ID] == pseudonym("u1", b"0123456789abcdef") != "u1"
    assert out["items"] is items
