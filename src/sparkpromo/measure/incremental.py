"""An incremental measure run: only the campaign runs whose outcome rows can differ from what the last measure run
wrote are measured again; every other row of ``metrics/campaign_outcomes`` and ``metrics/uplift`` stays as it is.

A campaign run's rows read its lists (``gold/recommendations`` of its campaign and run date), the purchases of the
window after its run date and the measure settings, and its ``status`` reads the measure date only through the
window (open while ``window_end`` is after the measure date). So, with the settings unchanged, a run date is measured
again when:

* its window was still open at the last measure run, or it is new (its run date + ``window_days`` is after that
  run's date);
* its lists changed since (a recommend rerun of that date, a forget): a run date in the change data feed of
  ``gold/recommendations``;
* a purchase inside its window changed since (a late event, a correction, a forget): an event date of a purchase in
  the change data feed of ``silver/events``.

A row that none of these touch is the one a full measure would write, but for the date it was measured on and the
run that measured it (``measured_on``, ``_run_id``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Sequence

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from sparkpromo import columns as C
from sparkpromo.frame import Transform

__all__ = ["run_dates_to_measure", "changed_run_dates", "changed_purchase_dates"]


def run_dates_to_measure(dates: Sequence[dt.date], last_measured_on: dt.date, window_days: int,
                         changed_runs: Collection[dt.date], changed_purchases: Collection[dt.date]) -> list[dt.date]:
    """Of ``dates`` (run dates in the recommendations, up to this run's), those to measure again after a measure run
    on ``last_measured_on``: window open then (or new), lists changed (``changed_runs``) or a purchase in the window
    changed (``changed_purchases``, event dates)."""
    window = dt.timedelta(days=window_days)
    return [d for d in dates
            if d + window > last_measured_on or d in changed_runs
            or any(d < e <= d + window for e in changed_purchases)]


def changed_run_dates() -> Transform:
    """The change data feed of ``gold/recommendations`` -> the distinct run dates it touches (``run_date``)."""
    def apply(feed: DataFrame) -> DataFrame:
        return feed.select(C.RUN_DATE).distinct()
    return apply


def changed_purchase_dates() -> Transform:
    """The change data feed of ``silver/events`` -> the distinct event dates of the purchases it touches, as they
    were and as they are (``event_date``)."""
    def apply(feed: DataFrame) -> DataFrame:
        return feed.where(F.col(C.EVENT_TYPE) == C.PURCHASE).select(C.EVENT_DATE).dropna().distinct()
    return apply
