"""The sections of a run's page: stages, data quality, CV grid, holdout and campaigns."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pyspark.sql import Row, SparkSession
from pyspark.sql import functions as F

from sparkpromo import columns as C
from sparkpromo import tables as T
from sparkpromo.config import AppConfig, join_uri
from sparkpromo.recommend.registry import run_entries
from sparkpromo.report.html import Charts, _fmt, _html_table, _missing, _note
from sparkpromo.report.reading import (
    CONTENDER_ORDER,
    GRID_ORDER,
    RESULT_ITEMS,
    STAGE_ORDER,
    UNIT_METRICS,
    RunInfo,
    Section,
    _json,
    _table,
    read_text,
)


# ----------------------------------------------------------------------------------------------------------------
# Sections
# ----------------------------------------------------------------------------------------------------------------
def stage_rows(spark: SparkSession, cfg: AppConfig, run_id: str) -> list[Row]:
    """The run's rows of ``metrics/stages`` (one per stage)."""
    stages = _table(spark, cfg, T.STAGE_RUNS)
    return [] if stages is None else (stages.where(F.col(C.RUN_ID) == run_id)
                                      .select("stage", "elapsed_s", "finished_at", "io_versions", "result").collect())


def stages_section(run: RunInfo, rows: Sequence[Row], charts: Charts) -> Section:
    title = "Stage timings"
    rows = list(rows)
    if not rows:
        return Section("stages", title, _missing(f"No stage timings recorded for run {run.run_id}."))
    order = {s: i for i, s in enumerate(STAGE_ORDER)}
    rows.sort(key=lambda r: (order.get(r["stage"], len(order)), r["stage"]))
    names = [r["stage"] for r in rows]
    secs = [float(r["elapsed_s"] or 0.0) for r in rows]

    def draw(fig: Any) -> None:
        ax = fig.subplots()
        bars = ax.barh(names[::-1], secs[::-1], color="#4c72b0")
        ax.bar_label(bars, labels=[f"{s:.1f}s" for s in secs[::-1]], fontsize=8, padding=2)
        ax.set_xlabel("elapsed seconds")
        ax.set_title(f"Stage timings, run {run.run_id}")
        ax.margins(x=0.15)

    table_rows = []
    for r in rows:
        result = _json(r["result"], f"metrics/stages result of {r['stage']}") or {}
        scalars = [(k, v) for k, v in result.items()
                   if k not in ("run_id", "run_date", "skipped") and not isinstance(v, (dict, list))]
        summary = ", ".join(f"{k}={_fmt(v)}" for k, v in scalars[:RESULT_ITEMS])
        if len(scalars) > RESULT_ITEMS:
            summary += ", …"
        finished = r["finished_at"].strftime("%Y-%m-%d %H:%M:%S") if r["finished_at"] else None
        table_rows.append((r["stage"], float(r["elapsed_s"] or 0.0), finished, summary))
    total = sum(secs)
    body = (charts.render("stage timings", draw, (8.0, 0.5 + 0.45 * len(rows)))
            + _html_table(("stage", "elapsed s", "finished (UTC)", "result"), table_rows)
            + _note(f"Total {total:.1f} s over {len(rows)} stage(s)."))
    return Section("stages", title, body)


