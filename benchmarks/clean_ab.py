"""Clean at one git revision against clean at another, alternated in one JVM on the same bronze.

    .venv/bin/python benchmarks/clean_ab.py --baseline-ref 3d539db --events 1000000 --rounds 3 [--json]

The baseline's ``clean.py`` and ``delta_io.py`` are taken from ``--baseline-ref`` (``git show``) and imported under
other names; the current working tree is the contender. Both clean the same bronze snapshot (copied into two
lakehouses), in alternating order, after one untimed run of each (JIT and code-generation warm-up), so machine
noise hits both alike. Reported: the median time of each and their ratio.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import inspect
import logging
import shutil
import statistics
import subprocess
import sys
from pathlib import Path
from types import ModuleType

from harness import ROOT, emit, landing_overrides, local_config, session, timed, workdir  # benchmarks/ on sys.path

from sparkpromo import clean as current
from sparkpromo.config import AppConfig
from sparkpromo.generate import generate_shop
from sparkpromo.ingest import run_ingest

RUN_DATE = dt.date(2026, 11, 1)


def baseline_clean(ref: str, into: Path) -> ModuleType:
    """The clean stage at ``ref`` (``sparkpromo/clean.py``, or the ``sparkpromo/clean/`` package since it was
    split), importing the Delta helpers at ``ref`` (``delta_io.py``; ``io.py`` before the rename) as its own."""
    def show(path: str) -> str:
        return subprocess.run(["git", "show", f"{ref}:{path}"], cwd=ROOT, check=True, capture_output=True,
                              text=True).stdout

    def own(code: str) -> str:
        return (code.replace("from sparkpromo import io\n", "import baseline_io as io\n")
                .replace("from sparkpromo import delta_io\n", "import baseline_io as delta_io\n")
                .replace("sparkpromo.clean", "baseline_clean"))
    try:
        helpers = show("src/sparkpromo/delta_io.py")
    except subprocess.CalledProcessError:
        helpers = show("src/sparkpromo/io.py")
    (into / "baseline_io.py").write_text(helpers)
    package = subprocess.run(["git", "ls-tree", "--name-only", f"{ref}:src/sparkpromo/clean"], cwd=ROOT,
                             capture_output=True, text=True)
    if package.returncode == 0:
        (into / "baseline_clean").mkdir()
        for name in package.stdout.split():
            if name.endswith(".py"):
                (into / "baseline_clean" / name).write_text(own(show(f"src/sparkpromo/clean/{name}")))
    else:
        (into / "baseline_clean.py").write_text(own(show("src/sparkpromo/clean.py")))
    sys.path.insert(0, str(into))
    return importlib.import_module("baseline_clean")


def config(work: Path, lake: str, master: str, conf: dict[str, str] | None = None) -> AppConfig:
    """The local config on ``work/landing`` with its lakehouse at ``work/<lake>``; ``conf`` adds to ``spark.conf``."""
    return local_config({**landing_overrides(work), "lakehouse": str(work / lake), "spark.master": master,
                         "spark.shuffle_partitions": 8, "spark.conf": conf or {}})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--baseline-ref", required=True, help="git revision whose clean is the baseline")
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--master", default="local[2]")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)

    work = workdir(None, "ab")
    try:
        baseline = baseline_clean(args.baseline_ref, work)
        generate_shop(work / "landing", n_events=args.events, seed=7, days=60, end=RUN_DATE)
        cfgs = {"baseline": config(work, "lake_a", args.master), "current": config(work, "lake_b", args.master)}
        spark = session(cfgs["baseline"], "clean-ab")
        run_ingest(spark, cfgs["baseline"], "ab")
        shutil.copytree(work / "lake_a" / "bronze", work / "lake_b" / "bronze")
        runs: dict[str, list[float]] = {"baseline": [], "current": []}
        rows: dict[str, int] = {}
        now = dt.datetime.combine(RUN_DATE, dt.time())
        for i in range(args.rounds + 1):  # round 0 warms both up and is not counted
            order = ("baseline", "current") if i % 2 == 0 else ("current", "baseline")
            for name in order:
                module = baseline if name == "baseline" else current
                # A clean since the incremental one would find no new rows after round 0: rebuild every round.
                kwargs = {"full_refresh": True} if "full_refresh" in inspect.signature(module.run_clean).parameters \
                    else {}
                elapsed, counts = timed(module.run_clean, spark, cfgs[name], f"ab-{name}-{i}", now, **kwargs)
                rows[name] = counts["events.silver_rows"]
                if i > 0:
                    runs[name].append(elapsed)
        spark.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if rows["baseline"] != rows["current"]:
        raise SystemExit(f"silver rows differ: {rows}")
    med = {k: statistics.median(v) for k, v in runs.items()}
    result = {"events": args.events, "baseline_ref": args.baseline_ref, "rounds": args.rounds,
              "silver_rows": rows["current"], "baseline_runs_s": [round(x, 2) for x in runs["baseline"]],
              "current_runs_s": [round(x, 2) for x in runs["current"]],
              "baseline_median_s": round(med["baseline"], 2), "current_median_s": round(med["current"], 2),
              "current_over_baseline": round(med["current"] / med["baseline"], 3),
              "current_events_per_s": round(args.events / med["current"]),
              "baseline_events_per_s": round(args.events / med["baseline"])}
    emit(result, args.json)


if __name__ == "__main__":
    main()
