"""Privacy: keyed pseudonyms (HMAC-SHA256) for user ids, computed with Spark built-ins.

The key comes only from the environment (``privacy.key_env``); it is never written to config, logs or tables, and
it never appears in a query plan: the HMAC pads enter as the data of a broadcast one-row frame, not as literals.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
from collections.abc import Mapping

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from sparkpromo import columns as C

log = logging.getLogger(__name__)

_BLOCK = 64  # SHA-256 block size in bytes


class PrivacyError(ValueError):
    pass


def hmac_key(key_env: str) -> bytes:
    key = os.environ.get(key_env, "")
    if len(key) < 16:
        raise PrivacyError(f"environment variable {key_env} (privacy.key_env) is unset or shorter than 16 "
                           "characters; pseudonyms and the hashes of forgotten ids need it")
    return key.encode("utf-8")


def optional_key(key_env: str) -> bytes | None:
    """The key when ``key_env`` holds a usable one (see :func:`hmac_key`), else None."""
    try:
        return hmac_key(key_env)
    except PrivacyError:
        return None


def key_check(key: bytes) -> str:
    """A check value of ``key``: tells whether two keys are the same, and nothing about either."""
    return hmac.new(key, b"sparkpromo key check", hashlib.sha256).hexdigest()[:16]


PAD_IN, PAD_OUT = "_hmac_ipad", "_hmac_opad"


def _pads(key: bytes) -> tuple[bytes, bytes]:
    if len(key) > _BLOCK:
        key = hashlib.sha256(key).digest()
    key = key.ljust(_BLOCK, b"\0")
    return bytes(b ^ 0x36 for b in key), bytes(b ^ 0x5C for b in key)


def pads_frame(spark: SparkSession, key: bytes) -> DataFrame:
    """A one-row frame of the HMAC pads. The key reaches the executors as this frame's data, so query plans show
    only its column names: as literals, the pads would be printed in every plan (and only redaction hid them)."""
    ipad, opad = _pads(key)
    return spark.createDataFrame([(bytearray(ipad), bytearray(opad))], f"{PAD_IN} binary, {PAD_OUT} binary")


def hmac_sha256(col: Column, ipad: Column | None = None, opad: Column | None = None) -> Column:
    """HMAC-SHA256 of a string column as lowercase hex, identical to Python's ``hmac`` (RFC 2104), given the pad
    columns of :func:`pads_frame` (by default the columns it names, after :func:`with_pads`).

    Built from ``sha2``/``unhex`` so it runs in the JVM: no Python UDF on this hot path.
    """
    ipad = F.col(PAD_IN) if ipad is None else ipad
    opad = F.col(PAD_OUT) if opad is None else opad
    inner = F.unhex(F.sha2(F.concat(ipad, col.cast("binary")), 256))
    return F.sha2(F.concat(opad, inner), 256)


def with_pads(df: DataFrame, key: bytes) -> DataFrame:
    """``df`` with the two pad columns, joined from the broadcast one-row :func:`pads_frame`; drop them after use."""
    return df.crossJoin(F.broadcast(pads_frame(df.sparkSession, key)))


def keyed_hash(df: DataFrame, source: Column, out: str, key: bytes) -> DataFrame:
    """``df`` plus (or with replaced) column ``out``: the HMAC-SHA256 of ``source``, the key never in the plan."""
    return with_pads(df, key).withColumn(out, hmac_sha256(source)).drop(PAD_IN, PAD_OUT)


def pseudonym(user_id: str, key: bytes) -> str:
    """The pseudonym of one id, for look-ups from the CLI (``explain``, ``forget``)."""
    return hmac.new(key, user_id.encode("utf-8"), hashlib.sha256).hexdigest()


def pseudonymise_users(frames: Mapping[str, DataFrame], key_env: str) -> dict[str, DataFrame]:
    """Replace ``user_id`` by its pseudonym in every frame that has one."""
    key = hmac_key(key_env)
    return {name: (keyed_hash(df, F.col(C.USER_ID), C.USER_ID, key) if C.USER_ID in df.columns else df)
            for name, df in frames.items()}
