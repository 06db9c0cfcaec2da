"""Right to erasure: delete users from every table, purge the files that still held them, and keep them out.

What holds an id, and how each is reached:

- **Rows.** Per table, a MERGE against a frame of the ids (``WHEN MATCHED DELETE``): the ids are the data of the
  MERGE's source, so the commit records only the join condition, never an id (a DELETE's predicate, literal
  included, is written into its commit in ``_delta_log`` and outlives every purge). The condition is one equality
  (:class:`Target`), so a batch of ids costs one hash join per table, not a comparison of every row with every id.
- **Old files.** ``REORG TABLE … APPLY (PURGE)`` rewrites files that carry deletion vectors, then
  ``VACUUM … RETAIN 0 HOURS`` drops every file the latest version no longer references.
- **Statistics.** Delta keeps per-file min/max of indexed columns in each commit and checkpoint. Every table the
  pipeline creates lists its statistics columns (``delta.dataSkippingStatsColumns``,
  :func:`sparkpromo.delta_io.creating`)
  without the id columns (``user_id``, ``original_id``, the quarantine ``payload``, ``_corrupt_record``; bronze keeps
  statistics of its ingestion metadata only), so no commit or checkpoint of a table created by this version holds
  an id. A table created by an earlier version gets the property here; its older commit files keep their statistics
  until Delta's log cleanup deletes them, which happens at the first log checkpoint (every
  ``delta.checkpointInterval`` = 10 commits) after they are older than ``delta.logRetentionDuration``. Every
  table states that retention (``privacy.log_retention_days``, 30 days by default): the session sets it as the
  default of the tables it creates, and ``forget`` sets it on an older table that lacks it. Delta has no public
  API that forces a checkpoint or a log cleanup, so that bound, not an immediate rewrite, is the promise.
- **Later loads.** Each forgotten id is recorded in ``privacy/forgotten`` as its HMAC-SHA256 under the privacy key
  (``privacy.key_env``), never as text; ingest and clean drop the rows of those ids (:func:`without_forgotten`), so
  re-sent or re-ingested landing files bring none back. The key is required by ``forget`` and, once that table
  exists, by ingest and clean.

The trade-off of the purge: time travel to earlier versions of the touched tables is gone, and a concurrent reader
of an older snapshot can fail. Run it outside the pipeline's schedule. Landing files and trained model files (which
hold integer factors, not ids) are outside the lakehouse tables and are not touched; the next ``train`` run no longer
sees the user.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from sparkpromo import columns as C
from sparkpromo import delta_io
from sparkpromo import tables as T
from sparkpromo.config import AppConfig, join_uri, local_path
from sparkpromo.frame import Transform
from sparkpromo.privacy import (
    PAD_IN,
    PAD_OUT,
    PrivacyError,
    hmac_key,
    hmac_sha256,
    key_check,
    keyed_hash,
    with_pads,
)
from sparkpromo.session import log_retention

log = logging.getLogger(__name__)

USER_TABLES = (T.SILVER_USERS, T.SILVER_EVENTS, T.USER_FEATURES, T.RECOMMENDATIONS)
LEGACY_RECOMMENDATIONS = "recommendations"  # where offers lived before gold/recommendations
LOG_RETENTION = "delta.logRetentionDuration"
ID_HASH, FORGOTTEN_AT = C.ID_HASH, C.FORGOTTEN_AT
# Merge-source columns: the raw id, a regex matching it as a whole field (and ID_HASH, the keyed hash).
_RAW, _TOKEN = "_raw", "_token"
# The one column of a merge source: what a target row's key must equal (see :class:`Target`).
_KEY = "_key"
_SET = "_forgotten_set"
FORGOTTEN_HIT = "_forgotten_hit"
# What separates fields in an unparsable line (CSV, JSON): its tokens are checked against the forgotten hashes.
TOKEN_SPLIT = r"[\s,;|\"'{}\[\]:=]+"
# A forgotten user's gold.id_map row keeps its index under this prefix and the index (see :func:`tombstone`).
TOMBSTONE_PREFIX = "forgotten#"
# privacy/forgotten's table property: a check value of the key its hashes were made with (not the key).
KEY_CHECK = "sparkpromo.keyCheck"


class ForgetError(ValueError):
    """Bad ``forget`` input (no ids, an unreadable ids file); ``str()`` is one line."""


def _json_field(source_col: str) -> str:
    # get_json_object paths: bracket notation handles any column name
    return "$['" + source_col.replace("\\", "\\\\").replace("'", "\\'") + "']"


def _token(user_id: str) -> str:
    """A regex matching the id as a whole field of a raw (unparsable) line."""
    return r"(^|[^A-Za-z0-9_])" + re.escape(user_id) + r"([^A-Za-z0-9_]|$)"


def forgotten_uri(cfg: AppConfig) -> str:
    return T.FORGOTTEN.uri(cfg)


def read_ids_file(path: str) -> list[str]:
    """One id per line; blank lines and surrounding spaces ignored."""
    try:
        text = Path(path).read_text(encoding="utf-8-sig")  # a file saved with a byte-order mark
    except (OSError, UnicodeDecodeError) as e:
        raise ForgetError(f"--users-file: cannot read {path}: {e.__class__.__name__}") from None
    ids = [line.strip() for line in text.splitlines() if line.strip()]
    if not ids:
        raise ForgetError(f"--users-file: {path} holds no id")
    return ids


def ids_frame(spark: SparkSession, user_ids: Sequence[str], key: bytes) -> DataFrame:
    """The ids to forget as data: raw id, keyed hash (the pseudonym privacy mode stores), token regex."""
    ids = list(dict.fromkeys(u.strip() for u in user_ids if u.strip()))
    if not ids:
        raise ForgetError("forget: no user id given")
    raw = spark.createDataFrame([(u, _token(u)) for u in ids], f"{_RAW} string, {_TOKEN} string")
    return keyed_hash(raw, F.col(_RAW), ID_HASH, key)


def check_key(spark: SparkSession, cfg: AppConfig, key: bytes) -> None:
    """Raise :class:`PrivacyError` when ``privacy/forgotten``'s hashes were made with another key: with it, no
    forgotten id would be recognised, and each would come back with the next load of its rows."""
    recorded = delta_io.table_properties(spark, forgotten_uri(cfg)).get(KEY_CHECK)
    if recorded is not None and recorded != key_check(key):
        raise PrivacyError(f"the key in {cfg.privacy.key_env} (privacy.key_env) is not the one the forgotten ids in "
                           f"{T.FORGOTTEN.key} were hashed with; set the earlier key, or their rows would come back")


def record_forgotten(spark: SparkSession, cfg: AppConfig, ids: DataFrame, key: bytes) -> None:
    """Add the ids' keyed hashes to ``privacy/forgotten`` (first, so a forget that fails part-way already keeps
    them out of later loads; rerun it to finish the deletes), and which key made them."""
    uri = forgotten_uri(cfg)
    rows = ids.select(ID_HASH, F.current_timestamp().alias(FORGOTTEN_AT))
    if not delta_io.is_delta(spark, uri):
        delta_io.overwrite(rows.limit(0), uri, name=T.FORGOTTEN.key)
    check_key(spark, cfg, key)
    # A writer's options become table properties only under "delta.": set by ALTER TABLE (once; a table from
    # before the key was recorded gets it here too).
    delta_io.add_constraints(spark, uri, properties={KEY_CHECK: key_check(key)})
    delta_io.merge_into(spark, uri, rows, f"t.{ID_HASH} = s.{ID_HASH}", ["WHEN NOT MATCHED THEN INSERT *"])


def forgotten_set(spark: SparkSession, cfg: AppConfig, key: bytes | None = None) -> tuple[DataFrame, bytes] | None:
    """The forgotten hashes as a one-row frame (one array column) and the key to hash with (``key``, else from
    ``privacy.key_env``); None when nothing was ever forgotten (then no key is needed)."""
    uri = forgotten_uri(cfg)
    if not delta_io.is_delta(spark, uri):
        return None
    key = key or hmac_key(cfg.privacy.key_env)
    check_key(spark, cfg, key)
    return delta_io.read(spark, uri).agg(F.collect_set(ID_HASH).alias(_SET)), key


def mark_forgotten(forgotten: tuple[DataFrame, bytes] | None, user_col: str | None,
                   corrupt_col: str | None = None) -> Transform:
    """Add the boolean ``_forgotten_hit``: the row's (trimmed) ``user_col``, or any field of its unparsable text in
    ``corrupt_col``, hashes to a forgotten id. Hashes and pads come from broadcast one-row frames, so the plan holds
    neither a key nor a hash."""
    def step(df: DataFrame) -> DataFrame:
        if forgotten is None:
            return df.withColumn(FORGOTTEN_HIT, F.lit(False))
        hashes, key = forgotten
        hit = F.lit(False)
        if user_col is not None and user_col in df.columns:
            hit = hit | F.coalesce(F.array_contains(F.col(_SET), hmac_sha256(F.trim(F.col(f"`{user_col}`")))),
                                   F.lit(False))
        if corrupt_col is not None and corrupt_col in df.columns:
            tokens = F.split(F.col(f"`{corrupt_col}`"), TOKEN_SPLIT)
            hit = hit | F.coalesce(F.exists(tokens, lambda t: F.array_contains(F.col(_SET), hmac_sha256(t))),
                                   F.lit(False))
        marked = with_pads(df, key).crossJoin(F.broadcast(hashes)).withColumn(FORGOTTEN_HIT, hit)
        return marked.drop(PAD_IN, PAD_OUT, _SET)
    return step


def without_forgotten(forgotten: tuple[DataFrame, bytes] | None, user_col: str | None,
                      corrupt_col: str | None = None) -> Transform:
    """Drop the rows :func:`mark_forgotten` marks."""
    def step(df: DataFrame) -> DataFrame:
        if forgotten is None:
            return df
        return (df.transform(mark_forgotten(forgotten, user_col, corrupt_col)).where(~F.col(FORGOTTEN_HIT))
                .drop(FORGOTTEN_HIT))
    return step


@dataclass(frozen=True)
class Target:
    """A table that can hold a user, and how a forgotten id's rows are found in it by one equi-join (a MERGE whose
    condition is an ``OR`` or an ``IN`` has no join key: Spark runs it as a nested loop, every row against every id).

    A row matches when its ``key`` (SQL on the target row ``t``) equals one of the ids' keys: ``id_keys`` (SQL on an
    id ``s``: its raw form ``s._raw``, its pseudonym ``s.id_hash``) and, for the unparsable lines that ``lines``
    picks (SQL on ``t``; few rows), the key of each line that ``line_match`` (SQL on ``t`` and ``s``: the id as a
    whole field of the text, or as its parsed user field) finds for some id."""
    uri: str
    column: str  # the column the table must have
    key: str
    id_keys: tuple[str, ...]
    lines: str | None = None
    line_match: str | None = None


def stored_target(uri: str, column: str = C.USER_ID) -> Target:
    """A table from silver on: it holds the id raw or as its pseudonym, whatever the mode now (rows written before
    ``privacy.pseudonymise`` was switched on or off hold the other form)."""
    return Target(uri, column, f"t.{delta_io.ident(column)}", (f"s.{_RAW}", f"s.{ID_HASH}"))


def targets(cfg: AppConfig) -> Iterator[Target]:
    """Every table that can hold a user. Silver and later hold the raw id or its pseudonym (:func:`stored_target`);
    bronze and quarantine hold the source's raw id, and an unparsable line only as text."""
    # Here, not at the top: ingest and clean import this module.
    from sparkpromo.clean.rules import MALFORMED_RECORD
    from sparkpromo.ingest import CORRUPT

    src = cfg.sources
    named = [(name, getattr(src, name).columns.get(C.USER_ID, C.USER_ID)) for name in ("events", "users")
             if getattr(src, name) is not None]
    corrupt = f"t.{CORRUPT}"
    for name, col in named:
        user = f"trim(t.{delta_io.ident(col)})"
        # an unparsable line has no user column (a JSON line's fields are all null): its text is searched
        yield Target(T.BRONZE[name].uri(cfg), col,
                     f"CASE WHEN {corrupt} IS NULL THEN concat('id:', {user}) ELSE concat('line:', {corrupt}) END",
                     (f"concat('id:', s.{_RAW})",), f"{corrupt} IS NOT NULL",
                     f"({user} = s.{_RAW} OR {corrupt} RLIKE s.{_TOKEN})")
    if named:
        payload, rule = f"t.{C.Q_PAYLOAD}", f"t.{C.Q_RULE}"
        malformed = delta_io.sql_literal(MALFORMED_RECORD)

        def field(col: str) -> str:
            return f"trim(get_json_object({payload}, {delta_io.sql_literal(_json_field(col))}))"
        # A parsed row by its user field; only an unparsable line by its text (a parsed row holding the id in another
        # field, an item id or a price, is another user's).
        by_field = " ".join(f"WHEN t.{C.Q_SOURCE} = {delta_io.sql_literal(name)} THEN "
                            f"concat({delta_io.sql_literal(f'id:{name}:')}, {field(col)})" for name, col in named)
        sources = ", ".join(delta_io.sql_literal(name) for name, _ in named)
        yield Target(T.QUARANTINE.uri(cfg), C.Q_PAYLOAD,
                     f"CASE WHEN {rule} = {malformed} THEN concat('line:', t.{C.Q_SOURCE}, ':', {payload}) "
                     f"{by_field} END",
                     tuple(f"concat({delta_io.sql_literal(f'id:{name}:')}, s.{_RAW})" for name, _ in named),
                     f"{rule} = {malformed} AND t.{C.Q_SOURCE} IN ({sources})",
                     " OR ".join(f"(t.{C.Q_SOURCE} = {delta_io.sql_literal(name)} AND ({field(col)} = s.{_RAW} OR "
                                 f"{payload} RLIKE s.{_TOKEN}))" for name, col in named))
    for uri in (*(t.uri(cfg) for t in USER_TABLES), join_uri(cfg.lakehouse, LEGACY_RECOMMENDATIONS)):
        yield stored_target(uri)


