"""Delta reads and writes. Every write is a single Delta commit, so a failed run leaves tables as they were."""

from __future__ import annotations

import contextlib
import contextvars
import datetime as dt
import logging
import os
import re
import uuid
from collections.abc import Iterator, Mapping, Sequence

from delta.tables import DeltaTable
from pyspark.errors import AnalysisException
from pyspark.sql import DataFrame, DataFrameWriter, Row, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import (
    ByteType,
    DateType,
    DecimalType,
    DoubleType,
    FloatType,
    IntegerType,
    LongType,
    ShortType,
    StringType,
    TimestampNTZType,
    TimestampType,
)

from sparkpromo.config.paths import local_path
from sparkpromo.session import is_connect

log = logging.getLogger(__name__)

STATS_COLUMNS = "delta.dataSkippingStatsColumns"
# Columns that hold a person's id (raw, or as the source sent it): Delta must not keep their min/max in the commit
# log or a checkpoint, where no DELETE, REORG PURGE or VACUUM reaches them (see sparkpromo.forget).
ID_COLUMNS = frozenset({"user_id", "original_id", "payload", "_corrupt_record"})
# Bronze keeps statistics of its ingestion metadata only: its source columns hold raw ids and personal data.
BRONZE_STATS_COLUMNS = "_source_file,_ingest_ts,_run_id"
# The first columns Delta would index by default; the same cap keeps wide tables' writes as cheap as before.
_MAX_STATS_COLUMNS = 32
_STATS_TYPES = (ByteType, ShortType, IntegerType, LongType, FloatType, DoubleType, DecimalType, DateType,
                TimestampType, TimestampNTZType, StringType)


