"""What every benchmark shares: the repository root, a scratch folder, the local configuration with overrides (or a
bare one for scripts that read their data themselves), a named session, timing, and the result printed as a
Markdown table for BENCHMARKS.md (then, when asked, as one JSON line).

Scripts import it by name: ``benchmarks/`` is on ``sys.path`` when a script in it runs."""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from pyspark.sql import SparkSession

from sparkpromo.config import AppConfig, build_config, load_config
from sparkpromo.session import build_session

ROOT = Path(__file__).resolve().parents[1]
T = TypeVar("T")


def workdir(given: str | Path | None, name: str) -> Path:
    """``given``, or a new scratch folder named after the benchmark (kept: a long run's data can be reused)."""
    return Path(given) if given else Path(tempfile.mkdtemp(prefix=f"sparkpromo-{name}-"))


def local_config(overrides: Mapping[str, Any], extra: Sequence[Path] = ()) -> AppConfig:
    """``conf/base.yaml`` + ``conf/local.yaml`` (+ ``extra`` files), with dotted-key ``overrides``."""
    return load_config("local", ROOT / "conf", list(extra), dict(overrides))


def landing_overrides(work: Path) -> dict[str, str]:
    """The local config's lakehouse and landing under ``work``, each source read from its landing folder."""
    landing = work / "landing"
    return {"lakehouse": str(work / "lake"), "landing": str(landing),
            **{f"sources.{s}.path": str(landing / s) for s in ("events", "users", "items")}}


def bare_config(lakehouse: str | Path, master: str = "local[2]", shuffle_partitions: int = 2,
                **sections: Any) -> AppConfig:
    """A configuration with no source to read (for scripts that load their own data): ``sections`` add to or
    replace its top-level sections (``spark`` is merged)."""
    raw: dict[str, Any] = {"lakehouse": str(lakehouse), "sources": {"events": {"path": "unused"}},
                           "privacy": {"consent_without_users": "granted"},
                           "spark": {"master": master, "shuffle_partitions": shuffle_partitions}}
    spark = {**raw["spark"], **sections.pop("spark", {})}
    return build_config({**raw, **sections, "spark": spark})


def session(cfg: AppConfig, name: str) -> SparkSession:
    """The pipeline's own session for ``cfg``, named ``sparkpromo-bench-<name>`` in the Spark UI."""
    return build_session(cfg, app_name=f"sparkpromo-bench-{name}")


def timed(fn: Callable[..., T], *args: Any, **kwargs: Any) -> tuple[float, T]:
    """Seconds ``fn(*args, **kwargs)`` took, and what it returned."""
    t = time.perf_counter()
    out = fn(*args, **kwargs)
    return time.perf_counter() - t, out


def best_time(fn: Callable[[], object], repeats: int) -> float:
    """The fastest of ``repeats`` calls of ``fn``, in seconds."""
    return min(timed(fn)[0] for _ in range(repeats))


def emit(result: Mapping[str, object], as_json: bool) -> None:
    print("| measure | value |\n|---|---|")
    for key, value in result.items():
        print(f"| {key} | {value} |")
    if as_json:
        print(json.dumps(result))
