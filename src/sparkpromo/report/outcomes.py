"""The outcomes section: what each campaign changed against its control group."""

from __future__ import annotations

from typing import Any

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from sparkpromo import columns as C
from sparkpromo import tables as T
from sparkpromo.config import AppConfig
from sparkpromo.measure.actions import NO_CHANGE
from sparkpromo.report.html import Charts, _e, _html_table, _missing, _note
from sparkpromo.report.reading import RunInfo, Section, _table


def _pp(value: float | None) -> str:
    return "–" if value is None else f"{value * 100:+.1f} pp"


def outcome_words(row: dict[str, Any], min_users: int) -> str:
    """One paragraph on one campaign run's outcome row (:data:`sparkpromo.measure.OUTCOMES`), for people."""
    from sparkpromo import measure as M

    status, day = row[C.STATUS], row[C.RUN_DATE]
    if status == M.WINDOW_OPEN:
        return (f"Run {day}: the attribution window is still open until {row[C.WINDOW_END]}; it is measured once "
                "the window has closed.")
    if status == M.NO_CONTROL:
        return (f"Run {day}: no control users, so there is nothing to compare the {row[C.USERS_TREATED]} served "
                "users with: the uplift cannot be measured (give the campaign a control_share above 0).")
    if status == M.NO_TREATED:
        return f"Run {day}: every listed user was in the control group; no offer was sent, nothing to measure."
    lo, hi = row[C.UPLIFT_CI_LOW], row[C.UPLIFT_CI_HIGH]
    text = (f"Run {day}: {row[C.CONVERSION_TREATED]:.1%} of the {row[C.USERS_TREATED]} users sent the offer bought "
            f"something within the window, against {row[C.CONVERSION_CONTROL]:.1%} of the {row[C.USERS_CONTROL]} "
            f"control users: an uplift of {_pp(row[C.UPLIFT])} (95% interval {_pp(lo)} to {_pp(hi)}). ")
    if status == M.SMALL_SAMPLE:
        text += (f"Sample too small to say: an arm has fewer than {min_users} users, so this figure is noise as "
                 "much as signal. ")
    elif lo is not None and lo > 0:
        text += "The whole interval lies above zero: the offer raised purchases. "
    elif hi is not None and hi < 0:
        text += "The whole interval lies below zero: users who got the offer bought less than those who did not. "
    else:
        text += ("The interval includes zero: this run cannot tell the offer's effect from no effect (more users "
                 "or more runs narrow it). ")
    inc, cost = row[C.INCREMENTAL_REVENUE], row[C.DISCOUNT_COST]
    if inc is not None and cost is not None:
        text += f"Incremental revenue {inc:,.2f} against a discount cost of {cost:,.2f}"
        roi = row[C.INCREMENTAL_ROI]
        text += (f": each unit of discount returned {roi + 1:,.2f} in extra revenue." if roi is not None
                 else " (no discounted purchase).")
    return text