def merge_keys(spark: SparkSession, target: Target, ids: DataFrame) -> DataFrame:
    """The keys (one column, ``_key``) whose rows of ``target`` hold one of ``ids``: each id's keys, and the key of
    each unparsable line that holds one (found by ``target.line_match`` over those lines only)."""
    keyed = ids.alias("s")
    keys = [keyed.select(F.expr(k).alias(_KEY)) for k in target.id_keys]
    if target.lines is not None and target.line_match is not None:
        lines = delta_io.read(spark, target.uri).alias("t").where(target.lines)
        keys.append(lines.join(F.broadcast(keyed), F.expr(target.line_match), "left_semi")
                    .select(F.expr(target.key).alias(_KEY)))
    out = keys[0]
    for df in keys[1:]:
        out = out.unionByName(df)
    return out.where(F.col(_KEY).isNotNull()).distinct()


def _other_user_tables(cfg: AppConfig, known: set[str]) -> list[str]:
    """Any other local Delta table under the lakehouse with a ``user_id`` column is erased too (a table a later
    version adds is not missed); a remote lakehouse relies on the list above."""
    root = local_path(cfg.lakehouse)
    if root is None or not root.is_dir():
        return []
    seen = {p.resolve() for p in map(local_path, known) if p is not None}  # "file:" URIs and plain paths alike
    found = sorted(d.parent for d in root.rglob("_delta_log") if d.is_dir())
    return [str(d) for d in found if d.resolve() not in seen]


