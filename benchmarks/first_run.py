"""First run, side by side in one script: ``sparkpromo run --sample`` end to end (a fresh process, from launch to
exit, on a fresh lakehouse) over its floor, a fresh process that starts the same Spark session and makes one Delta
write. Both run with the same master; the ratio is what a new user waits beyond what any Spark + Delta program pays.
Then ``sparkpromo explain --user <id>`` on the lakehouse the run left (a fresh process too) over the same floor, for
the id of the help example and for a user who was served offers (the first delivered user id, looked up untimed):
a quick answer costs little more than starting Spark. The run's own ``stage=... elapsed_s=`` lines give each stage's
share of the run.

    python benchmarks/first_run.py [--events 20000] [--repeats 1] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from harness import ROOT, timed  # benchmarks/ is on sys.path when a script runs

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


SERVED_USER_SCRIPT = """
import sys
from pyspark.sql import functions as F
from sparkpromo import columns as C
from sparkpromo import tables as T
from sparkpromo.config import load_config
from sparkpromo.session import build_session
cfg = load_config(conf_dir=sys.argv[1], overrides={"spark.master": sys.argv[2]})
spark = build_session(cfg)
row = (spark.read.format("delta").load(T.RECOMMENDATIONS.uri(cfg)).where(F.col(C.DELIVERED))
       .agg(F.min(C.USER_ID)).first())
print(row[0])
spark.stop()
"""


STAGE_END = re.compile(r"stage=(\w+) status=end .*elapsed_s=([0-9.]+)")
EXPLAIN_USER = "u000123"  # the id of `sparkpromo explain --help`


def timed_run(cmd: list[str], env: dict[str, str], cwd: Path) -> tuple[float, subprocess.CompletedProcess[str]]:
    """Wall seconds of one command (a process of its own, as a user runs it), which must succeed."""
    wall, done = timed(subprocess.run, cmd, env=env, cwd=cwd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])} failed ({done.returncode}): {done.stderr[-2000:]}")
    return wall, done


def stage_seconds(stderr: str) -> dict[str, float]:
    """``stage -> elapsed_s`` from a run's stage end lines (the pipeline stages, not their sub-steps)."""
    return {m[1]: float(m[2]) for m in STAGE_END.finditer(stderr)}


def measure(events: int, master: str) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    with tempfile.TemporaryDirectory(prefix="sparkpromo-first-run-") as tmp:
        floor, _ = timed_run([sys.executable, "-c", FLOOR_SCRIPT, f"{tmp}/floor", master], env, ROOT)
        work = Path(tmp) / "work"
        work.mkdir()
        env.update(SPARKPROMO_LAKEHOUSE=str(work / "lakehouse"), SPARKPROMO_LANDING=str(work / "landing"))
        cli = [sys.executable, "-m", "sparkpromo.cli"]
        conf = ["--conf-dir", str(ROOT / "conf"), "--set", f"spark.master={master}"]
        run, done = timed_run([*cli, "run", "--sample", "--events", str(events), *conf], env, work)
        explain, answer = timed_run([*cli, "explain", "--user", EXPLAIN_USER, "--json", *conf], env, work)
        _, found = timed_run([sys.executable, "-c", SERVED_USER_SCRIPT, str(ROOT / "conf"), master], env, work)
        served_user = found.stdout.strip().splitlines()[-1]
        served, served_answer = timed_run([*cli, "explain", "--user", served_user, "--json", *conf], env, work)
    offers = json.loads(answer.stdout.strip().splitlines()[-1])["offers"]
    served_offers = json.loads(served_answer.stdout.strip().splitlines()[-1])["offers"]
    return {"floor_s": round(floor, 1), "run_sample_s": round(run, 1), "ratio": round(run / floor, 2),
            "explain_s": round(explain, 1), "explain_ratio": round(explain / floor, 2),
            "explain_offers": len(offers), "served_user": served_user,
            "explain_served_s": round(served, 1), "explain_served_ratio": round(served / floor, 2),
            "explain_served_offers": len(served_offers),
            "stages_s": stage_seconds(done.stderr)}


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
              f"{best['floor_s']} s; ratio {best['ratio']}; explain --user {EXPLAIN_USER}: {best['explain_s']} s, "
              f"ratio {best['explain_ratio']}; explain --user {best['served_user']} (served "
              f"{best['explain_served_offers']} offers): {best['explain_served_s']} s, ratio "
              f"{best['explain_served_ratio']}; stages: {best['stages_s']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
