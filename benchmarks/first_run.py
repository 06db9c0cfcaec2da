"""First run, side by side in one script: ``sparkpromo run --sample`` end to end (a fresh process, from launch to
exit, on a fresh lakehouse) over its floor, a fresh process that starts the same Spark session and makes one Delta
write. Both run with the same master; the ratio is what a new user waits beyond what any Spark + Delta program pays.

    python benchmarks/first_run.py [--events 20000] [--repeats 1] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

FLOOR_SCRIPT = """
import sys
from sparkpromo.config import build_config
from sparkpromo.session import build_session
root, master = sys.argv[1], sys.argv[2]
cfg = build_config({"lakehouse": root, "sources": {"events": {"path": "unused"}},
                    "privacy": {"consent_without_users": "granted"}, "spark": {"master": master}})
spark = build_session(cfg)
spark.range(10).write.format("delta").mode("overwrite").save(root + "/first")
spark.stop()
"""


def timed(cmd: list[str], env: dict[str, str], cwd: Path) -> float:
    t = time.perf_counter()
    done = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])} failed ({done.returncode}): {done.stderr[-2000:]}")
    return wall


def measure(events: int, master: str) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    with tempfile.TemporaryDirectory(prefix="sparkpromo-first-run-") as tmp:
        floor = timed([sys.executable, "-c", FLOOR_SCRIPT, f"{tmp}/floor", master], env, ROOT)
        work = Path(tmp) / "work"
        work.mkdir()
        env.update(SPARKPROMO_LAKEHOUSE=str(work / "lakehouse"), SPARKPROMO_LANDING=str(work / "landing"))
        run = timed([sys.executable, "-m", "sparkpromo.cli", "run", "--sample", "--events", str(events),
                     "--conf-dir", str(ROOT / "conf"), "--set", f"spark.master={master}"], env, work)
    return {"floor_s": round(floor, 1), "run_sample_s": round(run, 1), "ratio": round(run / floor, 2)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=20000, help="sample size (the README's first command: 20000)")
    ap.add_argument("--master", default="local[*]", help="Spark master of both processes")
    ap.add_argument("--repeats", type=int, default=1, help="pairs measured; the lowest ratio is reported")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    pairs = [measure(args.events, args.master) for _ in range(args.repeats)]
    best: dict[str, Any] = min(pairs, key=lambda p: p["ratio"])
    result = {**best, "events": args.events, "master": args.master, "pairs": pairs}
    if args.json:
        print(json.dumps(result))
    else:
        print(f"run --sample ({args.events} events): {best['run_sample_s']} s; floor (session + one Delta write): "
              f"{best['floor_s']} s; ratio {best['ratio']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
