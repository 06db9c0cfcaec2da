"""What the last successful clean consumed and left (``metrics/clean_state``), and whether the next one may run
incrementally from it."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from sparkpromo import delta_io, schemas
from sparkpromo import tables as T
from sparkpromo.clean.rules import identifying_personal
from sparkpromo.config import CLEAN_PRIVACY_KEYS, AppConfig
from sparkpromo.frame import local_now, local_rows

__all__ = [
    "SOURCES", "CleanState", "settings_fingerprint", "output_versions", "last_state", "record_state",
    "appends_only", "appends_in_feed", "full_refresh_reason"
]


SOURCES = ("users", "items", "events")
# Commits that only add rows (or rewrite files without changing data): anything else in a bronze version range
# (a forget's DELETE, a RESTORE) makes the next clean a full refresh.
_APPEND_MODES = {"WRITE": ("mode", "Append"), "STREAMING UPDATE": ("outputMode", "Append")}
_NO_DATA_CHANGE = {"OPTIMIZE", "SET TBLPROPERTIES", "ADD CONSTRAINT", "VACUUM START", "VACUUM END"}


@dataclass(frozen=True)
class CleanState:
    """What the last successful clean consumed and left: bronze versions, its output tables' versions, the
    fingerprint of the settings it cleaned with and its result (the totals the next run continues from)."""
    bronze: dict[str, int | None]
    outputs: dict[str, int | None]
    settings: str
    result: dict[str, Any]


def settings_fingerprint(cfg: AppConfig) -> str:
    """The settings that decide a row's outcome; a change between runs makes the next clean a full refresh."""
    privacy = {k: _plain(getattr(cfg.privacy, k)) for k in CLEAN_PRIVACY_KEYS}
    blob = json.dumps(_plain({"sources": cfg.sources, "clean": cfg.clean, "privacy": privacy}), sort_keys=True,
                      default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def _plain(value: object) -> object:
    """Frozen config values (dataclasses, read-only mappings, tuples) as JSON-able data."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def output_versions(spark: SparkSession, cfg: AppConfig) -> dict[str, int | None]:
    tables = {T.SILVER[s].key: T.SILVER[s].uri(cfg) for s in SOURCES}
    tables["quarantine.rows"] = T.QUARANTINE.uri(cfg)
    return {name: delta_io.version(spark, uri) for name, uri in tables.items()}


def last_state(spark: SparkSession, cfg: AppConfig) -> CleanState | None:
    uri = T.CLEAN_STATE.uri(cfg)
    if not delta_io.is_delta(spark, uri):
        return None
    row = delta_io.read(spark, uri).orderBy(F.col("finished_at").desc()).first()
    if row is None:
        return None
    return CleanState(json.loads(row["bronze_versions"]), json.loads(row["output_versions"]), row["settings"],
                      json.loads(row["result"]))


def record_state(spark: SparkSession, cfg: AppConfig, run_id: str, mode: str, bronze: Mapping[str, int | None],
                 result: Mapping[str, Any]) -> None:
    """Append the run's state row: the last commit of a clean, so only a clean that wrote everything records one."""
    row = [(run_id, local_now(), mode, json.dumps(dict(bronze), sort_keys=True),
            json.dumps(output_versions(spark, cfg), sort_keys=True), settings_fingerprint(cfg),
            json.dumps(dict(result), sort_keys=True, default=str))]
    df = local_rows(spark, row, schemas.CLEAN_STATE)
    delta_io.append(df, T.CLEAN_STATE.uri(cfg), name=T.CLEAN_STATE.key, properties=T.CLEAN_STATE.properties)


def _appended(op: str, params: Mapping[str, str]) -> bool:
    return op in _APPEND_MODES and params.get(_APPEND_MODES[op][0]) == _APPEND_MODES[op][1]


def appends_only(spark: SparkSession, uri: str, start: int, end: int) -> bool:
    """Whether every commit of ``uri`` after ``start`` up to ``end`` only added rows."""
    commits = delta_io.commits_between(spark, uri, start, end)
    return commits is not None and all(op in _NO_DATA_CHANGE or _appended(op, params) for op, params in commits)


def appends_in_feed(spark: SparkSession, uri: str, start: int, end: int) -> bool:
    """Whether the change data feed of ``uri`` after ``start`` up to ``end`` holds exactly the rows those commits
    appended: the table records its feed and every commit in the range is an append. With any other commit in the
    range the caller compares the two versions instead: a property change may have turned the feed on part-way, and
    the files an OPTIMIZE compacted, which the feed reads as the appended rows, may be gone after a VACUUM."""
    if delta_io.table_properties(spark, uri).get(delta_io.CHANGE_FEED, "false").lower() != "true":
        return False
    commits = delta_io.commits_between(spark, uri, start, end)
    return commits is not None and all(_appended(op, params) for op, params in commits)


def full_refresh_reason(spark: SparkSession, cfg: AppConfig, state: CleanState | None,
                        versions: Mapping[str, int | None]) -> str | None:
    """Why this clean must rebuild silver and quarantine from the whole of bronze (None: it can run
    incrementally from ``state``)."""
    if state is None:
        return "no earlier clean recorded"
    if cfg.privacy.pseudonymise:
        return "privacy.pseudonymise is on (silver holds pseudonyms, bronze the raw ids)"
    for source in ("events", "users"):
        for canonical, name in identifying_personal(cfg, source):
            # A quarantine row is matched to its bronze row by payload: re-judging one of several rows that share
            # a payload would delete them all.
            return (f"sources.{source}.columns.{canonical} ({name!r}) is a personal column, left out of quarantine "
                    "payloads, so a re-judged row's quarantine row can't be told from another's")
    if state.settings != settings_fingerprint(cfg):
        return "the sources, clean or privacy settings changed since the last clean"
    for name, v in output_versions(spark, cfg).items():
        if v != state.outputs.get(name):
            return f"{name} changed since the last clean (a clean that failed part-way, or forget)"
    for source in SOURCES:
        start, end = state.bronze.get(source), versions.get(source)
        if start == end:
            continue
        if start is None or end is None or end < start:
            return f"bronze.{source} was created, dropped or rolled back since the last clean"
        if not appends_only(spark, T.BRONZE[source].uri(cfg), start, end):
            return f"bronze.{source} changed by more than appends since the last clean"
    return None