def forget_users(spark: SparkSession, cfg: AppConfig, user_ids: Sequence[str]) -> dict[str, int]:
    """Erase ``user_ids`` (raw ids, as in the source data) everywhere; returns rows deleted per table."""
    key = hmac_key(cfg.privacy.key_env)
    wanted = len(set(u.strip() for u in user_ids if u.strip()))
    t0 = time.perf_counter()
    ids = ids_frame(spark, user_ids, key).cache()
    try:
        record_forgotten(spark, cfg, ids, key)
        deleted: dict[str, int] = {}
        touched: list[str] = []
        id_map = T.ID_MAP.uri(cfg)
        if delta_io.is_delta(spark, id_map):
            forms = merge_keys(spark, stored_target(id_map, C.ORIGINAL_ID), ids).cache()
            try:
                interactions = T.INTERACTIONS.uri(cfg)
                if delta_io.is_delta(spark, interactions):
                    # Interactions are keyed by the integer index: take it from the id map before its rows go.
                    idx = (delta_io.read(spark, id_map).where(F.col(C.ID_KIND) == "user")
                           .join(forms, F.col(C.ORIGINAL_ID) == F.col(_KEY), "left_semi")
                           .select(F.col(C.IDX)))
                    deleted[interactions] = _merge_delete(spark, interactions, idx, f"t.{C.USER_IDX} = s.{C.IDX}")
                    touched.append(interactions)
                    log.info("forget: %s: %d row(s) deleted", _short(cfg, interactions), deleted[interactions])
                # The row stays, its id replaced by a tombstone: features numbers new ids after the highest index, and
                # the index of a deleted row would go to the next new user, whom the model in service would then
                # score with the forgotten user's factors.
                deleted[id_map] = _merge_tombstone(spark, id_map, forms,
                                                   f"t.{C.ID_KIND} = 'user' AND t.{C.ORIGINAL_ID} = s.{_KEY}")
            finally:
                forms.unpersist()
            touched.append(id_map)
            log.info("forget: %s: %d id(s) replaced by a tombstone", _short(cfg, id_map), deleted[id_map])
        listed = list(targets(cfg))
        extra = [stored_target(uri) for uri in
                 _other_user_tables(cfg, {t.uri for t in listed} | set(touched) | {forgotten_uri(cfg)})]
        for target in [*listed, *extra]:
            uri = target.uri
            if delta_io.is_delta(spark, uri) and target.column in delta_io.read(spark, uri).columns:
                deleted[uri] = _merge_delete(spark, uri, merge_keys(spark, target, ids), f"{target.key} = s.{_KEY}")
                touched.append(uri)
                log.info("forget: %s: %d row(s) deleted", _short(cfg, uri), deleted[uri])
        purge(spark, touched, log_retention(cfg), lambda uri: log.info("forget: %s: purged", _short(cfg, uri)))
        record_manifest(spark, cfg, touched, time.perf_counter() - t0, {"forgotten_ids": wanted,
                                                                        "deleted_rows": sum(deleted.values())})
    finally:
        ids.unpersist()
    log.info("forget: %d id(s) recorded in privacy/forgotten; %d rows deleted from %d tables", wanted,
             sum(deleted.values()), len(deleted))
    return deleted


