"""Every Delta table is declared once, in sparkpromo.tables, with its schema from sparkpromo.schemas."""

from __future__ import annotations

import ast
from pathlib import Path

from chispa import assert_df_equality
from pyspark.sql import SparkSession

from sparkpromo import columns as C
from sparkpromo import delta_io, schemas
from sparkpromo import tables as T
from sparkpromo.pipeline import STAGE_IO
from tests.conftest import make_config

SRC = Path(__file__).resolve().parents[1] / "src" / "sparkpromo"


def test_each_table_is_declared_once_and_every_stage_names_declared_tables() -> None:
    keys = [t.key for t in T.ALL]
    assert len(keys) == len(set(keys)) and set(T.BY_KEY) == set(keys)
    assert len({id(t) for t in T.ALL}) == len(T.ALL)
    for ins, outs in STAGE_IO.values():
        for t in (*ins, *outs):
            assert T.BY_KEY[t.key] is t, t.key
    for t in T.ALL:
        if t.layer != "bronze":
            assert t.schema is not None, t.key
            names = set(t.schema.fieldNames())
            assert set(t.partition_by) <= names and set(t.not_null) <= names, t.key


def test_no_module_but_schemas_defines_a_table_schema() -> None:
    """A module-level StructType anywhere else would be a second declaration of a table's columns."""
    found = []
    for path in SRC.rglob("*.py"):
        if path.name == "schemas.py":
            continue
        for node in ast.parse(path.read_text()).body:
            value = node.value if isinstance(node, (ast.Assign, ast.AnnAssign)) else None
            if isinstance(value, ast.Call) and getattr(value.func, "id", "") == "StructType":
                found.append(f"{path.relative_to(SRC)}:{node.lineno}")
    assert found == [], found
    assert T.RECOMMENDATIONS.schema is schemas.RECOMMENDATIONS


def test_a_legacy_run_id_column_is_renamed_once_keeping_every_row(spark: SparkSession, tmp_path: Path) -> None:
    """metrics/model written before every table named its run id ``_run_id``: train's migration renames the column
    in one commit and keeps the rows; a second call changes nothing."""
    cfg = make_config(tmp_path)
    uri = T.MODEL_METRICS.uri(cfg)
    legacy = spark.createDataFrame([("r0", "als", "ndcg", 0.4), ("r0", "popularity", "ndcg", 0.2)],
                                   f"{C.LEGACY_RUN_ID} string, contender string, metric string, value double")
    delta_io.overwrite(legacy, uri)
    assert T.migrate_legacy_run_id(spark, T.MODEL_METRICS, cfg)
    version = delta_io.version(spark, uri)
    expected = legacy.withColumnRenamed(C.LEGACY_RUN_ID, C.RUN_ID)
    assert_df_equality(delta_io.read(spark, uri), expected, ignore_row_order=True, ignore_nullable=True)
    stats = spark.sql(f"SHOW TBLPROPERTIES delta.`{uri}`").where(f"key = '{delta_io.STATS_COLUMNS}'").first()
    assert stats is not None and C.RUN_ID in stats["value"].split(",")  # the statistics follow the column
    assert not T.migrate_legacy_run_id(spark, T.MODEL_METRICS, cfg)
    assert delta_io.version(spark, uri) == version
    assert T.MODEL_METRICS.schema is not None and C.RUN_ID in T.MODEL_METRICS.schema.fieldNames()
