"""One pipeline stage at a git revision against the same stage in the working tree, alternated as fresh processes
on one lakehouse.

    .venv/bin/python benchmarks/stage_ab.py --baseline-ref c30a3ef --stage recommend --rounds 4 [--json]

``run --sample`` (current code) builds the lakehouse once; then ``python -m sparkpromo.cli <stage> --force``
runs with the baseline's ``src/`` (``git archive``) and with the working tree's, alternating, each a process of
its own as a user or a scheduler runs it. Reported per side: the stage's own ``elapsed_s`` (its end line, so the
JVM start is left out), the median over the rounds, the rows the stage reported (they must agree) and the
``WindowExec`` warnings it printed; and the ratio of the medians, contender over baseline.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import statistics
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

from harness import ROOT, emit  # benchmarks/ is on sys.path when a script runs

WINDOW_WARNING = "WindowExec: No Partition Defined"


def export_src(ref: str, into: Path) -> Path:
    """``src/`` of ``ref`` under ``into`` (``git archive``, nothing checked out); returns the ``src`` folder."""
    tar = subprocess.run(["git", "archive", "--format=tar", ref, "src"], cwd=ROOT, check=True,
                         capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(tar)) as archive:
        archive.extractall(into, filter="data")
    return into / "src"


def run_stage(stage: str, src: Path, env: dict[str, str], conf: list[str]) -> dict[str, Any]:
    """One ``<stage> --force --json`` process with ``src`` first on the path: elapsed_s, rows, warnings."""
    done = subprocess.run([sys.executable, "-m", "sparkpromo.cli", stage, "--force", "--json", *conf],
                          env={**env, "PYTHONPATH": str(src)}, cwd=ROOT, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{stage} with {src} failed ({done.returncode}): {done.stderr[-2000:]}")
    end = re.search(rf"stage={stage} status=end .*elapsed_s=([0-9.]+)", done.stderr)
    if end is None:
        raise RuntimeError(f"{stage} with {src}: no end line with elapsed_s on stderr")
    out = json.loads(done.stdout.strip().splitlines()[-1])
    return {"elapsed_s": float(end[1]), "rows": out.get("rows"), "window_warnings": done.stderr.count(WINDOW_WARNING)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--baseline-ref", required=True, help="git revision of the baseline")
    p.add_argument("--stage", default="recommend", help="the CLI stage to time (it must accept --force)")
    p.add_argument("--events", type=int, default=20000, help="run --sample's size")
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="sparkpromo-stage-ab-") as tmp:
        work = Path(tmp)
        env = {**os.environ, "SPARKPROMO_LAKEHOUSE": str(work / "lakehouse"),
               "SPARKPROMO_LANDING": str(work / "landing")}
        conf = ["--conf-dir", str(ROOT / "conf"), "--config", str(ROOT / "conf" / "sample.yaml")]
        subprocess.run([sys.executable, "-m", "sparkpromo.cli", "run", "--sample", "--events", str(args.events),
                        "--conf-dir", str(ROOT / "conf")], env={**env, "PYTHONPATH": str(ROOT / "src")}, cwd=ROOT,
                       check=True, capture_output=True)
        sides = {"baseline": export_src(args.baseline_ref, work / "baseline"), "contender": ROOT / "src"}
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in sides}
        for r in range(args.rounds):
            order = list(sides) if r % 2 == 0 else list(reversed(sides))
            for name in order:
                runs[name].append(run_stage(args.stage, sides[name], env, conf))
    median = {name: statistics.median(x["elapsed_s"] for x in rs) for name, rs in runs.items()}
    rows = {name: sorted({x["rows"] for x in rs}, key=str) for name, rs in runs.items()}
    result = {"stage": args.stage, "baseline_ref": args.baseline_ref, "rounds": args.rounds,
              "ratio_contender_over_baseline": round(median["contender"] / median["baseline"], 3),
              "same_rows": rows["baseline"] == rows["contender"], "rows": rows,
              "window_warnings": {name: max(x["window_warnings"] for x in rs) for name, rs in runs.items()},
              "runs": runs}
    emit(result, args.json)
    return 0 if result["same_rows"] else 1


if __name__ == "__main__":
    sys.exit(main())