def data_quality_section(spark: SparkSession, cfg: AppConfig, run: RunInfo, charts: Charts) -> Section:
    title = "Data quality"
    dq = _table(spark, cfg, T.DATA_QUALITY)
    rows = [] if dq is None else (dq.where(F.col(C.RUN_ID) == run.run_id)
                                  .select(C.Q_SOURCE, C.METRIC, C.VALUE).collect())
    if not rows:
        return Section("data-quality", title,
                       _missing(f"No data-quality counts for run {run.run_id} (the clean stage did not run or "
                                "metrics/data_quality is missing)."))
    per_source: dict[str, dict[str, int]] = {}
    for r in rows:
        per_source.setdefault(r[C.Q_SOURCE], {})[r[C.METRIC]] = int(r[C.VALUE] or 0)
    sources = sorted(per_source, key=lambda s: ({"events": 0, "users": 1, "items": 2}.get(s, 3), s))
    summary = []
    rules: list[tuple[str, str, int]] = []
    for s in sources:
        m = per_source[s]
        quarantined = {k.split(":", 1)[1]: v for k, v in m.items() if k.startswith("quarantine:")}
        summary.append((s, sum(m.values()), m.get("silver", 0), m.get("duplicate", 0), sum(quarantined.values())))
        rules += [(s, rule, n) for rule, n in sorted(quarantined.items(), key=lambda kv: (-kv[1], kv[0]))]

    def draw(fig: Any) -> None:
        left, right = fig.subplots(1, 2, width_ratios=(1, 1.3))
        labels = [r[0] for r in summary][::-1]
        silver = [r[2] for r in summary][::-1]
        dup = [r[3] for r in summary][::-1]
        quar = [r[4] for r in summary][::-1]
        left.barh(labels, silver, color="#55a868", label="silver")
        left.barh(labels, dup, left=silver, color="#c4ad66", label="duplicate")
        left.barh(labels, quar, left=[a + b for a, b in zip(silver, dup, strict=True)], color="#c44e52",
                  label="quarantine")
        left.set_title("rows in, by outcome")
        # Sources differ by orders of magnitude (events vs users): on a linear axis the small ones vanish.
        left.set_xscale("log")
        left.set_xlabel("rows (log scale)")
        left.legend(fontsize=7, loc="lower right")
        if rules:
            names = [f"{s}: {rule}" for s, rule, _ in rules][::-1]
            bars = right.barh(names, [n for *_, n in rules][::-1], color="#c44e52")
            right.bar_label(bars, fontsize=7, padding=2)
            right.set_title("quarantine by rule")
            right.set_xlabel("rows quarantined")
            right.margins(x=0.15)
            right.tick_params(axis="y", labelsize=7)
        else:
            right.text(0.5, 0.5, "nothing quarantined", ha="center", va="center")
            right.set_axis_off()

    body = (charts.render("data quality", draw, (9.0, max(2.6, 0.9 + 0.3 * max(len(rules), len(summary)))))
            + "<h3>Per source</h3>"
            + _html_table(("source", "rows in", "silver", "duplicates", "quarantined"), summary)
            + "<h3>Quarantine by rule</h3>"
            + (_html_table(("source", "rule", "rows"), rules, numeric_from=2) if rules
               else _note("No row was quarantined.")))
    return Section("data-quality", title, body)


def _model_run(spark: SparkSession, cfg: AppConfig, run: RunInfo) -> tuple[str | None, str]:
    """The model run whose CV grid and holdout metrics belong to this run (its newest registry entry when it
    trained), and a note when it is another run."""
    entries, _ = run_entries(spark, cfg, run.run_id)
    if entries:
        return entries[-1], ""
    model = _table(spark, cfg, T.MODEL_METRICS)
    if model is not None and model.where(F.col(C.RUN_ID) == run.run_id).limit(1).count():
        return run.run_id, ""
    recs = _table(spark, cfg, T.RECOMMENDATIONS)
    if recs is not None and run.run_date is not None:
        row = (recs.where((F.col(C.RUN_DATE) == F.lit(run.run_date)) & (F.col(C.RUN_ID) == run.run_id)
                          & F.col(C.MODEL_RUN_ID).isNotNull())
               .select(C.MODEL_RUN_ID).limit(1).collect())
        if row:
            return row[0][0], (f"Run {run.run_id} did not train; its recommendations used the model of run "
                               f"{row[0][0]}, shown here.")
    return None, f"No model was trained in run {run.run_id}, and its recommendations name no model run."


