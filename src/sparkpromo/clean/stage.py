"""The clean stage: an incremental clean when it equals a rebuild, else a full one; the run's state recorded last."""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from pyspark.sql import SparkSession

from sparkpromo import delta_io
from sparkpromo import tables as T
from sparkpromo.clean.checks import RUN_KEYS
from sparkpromo.clean.dimensions import age_band_movers
from sparkpromo.clean.full import full_clean
from sparkpromo.clean.incremental import incremental_clean
from sparkpromo.clean.state import SOURCES, full_refresh_reason, last_state, record_state
from sparkpromo.config import AppConfig

log = logging.getLogger(__name__)

__all__ = ["run_clean"]


def run_clean(spark: SparkSession, cfg: AppConfig, run_id: str, now: dt.datetime,
              full_refresh: bool = False) -> dict[str, Any]:
    """Clean the bronze rows added since the last successful clean into silver and quarantine (see
    :func:`incremental_clean`), or rebuild both from the whole of bronze (:func:`full_clean`): on
    ``full_refresh``, on the first run, and whenever the incremental result could differ from a rebuild (see
    :func:`full_refresh_reason`). A clean that finds no new bronze rows writes nothing, and reports the totals the
    last clean left. Every run records its bronze versions and totals in ``metrics/clean_state``, last."""
    versions = {s: delta_io.version(spark, T.BRONZE[s].uri(cfg)) if getattr(cfg.sources, s) is not None else None
                for s in SOURCES}
    state = None if full_refresh else last_state(spark, cfg)
    reason = "--full-refresh" if full_refresh else full_refresh_reason(spark, cfg, state, versions)
    if reason is None and state is not None and all(state.bronze.get(s) == versions[s] for s in SOURCES) \
            and (versions["users"] is None or age_band_movers(spark, cfg, now, versions["users"]).isEmpty()):
        log.info("clean: no bronze rows since the last clean and no age band moved; nothing to write")
        return {**state.result, **{f"{s}.{k}": 0 for s in SOURCES if versions[s] is not None for k in RUN_KEYS},
                "mode": "unchanged", "full_reason": None}
    if reason is not None or state is None:
        log.info("clean: full refresh (%s)", reason)
        totals = full_clean(spark, cfg, run_id, now, versions)
        result: dict[str, Any] = {**totals, "mode": "full", "full_reason": reason or "no earlier clean recorded"}
        for s in SOURCES:
            if f"{s}.bronze_rows" in totals:
                result.update({f"{s}.run_bronze_rows": totals[f"{s}.bronze_rows"],
                               f"{s}.run_inserted": totals[f"{s}.silver_rows"], f"{s}.run_updated": 0,
                               f"{s}.run_quarantined": totals[f"{s}.quarantined"],
                               f"{s}.run_duplicates": totals[f"{s}.duplicates"],
                               f"{s}.rejudged_to_silver": 0, f"{s}.rejudged_to_quarantine": 0,
                               f"{s}.rejudged_rows": 0})
    else:
        result = {**incremental_clean(spark, cfg, run_id, now, state, versions), "mode": "incremental",
                  "full_reason": None}
    record_state(spark, cfg, run_id, result["mode"], versions, result)
    return result
