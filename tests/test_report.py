"""The HTML run report: built from hand-made metric tables, then rendered by headless Chromium."""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import json
import shutil
import struct
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest
from conftest import make_config
from pyspark.sql import SparkSession

from sparkpromo import columns as C
from sparkpromo import delta_io, report
from sparkpromo import measure as M
from sparkpromo import recommend as R
from sparkpromo import tables as T
from sparkpromo.config import AppConfig
from sparkpromo.recommend.registry import read_small_text

OLD, NEW = "20261128", "20261129"
NEW_DATE = dt.date(2026, 11, 29)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def _stages_rows() -> list[tuple]:
    t = dt.datetime(2026, 11, 29, 6, 0)
    rows = [(OLD, dt.date(2026, 11, 28), s, 2.0, t - dt.timedelta(days=1), None, "{}") for s in ("ingest", "clean")]
    for i, (stage, secs, result) in enumerate([
            ("ingest", 3.5, {"files": 3, "rows": 120}), ("clean", 7.25, {"events.silver_rows": 90}),
            ("features", 5.0, {}), ("train", 31.0, {"champion": "als"}), ("recommend", 12.5, {"rows": 9})]):
        versions = json.dumps({"gold.item_features": 0}) if stage == "recommend" else None
        rows.append((NEW, NEW_DATE, stage, secs, t + dt.timedelta(minutes=i), versions, json.dumps(result)))
    return rows


@pytest.fixture(scope="module")
def lakehouse(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory) -> AppConfig:
    """One small lakehouse for the module: two runs, the newer one with every table the report reads."""
    cfg = make_config(tmp_path_factory.mktemp("report"))
    delta_io.overwrite(spark.createDataFrame(_stages_rows(), f"{C.RUN_ID} string, {C.RUN_DATE} date, stage string, "
                                       "elapsed_s double, finished_at timestamp, io_versions string, result string"),
                       cfg.table("metrics", "stages"))
    dq = [(NEW, "events", "silver", 90), (NEW, "events", "duplicate", 3),
          (NEW, "events", "quarantine:missing_field", 4), (NEW, "events", "quarantine:future_timestamp", 3),
          (NEW, "users", "silver", 10), (NEW, "users", "quarantine:malformed_record", 1), (NEW, "items", "silver", 6)]
    delta_io.overwrite(spark.createDataFrame(dq, "_run_id string, source string, metric string, value long"),
                       cfg.table("metrics", "data_quality"))
    model = [(NEW, c, m, v) for c, vals in {"als": {"ndcg": 0.31, "precision": 0.12, "recall": 0.4, "map": 0.2,
                                                     "coverage": 0.8, "novelty": 3.1},
                                            "popularity": {"ndcg": 0.22, "precision": 0.09, "recall": 0.3,
                                                           "map": 0.15, "coverage": 0.1, "novelty": 1.2}}.items()
             for m, v in vals.items()]
    delta_io.overwrite(spark.createDataFrame(model, "run_id string, contender string, metric string, value double"),
                       cfg.table("metrics", "model"))
    registry = Path(cfg.lakehouse) / "registry" / NEW
    registry.mkdir(parents=True)
    grid = [{"params": {"rank": r, "reg_param": reg, "alpha": 5.0, "max_iter": 5}, "mean": 0.2 + r / 100 - reg / 10,
             "std": 0.01} for r in (4, 8) for reg in (0.05, 0.2)]
    (registry / "cv.json").write_text(json.dumps({"metric": "ndcg", "k": 10, "folds": 2, "grid": grid}))
    (registry / "params.json").write_text(json.dumps({"run_id": NEW, "champion": "als"}))
    delta_io.overwrite(spark.createDataFrame([(f"i{i}",) for i in range(6)], "item_id string"),
                       cfg.table("gold", "item_features"))
    recs = []
    for cid, users in (("welcome", ("u1", "u2", "u3")), ("cart", ("u4", "u5"))):
        for u in users:
            for rank, item in enumerate(("i0", "i1"), start=1):
                control = u == "u3"
                recs.append((cid, NEW_DATE, u, item, rank, 1.0 / rank, 2.0 / rank,
                             "als" if rank == 1 else "global_popularity", control, not control, NEW, None, None, NEW))
    delta_io.overwrite(spark.createDataFrame(recs, R.RECOMMENDATIONS), R.table_uri(cfg),
                       partition_by=T.RECOMMENDATIONS.partition_by)
    # u1 buys within the welcome run's window, u3 (control) does not: welcome is a small sample, cart has no control
    events = [("u1", "i0", "purchase", NEW_DATE + dt.timedelta(days=2), 12.0, 1)]
    delta_io.overwrite(spark.createDataFrame(events, "user_id string, item_id string, event_type string, "
                                             "event_date date, price double, quantity int"),
                       cfg.table("silver", "events"))
    M.run_measure(spark, cfg, "m", NEW_DATE + dt.timedelta(days=7))
    delta_io.overwrite(spark.createDataFrame([(NEW_DATE, "cart", "pause", None, "uplift CI below zero", "m")],
                                             M.ACTIONS),
                       T.CAMPAIGN_ACTIONS.uri(cfg))
    return cfg