def cv_section(spark: SparkSession, cfg: AppConfig, model_run: str | None, note: str, charts: Charts) -> Section:
    title = "Cross-validation grid"
    if model_run is None:
        return Section("cv-grid", title, _missing(note))
    uri = join_uri(cfg.lakehouse, "registry", model_run, "cv.json")
    doc = _json(read_text(spark, uri), uri)
    grid = doc.get("grid") if isinstance(doc, dict) else None
    if not grid:
        why = doc.get("note") if isinstance(doc, dict) else None
        return Section("cv-grid", title, (_note(note) if note else "") + (
            _note(f"Model run {model_run} was not cross-validated: {why}.") if why else
            _missing(f"No cross-validation table for model run {model_run} ({uri} is missing).")))
    metric, k, folds = doc.get("metric", "metric"), doc.get("k", "?"), doc.get("folds", "?")
    keys = sorted({key for g in grid for key in g.get("params", {})},
                  key=lambda key: (GRID_ORDER.index(key) if key in GRID_ORDER else len(GRID_ORDER), key))
    points = [([g.get("params", {}).get(key) for key in keys], float(g.get("mean", 0.0)), float(g.get("std", 0.0)))
              for g in grid]
    points.sort(key=lambda p: -p[1])

    def draw(fig: Any) -> None:
        ax = fig.subplots()
        rank_i = keys.index("rank") if "rank" in keys else None
        ranks = sorted({p[0][rank_i] for p in points}) if rank_i is not None else [None]
        # One bar series per combination of the other params that vary (constant ones only clutter the legend).
        others = [i for i in range(len(keys)) if i != rank_i and len({str(p[0][i]) for p in points}) > 1]
        series = sorted({tuple(p[0][i] for i in others) for p in points}, key=str)
        width = 0.8 / max(len(series), 1)
        for j, combo in enumerate(series):
            xs, ys, es = [], [], []
            for x, r in enumerate(ranks):
                for values, mean, std in points:
                    if (rank_i is None or values[rank_i] == r) and tuple(values[i] for i in others) == combo:
                        xs.append(x + (j - (len(series) - 1) / 2) * width)
                        ys.append(mean)
                        es.append(std)
            label = ", ".join(f"{keys[i]}={v}" for i, v in zip(others, combo, strict=True)) or "mean ± std"
            ax.bar(xs, ys, width=width, yerr=es, capsize=2, label=label)
        ax.set_xticks(range(len(ranks)), [f"rank {r}" for r in ranks] if rank_i is not None else [""])
        ax.set_ylabel(f"mean {metric}@{k}")
        ax.set_title(f"CV {metric}@{k} over {folds} folds, model run {model_run}")
        ax.margins(y=0.1)
        ax.legend(fontsize=7, ncols=min(len(series), 3), loc="upper center", bbox_to_anchor=(0.5, -0.12))

    best = points[0]
    body = ((_note(note) if note else "")
            + charts.render("cross-validation grid", draw, (8.0, 4.0))
            + _html_table((*keys, f"mean {metric}@{k}", "std"), [(*v, m, s) for v, m, s in points], highlight=0,
                          numeric_from=0)
            + _note("Best grid point (highlighted): " + ", ".join(f"{key}={v}" for key, v in zip(keys, best[0],
                                                                                             strict=True))
                    + f" with mean {metric}@{k} = {best[1]:.4f}."))
    return Section("cv-grid", title, body)


def holdout_section(spark: SparkSession, cfg: AppConfig, model_run: str | None, note: str, charts: Charts
                    ) -> Section:
    title = "Holdout metrics: ALS against the popularity baseline"
    if model_run is None:
        return Section("holdout", title, _missing(note))
    model = _table(spark, cfg, T.MODEL_METRICS)
    rows = [] if model is None else (model.where(F.col(C.RUN_ID) == model_run)
                                     .select(C.CONTENDER, C.METRIC, C.VALUE).collect())
    if not rows:
        return Section("holdout", title, (_note(note) if note else "")
                       + _missing(f"No holdout metrics for model run {model_run} in metrics/model."))
    decisions = [r[C.METRIC] for r in rows if r[C.CONTENDER] == "decision"]
    rows = [r for r in rows if r[C.CONTENDER] not in ("decision", "gate")]  # gate: the gate holdout's size
    values: dict[str, dict[str, float | None]] = {}
    for r in rows:
        values.setdefault(r[C.METRIC], {})[r[C.CONTENDER]] = None if r[C.VALUE] is None else float(r[C.VALUE])
    contenders = sorted({r[C.CONTENDER] for r in rows}, key=lambda c: (CONTENDER_ORDER.index(c)
                                                                       if c in CONTENDER_ORDER else 99, c))
    known = (*UNIT_METRICS, "novelty", "rmse")
    metrics = sorted(values, key=lambda m: (known.index(m) if m in known else len(known), m))
    params = _json(read_text(spark, join_uri(cfg.lakehouse, "registry", model_run, "params.json")), "params.json")
    champion = params.get("champion") if isinstance(params, dict) else None
    charted = [m for m in metrics if m in UNIT_METRICS]
    novelty = "novelty" in values and any(v is not None for v in values["novelty"].values())

    def bars(ax: Any, names: Sequence[str], fmt: str) -> None:
        width = 0.8 / len(contenders)
        for j, c in enumerate(contenders):
            xs = [i + (j - (len(contenders) - 1) / 2) * width for i in range(len(names))]
            drawn = ax.bar(xs, [values[m].get(c) or 0.0 for m in names], width=width, label=c)
            ax.bar_label(drawn, fmt=fmt, fontsize=7, padding=1)
        ax.set_xticks(range(len(names)), names)
        ax.margins(y=0.15)

    def draw(fig: Any) -> None:
        if novelty:
            ax, nov = fig.subplots(1, 2, width_ratios=(max(len(charted), 1), 1))
            bars(nov, ["novelty"], "%.2f")
            nov.set_ylabel("bits (mean self-information)")
        else:
            ax = fig.subplots()
        bars(ax, charted, "%.3f")
        ax.set_ylabel("0 to 1")
        ax.set_title(f"Holdout metrics, model run {model_run}")
        ax.legend(fontsize=8)

    headers = ["metric", *contenders]
    has_pair = "als" in contenders and "popularity" in contenders
    if has_pair:
        headers.append("als − popularity")
    table_rows = []
    for m in metrics:
        row: list[Any] = [m, *(values[m].get(c) for c in contenders)]
        if has_pair:
            a, p = values[m].get("als"), values[m].get("popularity")
            row.append(None if a is None or p is None else a - p)
        table_rows.append(row)
    body = ((_note(note) if note else "")
            + (charts.render("holdout metrics", draw, (8.0, 3.4)) if charted or novelty else "")
            + _html_table(headers, table_rows)
            + (_note(f"Champion of model run {model_run}: {champion}.") if champion else "")
            + "".join(_note(line) for line in _lifecycle_lines(params if isinstance(params, dict) else {},
                                                                decisions[0] if decisions else None)))
    return Section("holdout", title, body)


