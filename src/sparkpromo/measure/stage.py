"""The measure stage: :func:`run_measure`."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StructType

from sparkpromo import columns as C
from sparkpromo import delta_io
from sparkpromo import tables as T
from sparkpromo.config import AppConfig
from sparkpromo.frame import Transform, local_rows
from sparkpromo.logs import stage
from sparkpromo.measure.actions import ALL_CAMPAIGNS, NO_CHANGE, decide_actions
from sparkpromo.measure.incremental import changed_purchase_dates, changed_run_dates, run_dates_to_measure
from sparkpromo.measure.outcomes import (
    _KEYS,
    MEASURED,
    NO_CONTROL,
    WINDOW_OPEN,
    assignments,
    campaign_outcomes,
    user_outcomes,
)
from sparkpromo.measure.uplift import qini_areas, uplift_by_decile, with_auuc
from sparkpromo.schemas import ACTIONS, OUTCOMES, UPLIFT

log = logging.getLogger(__name__)

# The columns each input is read with.
RECOMMENDATION_COLUMNS = (C.CAMPAIGN_ID, C.RUN_DATE, C.USER_ID, C.ITEM_ID, C.SCORE, C.IS_CONTROL, C.OFFER)
EVENT_COLUMNS = (C.USER_ID, C.ITEM_ID, C.EVENT_TYPE, C.EVENT_DATE, C.PRICE, C.QUANTITY)


def conform(schema: StructType, run_id: str) -> Transform:
    """Add the run id and cast to ``schema``'s column order and types."""
    def apply(df: DataFrame) -> DataFrame:
        df = df.withColumn(C.RUN_ID, F.lit(run_id))
        return df.select(*(F.col(f.name).cast(f.dataType).alias(f.name) for f in schema.fields))
    return apply


def _summary_row(row: Mapping[str, Any]) -> dict[str, Any]:
    keys = (C.CONVERSION_TREATED, C.CONVERSION_CONTROL, C.UPLIFT, C.UPLIFT_CI_LOW, C.UPLIFT_CI_HIGH,
            C.INCREMENTAL_REVENUE, C.DISCOUNT_COST)
    return {"run_date": row[C.RUN_DATE].isoformat(), "status": row[C.STATUS],
            C.USERS_TREATED: int(row[C.USERS_TREATED]), C.USERS_CONTROL: int(row[C.USERS_CONTROL]),
            **{k: (round(float(row[k]), 6) if row[k] is not None else None) for k in keys}}


@dataclass(frozen=True)
class Previous:
    """What the last successful measure run recorded: its date, and its tables' versions (``metrics/stages``)."""
    measured_on: dt.date
    versions: dict[str, int | None]


INPUTS = (T.RECOMMENDATIONS, T.SILVER_EVENTS)
OUTPUTS = (T.CAMPAIGN_OUTCOMES, T.UPLIFT)


def last_measure(spark: SparkSession, cfg: AppConfig, run_date: dt.date) -> tuple[Previous | None, str]:
    """The last measure run this one can build on, as far as its record tells, or None and why it cannot (then
    every run date is measured); its tables are checked by :func:`unchanged_since`."""
    # Imported here: the pipeline imports this module (its stage runner records what each run depended on).
    from sparkpromo.pipeline import record_to_build_on

    last, why = record_to_build_on(spark, cfg, "measure")
    if last is None:
        return None, why
    try:
        before = dt.date.fromisoformat(last["result"]["run_date"])
    except (KeyError, TypeError, ValueError):
        return None, "the last run recorded no run date"
    if run_date < before:
        return None, f"the run date {run_date} is before the last run's ({before})"
    return Previous(before, dict(last["io"])), ""


def unchanged_since(spark: SparkSession, cfg: AppConfig, prev: Previous) -> str:
    """Why the rows ``prev`` left cannot be kept (its outputs moved since, or an input's change data feed cannot
    say what changed); "" when they can."""
    for table in OUTPUTS:
        if delta_io.version(spark, table.uri(cfg)) != prev.versions.get(table.key):
            return f"{table.key} changed since the last measure run"
    for table in INPUTS:
        start, end = prev.versions.get(table.key), delta_io.version(spark, table.uri(cfg))
        if start is None or end is None or end < start:
            return f"{table.key} was created, dropped or rolled back since the last measure run"
        if end > start and not delta_io.change_feed_complete(spark, table.uri(cfg), start, end):
            return f"{table.key} was rewritten or purged since the last measure run (or records no change feed)"
    return ""


def _changed(spark: SparkSession, cfg: AppConfig, prev: Previous, table: T.Table, dates: Transform
             ) -> set[dt.date]:
    """The dates ``dates`` finds in the change data feed of ``table`` since ``prev``."""
    uri = table.uri(cfg)
    start, end = prev.versions.get(table.key), delta_io.version(spark, uri)
    if start is None or end is None or end == start:
        return set()
    return {r[0] for r in delta_io.changes(spark, uri, start, end).transform(dates).collect()}  # one row per date


