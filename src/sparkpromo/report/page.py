"""The page itself and where it is written: :func:`write_report`."""

from __future__ import annotations

import datetime as dt
import logging
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

from pyspark.sql import SparkSession

from sparkpromo import __version__
from sparkpromo.config import AppConfig, join_uri, local_path
from sparkpromo.recommend.registry import write_text
from sparkpromo.report.html import Charts, _e
from sparkpromo.report.outcomes import outcomes_section
from sparkpromo.report.reading import _SAFE_NAME, RunInfo, Section, list_runs, resolve_run
from sparkpromo.report.sections import (
    _model_run,
    campaigns_section,
    cv_section,
    data_quality_section,
    holdout_section,
    stage_rows,
    stages_section,
)

log = logging.getLogger(__name__)


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


__all__ = [
    "render_html", "report_dir", "report_uri", "write_report",
]
