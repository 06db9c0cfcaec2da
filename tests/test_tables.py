"""Every Delta table is declared once, in sparkpromo.tables, with its schema from sparkpromo.schemas."""

from __future__ import annotations

import ast
from pathlib import Path

from sparkpromo import schemas
from sparkpromo import tables as T
from sparkpromo.pipeline import STAGE_IO

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
