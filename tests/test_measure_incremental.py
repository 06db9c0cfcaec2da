"""An incremental measure run measures again only the campaign runs whose rows can change, and leaves the tables as a
full measure of the same inputs would (but for when each row was measured)."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

from chispa import assert_approx_df_equality
from conftest import make_config
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from test_measure import EVENTS_DDL, rec

from sparkpromo import columns as C
from sparkpromo import delta_io
from sparkpromo import tables as T
from sparkpromo.measure.incremental import run_dates_to_measure
from sparkpromo.pipeline import RunContext, run_stage
from sparkpromo.recommend import RECOMMENDATIONS

D = dt.date
A, B, C_RUN = D(2026, 11, 1), D(2026, 11, 10), D(2026, 11, 30)  # three run dates of campaign "a"
FIRST, SECOND, THIRD = D(2026, 11, 20), D(2026, 11, 30), D(2026, 12, 1)  # the measure runs


def _recs(run: dt.date) -> list[tuple]:
    return [rec("a", "t1", "i1", 0.9, False, run=run), rec("a", "c1", "i1", 0.8, True, run=run),
            rec("a", "t2", "i1", 0.7, False, run=run), rec("a", "c2", "i1", 0.6, True, run=run),
            rec("a", "t3", "i2", 0.5, False, run=run)]


def _write_recs(spark: SparkSession, uri: str, run: dt.date, recs: list[tuple]) -> None:
    # As recommend writes them: the run date's partition replaced, the table recording its change data feed.
    delta_io.replace_partition(spark.createDataFrame(recs, RECOMMENDATIONS), uri, {C.RUN_DATE: run},
                               partition_by=T.RECOMMENDATIONS.partition_by, properties=T.RECOMMENDATIONS.properties)


def _append_events(spark: SparkSession, uri: str, rows: list[tuple]) -> None:
    # The columns measure reads, and the change data feed silver.events records.
    delta_io.append(spark.createDataFrame(rows, EVENTS_DDL), uri, properties={delta_io.CHANGE_FEED: "true"})


def _measure(spark: SparkSession, cfg, day: dt.date, full_refresh: bool = False) -> dict:  # type: ignore[no-untyped-def]
    return run_stage("measure", spark, cfg, RunContext(day.strftime("m%Y%m%d"), day), full_refresh=full_refresh)


def _table(spark: SparkSession, uri: str, version: int | None = None) -> DataFrame:
    """A measure table without what says when and by which run a row was measured."""
    return delta_io.read(spark, uri, version).drop(C.MEASURED_ON, C.RUN_ID)


def _measured_on(spark: SparkSession, cfg) -> dict[dt.date, dt.date]:  # type: ignore[no-untyped-def]
    rows = delta_io.read(spark, T.CAMPAIGN_OUTCOMES.uri(cfg)).select(C.RUN_DATE, C.MEASURED_ON).collect()
    return {r[0]: r[1] for r in rows}


def test_run_dates_to_measure_are_the_open_changed_and_touched_ones() -> None:
    dates = [A, B, C_RUN]
    assert run_dates_to_measure(dates, FIRST, 7, set(), set()) == [C_RUN]  # only the new run
    assert run_dates_to_measure(dates, D(2026, 11, 12), 7, set(), set()) == [B, C_RUN]  # B's window was open
    assert run_dates_to_measure(dates, FIRST, 7, {A}, set()) == [A, C_RUN]  # A's lists changed
    # a purchase on Nov 8 is in A's window (Nov 1, Nov 8]; one on Nov 10 is in neither A's nor B's (Nov 10, Nov 17]
    assert run_dates_to_measure(dates, FIRST, 7, set(), {D(2026, 11, 8)}) == [A, C_RUN]
    assert run_dates_to_measure(dates, FIRST, 7, set(), {D(2026, 11, 10)}) == [C_RUN]
    assert run_dates_to_measure(dates, FIRST, 7, set(), {D(2026, 11, 11)}) == [B, C_RUN]


def test_incremental_measure_equals_a_full_one_and_redoes_only_what_changed(spark: SparkSession,
                                                                            tmp_path: Path) -> None:
    cfg = make_config(tmp_path, measure={"min_users": 1})
    recs_uri, events_uri = T.RECOMMENDATIONS.uri(cfg), T.SILVER_EVENTS.uri(cfg)
    outcomes_uri, uplift_uri = T.CAMPAIGN_OUTCOMES.uri(cfg), T.UPLIFT.uri(cfg)
    _write_recs(spark, recs_uri, A, _recs(A))
    _write_recs(spark, recs_uri, B, _recs(B))
    _append_events(spark, events_uri, [("t1", "i1", "purchase", D(2026, 11, 3), 10.0, 1),
                                       ("c1", "i1", "purchase", D(2026, 11, 12), 10.0, 1),
                                       ("t2", "i9", "view", D(2026, 11, 12), None, None)])
    first = _measure(spark, cfg, FIRST)
    assert (first["mode"], first["run_dates_measured"]) == ("full", 2)
    assert "no earlier measure run" in first["full_reason"]

    # A new run date, and a late purchase inside B's window (Nov 10, Nov 17] only: A stays as it was.
    _write_recs(spark, recs_uri, C_RUN, _recs(C_RUN))
    _append_events(spark, events_uri, [("t2", "i1", "purchase", D(2026, 11, 16), 20.0, 1)])
    b_before = delta_io.read(spark, outcomes_uri).where(F.col(C.RUN_DATE) == B).first()
    second = _measure(spark, cfg, SECOND)
    assert (second["mode"], second["full_reason"], second["run_dates_measured"]) == ("incremental", None, 2)
    assert _measured_on(spark, cfg) == {A: FIRST, B: SECOND, C_RUN: SECOND}
    b_after = delta_io.read(spark, outcomes_uri).where(F.col(C.RUN_DATE) == B).first()
    assert (b_before[C.CONVERSIONS_TREATED], b_after[C.CONVERSIONS_TREATED]) == (0, 1)
    assert second["runs_measured"] == 2 and second["runs_window_open"] == 1  # the summary covers every run date

    # The same tables as a full measure of the same inputs.
    versions = {uri: delta_io.version(spark, uri) for uri in (outcomes_uri, uplift_uri)}
    full = _measure(spark, cfg, SECOND, full_refresh=True)
    assert (full["mode"], full["full_reason"], full["run_dates_measured"]) == ("full", "--full-refresh", 3)
    for uri, version in versions.items():
        assert delta_io.read(spark, uri).count() > 0
        assert_approx_df_equality(_table(spark, uri, version), _table(spark, uri), precision=1e-9,
                                  ignore_row_order=True, ignore_nullable=True)
    assert {k: v for k, v in full.items() if k not in ("mode", "full_reason", "run_dates_measured", "run_id")} == \
        {k: v for k, v in second.items() if k not in ("mode", "full_reason", "run_dates_measured", "run_id")}

    # A user erased from A's lists (a forget's DELETE): A is measured again, with one treated user fewer.
    spark.sql(f"DELETE FROM {delta_io.table_ref(recs_uri)} WHERE {C.RUN_DATE} = DATE'{A}' AND {C.USER_ID} = 't1'")
    third = _measure(spark, cfg, THIRD)
    assert (third["mode"], third["run_dates_measured"]) == ("incremental", 2)  # A, and C whose window is open
    assert _measured_on(spark, cfg) == {A: THIRD, B: SECOND, C_RUN: THIRD}
    a_row = delta_io.read(spark, outcomes_uri).where(F.col(C.RUN_DATE) == A).first()
    assert (a_row[C.USERS_TREATED], a_row[C.CONVERSIONS_TREATED]) == (2, 0)


    # A VACUUM (forget purges with 0 hours retained) may have dropped change files: the next run measures everything.
    assert delta_io.change_feed_complete(spark, recs_uri, 0, 1)
    delta_io.vacuum(spark, recs_uri, 168)
    end = delta_io.version(spark, recs_uri)
    assert end is not None and not delta_io.change_feed_complete(spark, recs_uri, 0, end)
    purged = _measure(spark, cfg, THIRD)
    assert (purged["mode"], purged["run_dates_measured"]) == ("full", 3) and "purged" in purged["full_reason"]

    # The other reasons to measure every run date again, each named: the measure settings changed, the outcomes
    # table moved since the last measure (by hand here), a run date before the last run's.
    longer = dataclasses.replace(cfg, measure=dataclasses.replace(cfg.measure, window_days=cfg.measure.window_days + 1))
    assert _measure(spark, longer, THIRD)["full_reason"] == "the measure settings or the package version changed " \
        "since the last run"
    spark.sql(f"ALTER TABLE {delta_io.table_ref(outcomes_uri)} SET TBLPROPERTIES ('sparkpromo.test' = 'moved')")
    moved = _measure(spark, longer, THIRD)["full_reason"]
    assert moved == "metrics.campaign_outcomes changed since the last measure run"
    fourth = D(2026, 12, 2)
    assert _measure(spark, longer, fourth)["mode"] == "incremental"
    back = _measure(spark, longer, SECOND)["full_reason"]
    assert back == f"the run date {SECOND} is before the last run's ({fourth})"


def test_a_run_date_whose_lists_all_vanished_loses_its_measure_rows(spark: SparkSession, tmp_path: Path) -> None:
    """Every listed user of run date A erased from the recommendations (a forget): A's outcome and uplift rows go,
    as a full measure would have none, and B's stay."""
    cfg = make_config(tmp_path, measure={"min_users": 1})
    recs_uri, outcomes_uri, uplift_uri = T.RECOMMENDATIONS.uri(cfg), T.CAMPAIGN_OUTCOMES.uri(cfg), T.UPLIFT.uri(cfg)
    _write_recs(spark, recs_uri, A, _recs(A))
    _write_recs(spark, recs_uri, B, _recs(B))
    _append_events(spark, T.SILVER_EVENTS.uri(cfg), [("t1", "i1", "purchase", D(2026, 11, 3), 10.0, 1)])
    _measure(spark, cfg, FIRST)

    def run_dates(uri: str) -> set[dt.date]:
        return {r[0] for r in delta_io.read(spark, uri).select(C.RUN_DATE).distinct().collect()}

    assert run_dates(outcomes_uri) == run_dates(uplift_uri) == {A, B}
    spark.sql(f"DELETE FROM {delta_io.table_ref(recs_uri)} WHERE {C.RUN_DATE} = DATE'{A}'")
    second = _measure(spark, cfg, SECOND)
    assert second["run_dates_dropped"] == [A.isoformat()]
    assert run_dates(outcomes_uri) == run_dates(uplift_uri) == {B}
    # Every list gone: nothing left to measure, and no measure row either.
    spark.sql(f"DELETE FROM {delta_io.table_ref(recs_uri)} WHERE {C.RUN_DATE} = DATE'{B}'")
    assert _measure(spark, cfg, THIRD)["run_dates_dropped"] == [B.isoformat()]
    assert delta_io.read(spark, outcomes_uri).isEmpty() and delta_io.read(spark, uplift_uri).isEmpty()