def _lifecycle_lines(params: dict[str, Any], decision: str | None) -> list[str]:
    """What was published and on what evidence, from the run's params.json (older runs have none of it)."""
    lines = []
    if params.get("published_model"):
        lines.append(f"Published model fitted on {params['published_model']}; holdout metrics from the "
                     f"{params.get('holdout_metrics_from', 'train-only fit')}.")
    if params.get("served_exclusion"):
        lines.append("Serving's exclusion (only non-repeatable bought or rated items; *_served): "
                     f"{params['served_exclusion']}.")
    decision = params.get("decision") or decision
    if decision:
        metric = params.get("metric", "metric")
        incumbent, score = params.get("incumbent_run_id"), params.get(f"incumbent_{metric}")
        new = params.get(f"challenger_{metric}")
        if incumbent and isinstance(score, (int, float)):
            against = (f"model in service: run {incumbent}, {metric} {score:.4f}"
                       + (f", new champion {new:.4f}" if isinstance(new, (int, float)) else "")
                       + f", margin {params.get('incumbent_margin')}")
        elif incumbent:
            against = f"model in service: run {incumbent}, not compared"
        else:
            against = "no model in service to compare with"
        held = params.get("gate_holdout")
        columns = " (incumbent and challenger columns)" if isinstance(score, (int, float)) else ""
        lines.append(f"Gate decision: {decision} ({against}"
                     + (f"; gate holdout{columns}: {held}" if held else "") + ").")
    return lines


CAMPAIGN_COLUMNS = ("audience", "users_listed", "served", "control", "fallback_share", "coverage", "gini", "head_share",
                    "baseline_coverage", "baseline_gini", "baseline_head_share")


def _campaign_rows(spark: SparkSession, cfg: AppConfig, run: RunInfo, stages: Sequence[Row]
                   ) -> tuple[dict[str, dict[str, Any]], str]:
    """Per-campaign figures and where they came from: ``metrics/campaigns`` (long format: _run_id, campaign_id,
    metric, value) if a stage stores it, otherwise computed from this run's rows of ``gold/recommendations``."""
    stored = _table(spark, cfg, T.CAMPAIGN_METRICS)
    if stored is not None and {C.CAMPAIGN_ID, C.METRIC, C.VALUE} <= set(stored.columns):
        rows = (stored.where(F.col(C.RUN_ID) == run.run_id).select(C.CAMPAIGN_ID, C.METRIC, C.VALUE)
                .limit(100_000).collect())
        if rows:
            out: dict[str, dict[str, Any]] = {}
            for r in rows:
                # Runs stored before the metric was renamed call it "users".
                metric = "users_listed" if r[C.METRIC] == "users" else r[C.METRIC]
                out.setdefault(r[C.CAMPAIGN_ID], {})[metric] = r[C.VALUE]
            return out, "metrics/campaigns"
    recs = _table(spark, cfg, T.RECOMMENDATIONS)
    if recs is None or run.run_date is None:
        return {}, ""
    mine = recs.where((F.col(C.RUN_DATE) == F.lit(run.run_date)) & (F.col(C.RUN_ID) == run.run_id))
    # The catalogue as the recommend stage saw it: gold/item_features at the version it recorded, if any.
    version = _recommend_input_version(stages, "gold.item_features")
    items = _table(spark, cfg, T.ITEM_FEATURES, version)
    catalog = items.count() if items is not None else 0
    from sparkpromo.evaluate import campaign_metrics
    from sparkpromo.recommend import FALLBACK_SOURCES

    rows = mine.transform(campaign_metrics(catalog, FALLBACK_SOURCES)).collect()
    out = {r[C.CAMPAIGN_ID]: {k: v for k, v in r.asDict().items() if k != C.CAMPAIGN_ID} for r in rows}
    if not catalog:
        for v in out.values():
            v["coverage"] = None
    return out, "gold/recommendations"