def run_dates_due(spark: SparkSession, cfg: AppConfig, run_date: dt.date, dates: list[dt.date],
                  full_refresh: bool) -> tuple[list[dt.date], str]:
    """The run dates of ``dates`` to measure, and why all of them when it is all for a reason ("" otherwise)."""
    prev, why = (None, "--full-refresh") if full_refresh else last_measure(spark, cfg, run_date)
    if prev is None:
        return dates, why
    window = cfg.measure.window_days
    todo = run_dates_to_measure(dates, prev.measured_on, window, (), ())
    if len(todo) == len(dates):  # every window was open: nothing to keep, so nothing to check
        return todo, ""
    why = unchanged_since(spark, cfg, prev)
    if why:
        return dates, why
    return run_dates_to_measure(dates, prev.measured_on, window,
                                _changed(spark, cfg, prev, T.RECOMMENDATIONS, changed_run_dates()),
                                _changed(spark, cfg, prev, T.SILVER_EVENTS, changed_purchase_dates())), ""


def run_measure(spark: SparkSession, cfg: AppConfig, run_id: str, run_date: dt.date, full_refresh: bool = False
                ) -> dict[str, Any]:
    """Measure the campaign runs of ``gold/recommendations`` up to ``run_date`` and write
    ``metrics/campaign_outcomes`` and ``metrics/uplift`` (rows of the run dates measured replaced in one commit
    each); with the feedback options on, also ``metrics/campaign_actions``. Returns a summary with, per campaign, its
    latest closed (or else latest) run's figures, over every run date up to ``run_date``.

    When the last measure run recorded by the pipeline can be built on (:func:`run_dates_due`), only the run
    dates whose rows can differ are measured again (:mod:`sparkpromo.measure.incremental`); ``full_refresh``, or any
    other case, measures every one. ``mode``, ``full_reason`` and ``run_dates_measured`` say which."""
    from sparkpromo.recommend import table_uri

    m = cfg.measure
    summary: dict[str, Any] = {"run_id": run_id, "run_date": run_date.isoformat(), "window_days": m.window_days}
    recs_uri = table_uri(cfg)
    if not delta_io.is_delta(spark, recs_uri):
        summary.update(runs_measured=0, warning="no recommendations table yet: nothing to measure")
        log.warning("%s", summary["warning"])
        return summary
    recs = (delta_io.read(spark, recs_uri).where(F.col(C.RUN_DATE) <= F.lit(run_date))
            .select(*RECOMMENDATION_COLUMNS))
    dates = sorted(r[0] for r in recs.select(C.RUN_DATE).distinct().collect())  # one row per past run date
    # Due dates first: dropping rows commits to the outcomes table, which run_dates_due would take for a change.
    todo, reason = run_dates_due(spark, cfg, run_date, dates, full_refresh) if dates else ([], "")
    gone = _drop_vanished(spark, cfg, run_date, dates)
    if gone:
        summary["run_dates_dropped"] = [d.isoformat() for d in gone]
    if not dates:
        summary.update(runs_measured=0, warning=f"no recommendations on or before {run_date}: nothing to measure")
        log.warning("%s", summary["warning"])
        return summary
    if reason:
        log.info("measuring every run date (%s)", reason)
    else:
        log.info("measuring %d of %d run dates: the others are as the last measure run left them", len(todo),
                 len(dates))
    summary.update(mode="full" if reason else "incremental", full_reason=reason or None,
                   run_dates_measured=len(todo))
    rows = _measured(spark, cfg, run_id, run_date, recs, todo) if todo else []
    kept = [d for d in dates if d not in set(todo)]
    if kept:  # one row per campaign run: small
        rows += [r.asDict() for r in delta_io.read(spark, T.CAMPAIGN_OUTCOMES.uri(cfg))
                 .where(F.col(C.RUN_DATE).isin(kept)).collect()]
    per_campaign: dict[str, dict[str, Any]] = {}
    for row in sorted(rows, key=lambda r: r[C.RUN_DATE]):
        if row[C.STATUS] != WINDOW_OPEN or row[C.CAMPAIGN_ID] not in per_campaign:
            per_campaign[row[C.CAMPAIGN_ID]] = _summary_row(row)
    for cid, v in per_campaign.items():
        log.info("campaign %s run %s: status=%s treated=%s control=%s uplift=%s [%s, %s]", cid, v["run_date"],
                 v["status"], v[C.USERS_TREATED], v[C.USERS_CONTROL], v[C.UPLIFT], v[C.UPLIFT_CI_LOW],
                 v[C.UPLIFT_CI_HIGH])
    statuses = [r[C.STATUS] for r in rows]
    summary.update(runs_measured=sum(s in MEASURED for s in statuses), runs_window_open=statuses.count(WINDOW_OPEN),
                   runs_without_control=statuses.count(NO_CONTROL), campaigns=per_campaign)
    if m.pause_negative or m.reallocate_budgets:
        actions = decide_actions(rows, cfg.campaigns, m.pause_negative, m.min_runs, m.reallocate_budgets,
                                 next_run=run_date + dt.timedelta(days=1))
        decided = actions or [(ALL_CAMPAIGNS, NO_CHANGE, None, "no automatic change")]
        df = local_rows(spark, [(run_date, cid, a, v, why, run_id) for cid, a, v, why in decided], ACTIONS)
        delta_io.replace_partition(df, T.CAMPAIGN_ACTIONS.uri(cfg), {C.MEASURED_ON: run_date},
                                   name=T.CAMPAIGN_ACTIONS.key)
        for cid, a, v, why in actions:
            log.warning("automatic change for the next run: campaign %s %s%s (%s)", cid, a,
                        "" if v is None else f" {v:g}", why)
        summary["actions"] = len(actions)
    return summary


