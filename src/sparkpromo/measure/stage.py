"""The measure stage: :func:`run_measure`."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping
from typing import Any

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StructType

from sparkpromo import columns as C
from sparkpromo import delta_io
from sparkpromo import tables as T
from sparkpromo.config import AppConfig
from sparkpromo.frame import Transform
from sparkpromo.logs import stage
from sparkpromo.measure.actions import decide_actions
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


def run_measure(spark: SparkSession, cfg: AppConfig, run_id: str, run_date: dt.date) -> dict[str, Any]:
    """Measure every campaign run of ``gold/recommendations`` up to ``run_date`` and write
    ``metrics/campaign_outcomes`` and ``metrics/uplift`` (rows of those run dates replaced in one commit each);
    with the feedback options on, also ``metrics/campaign_actions``. Returns a summary with, per campaign, its
    latest closed (or else latest) run's figures."""
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
    if not dates:
        summary.update(runs_measured=0, warning=f"no recommendations on or before {run_date}: nothing to measure")
        log.warning("%s", summary["warning"])
        return summary
    events = delta_io.read(spark, T.SILVER_EVENTS.uri(cfg)).select(*EVENT_COLUMNS)
    types = {c.id: c.type for c in cfg.campaigns}
    users = (recs.transform(assignments())
             .transform(user_outcomes(events, recs.select(*_KEYS, C.USER_ID, C.ITEM_ID), m.window_days))
             .persist(StorageLevel.MEMORY_AND_DISK))
    try:
        uplift = users.transform(uplift_by_decile(run_date)).localCheckpoint(eager=True)
        outcomes = (users.transform(campaign_outcomes(run_date, m.min_users, types))
                    .transform(with_auuc(uplift.transform(qini_areas())))
                    .transform(conform(OUTCOMES, run_id)).localCheckpoint(eager=True))
        with stage("measure.write", run_dates=len(dates)) as counts:
            where = {C.RUN_DATE: dates}
            delta_io.replace_partition(outcomes, T.CAMPAIGN_OUTCOMES.uri(cfg), where, name=T.CAMPAIGN_OUTCOMES.key)
            delta_io.replace_partition(uplift.transform(conform(UPLIFT, run_id)), T.UPLIFT.uri(cfg), where,
                                       name=T.UPLIFT.key)
            rows = [r.asDict() for r in outcomes.collect()]  # one row per campaign run: small
            counts["rows"] = len(rows)
    finally:
        users.unpersist()
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
        actions = decide_actions(rows, cfg.campaigns, m.pause_negative, m.min_runs, m.reallocate_budgets)
        df = spark.createDataFrame([(run_date, cid, a, v, why, run_id) for cid, a, v, why in actions], ACTIONS)
        delta_io.replace_partition(df, T.CAMPAIGN_ACTIONS.uri(cfg), {C.MEASURED_ON: run_date},
                                   name=T.CAMPAIGN_ACTIONS.key)
        for cid, a, v, why in actions:
            log.warning("automatic change for the next run: campaign %s %s%s (%s)", cid, a,
                        "" if v is None else f" {v:g}", why)
        summary["actions"] = len(actions)
    return summary


__all__ = [
    "RECOMMENDATION_COLUMNS", "EVENT_COLUMNS", "conform", "run_measure",
]
