"""Right to erasure: delete one user from every table, then purge the files that still held them.

Delta's DELETE only writes a new table version; the old Parquet files (and, with deletion vectors, the rows
inside still-referenced files) stay on storage for time travel until they are rewritten and vacuumed. So
``forget`` runs, per table: DELETE → ``REORG TABLE … APPLY (PURGE)`` (rewrites files that carry deletion vectors)
→ ``VACUUM … RETAIN 0 HOURS``.

The trade-off: a zero-hour VACUUM removes every file not in the latest version, so time travel to earlier
versions of these tables is lost, and a concurrent reader of an older snapshot can fail. Run it outside the
pipeline's schedule. Landing files and trained model files (which hold integer factors, not ids) are outside the
lakehouse tables and are not touched; the next ``train`` run no longer sees the user.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator

from delta.tables import DeltaTable
from pyspark.sql import Column, SparkSession
from pyspark.sql import functions as F

from sparkpromo import columns as C
from sparkpromo import io
from sparkpromo.config import AppConfig, join_uri

log = logging.getLogger(__name__)

USER_TABLES = (("silver", "users"), ("silver", "events"), ("gold", "user_features"), ("gold", "recommendations"),
               ("recommendations", ""))


def _json_field(source_col: str) -> str:
    # get_json_object paths: bracket notation handles any column name
    return "$['" + source_col.replace("\\", "\\\\").replace("'", "\\'") + "']"


def _token(user_id: str) -> str:
    """A regex matching the id as a whole field of a raw (unparsable) line."""
    return r"(^|[^A-Za-z0-9_])" + re.escape(user_id) + r"([^A-Za-z0-9_]|$)"


def targets(cfg: AppConfig, user_id: str, stored_id: str) -> Iterator[tuple[str, str, Column]]:
    """(table URI, the column it must have, delete condition) for every table that can hold the user.

    ``stored_id`` is what silver and later hold (the pseudonym in privacy mode); bronze and quarantine hold the
    source's raw id.
    """
    src = cfg.sources
    for name in ("events", "users"):
        fs = getattr(src, name)
        if fs is not None:
            col = fs.columns.get(C.USER_ID, C.USER_ID)
            yield cfg.table("bronze", name), col, F.trim(F.col(f"`{col}`")) == F.lit(user_id)
    conds = []
    for name in ("events", "users"):
        fs = getattr(src, name)
        if fs is not None:
            col = fs.columns.get(C.USER_ID, C.USER_ID)
            conds.append((F.col(C.Q_SOURCE) == name) & (
                (F.trim(F.get_json_object(F.col(C.Q_PAYLOAD), _json_field(col))) == F.lit(user_id))
                | F.col(C.Q_PAYLOAD).rlike(_token(user_id))))
    if conds:
        cond = conds[0]
        for c in conds[1:]:
            cond = cond | c
        yield cfg.table("quarantine", "rows"), C.Q_PAYLOAD, cond
    for layer, name in USER_TABLES:
        uri = cfg.table(layer, name) if name else join_uri(cfg.lakehouse, layer)
        yield uri, C.USER_ID, F.col(C.USER_ID) == F.lit(stored_id)


def forget_user(spark: SparkSession, cfg: AppConfig, user_id: str, stored_id: str | None = None) -> dict[str, int]:
    """Erase ``user_id`` everywhere; returns rows deleted per table."""
    stored_id = stored_id or user_id
    deleted: dict[str, int] = {}
    id_map = cfg.table("gold", "id_map")
    touched: list[str] = []
    if io.is_delta(spark, id_map):
        # Interactions are keyed by the integer index: find it before the mapping row goes.
        idx = (io.read(spark, id_map)
               .where((F.col(C.ID_KIND) == "user") & (F.col(C.ORIGINAL_ID) == F.lit(stored_id)))
               .select(C.IDX).limit(1).collect())
        interactions = cfg.table("gold", "interactions")
        if idx and io.is_delta(spark, interactions):
            deleted[interactions] = _delete(spark, interactions, F.col(C.USER_IDX) == F.lit(int(idx[0][0])))
            touched.append(interactions)
        deleted[id_map] = _delete(spark, id_map, (F.col(C.ID_KIND) == "user")
                                  & (F.col(C.ORIGINAL_ID) == F.lit(stored_id)))
        touched.append(id_map)
    for uri, column, cond in targets(cfg, user_id, stored_id):
        if io.is_delta(spark, uri) and column in io.read(spark, uri).columns:
            deleted[uri] = _delete(spark, uri, cond)
            touched.append(uri)
    purge(spark, touched)
    return deleted


def _delete(spark: SparkSession, uri: str, cond: Column) -> int:
    table = DeltaTable.forPath(spark, uri)
    before = io.version(spark, uri)
    table.delete(cond)
    last = table.history(1).select("version", "operationMetrics").first()
    if last is None or last["version"] == before:
        return 0
    return int((last["operationMetrics"] or {}).get("numDeletedRows", 0))


def purge(spark: SparkSession, uris: list[str]) -> None:
    """Rewrite files with deletion vectors, then drop every unreferenced file at once (see module docstring)."""
    key = "spark.databricks.delta.retentionDurationCheck.enabled"
    previous = spark.conf.get(key, "true")
    spark.conf.set(key, "false")
    try:
        for uri in dict.fromkeys(uris):
            if "`" in uri:
                raise ValueError(f"table path with a backtick is not supported: {uri}")
            spark.sql(f"REORG TABLE delta.`{uri}` APPLY (PURGE)")
            DeltaTable.forPath(spark, uri).vacuum(0)
    finally:
        spark.conf.set(key, previous)