def stats_properties(df: DataFrame, exclude: frozenset[str] = ID_COLUMNS) -> dict[str, str]:
    """``delta.dataSkippingStatsColumns`` naming ``df``'s top-level columns of types Delta keeps min/max for, less
    ``exclude`` (by default the id columns). When no column qualifies, no column is indexed at all."""
    # Only plain names: the property is a comma-separated list, and a column left out merely has no statistics.
    cols = [f.name for f in df.schema.fields if f.name not in exclude and isinstance(f.dataType, _STATS_TYPES)
            and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", f.name)][:_MAX_STATS_COLUMNS]
    return {STATS_COLUMNS: ",".join(cols)} if cols else {"delta.dataSkippingNumIndexedCols": "0"}


def creating(writer: DataFrameWriter, df: DataFrame, uri: str, properties: Mapping[str, str] | None = None,
             partition_by: Sequence[str] = ()) -> DataFrameWriter:
    """``writer`` with table properties for a table this write creates: ``properties``, plus stats columns without
    the id columns (:func:`stats_properties`) unless ``properties`` names its own. An existing table keeps its own."""
    if is_delta(df.sparkSession, uri):
        return writer
    if properties and STATS_COLUMNS in properties:
        wanted = dict(properties)
    else:  # Delta keeps no statistics of partition columns, and refuses them in the list
        wanted = {**stats_properties(df, ID_COLUMNS | set(partition_by)), **(properties or {})}
    for key, value in wanted.items():
        writer = writer.option(key, value)
    return writer

FAULT_ENV = "SPARKPROMO_FAIL_AT"


class InjectedFault(RuntimeError):
    """Raised by the fault hook (``SPARKPROMO_FAIL_AT``) to simulate a crash at a chosen point."""


def _faults() -> set[str]:
    return {p.strip() for p in os.environ.get(FAULT_ENV, "").split(",") if p.strip()}


def fault_point(name: str) -> None:
    """Crash here when ``SPARKPROMO_FAIL_AT`` names this point (comma-separated list allowed)."""
    if name in _faults():
        log.error("fault injected at %s", name)
        raise InjectedFault(f"fault injected at {name}")


def faulty_write(df: DataFrame, name: str) -> DataFrame:
    """With ``during_write:<name>`` in ``SPARKPROMO_FAIL_AT``, the write job's tasks fail part-way through: the
    first task hands one row to the writer before failing, every other task fails at once. Files may be left
    behind; no commit is made, which is what the fault demonstrates."""
    point = f"during_write:{name}"
    if point not in _faults():
        return df
    log.error("fault injected at %s", point)
    boom = (F.spark_partition_id() >= 1) | (F.monotonically_increasing_id() >= 1)
    return df.where(F.when(boom, F.raise_error(F.lit(f"fault injected at {point}"))).otherwise(F.lit(True)))


# Table URI -> the version a stage reads it at (set by sparkpromo.pipeline.run_stage from the run manifest). A
# context variable: two stages run from two threads (tests, notebooks) each see their own pins.
_pins: contextvars.ContextVar[Mapping[str, int] | None] = contextvars.ContextVar("sparkpromo_pins", default=None)


@contextlib.contextmanager
def pinned(versions: Mapping[str, int]) -> Iterator[None]:
    """While the block runs (in this thread), :func:`read` and :func:`version` see each table in ``versions`` at
    that version (an explicit ``version`` argument still wins)."""
    token = _pins.set({**(_pins.get() or {}), **versions})
    try:
        yield
    finally:
        _pins.reset(token)


def _history_sql(uri: str) -> str:
    return f"DESCRIBE HISTORY {table_ref(uri)} LIMIT 1"


def _connect_commit(spark: SparkSession, uri: str) -> tuple[int, int] | None:
    """The latest commit through Delta's SQL (the session extension), not ``DeltaTable``: over Spark Connect the
    ``DeltaTable`` API needs Delta's Connect server plugin, SQL only the extension every Delta server has."""
    try:
        row = spark.sql(_history_sql(uri)).select("version", "timestamp").first()
    except AnalysisException as e:
        if any(c in str(e) for c in ("DELTA_MISSING_DELTA_TABLE", "PATH_NOT_FOUND", "DELTA_TABLE_NOT_FOUND",
                                     "is not a Delta table")):
            return None
        raise
    return _commit(row)


def _commit(row: Row | None) -> tuple[int, int] | None:
    # The commit's time as epoch milliseconds: told apart from the same version of a table since recreated.
    return None if row is None else (int(row[0]), int(row[1].timestamp() * 1000))


def is_delta(spark: SparkSession, uri: str) -> bool:
    if is_connect(spark):
        return _connect_commit(spark, uri) is not None
    return DeltaTable.isDeltaTable(spark, uri)


def read(spark: SparkSession, uri: str, version: int | None = None) -> DataFrame:
    if version is None:
        version = (_pins.get() or {}).get(uri)
    reader = spark.read.format("delta")
    if version is not None:
        reader = reader.option("versionAsOf", version)
    return reader.load(uri)


def version(spark: SparkSession, uri: str) -> int | None:
    """Latest committed version of a Delta table (the pinned one inside :func:`pinned`), or None when there is no
    table."""
    pins = _pins.get() or {}
    if uri in pins:
        return pins[uri]
    commit = latest_commit(spark, uri)
    return None if commit is None else commit[0]


def latest_commit(spark: SparkSession, uri: str) -> tuple[int, int] | None:
    """The latest commit of a Delta table, pinned or not, as (version, time in epoch milliseconds); None when there
    is no table."""
    if is_connect(spark):
        return _connect_commit(spark, uri)
    listed = _listed_commit(uri)
    if listed is not None:
        return listed
    try:
        row = DeltaTable.forPath(spark, uri).history(1).select("version", "timestamp").first()
    except AnalysisException:
        # Asked first, this costs every lookup of an existing table a second log listing.
        if is_delta(spark, uri):
            raise
        return None
    return _commit(row)


# A commit file of the log: its version, zero-padded to 20 digits (Delta's file-system log layout).
_COMMIT_FILE = re.compile(r"^(\d{20})\.json$")


def _listed_commit(uri: str) -> tuple[int, int] | None:
    """The latest commit of a table on the driver's file system, read off its log's file names: the highest
    ``<version>.json`` and that file's modification time, which is what Delta's history reports for it (a file-system
    table without in-commit timestamps). A few hundred microseconds where ``DeltaTable.history`` takes tens of
    milliseconds, and a stage looks up a dozen versions (BENCHMARKS.md, "Version lookups"). None when the listing
    cannot tell: a remote URI, no local log, a log without commit files, or one with commits Delta has not written to
    the log's own folder yet (coordinated commits: Delta 4 makes the ``_staged_commits`` folder for every table, where
    only such a table puts files); the caller then asks Delta. A plain path is the driver's file system's, as it is
    for a local or standalone session."""
    path = local_path(uri)
    if path is None:
        return None
    log_dir = path / "_delta_log"
    try:
        with os.scandir(log_dir) as entries:
            names = [e.name for e in entries]
    except (FileNotFoundError, NotADirectoryError):
        return None
    if "_staged_commits" in names and any(os.scandir(log_dir / "_staged_commits")):
        return None
    latest = max((n for n in names if _COMMIT_FILE.match(n)), default=None)
    if latest is None:
        return None
    try:
        mtime_ns = os.stat(log_dir / latest).st_mtime_ns
    except FileNotFoundError:  # the table was removed since the listing: ask Delta
        return None
    return int(latest[:-5]), mtime_ns // 1_000_000


CHANGE_FEED = "delta.enableChangeDataFeed"
# Commits after which the change data feed still describes every row change (a rewrite such as an overwrite or a
# RESTORE is better read again in full).
# Not VACUUM: it may have dropped the change files of the commits in between.
_ROW_CHANGES = {"MERGE", "DELETE", "UPDATE", "OPTIMIZE", "ADD CONSTRAINT"}


def commits_between(spark: SparkSession, uri: str, start: int, end: int) -> list[tuple[str, dict[str, str]]] | None:
    """(operation, operationParameters) of each commit of ``uri`` after ``start`` up to ``end``, in version order;
    None when the history no longer holds every one of them."""
    # SQL rather than DeltaTable.history(): it also runs over Spark Connect without Delta's Connect plugin.
    rows = (spark.sql(f"DESCRIBE HISTORY {table_ref(uri)}")
            .where((F.col("version") > start) & (F.col("version") <= end))
            .orderBy("version").select("operation", "operationParameters").collect())  # one row per commit
    if len(rows) != end - start:
        return None
    return [(r["operation"], dict(r["operationParameters"] or {})) for r in rows]


def last_commit_metrics(spark: SparkSession, uri: str) -> dict[str, str]:
    """The ``operationMetrics`` of the table's latest commit (rows written, files...), from the Delta log; SQL, so
    it also runs over Spark Connect without Delta's Connect plugin."""
    row = spark.sql(_history_sql(uri)).select("operationMetrics").first()
    return dict((row[0] or {}) if row else {})


def row_changes_only(spark: SparkSession, uri: str, start: int, end: int) -> bool:
    """Whether every commit of ``uri`` after ``start`` up to ``end`` was a row-level change (MERGE, DELETE, UPDATE,
    an append) or left the data as it was, and the table records its change data feed."""
    if table_properties(spark, uri).get(CHANGE_FEED, "false").lower() != "true":
        return False
    commits = commits_between(spark, uri, start, end)
    return commits is not None and all(
        op in _ROW_CHANGES or params.get("mode") == "Append" or params.get("outputMode") == "Append"
        for op, params in commits)


# Commits whose every row change the change data feed records. Not VACUUM (forget purges with 0 hours retained, which
# drops the change files too), RESTORE or a property change (the feed may have been off before it).
_FEED_COMPLETE = {"WRITE", "STREAMING UPDATE", "MERGE", "DELETE", "UPDATE", "OPTIMIZE", "ADD CONSTRAINT"}


def change_feed_complete(spark: SparkSession, uri: str, start: int, end: int) -> bool:
    """Whether the change data feed of ``uri`` holds every row change of the commits after ``start`` up to ``end``,
    overwrites of some partitions (``replaceWhere``) included: the table records its feed, the history still holds
    each commit, and each is one of the writes the feed describes (:data:`_FEED_COMPLETE`)."""
    if table_properties(spark, uri).get(CHANGE_FEED, "false").lower() != "true":
        return False
    commits = commits_between(spark, uri, start, end)
    return commits is not None and all(op in _FEED_COMPLETE for op, _ in commits)


def changes(spark: SparkSession, uri: str, start: int, end: int) -> DataFrame:
    """The change data feed of ``uri`` for the commits after ``start`` up to ``end``: each changed row as it was
    and as it is, with ``_change_type`` (check :func:`row_changes_only` or :func:`change_feed_complete` first)."""
    return (spark.read.format("delta").option("readChangeFeed", "true").option("startingVersion", start + 1)
            .option("endingVersion", end).load(uri))


def table_ref(uri: str) -> str:
    """The SQL name of the Delta table at ``uri`` (``delta.`path```)."""
    return "delta.`{}`".format(uri.replace("`", "``"))


def ident(name: str) -> str:
    """A column name quoted for SQL."""
    return "`{}`".format(name.replace("`", "``"))


def update_all(columns: Sequence[str]) -> str:
    """A MERGE clause's action setting each of ``columns`` of the target ``t`` from the source ``s``."""
    return "UPDATE SET " + ", ".join(f"t.{ident(c)} = s.{ident(c)}" for c in columns)


def insert_all(columns: Sequence[str]) -> str:
    """A MERGE clause's action inserting ``columns`` from the source ``s``."""
    names = ", ".join(ident(c) for c in columns)
    return f"INSERT ({names}) VALUES (" + ", ".join(f"s.{ident(c)}" for c in columns) + ")"


def merge_into(spark: SparkSession, uri: str, source: DataFrame, on: str, clauses: Sequence[str]) -> None:
    """``MERGE INTO`` the table at ``uri`` (alias ``t``) from ``source`` (alias ``s``), one commit. SQL over a
    temporary view rather than ``DeltaTable.merge``: the same Delta command, and over Spark Connect it needs only
    the Delta extension, where the ``DeltaTable`` API needs Delta's Connect server plugin."""
    view = f"sparkpromo_merge_{uuid.uuid4().hex}"
    source.createOrReplaceTempView(view)
    try:
        spark.sql(f"MERGE INTO {table_ref(uri)} AS t USING {view} AS s ON {on} " + " ".join(clauses))
    finally:
        spark.catalog.dropTempView(view)


def partition_columns(spark: SparkSession, uri: str) -> tuple[str, ...]:
    """The table's partition columns (``DESCRIBE DETAIL``: SQL, so it also runs over Spark Connect)."""
    row = spark.sql(f"DESCRIBE DETAIL {table_ref(uri)}").select("partitionColumns").first()
    return tuple(row[0] or ()) if row else ()


def vacuum(spark: SparkSession, uri: str, hours: float) -> None:
    """``VACUUM`` the table, keeping files removed within the last ``hours`` (SQL, for Spark Connect too). It
    always leaves its VACUUM START/END commits: Delta logs them by default only on some file systems (not s3a:), and
    without them a later reader of the change data feed could not tell that its change files are gone."""
    spark.conf.set(VACUUM_LOGGING, "true")
    spark.sql(f"VACUUM {table_ref(uri)} RETAIN {hours:g} HOURS")


VACUUM_LOGGING = "spark.databricks.delta.vacuum.logging.enabled"


def sql_literal(value: object) -> str:
    """A SQL literal for a value we control (ids validated by config, dates); quotes are escaped regardless."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, dt.datetime):
        return f"TIMESTAMP'{value.isoformat(sep=' ')}'"
    if isinstance(value, dt.date):
        return f"DATE'{value.isoformat()}'"
    text = str(value).replace("\\", "\\\\").replace("'", "\\'")
    return f"'{text}'"


def overwrite(df: DataFrame, uri: str, partition_by: Sequence[str] = (), name: str = "",
              constraints: Mapping[str, str] | None = None, properties: Mapping[str, str] | None = None,
              overwrite_schema: bool = False) -> None:
    """Replace the whole table atomically (readers see the old or the new snapshot, never a mix); with
    ``overwrite_schema`` its columns too (a rename).

    ``constraints`` (name -> CHECK expression, see :func:`constraint_checks`) are created with a new table, in the
    commit that writes its first rows, so they are checked as those rows are written instead of by a scan and a
    commit per constraint afterwards. An existing table keeps its own; :func:`add_constraints` adds missing ones.
    ``properties`` (``delta.*`` table properties) are likewise set only when the table is created; a new table
    keeps no statistics of its id columns unless ``properties`` says otherwise (:func:`stats_properties`).
    """
    fault_point(f"before_write:{name or uri}")
    writer = faulty_write(df, name or uri).write.format("delta").mode("overwrite")
    if constraints and not is_delta(df.sparkSession, uri):
        for key, expr in constraints.items():
            writer = writer.option(f"delta.constraints.{key}", expr)
    writer = creating(writer, df, uri, properties, partition_by)
    if overwrite_schema:
        writer = writer.option("overwriteSchema", "true")
    _save(writer, uri, name, partition_by)


def replace_partition(df: DataFrame, uri: str, where: Mapping[str, object], partition_by: Sequence[str] = (),
                      name: str = "", merge_schema: bool = False, properties: Mapping[str, str] | None = None
                      ) -> None:
    """Replace exactly the rows matching ``where`` (column = value, or column IN values for a list or tuple;
    ANDed), in one commit. ``merge_schema`` lets the write add the columns (and struct fields) the table lacks;
    ``properties`` are the table's when this write creates it.

    ``df`` must only hold rows inside that predicate: Delta checks it and refuses the write otherwise.
    """
    predicate = " AND ".join(
        f"`{c}` IN ({', '.join(sql_literal(x) for x in v)})" if isinstance(v, (list, tuple))
        else f"`{c}` = {sql_literal(v)}" for c, v in where.items())
    fault_point(f"before_write:{name or uri}")
    writer = faulty_write(df, name or uri).write.format("delta").mode("overwrite").option("replaceWhere", predicate)
    writer = creating(writer, df, uri, properties=properties, partition_by=partition_by)
    _save(writer, uri, name, partition_by, merge_schema)


def append(df: DataFrame, uri: str, app_id: str | None = None, txn_version: int | None = None,
           partition_by: Sequence[str] = (), name: str = "", properties: Mapping[str, str] | None = None,
           merge_schema: bool = False) -> None:
    """Append; with ``app_id``/``txn_version`` Delta skips a commit it has already seen (idempotent retry).
    ``properties`` are the table's when this write creates it; ``merge_schema`` lets the write add the columns the
    table lacks."""
    fault_point(f"before_write:{name or uri}")
    writer = creating(faulty_write(df, name or uri).write.format("delta").mode("append"), df, uri,
                      properties=properties, partition_by=partition_by)
    if app_id is not None and txn_version is not None:
        writer = writer.option("txnAppId", app_id).option("txnVersion", txn_version)
    _save(writer, uri, name, partition_by, merge_schema)


def _save(writer: DataFrameWriter, uri: str, name: str, partition_by: Sequence[str], merge_schema: bool = False
          ) -> None:
    """The last steps every write shares: partitioning, schema merging, the save and its fault point."""
    if partition_by:
        writer = writer.partitionBy(*partition_by)
    if merge_schema:
        writer = writer.option("mergeSchema", "true")
    writer.save(uri)
    fault_point(f"after_write:{name or uri}")


def constraint_checks(checks: Mapping[str, str] | None = None, not_null: Sequence[str] = ()) -> dict[str, str]:
    """Constraint name -> CHECK expression. Expressions are ours, never from config.

    NOT NULL is expressed as a CHECK too: Delta cannot tighten an existing column's nullability in place.
    """
    wanted = dict(checks or {})
    wanted.update({f"{c}_not_null": f"`{c}` IS NOT NULL" for c in not_null})
    return wanted


def add_constraints(spark: SparkSession, uri: str, checks: Mapping[str, str] | None = None,
                    not_null: Sequence[str] = (), properties: Mapping[str, str] | None = None) -> None:
    """Attach Delta CHECK constraints (see :func:`constraint_checks`) that the table does not have yet, and set the
    ``properties`` it lacks (a table created before they were declared)."""
    props = table_properties(spark, uri)
    existing = {k.split(".", 2)[-1].lower() for k in props if k.startswith("delta.constraints.")}
    for name, expr in constraint_checks(checks, not_null).items():
        if name.lower() not in existing:
            spark.sql(f"ALTER TABLE {table_ref(uri)} ADD CONSTRAINT {name} CHECK ({expr})")
    missing = {k: v for k, v in (properties or {}).items() if props.get(k) != v}
    if missing:
        pairs = ", ".join(f"'{k}' = '{v}'" for k, v in missing.items())
        spark.sql(f"ALTER TABLE {table_ref(uri)} SET TBLPROPERTIES ({pairs})")


def rename_column_by_rewrite(spark: SparkSession, uri: str, old: str, new: str, name: str = "") -> None:
    """Rename a column of a small table by rewriting it (no column mapping, so the table's protocol stays as it is).
    Delta refuses a statistics column list naming a missing column, so ``old`` leaves that list first and ``new``
    joins it after the rewrite: three commits, each leaving a readable table."""
    path = table_ref(uri)
    stats = table_properties(spark, uri).get(STATS_COLUMNS)
    listed = stats.split(",") if stats else []
    if old in listed:
        rest = [c for c in listed if c != old]
        spark.sql(f"ALTER TABLE {path} SET TBLPROPERTIES ('{STATS_COLUMNS}' = '{','.join(rest)}')" if rest
                  else f"ALTER TABLE {path} UNSET TBLPROPERTIES ('{STATS_COLUMNS}')")
    overwrite(read(spark, uri).withColumnRenamed(old, new), uri, name=name, overwrite_schema=True)
    if old in listed:
        renamed = ",".join(new if c == old else c for c in listed)
        spark.sql(f"ALTER TABLE {path} SET TBLPROPERTIES ('{STATS_COLUMNS}' = '{renamed}')")


def table_properties(spark: SparkSession, uri: str) -> dict[str, str]:
    # SHOW TBLPROPERTIES reads the snapshot's metadata on the driver; DESCRIBE DETAIL would run a job.
    return {r["key"]: r["value"] for r in spark.sql(f"SHOW TBLPROPERTIES {table_ref(uri)}").collect()}
