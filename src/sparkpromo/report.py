"""The run report: one self-contained HTML page per run, for people rather than schedulers.

:func:`write_report` reads the small metric tables the stages leave behind and writes
``<lakehouse>/reports/<run_id>.html`` (a local ``reports/`` folder when the lakehouse is remote). Charts are inline
base64 PNGs drawn with matplotlib's Agg canvas (the optional ``report`` extra); without matplotlib the page still has
every table and says where the charts would be. Sections, each an ``<section id=...>`` with an ``<h2>``:

* ``stages``: elapsed time per stage (``metrics/stages``);
* ``data-quality``: rows in, silver, duplicates and quarantine by rule per source (``metrics/data_quality``);
* ``cv-grid``: the cross-validation grid, metric by rank and regParam/alpha (``registry/<run>/cv.json``);
* ``holdout``: holdout metrics of ALS against the popularity baseline, with serving's exclusion too, and the model in
  service with the gate's decision (``metrics/model``, ``registry/<run>/params.json``);
* ``campaigns``: audience, served, control, fallback share, coverage and exposure Gini per campaign
  (``metrics/campaigns`` when a stage stores it, otherwise computed from this run's ``gold/recommendations``);
* ``outcomes``: per campaign, what it changed against its control group over its run dates up to this run's:
  uplift with its 95% interval, the Qini curve of the latest measured run, incremental revenue against the
  discount cost, in words too, and the automatic changes made (``metrics/campaign_outcomes``, ``metrics/uplift``,
  ``metrics/campaign_actions``).

A section whose data is missing says so on the page. Only small metric tables are collected to the driver.
"""

from __future__ import annotations

import base64
import datetime as dt
import difflib
import html
import io as _io
import json
import logging
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyspark.errors import AnalysisException
from pyspark.sql import DataFrame, Row, SparkSession
from pyspark.sql import functions as F

from sparkpromo import __version__, delta_io
from sparkpromo import columns as C
from sparkpromo import tables as T
from sparkpromo.config import AppConfig, join_uri, local_path
from sparkpromo.recommend.registry import write_text

log = logging.getLogger(__name__)

SECTION_IDS = ("stages", "data-quality", "cv-grid", "holdout", "campaigns", "outcomes")
STAGE_ORDER = ("generate", "ingest", "clean", "features", "train", "recommend")
# Holdout metrics on a 0..1 scale, charted together; novelty (bits) gets a panel of its own, rmse is in the table.
UNIT_METRICS = ("ndcg", "precision", "recall", "map", "coverage")
GRID_ORDER = ("rank", "reg_param", "alpha", "max_iter")
# Columns of the holdout table: the run's contenders, their scores with serving's exclusion, the model in service.
CONTENDER_ORDER = ("als", "popularity", "als_served", "popularity_served", "incumbent", "challenger")
INSTALL_HINT = "pip install 'sparkpromo[report]'"
RESULT_ITEMS = 8  # a stage's result values shown in the timings table; more end with "…"
_SAFE_NAME = re.compile(r"[^A-Za-z0-9_.-]")


class ReportError(ValueError):
    """The report cannot be written (unknown run id, no runs recorded); ``str()`` is one line."""


@dataclass(frozen=True)
class RunInfo:
    run_id: str
    run_date: dt.date | None
    finished_at: dt.datetime | None


@dataclass(frozen=True)
class Section:
    id: str
    title: str
    body: str


# ----------------------------------------------------------------------------------------------------------------
# Reading the metric tables
# ----------------------------------------------------------------------------------------------------------------
def _table(spark: SparkSession, cfg: AppConfig, table: T.Table, version: int | None = None) -> DataFrame | None:
    uri = table.uri(cfg)
    return delta_io.read(spark, uri, version) if delta_io.is_delta(spark, uri) else None


def read_text(spark: SparkSession, uri: str) -> str | None:
    """A small text file (registry JSON) from any lakehouse URI; None when it does not exist."""
    path = local_path(uri)
    if path is not None and path.is_file():
        return path.read_text(encoding="utf-8")
    if path is not None and not path.exists():
        return None
    try:  # a remote URI, or the one-file folder train writes
        row = spark.read.text(uri, wholetext=True).first()
    except AnalysisException as e:
        if "PATH_NOT_FOUND" in str(e):
            return None
        raise
    return None if row is None else str(row[0])


def _json(text: str | None, what: str) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        log.warning("%s is not valid JSON; left out of the report", what)
        return None


def list_runs(spark: SparkSession, cfg: AppConfig) -> list[RunInfo]:
    """Every run id in ``metrics/stages``, newest first (by run date, then finish time)."""
    stages = _table(spark, cfg, T.STAGE_RUNS)
    if stages is None:
        return []
    rows = (stages.groupBy(C.RUN_ID)
            .agg(F.max(C.RUN_DATE).alias(C.RUN_DATE), F.max("finished_at").alias("finished_at")).collect())
    runs = [RunInfo(r[C.RUN_ID], r[C.RUN_DATE], r["finished_at"]) for r in rows]
    runs.sort(key=lambda r: (r.run_date or dt.date.min, r.finished_at or dt.datetime.min, r.run_id), reverse=True)
    return runs