def _recommend_input_version(stages: Sequence[Row], table: str) -> int | None:
    row = [r for r in stages if r["stage"] == "recommend" and r["io_versions"]]
    versions = _json(row[0]["io_versions"], "metrics/stages io_versions") if row else None
    value = versions.get(table) if isinstance(versions, dict) else None
    return int(value) if isinstance(value, int) else None


def campaigns_section(spark: SparkSession, cfg: AppConfig, run: RunInfo, stages: Sequence[Row], charts: Charts
                      ) -> Section:
    title = "Campaigns"
    data, origin = _campaign_rows(spark, cfg, run, stages)
    if not data:
        return Section("campaigns", title,
                       _missing(f"No per-campaign figures for run {run.run_id}: no metrics/campaigns rows and no "
                                "recommendations written by this run."))
    names = sorted(data)

    def draw(fig: Any) -> None:
        ax = fig.subplots()
        ys = range(len(names))
        served = [float(data[n].get("served") or 0) for n in names]
        control = [float(data[n].get("control") or 0) for n in names]
        h = 0.38
        b1 = ax.barh([y - h / 2 for y in ys], served, height=h, label="served", color="#4c72b0")
        b2 = ax.barh([y + h / 2 for y in ys], control, height=h, label="control", color="#dd8452")
        ax.bar_label(b1, fmt="%d", fontsize=7, padding=2)
        ax.bar_label(b2, fmt="%d", fontsize=7, padding=2)
        ax.set_yticks(list(ys), names)
        ax.invert_yaxis()
        ax.set_xlabel("users")
        ax.set_title("Served and control users per campaign")
        ax.legend(fontsize=8)
        ax.margins(x=0.15)

    def num(v: Any) -> Any:
        if v is None:
            return None
        f = float(v)
        return int(f) if f.is_integer() and abs(f) < 2**53 else f

    table_rows = [(n, *(num(data[n].get(col)) for col in CAMPAIGN_COLUMNS)) for n in names]
    notes = []
    if origin == "gold/recommendations":
        notes.append("Computed from this run's rows of gold/recommendations: the audience size (users selected "
                     "before eligibility, caps and budget) is not stored by the recommend stage, so 'audience' "
                     "is blank; 'users listed' counts the users with at least one row (served + control).")
        if all(data[n].get("coverage") is None for n in names):
            notes.append("Coverage is blank: gold/item_features is missing, so the catalogue size is unknown.")
    body = (charts.render("campaigns", draw, (8.0, 0.9 + 0.55 * len(names)))
            + _html_table(("campaign", "audience", "users listed", "served", "control", "fallback share",
                           "coverage", "exposure Gini", "top-10% share", "popularity: coverage",
                           "popularity: Gini", "popularity: top-10% share"), table_rows)
            + "".join(_note(n) for n in notes)
            + _note("Fallback share: delivered rows from popularity sources. Coverage: share of the catalogue "
                    "offered to someone. Exposure Gini: 0 = every item offered equally often, 1 = one item only. "
                    "Top-10% share: delivered slots that went to the 10% most popular items. The popularity "
                    "columns fill the same delivered slots with each campaign's most popular eligible items: "
                    "the exposure a non-personalised campaign would have had."))
    return Section("campaigns", title, body)


__all__ = [
    "stage_rows", "stages_section", "data_quality_section", "cv_section", "holdout_section", "CAMPAIGN_COLUMNS",
    "campaigns_section",
]
