"""End-to-end scale benchmark: the whole pipeline on generated shops of several sizes, each in a fresh process.

    .venv/bin/python benchmarks/scale.py --events 1000000,10000000 [--master local[2]] [--json]

For each size it runs ``sparkpromo run --sample --events N`` (ingest, clean, features, train, recommend) in its
own process and lakehouse, and records:

* the wall time of every stage, from the run's own ``stage=<name> status=end ... elapsed_s=<s>`` log lines;
* the peak resident memory (``VmHWM`` from ``/proc``) of the driver's JVM and of the driver's Python process,
  read while the run is alive. The sample shop is generated beforehand by ``sparkpromo generate`` in a process of
  its own, so the Python figure is the pipeline's.

The point is the comparison between sizes in one invocation: the time ratio between the largest and the smallest
size (10x the events should take no more than ~12x the time) and whether driver memory grows with the data.
Training uses a one-point grid (rank 32, 10 iterations, 2 folds) so that the ALS cost is comparable across sizes;
pass ``--set`` to change any config key.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from harness import ROOT, workdir  # benchmarks/ is on sys.path when a script runs

STAGE_END = re.compile(r"stage=(\w+) status=end .*?elapsed_s=([0-9.]+)")
DEFAULT_SETTINGS = ("train.grid.rank=[32]", "train.grid.reg_param=[0.1]", "train.grid.alpha=[1.0]",
                    "train.grid.max_iter=[10]", "train.folds=2")


def _hwm_kib(pid: int) -> int:
    """Peak resident set size of a live process, in KiB (0 when it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def _descendants(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-e", "-o", "pid=,ppid=,comm="], capture_output=True, text=True, check=True).stdout
    children: dict[int, list[tuple[int, str]]] = {}
    for line in out.splitlines():
        p, pp, comm = line.split(None, 2)
        children.setdefault(int(pp), []).append((int(p), comm.strip()))
    found, todo = [], [pid]
    while todo:
        for child, _ in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _is_java(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip() == "java"
    except OSError:
        return False


def run_size(events: int, workdir: Path, master: str, run_date: str, settings: list[str]) -> dict[str, Any]:
    lake = workdir / f"events-{events}"
    shutil.rmtree(lake, ignore_errors=True)
    common = ["--events", str(events), "--run-date", run_date,
              "--set", f"lakehouse={lake / 'lakehouse'}", "--set", f"landing={lake / 'landing'}"]
    for s in settings:
        common += ["--set", s]
    cli = str(Path(sys.executable).parent / "sparkpromo")
    env = {**os.environ, "SPARKPROMO_LANDING": str(lake / "landing")}
    # The sample is written by its own process first, so the run's Python peak is the pipeline's, not the
    # generator's (numpy arrays of every event); `run --sample` then finds it and does not regenerate.
    subprocess.run([cli, "generate", *common], check=True, env=env, cwd=ROOT, capture_output=True, text=True)
    cmd = [cli, "run", "--sample", *common, "--run-id", f"scale-{events}", "--set", f"spark.master={master}"]
    peaks = {"jvm": 0, "python": 0}
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT)
    done = threading.Event()

    def sample() -> None:
        while not done.wait(1.0):
            peaks["python"] = max(peaks["python"], _hwm_kib(proc.pid))
            for pid in _descendants(proc.pid):
                if _is_java(pid):
                    peaks["jvm"] = max(peaks["jvm"], _hwm_kib(pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    assert proc.stdout is not None
    stages: dict[str, float] = {}
    tail: list[str] = []
    for line in proc.stdout:
        tail = (tail + [line.rstrip()])[-20:]
        m = STAGE_END.search(line)
        if m and m.group(1) in ("generate", "ingest", "clean", "features", "train", "recommend"):
            stages[m.group(1)] = float(m.group(2))
    rc = proc.wait()
    done.set()
    sampler.join()
    wall = time.perf_counter() - t0
    if rc != 0:
        raise RuntimeError(f"run with {events} events failed (exit {rc}):\n" + "\n".join(tail))
    shutil.rmtree(lake, ignore_errors=True)
    pipeline_s = sum(v for k, v in stages.items() if k != "generate")
    return {"events": events, "wall_s": round(wall, 1), "pipeline_s": round(pipeline_s, 1), "stages_s": stages,
            "driver_jvm_peak_rss_mib": round(peaks["jvm"] / 1024), "driver_python_peak_rss_mib":
            round(peaks["python"] / 1024)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", default="1000000,10000000", help="comma-separated sizes, smallest first")
    ap.add_argument("--master", default="local[2]")
    ap.add_argument("--run-date", default="2026-11-01")
    ap.add_argument("--workdir", default=None, help="scratch directory (default: a temporary one)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="extra config override for every run (after the one-point training grid)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    sizes = [int(x) for x in args.events.split(",") if x.strip()]
    work = workdir(args.workdir, "scale")
    runs = []
    for n in sizes:
        runs.append(run_size(n, work, args.master, args.run_date, [*DEFAULT_SETTINGS, *args.set]))
        print(json.dumps(runs[-1]), flush=True)  # each size as soon as it is done: a long run may be cut short
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)
    small, large = runs[0], runs[-1]
    result: dict[str, Any] = {
        "master": args.master, "cores": os.cpu_count(), "python": platform.python_version(), "runs": runs,
        "events_ratio": large["events"] / small["events"],
        "time_ratio": round(large["pipeline_s"] / small["pipeline_s"], 2),
        "jvm_memory_ratio": round(large["driver_jvm_peak_rss_mib"] / max(small["driver_jvm_peak_rss_mib"], 1), 2)}
    stage_names = ["ingest", "clean", "features", "train", "recommend"]
    print("| events | " + " | ".join(f"{s} s" for s in stage_names) + " | pipeline s | events/s | "
          "driver JVM peak RSS MiB | driver Python peak RSS MiB |")
    print("|---" * (len(stage_names) + 5) + "|")
    for r in runs:
        cells = [f"{r['stages_s'].get(s, float('nan')):.1f}" for s in stage_names]
        print(f"| {r['events']:,} | " + " | ".join(cells) + f" | {r['pipeline_s']:.1f} | "
              f"{r['events'] / r['pipeline_s']:,.0f} | {r['driver_jvm_peak_rss_mib']} | "
              f"{r['driver_python_peak_rss_mib']} |")
    print(f"\ntime ratio {large['events']:,} / {small['events']:,} events: {result['time_ratio']}x "
          f"(events ratio {result['events_ratio']:.0f}x); driver JVM peak RSS ratio: {result['jvm_memory_ratio']}x")
    if args.json:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