def resolve_run(runs: Sequence[RunInfo], run_id: str | None, where: str = "metrics/stages") -> RunInfo:
    """The requested run (default: the newest); :class:`ReportError` naming the nearest valid ids otherwise."""
    if not runs:
        raise ReportError(f"no runs recorded in {where}: run the pipeline first (sparkpromo run)")
    if run_id is None:
        return runs[0]
    for r in runs:
        if r.run_id == run_id:
            return r
    ids = [r.run_id for r in runs]
    near = difflib.get_close_matches(run_id, ids, n=5, cutoff=0.5)
    latest = [i for i in ids[:3] if i not in near]
    hint = "; ".join(part for part in (f"nearest: {', '.join(near)}" if near else "",
                                       f"latest: {', '.join(latest)}" if latest else "") if part)
    raise ReportError(f"unknown run id {run_id!r} in {where}; {hint}")


# ----------------------------------------------------------------------------------------------------------------
# HTML helpers
# ----------------------------------------------------------------------------------------------------------------
def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if value != value:  # NaN
            return "NaN"
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4g}"
    return str(value)


def _html_table(headers: Sequence[str], rows: Iterable[Sequence[Any]], highlight: int | None = None,
                numeric_from: int = 1) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = []
    for i, row in enumerate(rows):
        cls = ' class="best"' if i == highlight else ""
        cells = "".join(f'<td class="num">{_e(_fmt(v))}</td>' if j >= numeric_from and not isinstance(v, str)
                        else f"<td>{_e(_fmt(v))}</td>" for j, v in enumerate(row))
        body.append(f"<tr{cls}>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _missing(text: str) -> str:
    return f'<p class="missing">{_e(text)}</p>'


def _note(text: str) -> str:
    return f'<p class="note">{_e(text)}</p>'


# ----------------------------------------------------------------------------------------------------------------
# Charts (matplotlib is optional and imported lazily)
# ----------------------------------------------------------------------------------------------------------------
Draw = Callable[[Any], None]  # receives a matplotlib Figure


class Charts:
    """Renders matplotlib figures to inline ``<img>`` tags; degrades to a note when matplotlib is missing."""

    def __init__(self) -> None:
        try:
            from matplotlib.backends.backend_agg import FigureCanvasAgg
            from matplotlib.figure import Figure
        except ImportError:
            log.warning("matplotlib is not installed: the report has tables but no charts (%s)", INSTALL_HINT)
            self._figure: Any = None
            self._canvas: Any = None
        else:
            self._figure, self._canvas = Figure, FigureCanvasAgg

    @property
    def available(self) -> bool:
        return self._figure is not None

    def render(self, alt: str, draw: Draw, size: tuple[float, float] = (8.0, 3.5)) -> str:
        if not self.available:
            return _note(f"Chart '{alt}' not drawn: matplotlib is not installed ({INSTALL_HINT}).")
        # The Figure API with an explicit Agg canvas: no pyplot, no global backend state, nothing to close.
        fig = self._figure(figsize=size, dpi=100, layout="constrained")
        self._canvas(fig)
        draw(fig)
        buf = _io.BytesIO()
        fig.savefig(buf, format="png")
        data = base64.b64encode(buf.getvalue()).decode("ascii")
        return f'<figure><img alt="{_e(alt)}" src="data:image/png;base64,{data}"></figure>'


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
    """The model run whose CV grid and holdout metrics belong to this run, and a note when it is another run."""
    if read_text(spark, join_uri(cfg.lakehouse, "registry", run.run_id, "params.json")) is not None:
        return run.run_id, ""
    model = _table(spark, cfg, T.MODEL_METRICS)
    if model is not None and model.where(F.col(C.METRIC_RUN_ID) == run.run_id).limit(1).count():
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
        return Section("cv-grid", title, (_note(note) if note else "")
                       + _missing(f"No cross-validation table for model run {model_run} ({uri} is missing)."))
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
    rows = [] if model is None else (model.where(F.col(C.METRIC_RUN_ID) == model_run)
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
    from sparkpromo.recommend import campaign_metrics

    rows = mine.transform(campaign_metrics(catalog)).collect()
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
        done = actions.where(F.col(C.MEASURED_ON) <= F.lit(run.run_date)).orderBy(
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


# ----------------------------------------------------------------------------------------------------------------
# The page
# ----------------------------------------------------------------------------------------------------------------
_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1d2330;background:#f6f7f9}
header{background:#1d2330;color:#fff;padding:18px 32px}header h1{margin:0 0 4px;font-size:22px}
header p{margin:0;opacity:.8}nav{padding:8px 32px;background:#e8eaef}nav a{margin-right:16px;color:#1d4ed8}
main{max-width:1100px;margin:0 auto;padding:8px 32px 40px}
section{background:#fff;border:1px solid #dde1e7;border-radius:6px;margin:20px 0;padding:4px 20px 16px}
h2{font-size:18px;border-bottom:1px solid #eee;padding-bottom:6px}h3{font-size:15px;margin:14px 0 6px}
table{border-collapse:collapse;margin:8px 0;font-size:13px}th,td{border:1px solid #dde1e7;padding:3px 9px}
th{background:#f0f2f5;text-align:left}td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.best td{background:#e7f5e9;font-weight:600}figure{margin:8px 0}figure img{max-width:100%;height:auto}
p.missing{color:#8a5300;background:#fff6e5;border-left:4px solid #f0a500;padding:6px 10px}
p.note{color:#555;font-size:13px}footer{color:#777;font-size:12px;text-align:center;padding:16px}
"""

# Marks any <img> that did not decode (naturalWidth 0) with data-broken, and records on <body> that it ran.
_IMG_CHECK = ("<script>window.addEventListener('load',function(){var n=0;"
              "document.querySelectorAll('img').forEach(function(i){if(!i.complete||i.naturalWidth===0)"
              "{i.setAttribute('data-broken','true');n++;}});"
              "document.body.setAttribute('data-images-checked',String(n));});</script>")


def render_html(run: RunInfo, sections: Sequence[Section], lakehouse: str) -> str:
    nav = "".join(f'<a href="#{_e(s.id)}">{_e(s.title)}</a>' for s in sections)
    body = "".join(f'<section id="{_e(s.id)}"><h2>{_e(s.title)}</h2>{s.body}</section>' for s in sections)
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    run_date = run.run_date.isoformat() if run.run_date else "unknown"
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>sparkpromo report: run {_e(run.run_id)}</title><style>{_CSS}</style></head><body>"
            f"<header><h1>sparkpromo run {_e(run.run_id)}</h1><p>run date {_e(run_date)} · lakehouse "
            f"{_e(lakehouse)}</p></header><nav>{nav}</nav><main>{body}</main>"
            f"<footer>generated {_e(now)} by sparkpromo {_e(__version__)}</footer>{_IMG_CHECK}</body></html>\n")


def report_dir(cfg: AppConfig) -> Path | None:
    """``<lakehouse>/reports`` for a local lakehouse; None for a remote one (the report goes there through Spark)."""
    local = local_path(cfg.lakehouse)
    return (local / "reports") if local is not None else None


def report_uri(cfg: AppConfig, name: str) -> str:
    """Where a remote lakehouse keeps a report: the one-file folder ``<lakehouse>/reports/<name>.html/``."""
    return join_uri(cfg.lakehouse, "reports", f"{name}.html")


def write_report(spark: SparkSession, cfg: AppConfig, run_id: str | None = None, out_dir: Path | None = None
                 ) -> str:
    """Write the HTML report of ``run_id`` (default: the newest run in ``metrics/stages``) and return where: a file
    in ``out_dir`` or ``<lakehouse>/reports/`` for a local lakehouse; on a remote one (s3a, abfss, dbfs), the folder
    :func:`report_uri`, written through Spark so that it outlives the driver (its one part file is the page).

    Raises :class:`ReportError` when no run is recorded or ``run_id`` is unknown (the message lists the nearest
    valid run ids and the latest ones).
    """
    run = resolve_run(list_runs(spark, cfg), run_id)
    charts = Charts()
    model_run, note = _model_run(spark, cfg, run)
    stages = stage_rows(spark, cfg, run.run_id)
    sections = [stages_section(run, stages, charts),
                data_quality_section(spark, cfg, run, charts),
                cv_section(spark, cfg, model_run, note, charts),
                holdout_section(spark, cfg, model_run, note, charts),
                campaigns_section(spark, cfg, run, stages, charts),
                outcomes_section(spark, cfg, run, charts)]
    page = render_html(run, sections, cfg.lakehouse)
    name = _SAFE_NAME.sub("_", run.run_id).lstrip(".") or "run"
    folder = out_dir or report_dir(cfg)
    if folder is None:
        uri = report_uri(cfg, name)
        write_text(spark, uri, page)
        log.info("report for run %s written to %s (%d KiB)", run.run_id, uri, len(page) // 1024)
        return uri
    folder.mkdir(parents=True, exist_ok=True)
    path = (folder / f"{name}.html").resolve()
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".html.tmp", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(page)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; a report is meant to be read
        os.replace(tmp, path)  # readers never see a half-written page
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    log.info("report for run %s written to %s (%d KiB)", run.run_id, path, len(page) // 1024)
    return str(path)