def record_manifest(spark: SparkSession, cfg: AppConfig, uris: Sequence[str], seconds: float,
                    result: dict[str, int]) -> None:
    """Record the versions ``forget`` left in the run manifest (``metrics/stages``, stage ``forget``): the
    versions the stages' last successful runs recorded were purged, so later stages read these instead."""
    from sparkpromo.pipeline import FORGET, RunContext, record_stage_time

    base = cfg.lakehouse.rstrip("/") + "/"
    versions = {uri[len(base):].replace("/", "."): delta_io.version(spark, uri) for uri in dict.fromkeys(uris)
                if uri.startswith(base) and uri[len(base):].count("/") == 1}
    now = dt.datetime.now(dt.UTC)
    ctx = RunContext(f"forget-{now:%Y%m%dT%H%M%S%f}", now.date())
    record_stage_time(spark, cfg, ctx, FORGET, seconds, versions, dict(result))


def forget_user(spark: SparkSession, cfg: AppConfig, user_id: str) -> dict[str, int]:
    """:func:`forget_users` for one id."""
    return forget_users(spark, cfg, [user_id])


def _merge_count(spark: SparkSession, uri: str, ids: DataFrame, cond: str, clause: str, metric: str) -> int:
    """One ``MERGE`` of ``ids`` into the table with ``clause``; returns the commit's ``metric`` (0: no commit)."""
    before = delta_io.version(spark, uri)
    delta_io.merge_into(spark, uri, ids, cond, [clause])
    if delta_io.version(spark, uri) == before:
        return 0
    return int(delta_io.last_commit_metrics(spark, uri).get(metric, 0))


