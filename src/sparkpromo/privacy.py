"""Privacy: keyed pseudonyms (HMAC-SHA256) for user ids, computed with Spark built-ins.

The key comes only from the environment (``privacy.key_env``); it is never written to config, logs or tables.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
from collections.abc import Mapping

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from sparkpromo import columns as C

log = logging.getLogger(__name__)

_BLOCK = 64  # SHA-256 block size in bytes


class PrivacyError(ValueError):
    pass


def hmac_key(key_env: str) -> bytes:
    key = os.environ.get(key_env, "")
    if len(key) < 16:
        raise PrivacyError(f"privacy.pseudonymise is on but environment variable {key_env} is unset or shorter "
                           "than 16 characters")
    return key.encode("utf-8")


def hmac_sha256(col: Column, key: bytes) -> Column:
    """HMAC-SHA256 of a string column as lowercase hex, identical to Python's ``hmac`` (RFC 2104).

    Built from ``sha2``/``unhex`` so it runs in the JVM: no Python UDF on this hot path.
    """
    if len(key) > _BLOCK:
        key = hashlib.sha256(key).digest()
    key = key.ljust(_BLOCK, b"\0")
    ipad = bytes(b ^ 0x36 for b in key)
    opad = bytes(b ^ 0x5C for b in key)
    inner = F.unhex(F.sha2(F.concat(F.lit(ipad), col.cast("binary")), 256))
    return F.sha2(F.concat(F.lit(opad), inner), 256)


def pseudonym(user_id: str, key: bytes) -> str:
    """The pseudonym of one id, for look-ups from the CLI (``explain``, ``forget``)."""
    return hmac.new(key, user_id.encode("utf-8"), hashlib.sha256).hexdigest()


def pseudonymise_users(frames: Mapping[str, DataFrame], key_env: str) -> dict[str, DataFrame]:
    """Replace ``user_id`` by its pseudonym in every frame that has one."""
    key = hmac_key(key_env)
    return {name: (df.withColumn(C.USER_ID, hmac_sha256(F.col(C.USER_ID), key)) if C.USER_ID in df.columns else df)
            for name, df in frames.items()}
