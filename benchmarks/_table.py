"""A benchmark's result as a Markdown table (for BENCHMARKS.md), then, when asked, as one JSON line at the end."""

from __future__ import annotations

import json
from collections.abc import Mapping


def emit(result: Mapping[str, object], as_json: bool) -> None:
    print("| measure | value |\n|---|---|")
    for key, value in result.items():
        print(f"| {key} | {value} |")
    if as_json:
        print(json.dumps(result))
