"""The run record, ``metrics/stages``: the row each stage run writes last, and the one read of it that the run
manifest, a rerun's skip decision and :func:`last_record` are built from.

A read is kept per table version (one process, any session): the stages of a run each read the record before they
run, and between two of them the table changes only by the row the previous stage wrote, which is added to what
was read. A version lookup then stands in for the query. Any other commit (another process's record, an auto
compaction) moves the table past the version that row was counted at, and the next read queries again. A table
recreated at the same path is told apart by its latest commit's time, except right after this process's own write
(whose time it has not looked up): the pipeline always reads the record before it writes one, so that gap holds no
read.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pyspark.sql import DataFrame, Row, SparkSession
from pyspark.sql import functions as F

from sparkpromo import columns as C
from sparkpromo import delta_io, schemas
from sparkpromo import tables as T
from sparkpromo.config import AppConfig
from sparkpromo.frame import local_now, local_rows

if TYPE_CHECKING:
    from sparkpromo.pipeline import RunContext

__all__ = ["RECORD_COLUMNS", "stage_rows", "last_record", "decoded", "record_stage_time"]

# What a read returns of each row.
RECORD_COLUMNS = ("stage", C.RUN_ID, "finished_at", "io_versions", "result", "fingerprint")


@dataclasses.dataclass(frozen=True)
class _Read:
    """``metrics/stages`` at ``version`` (-1: no table yet): each stage's latest row, and every stage's row of the
    run ids in ``runs`` (of every run id when ``every_run``: the table holds only what ``runs`` lists). ``stamp``:
    the commit's time (epoch ms), which tells this table from one recreated at the same path since; None for a
    commit this process made and has not looked up."""

    version: int
    stamp: int | None
    latest: Mapping[str, Row]
    runs: Mapping[str, Mapping[str, Row]]
    every_run: bool = False

    def answers(self, commit: tuple[int, int], run_id: str | None) -> bool:
        """Whether this read is the table at ``commit`` (its latest) and holds ``run_id``'s rows."""
        return (commit[0] == self.version and self.stamp in (None, commit[1])
                and (run_id is None or self.every_run or run_id in self.runs))

    def lacks(self, run_id: str, stage: str) -> bool:
        """Whether this read shows no row of ``run_id`` and ``stage``."""
        return (self.every_run or run_id in self.runs) and stage not in self.runs.get(run_id, {})

    def with_row(self, row: Row) -> _Read:
        """This read one commit later, that commit being the write of ``row`` (which replaces the row of its run id
        and stage)."""
        stage, run_id = row["stage"], row[C.RUN_ID]
        runs = dict(self.runs)
        if run_id in runs or self.every_run:
            runs[run_id] = {**runs.get(run_id, {}), stage: row}
        latest = dict(self.latest)
        was = latest.get(stage)
        if was is None or was[C.RUN_ID] == run_id or (was["finished_at"] or dt.datetime.min) <= row["finished_at"]:
            latest[stage] = row
        return _Read(self.version + 1, None, latest, runs, self.every_run)


_reads: dict[str, _Read] = {}  # by the table's URI
_lock = threading.Lock()


def _latest_per_stage(rows: DataFrame) -> DataFrame:
    return (rows.groupBy("stage").agg(F.max_by(F.struct(*rows.columns), "finished_at").alias("_r"))
            .select("_r.*"))


def _query(spark: SparkSession, uri: str, commit: tuple[int, int], run_id: str | None) -> _Read:
    """One query at ``commit``: the latest row of every stage (a handful however many runs there were) and, for
    ``run_id``, the latest row of each of its stages."""
    df = delta_io.read(spark, uri, version=commit[0])
    # A table written before fingerprints were recorded has no such column: its runs count as changed.
    fp_col = F.col("fingerprint") if "fingerprint" in df.columns else F.lit(None).cast("string").alias("fingerprint")
    rows = df.select(*RECORD_COLUMNS[:-1], fp_col)
    mine = "_mine"
    out = _latest_per_stage(rows).withColumn(mine, F.lit(False))
    if run_id is not None:
        out = out.unionByName(_latest_per_stage(rows.where(F.col(C.RUN_ID) == run_id)).withColumn(mine, F.lit(True)))
    latest: dict[str, Row] = {}
    own: dict[str, Row] = {}
    for r in out.collect():
        (own if r[mine] else latest)[r["stage"]] = Row(**{k: r[k] for k in RECORD_COLUMNS})
    return _Read(commit[0], commit[1], latest, {} if run_id is None else {run_id: own})


