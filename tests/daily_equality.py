"""Issue 18's check, shared by the daily equality tests: the tables a run of daily increments left equal those a
``clean --full-refresh`` plus a features rebuild of the same bronze on the last date gives (chispa), with
the same per-rule quarantine counts."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from chispa import assert_approx_df_equality, assert_df_equality
from pyspark.sql import SparkSession

from sparkpromo import cli, delta_io
from sparkpromo import columns as C

FLOAT_TOLERANCE = 1e-9
GOLD_KEYS = {"gold/interactions": (C.USER_IDX, C.ITEM_IDX), "gold/user_features": (C.USER_ID,),
             "gold/item_features": (C.ITEM_ID,)}
TABLES = ("silver/events", "silver/users", "silver/items", "quarantine/rows", "gold/interactions",
          "gold/user_features", "gold/item_features", "gold/id_map")


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    """``sparkpromo <argv>``, which must succeed; its ``--json`` result."""
    assert cli.main(argv) == 0, capsys.readouterr().err
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def assert_equals_full_refresh(spark: SparkSession, lake: Path, last_date: str, last: Mapping[str, Any],
                               common: Sequence[str], capsys: pytest.CaptureFixture[str],
                               sources: Sequence[str] = ("events",)) -> None:
    """``last``: the last daily clean's result (keys without the ``clean.`` prefix). Rebuilds silver and gold from
    the whole bronze and compares counts, quarantine counts per rule and every table with what the days left."""
    uris = {t: str(lake / t) for t in TABLES}
    versions = {t: delta_io.version(spark, u) for t, u in uris.items()}
    full = run_cli(["clean", "--full-refresh", "--run-date", last_date, "--run-id", "full", *common], capsys)
    assert full["mode"] == "full"
    # Not --full-refresh: silver was just rewritten, so features must see for itself that it cannot build on the
    # last run (no change feed describes an overwrite row by row).
    rebuilt = run_cli(["features", "--force", "--run-date", last_date, "--run-id", "full", *common], capsys)
    assert rebuilt["mode"] == "full" and "rewritten" in rebuilt["full_reason"], rebuilt
    for source in sources:
        for name in ("bronze_rows", "silver_rows", "quarantined", "duplicates"):
            assert full[f"{source}.{name}"] == last[f"{source}.{name}"], (source, name)
    assert {k: v for k, v in last.items() if ".quarantine:" in k} == \
        {k: v for k, v in full.items() if ".quarantine:" in k}
    for table, uri in uris.items():
        before, after = delta_io.read(spark, uri, version=versions[table]), delta_io.read(spark, uri)
        if table == "quarantine/rows":
            before, after = before.drop(C.RUN_ID), after.drop(C.RUN_ID)
        if table in GOLD_KEYS:
            # Confidences carried over from an earlier day were scaled by the decay between the days, which
            # equals the rebuild's decay up to rounding (features/incremental.py), and a recomputed user's or
            # item's sums (monetary, prices) add the same doubles in another order than a rebuild does.
            keys = GOLD_KEYS[table]
            order = [*keys, *sorted(c for c in before.columns if c not in keys)]
            assert_approx_df_equality(before.select(*order).orderBy(*keys), after.select(*order).orderBy(*keys),
                                      FLOAT_TOLERANCE, ignore_nullable=True)
            continue
        assert_df_equality(before, after, ignore_row_order=True, ignore_nullable=True, ignore_column_order=True)