def outcomes_section(spark: SparkSession, cfg: AppConfig, run: RunInfo, charts: Charts) -> Section:
    from sparkpromo import measure as M

    title = "Campaign outcomes"
    outcomes = _table(spark, cfg, T.CAMPAIGN_OUTCOMES)
    if outcomes is None or run.run_date is None:
        return Section("outcomes", title, _missing(
            "No measured campaign outcomes yet: run `sparkpromo measure` once a campaign's attribution window "
            f"({cfg.measure.window_days} days after its run date) has closed."))
    rows = [r.asDict() for r in outcomes.where(F.col(C.RUN_DATE) <= F.lit(run.run_date))
            .orderBy(C.CAMPAIGN_ID, C.RUN_DATE).limit(100_000).collect()]
    if not rows:
        return Section("outcomes", title, _missing(f"No campaign run on or before {run.run_date} is measured yet."))
    by_campaign: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_campaign.setdefault(r[C.CAMPAIGN_ID], []).append(r)
    latest = {cid: max((r for r in rs if r[C.STATUS] in M.MEASURED), key=lambda r: r[C.RUN_DATE], default=None)
              for cid, rs in by_campaign.items()}
    curves: dict[str, list[dict[str, Any]]] = {}
    uplift = _table(spark, cfg, T.UPLIFT)
    wanted = [(cid, r[C.RUN_DATE]) for cid, r in latest.items() if r is not None]
    if uplift is not None and wanted:
        cond = None
        for cid, day in wanted:
            one = (F.col(C.CAMPAIGN_ID) == F.lit(cid)) & (F.col(C.RUN_DATE) == F.lit(day))
            cond = one if cond is None else cond | one
        for r in uplift.where(cond).orderBy(C.CAMPAIGN_ID, C.DECILE).limit(100_000).collect():
            curves.setdefault(r[C.CAMPAIGN_ID], []).append(r.asDict())
    names = sorted(by_campaign)

    def draw(fig: Any) -> None:
        axes = fig.subplots(len(names), 3, squeeze=False)
        for i, cid in enumerate(names):
            done = [r for r in by_campaign[cid] if r[C.STATUS] in M.MEASURED]
            ax = axes[i][0]
            if done:
                days = [str(r[C.RUN_DATE]) for r in done]
                ups = [r[C.UPLIFT] * 100 for r in done]
                err = [[(r[C.UPLIFT] - r[C.UPLIFT_CI_LOW]) * 100 for r in done],
                       [(r[C.UPLIFT_CI_HIGH] - r[C.UPLIFT]) * 100 for r in done]]
                ax.errorbar(days, ups, yerr=err, fmt="o", capsize=3, color="#4c72b0")
                ax.axhline(0, color="#999", lw=0.8)
                ax.tick_params(axis="x", labelrotation=30, labelsize=7)
            ax.set_title(f"{cid}: uplift, pp (95% CI)", fontsize=9)
            ax = axes[i][1]
            curve = curves.get(cid, [])
            known = [c for c in curve if c[C.QINI] is not None]  # no Qini before the first control user
            if known:
                xs = [0.0] + [float(c[C.CUM_SHARE]) for c in known]
                ax.plot(xs, [0.0] + [float(c[C.QINI]) for c in known], marker=".", label="by ALS score")
                ax.plot(xs, [0.0] + [float(c[C.QINI_RANDOM] or 0.0) for c in known], ls="--", label="random")
                ax.legend(fontsize=7)
                ax.set_xlabel("share of users targeted", fontsize=8)
            ax.set_title(f"{cid}: Qini (incremental conversions)", fontsize=9)
            ax = axes[i][2]
            if done:
                days = [str(r[C.RUN_DATE]) for r in done]
                xs = range(len(done))
                ax.bar([x - 0.2 for x in xs], [r[C.INCREMENTAL_REVENUE] or 0.0 for r in done], 0.4,
                       label="incremental revenue", color="#55a868")
                ax.bar([x + 0.2 for x in xs], [r[C.DISCOUNT_COST] or 0.0 for r in done], 0.4,
                       label="discount cost", color="#c44e52")
                ax.set_xticks(list(xs), days, rotation=30, fontsize=7)
                ax.axhline(0, color="#999", lw=0.8)
                ax.legend(fontsize=7)
            ax.set_title(f"{cid}: incr. revenue vs discount", fontsize=9)

    parts = [charts.render("campaign outcomes", draw, (11.0, 2.8 * len(names)))]
    min_users = cfg.measure.min_users
    for cid in names:
        rs = by_campaign[cid]
        gone = "" if rs[-1][C.IN_CONFIG] else " (no longer in the configuration: its measured past is kept)"
        parts.append(f"<h3>{_e(cid)}{_e(gone)}</h3>")
        pick = latest[cid] or rs[-1]
        parts.append(_note(outcome_words(pick, min_users)))
        parts.append(_html_table(
            ("run date", "status", "treated", "control", "conversion treated", "conversion control", "uplift",
             "95% CI low", "95% CI high", "revenue uplift / user", "incremental revenue", "discount cost",
             "incremental ROI", "Qini coefficient"),
            [(str(r[C.RUN_DATE]), r[C.STATUS], r[C.USERS_TREATED], r[C.USERS_CONTROL], r[C.CONVERSION_TREATED],
              r[C.CONVERSION_CONTROL], r[C.UPLIFT], r[C.UPLIFT_CI_LOW], r[C.UPLIFT_CI_HIGH], r[C.REVENUE_UPLIFT],
              r[C.INCREMENTAL_REVENUE], r[C.DISCOUNT_COST], r[C.INCREMENTAL_ROI], r[C.QINI_COEFFICIENT])
             for r in rs], numeric_from=2))
    actions = _table(spark, cfg, T.CAMPAIGN_ACTIONS)
    if actions is not None:
        done = actions.where((F.col(C.MEASURED_ON) <= F.lit(run.run_date))
                             & (F.col(C.ACTION) != F.lit(NO_CHANGE))).orderBy(
            F.desc(C.MEASURED_ON), C.CAMPAIGN_ID).limit(1000).collect()
        if done:
            parts.append("<h3>Automatic changes</h3>")
            parts.append(_html_table(("decided on", "campaign", "action", "value", "why"),
                                     [(str(a[C.MEASURED_ON]), a[C.CAMPAIGN_ID], a[C.ACTION], a[C.ACTION_VALUE],
                                       a[C.ACTION_REASON]) for a in done], numeric_from=3))
    parts.append(_note(
        "Uplift: conversion (any purchase within the window after the run date) of the users sent the offer minus "
        "that of the control group, who were chosen the same way but held back; the 95% interval is the range "
        "the true effect plausibly lies in. Incremental revenue: revenue per user, treated minus control, times "
        "the treated users; discount cost: the offer's discount on the treated users' purchases of offered items; "
        "incremental ROI = (incremental revenue - cost) / cost. Qini curve: the extra conversions gained by "
        "targeting the top-scored share of users first; above the dashed random line, the score finds the users "
        "the offer persuades. 'small_sample': an arm has fewer than measure.min_users users."))
    return Section("outcomes", title, "".join(parts))


__all__ = [
    "outcome_words", "outcomes_section",
]
