"""Reliability figures measured by the tests, for RELIABILITY.md: with ``SPARKPROMO_RELIABILITY_OUT=<file>`` set,
tests append one JSON line per check (``benchmarks/reliability_table.py`` renders them); unset, nothing happens."""

from __future__ import annotations

import json
import os
from typing import Any

ENV = "SPARKPROMO_RELIABILITY_OUT"


def record(area: str, case: str, rows_in: Any, rows_out: Any, result: str) -> None:
    out = os.environ.get(ENV)
    if out:
        with open(out, "a", encoding="utf-8") as f:
            f.write(json.dumps({"area": area, "case": case, "rows_in": rows_in, "rows_out": rows_out,
                                "result": result}) + "\n")