@pytest.fixture(scope="module")
def chromium() -> str:
    for name in BROWSERS:
        path = shutil.which(name) or (f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").exists() else None)
        if path:
            return path
    pytest.skip("headless Chromium not found (looked for chromium, chromium-browser, google-chrome); "
                "install Debian's package: apt-get install -y chromium")


def _chromium(binary: str, tmp: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    cmd = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--disable-dev-shm-usage", f"--user-data-dir={tmp / 'profile'}", *args]
    done = subprocess.run(cmd, capture_output=True, timeout=180, check=False)
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-2000:]
    return done


class _Dom(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.sections: list[str] = []
        self.h2_in: dict[str, int] = {}
        self.imgs: list[dict[str, str | None]] = []
        self.body: dict[str, str | None] = {}
        self._section: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "section":
            self._section = a.get("id") or ""
            self.sections.append(self._section)
        elif tag == "h2" and self._section is not None:
            self.h2_in[self._section] = self.h2_in.get(self._section, 0) + 1
        elif tag == "img":
            self.imgs.append(a)
        elif tag == "body":
            self.body = a


def test_report_renders_in_headless_chromium(spark: SparkSession, lakehouse: AppConfig, chromium: str,
                                             tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    path = Path(report.write_report(spark, lakehouse))  # default: the newest run
    assert path == (Path(lakehouse.lakehouse) / "reports" / f"{NEW}.html").resolve()
    text = path.read_text(encoding="utf-8")
    assert "http://" not in text and "https://" not in text  # self-contained: nothing to fetch
    for expected in ("31", "missing_field", "future_timestamp", "welcome", "cart", "reg_param", "als − popularity",
                     "Sample too small to say", "no control users", "Automatic changes", "uplift CI below zero"):
        assert expected in text

    shot = tmp_path / "shot.png"
    _chromium(chromium, tmp_path, f"--screenshot={shot}", "--window-size=1280,4000", path.as_uri())
    data = shot.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 30_000
    assert struct.unpack(">II", data[16:24]) == (1280, 4000)

    dom = _Dom()
    dom.feed(_chromium(chromium, tmp_path, "--dump-dom", path.as_uri()).stdout.decode("utf-8"))
    assert dom.sections == list(report.SECTION_IDS)
    assert all(dom.h2_in.get(s) == 1 for s in report.SECTION_IDS)
    # The page's own load handler ran, found no undecodable image, and every chart is an inline PNG.
    assert dom.body.get("data-images-checked") == "0"
    assert len(dom.imgs) == len(report.SECTION_IDS)
    for img in dom.imgs:
        assert "data-broken" not in img
        src = img["src"] or ""
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == PNG_MAGIC


def test_missing_sections_say_so(spark: SparkSession, lakehouse: AppConfig, tmp_path: Path) -> None:
    path = Path(report.write_report(spark, lakehouse, OLD, out_dir=tmp_path))
    assert path == (tmp_path / f"{OLD}.html").resolve()
    text = path.read_text(encoding="utf-8")
    for sid in report.SECTION_IDS:
        assert f'<section id="{sid}">' in text
    assert "No data-quality counts for run 20261128" in text
    assert "No model was trained in run 20261128" in text
    assert "No per-campaign figures for run 20261128" in text
    assert "No campaign run on or before 2026-11-28 is measured yet" in text
    assert text.count('class="missing"') == 5  # all but the stage timings


def test_a_remote_lakehouse_keeps_its_reports(spark: SparkSession, lakehouse: AppConfig, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """On a remote lakehouse (s3a, abfss, dbfs) the report is written under it through Spark, never to the driver's
    disk: the page ``read_small_text`` reads back from there is the one a local lakehouse gets as a file."""
    remote = dataclasses.replace(lakehouse, lakehouse="s3a://shop-bucket/lake")
    assert report.report_dir(remote) is None
    assert report.report_uri(remote, NEW) == f"s3a://shop-bucket/lake/reports/{NEW}.html"

    # The same tables, with the page's destination routed as for a remote lakehouse (a file: URI stands in for s3a).
    target = (tmp_path / "remote" / "reports" / f"{OLD}.html").as_uri()
    monkeypatch.setattr(report.page, "report_dir", lambda cfg: None)  # where write_report looks them up
    monkeypatch.setattr(report.page, "report_uri", lambda cfg, name: target)
    assert report.write_report(spark, lakehouse, OLD) == target
    page = read_small_text(spark, target)
    assert page is not None and page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert f"sparkpromo run {OLD}" in page and "No model was trained in run 20261128" in page
    assert not (Path(lakehouse.lakehouse) / "reports" / f"{OLD}.html").exists()


def test_outcome_words_name_each_state() -> None:
    row = {C.RUN_DATE: NEW_DATE, C.WINDOW_END: dt.date(2026, 12, 6), C.USERS_TREATED: 900, C.USERS_CONTROL: 100,
           C.CONVERSION_TREATED: 0.16, C.CONVERSION_CONTROL: 0.10, C.UPLIFT: 0.06, C.UPLIFT_CI_LOW: 0.01,
           C.UPLIFT_CI_HIGH: 0.11, C.INCREMENTAL_REVENUE: 540.0, C.DISCOUNT_COST: 180.0, C.INCREMENTAL_ROI: 2.0}
    ok = report.outcome_words({**row, C.STATUS: "ok"}, 100)
    assert "uplift of +6.0 pp (95% interval +1.0 pp to +11.0 pp)" in ok and "raised purchases" in ok
    assert "each unit of discount returned 3.00" in ok
    assert "includes zero" in report.outcome_words({**row, C.STATUS: "ok", C.UPLIFT_CI_LOW: -0.01}, 100)
    assert "below zero" in report.outcome_words({**row, C.STATUS: "ok", C.UPLIFT_CI_LOW: -0.2,
                                                           C.UPLIFT_CI_HIGH: -0.01}, 100)
    assert "Sample too small to say" in report.outcome_words({**row, C.STATUS: "small_sample"}, 1000)
    assert "still open until 2026-12-06" in report.outcome_words({**row, C.STATUS: "window_open"}, 100)
    assert "no control users" in report.outcome_words({**row, C.STATUS: "no_control"}, 100)
    assert "every listed user was in the control group" in report.outcome_words({**row, C.STATUS: "no_treated"}, 1)


def test_unknown_run_id_lists_nearest(spark: SparkSession, lakehouse: AppConfig) -> None:
    with pytest.raises(report.ReportError) as err:
        report.write_report(spark, lakehouse, "20261139")
    msg = str(err.value)
    assert "unknown run id '20261139'" in msg and NEW in msg and OLD in msg


def test_no_runs_recorded(spark: SparkSession, cfg: AppConfig) -> None:
    with pytest.raises(report.ReportError, match="no runs recorded"):
        report.write_report(spark, cfg)


def test_charts_degrade_without_matplotlib(monkeypatch: pytest.MonkeyPatch) -> None:
    for mod in ("matplotlib.figure", "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, mod, None)  # import now raises ImportError
    charts = report.Charts()
    assert not charts.available
    assert "matplotlib is not installed" in charts.render("x", lambda fig: None)


def test_stage_result_cells_end_with_an_ellipsis_when_cut() -> None:
    from pyspark.sql import Row

    result = {f"k{i}": i for i in range(report.RESULT_ITEMS + 3)}
    rows = [Row(stage="clean", elapsed_s=1.5, finished_at=None, io_versions=None, result=json.dumps(result)),
            Row(stage="train", elapsed_s=2.0, finished_at=None, io_versions=None,
                result=json.dumps({"champion": "als", "metrics": {"als": {"ndcg": 0.1}}}))]
    run = report.RunInfo("r1", dt.date(2026, 11, 29), None)
    body = report.stages_section(run, rows, report.Charts()).body
    assert f"k{report.RESULT_ITEMS - 1}=7, …</td>" in body and f"k{report.RESULT_ITEMS}=" not in body
    assert "champion=als</td>" in body and "metrics" not in body  # nested results stay out of the cell


def test_a_run_without_cross_validation_says_why(spark: SparkSession, cfg: AppConfig) -> None:
    """A one-point grid is not cross-validated (train writes cv.json with no scores and a note): the section says
    so instead of calling the table missing."""
    from sparkpromo.report.html import Charts
    from sparkpromo.report.sections import cv_section

    registry = Path(cfg.lakehouse) / "registry" / "one"
    registry.mkdir(parents=True)
    note = "one grid point ({'rank': 8}): nothing to choose, not cross-validated"
    (registry / "cv.json").write_text(json.dumps({"metric": "ndcg", "k": 10, "folds": 0, "grid": [], "note": note}))
    body = cv_section(spark, cfg, "one", "", Charts()).body
    assert "Model run one was not cross-validated: one grid point" in body and 'class="missing"' not in body
    (registry / "cv.json").write_text(json.dumps({"metric": "ndcg", "k": 10, "folds": 2, "grid": []}))
    assert 'class="missing"' in cv_section(spark, cfg, "one", "", Charts()).body