def _merge_delete(spark: SparkSession, uri: str, ids: DataFrame, cond: str) -> int:
    return _merge_count(spark, uri, ids, cond, "WHEN MATCHED THEN DELETE", "numTargetRowsDeleted")


def _merge_tombstone(spark: SparkSession, uri: str, ids: DataFrame, cond: str) -> int:
    """Replace the matched id-map rows' original ids with :func:`tombstone` of their index; returns how many."""
    return _merge_count(spark, uri, ids, cond, f"WHEN MATCHED THEN UPDATE SET t.{C.ORIGINAL_ID} = "
                                               f"concat('{TOMBSTONE_PREFIX}', cast(t.{C.IDX} AS STRING))",
                        "numTargetRowsUpdated")


def tombstone(idx: int) -> str:
    """What a forgotten user's id-map row holds instead of the id: made of the index alone, so it names no one,
    keeps the index taken, and is the same wherever the same user is forgotten."""
    return f"{TOMBSTONE_PREFIX}{idx}"


def _bound_what_the_log_keeps(spark: SparkSession, uri: str, retention: str) -> None:
    """A table created by an earlier version: keep ids out of its statistics from now on (new files only) and state
    its log retention, which bounds how long its older commits keep theirs (see module doc). A retention someone
    set on the table stays."""
    props = {r["key"]: r["value"] for r in spark.sql(f"SHOW TBLPROPERTIES {delta_io.table_ref(uri)}").collect()}
    wanted: dict[str, str] = {}
    if delta_io.STATS_COLUMNS not in props and props.get("delta.dataSkippingNumIndexedCols") != "0":
        # Delta keeps no statistics of partition columns, and refuses them in the list.
        partitions = frozenset(delta_io.partition_columns(spark, uri))
        wanted.update({delta_io.STATS_COLUMNS: delta_io.BRONZE_STATS_COLUMNS} if "/bronze/" in uri
                      else delta_io.stats_properties(delta_io.read(spark, uri), delta_io.ID_COLUMNS | partitions))
    if LOG_RETENTION not in props:
        wanted[LOG_RETENTION] = retention
    if wanted:
        pairs = ", ".join(f"'{k}' = '{v}'" for k, v in wanted.items())
        spark.sql(f"ALTER TABLE {delta_io.table_ref(uri)} SET TBLPROPERTIES ({pairs})")


