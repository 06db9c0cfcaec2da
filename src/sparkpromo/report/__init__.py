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

from sparkpromo.report.html import Charts, Draw
from sparkpromo.report.outcomes import outcome_words, outcomes_section
from sparkpromo.report.page import render_html, report_dir, report_uri, write_report
from sparkpromo.report.reading import (
    CONTENDER_ORDER,
    GRID_ORDER,
    INSTALL_HINT,
    RESULT_ITEMS,
    SECTION_IDS,
    STAGE_ORDER,
    UNIT_METRICS,
    ReportError,
    RunInfo,
    Section,
    list_runs,
    read_text,
    resolve_run,
)
from sparkpromo.report.sections import (
    CAMPAIGN_COLUMNS,
    campaigns_section,
    cv_section,
    data_quality_section,
    holdout_section,
    stage_rows,
    stages_section,
)

__all__ = [
    "CAMPAIGN_COLUMNS", "CONTENDER_ORDER", "Charts", "Draw", "GRID_ORDER", "INSTALL_HINT", "RESULT_ITEMS",
    "ReportError", "RunInfo", "SECTION_IDS", "STAGE_ORDER", "Section", "UNIT_METRICS", "campaigns_section",
    "cv_section", "data_quality_section", "holdout_section", "list_runs", "outcome_words", "outcomes_section",
    "read_text", "render_html", "report_dir", "report_uri", "resolve_run", "stage_rows", "stages_section",
    "write_report",
]
