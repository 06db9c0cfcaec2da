"""Feedback into the next run (optional): pause campaigns that keep doing harm, share budgets by measured
incremental revenue, and apply the latest decisions to the configured campaigns."""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from collections.abc import Mapping, Sequence
from typing import Any

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from sparkpromo import columns as C
from sparkpromo import delta_io
from sparkpromo import tables as T
from sparkpromo.campaigns import is_active
from sparkpromo.config import AppConfig, Campaign
from sparkpromo.measure.outcomes import MEASURED, OK

PAUSE, BUDGET = "pause", "budget"
# The row a measure run writes when it decides nothing: the next run reads "no change" from it, rather than an
# earlier run's decisions, which this run's outcomes may have reversed.
NO_CHANGE, ALL_CAMPAIGNS = "none", "*"


def decide_actions(history: Sequence[Mapping[str, Any]], campaigns: Sequence[Campaign], pause_negative: bool,
                   min_runs: int, reallocate: bool, next_run: dt.date | None = None
                   ) -> list[tuple[str, str, float | None, str]]:
    """``(campaign_id, action, value, reason)`` decisions from the measured outcome rows (small: one per campaign
    run; each a mapping of :data:`OUTCOMES` columns). ``pause``: the last ``min_runs`` runs with enough users in
    both arms (status ``ok``) all have an uplift interval wholly below zero; a ``small_sample`` interval is too
    narrow to stop a campaign on (a one-user control arm that bought gives [-1, -1]). ``budget``: budgeted
    campaigns share their summed budget in proportion to their latest measured (``ok`` or ``small_sample``)
    incremental revenue per treated user (floored at 0; none measured or all at 0: no change). Paused campaigns
    get no budget share, nor do campaigns inactive on ``next_run`` (when given): the offers of an ended or not yet
    started campaign would go unused, and one not measured yet would block the re-split of the others. A budgeted
    campaign without a control group can never be measured: it keeps its configured budget and stays out of the
    re-split."""
    # Budgets follow every run with a comparison (a campaign whose control arm stays under measure.min_users would
    # otherwise block every re-split); a pause needs intervals that can be trusted.
    by_campaign: dict[str, list[Mapping[str, Any]]] = {}
    for row in sorted(history, key=lambda r: r[C.RUN_DATE]):
        if row[C.STATUS] in MEASURED:
            by_campaign.setdefault(row[C.CAMPAIGN_ID], []).append(row)
    out: list[tuple[str, str, float | None, str]] = []
    paused: set[str] = set()
    if pause_negative:
        for camp in campaigns:
            runs = [r for r in by_campaign.get(camp.id, []) if r[C.STATUS] == OK][-min_runs:]
            if len(runs) == min_runs and all(r[C.UPLIFT_CI_HIGH] is not None and r[C.UPLIFT_CI_HIGH] < 0
                                             for r in runs):
                paused.add(camp.id)
                out.append((camp.id, PAUSE, None,
                            f"uplift 95% CI below zero in the last {min_runs} run(s) with status ok "
                            f"(latest {runs[-1][C.UPLIFT_CI_LOW]:.4f} to {runs[-1][C.UPLIFT_CI_HIGH]:.4f})"))
    if reallocate:
        budgeted = [c for c in campaigns if c.budget > 0 and c.control_share > 0 and c.id not in paused
                    and (next_run is None or is_active(c, next_run))]
        per_offer = {}
        for c in budgeted:
            runs = by_campaign.get(c.id, [])
            if runs and runs[-1][C.INCREMENTAL_REVENUE] is not None and runs[-1][C.USERS_TREATED]:
                per_offer[c.id] = max(0.0, runs[-1][C.INCREMENTAL_REVENUE] / runs[-1][C.USERS_TREATED])
        weight = sum(per_offer.values())
        if len(per_offer) == len(budgeted) and budgeted and weight > 0:
            total = sum(c.budget for c in budgeted)
            for c in budgeted:
                share = per_offer[c.id] / weight
                out.append((c.id, BUDGET, float(math.floor(total * share)),
                            f"{share:.1%} of the budgeted campaigns' {total} offers: incremental revenue per "
                            f"offer {per_offer[c.id]:.4f}"))
    return out


def read_actions(spark: SparkSession, cfg: AppConfig, run_date: dt.date) -> dict[str, dict[str, float | None]]:
    """The automatic decisions of the latest measure run before ``run_date`` (a run date's own measure runs after
    its recommend): campaign id -> {action: value}."""
    uri = T.CAMPAIGN_ACTIONS.uri(cfg)
    if not delta_io.is_delta(spark, uri):
        return {}
    df = delta_io.read(spark, uri).where(F.col(C.MEASURED_ON) < F.lit(run_date))
    latest = df.agg(F.max(C.MEASURED_ON)).first()
    if latest is None or latest[0] is None:
        return {}
    out: dict[str, dict[str, float | None]] = {}
    latest_rows = df.where((F.col(C.MEASURED_ON) == F.lit(latest[0])) & (F.col(C.ACTION) != F.lit(NO_CHANGE)))
    for row in latest_rows.collect():  # one row per campaign and action
        out.setdefault(row[C.CAMPAIGN_ID], {})[row[C.ACTION]] = row[C.ACTION_VALUE]
    return out


def apply_actions(campaigns: Sequence[Campaign], actions: Mapping[str, Mapping[str, float | None]]
                  ) -> tuple[list[Campaign], list[str]]:
    """The campaigns recommend runs after the automatic decisions (paused ones dropped, budgets replaced), and one
    log line per change."""
    kept: list[Campaign] = []
    changes: list[str] = []
    for camp in campaigns:
        act = actions.get(camp.id, {})
        if PAUSE in act:
            changes.append(f"campaign {camp.id}: paused by measure.pause_negative")
            continue
        budget = act.get(BUDGET)
        new = None if budget is None else max(1, int(budget))  # 0 would mean "no budget": keep at least 1 offer
        if new is not None and new != camp.budget:
            changes.append(f"campaign {camp.id}: budget {camp.budget} -> {new} by measure.reallocate_budgets")
            camp = dataclasses.replace(camp, budget=new)
        kept.append(camp)
    return kept, changes


__all__ = [
    "PAUSE", "BUDGET", "NO_CHANGE", "ALL_CAMPAIGNS", "decide_actions", "read_actions", "apply_actions",
]