def _short(cfg: AppConfig, uri: str) -> str:
    """``layer/name`` for a lakehouse table, the URI otherwise (progress lines stay short)."""
    base = cfg.lakehouse.rstrip("/") + "/"
    return uri[len(base):] if uri.startswith(base) else uri


def purge(spark: SparkSession, uris: list[str], retention: str,
          done: Callable[[str], None] | None = None) -> None:
    """Rewrite files with deletion vectors, then drop every unreferenced file at once (see module docstring).
    ``done`` is called with each table's URI once it is purged (progress for a long erasure)."""
    key = "spark.databricks.delta.retentionDurationCheck.enabled"
    previous = spark.conf.get(key, "true")
    spark.conf.set(key, "false")
    try:
        for uri in dict.fromkeys(uris):
            if "`" in uri or "'" in uri:
                raise ValueError(f"table path with a backtick or quote is not supported: {uri}")
            _bound_what_the_log_keeps(spark, uri, retention)
            spark.sql(f"REORG TABLE {delta_io.table_ref(uri)} APPLY (PURGE)")
            delta_io.vacuum(spark, uri, 0)
            if done is not None:
                done(uri)
    finally:
        spark.conf.set(key, previous)


def forgotten_count(spark: SparkSession, cfg: AppConfig) -> int:
    uri = forgotten_uri(cfg)
    return delta_io.read(spark, uri).count() if delta_io.is_delta(spark, uri) else 0