def _drop_vanished(spark: SparkSession, cfg: AppConfig, run_date: dt.date, dates: list[dt.date]) -> list[dt.date]:
    """Run dates up to ``run_date`` that have outcome rows but no recommendations left (every listed user forgotten),
    whose rows of ``metrics/campaign_outcomes`` and ``metrics/uplift`` are removed: a full measure would write none."""
    uri = T.CAMPAIGN_OUTCOMES.uri(cfg)
    if not delta_io.is_delta(spark, uri):
        return []
    measured = {r[0] for r in delta_io.read(spark, uri).where(F.col(C.RUN_DATE) <= F.lit(run_date))
                .select(C.RUN_DATE).distinct().collect()}  # one row per measured run date
    gone = sorted(measured - set(dates))
    if gone:
        log.info("run dates without recommendations any more, their measure rows removed: %s",
                 ", ".join(d.isoformat() for d in gone))
        for table, schema in ((T.CAMPAIGN_OUTCOMES, OUTCOMES), (T.UPLIFT, UPLIFT)):
            if delta_io.is_delta(spark, table.uri(cfg)):
                delta_io.replace_partition(local_rows(spark, [], schema), table.uri(cfg), {C.RUN_DATE: gone},
                                           name=table.key)
    return gone


def _measured(spark: SparkSession, cfg: AppConfig, run_id: str, run_date: dt.date, recs: DataFrame,
              todo: list[dt.date]) -> list[dict[str, Any]]:
    """Measure the campaign runs of the run dates ``todo``, replace their rows of ``metrics/campaign_outcomes`` and
    ``metrics/uplift``, and return the outcome rows."""
    m = cfg.measure
    window = dt.timedelta(days=m.window_days)
    # The purchases of those runs' windows only: silver events are pruned by their date statistics.
    events = (delta_io.read(spark, T.SILVER_EVENTS.uri(cfg)).select(*EVENT_COLUMNS)
              .where((F.col(C.EVENT_DATE) > F.lit(min(todo))) & (F.col(C.EVENT_DATE) <= F.lit(max(todo) + window))))
    recs = recs.where(F.col(C.RUN_DATE).isin(todo))
    types = {c.id: c.type for c in cfg.campaigns}
    users = (recs.transform(assignments())
             .transform(user_outcomes(events, recs.select(*_KEYS, C.USER_ID, C.ITEM_ID), m.window_days))
             .persist(StorageLevel.MEMORY_AND_DISK))
    try:
        uplift = users.transform(uplift_by_decile(run_date)).localCheckpoint(eager=True)
        outcomes = (users.transform(campaign_outcomes(run_date, m.min_users, types))
                    .transform(with_auuc(uplift.transform(qini_areas())))
                    .transform(conform(OUTCOMES, run_id)).localCheckpoint(eager=True))
        with stage("measure.write", run_dates=len(todo)) as counts:
            where = {C.RUN_DATE: todo}
            delta_io.replace_partition(outcomes, T.CAMPAIGN_OUTCOMES.uri(cfg), where, name=T.CAMPAIGN_OUTCOMES.key)
            delta_io.replace_partition(uplift.transform(conform(UPLIFT, run_id)), T.UPLIFT.uri(cfg), where,
                                       name=T.UPLIFT.key)
            rows = [r.asDict() for r in outcomes.collect()]  # one row per campaign run: small
            counts["rows"] = len(rows)
    finally:
        users.unpersist()
    return rows


__all__ = [
    "RECOMMENDATION_COLUMNS", "EVENT_COLUMNS", "INPUTS", "OUTPUTS", "Previous", "conform", "last_measure",
    "unchanged_since", "run_dates_due", "run_measure",
]