def stage_rows(spark: SparkSession, cfg: AppConfig, name: str | None = None, run_id: str | None = None
               ) -> tuple[list[Row], Row | None]:
    """``metrics/stages`` in at most one query: the latest row of every stage (one per stage name), and the row of
    stage ``name`` for ``run_id`` (None when not asked or not there)."""
    uri = T.STAGE_RUNS.uri(cfg)
    commit = delta_io.latest_commit(spark, uri)
    with _lock:
        known = _reads.get(uri)
    if commit is None:
        known = _Read(-1, None, {}, {}, every_run=True)
    elif known is None or not known.answers(commit, run_id):
        known = _query(spark, uri, commit, run_id)
    elif known.stamp is None:
        known = dataclasses.replace(known, stamp=commit[1])
    with _lock:
        _reads[uri] = known
    mine = None if name is None or run_id is None else known.runs.get(run_id, {}).get(name)
    return list(known.latest.values()), mine


def decoded(row: Row | None) -> dict[str, Any] | None:
    """A record's JSON decoded: ``io`` (table versions), ``result`` and ``fingerprint``, each None when not
    recorded; None for no record."""
    if row is None:
        return None
    io_versions, fingerprint = row["io_versions"], row["fingerprint"]
    return {"io": None if io_versions is None else json.loads(io_versions),
            "result": json.loads(row["result"] or "{}"),
            "fingerprint": None if fingerprint is None else json.loads(fingerprint)}


def last_record(spark: SparkSession, cfg: AppConfig, name: str, run_id: str | None = None) -> dict[str, Any] | None:
    """The ``metrics/stages`` record of stage ``name`` for ``run_id`` (None: the latest of any run id), decoded
    (:func:`decoded`); None when there is no such record."""
    latest, mine = stage_rows(spark, cfg, name, run_id)
    if run_id is not None:
        return decoded(mine)
    return decoded(next((r for r in latest if r["stage"] == name), None))


def record_stage_time(spark: SparkSession, cfg: AppConfig, ctx: RunContext, name: str, seconds: float,
                      versions: dict[str, int | None] | None = None, result: dict[str, Any] | None = None,
                      fingerprint: Mapping[str, Any] | None = None) -> None:
    """One row per (run id, stage): timing, the table versions it left, its (small) result summary: the whole
    result (nested metrics and campaigns too, ``skipped`` left out), which a skipped rerun reports again, and its
    stage fingerprint (JSON).

    A rerun's record replaces the (run id, stage) row, so a retried record is a no-op. The first record of a run id
    and stage (none in the last read of the table) is a plain append, about half the cost of that overwrite; were
    two processes to record the same run id and stage at once, both rows stay and every read takes the later.
    """
    scalars = {k: v for k, v in (result or {}).items() if k != "skipped"}
    row = Row(**dict(zip(RECORD_COLUMNS, (
        name, ctx.run_id, local_now(),
        None if versions is None else json.dumps(versions, sort_keys=True), json.dumps(scalars, default=str),
        None if fingerprint is None else json.dumps(fingerprint, sort_keys=True)), strict=True)))
    df = local_rows(spark, [(ctx.run_id, ctx.run_date, name, float(seconds), row["finished_at"], row["io_versions"],
                                 row["result"], row["fingerprint"])], schemas.STAGE_RUNS)
    uri = T.STAGE_RUNS.uri(cfg)
    with _lock:
        known = _reads.get(uri)
    # merge_schema: a metrics/stages table written before fingerprints gains the column
    if known is not None and known.lacks(ctx.run_id, name):
        delta_io.append(df, uri, name=T.STAGE_RUNS.key, properties=T.STAGE_RUNS.properties, merge_schema=True)
    else:
        delta_io.replace_partition(df, uri, {C.RUN_ID: ctx.run_id, "stage": name}, name=T.STAGE_RUNS.key,
                                   merge_schema=True, properties=T.STAGE_RUNS.properties)
    with _lock:
        if known is not None and _reads.get(uri) is known:
            _reads[uri] = known.with_row(row)
