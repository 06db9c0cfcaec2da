"""Render the figures the reliability tests measured as the Markdown table in RELIABILITY.md.

    SPARKPROMO_RELIABILITY_OUT=/tmp/rel.jsonl PYTHONPATH=src python -m pytest tests/test_fuzz.py \\
        tests/test_concurrency.py tests/test_reliability.py tests/test_secrets.py tests/test_als_robustness.py
    python benchmarks/reliability_table.py /tmp/rel.jsonl
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def table(lines: list[dict[str, object]]) -> str:
    out = ["| area | fault / input | rows in | rows out | result |", "|---|---|---:|---|---|"]
    for r in lines:
        cells = [str(r[k]).replace("|", "\\|") for k in ("area", "case", "rows_in", "rows_out", "result")]
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def main(path: str) -> None:
    rows = [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
    print(table(rows))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "reliability.jsonl")
