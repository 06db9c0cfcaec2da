"""One daily run, two variants, side by side in one process (issue 18's measurements).

    PYTHONPATH=src .venv/bin/python benchmarks/day_ab.py --events 1000000 --days 30 --rounds 3 \
        --b-constant sparkpromo.frame.BROADCAST_KEYS=-1 [--b-set KEY=VALUE] [--json]

Runs on this VM moved by a fifth between identical processes (BENCHMARKS.md, issue 18), so a change of a few
seconds in a stage is measured here inside one process instead: the history of :mod:`daily` (a generated daily
shop of ``--days`` days, about ``--events`` events) is built once and the next day delivered; the lakehouse as it
stands then is copied aside, and each round runs that day's ingest + clean + features on a fresh copy of it (a new
path each time, so no cached table state carries over), once as variant A and once as variant B, the order
alternating by round (A B, B A, ...), after ``--warm-up`` untimed runs of each variant (a variant's first run
compiles its plans' code). Variant B differs by ``--b-set`` config overrides (not ``spark.*``: the one session is
built once) and by ``--b-constant`` module constants (``package.module.NAME=VALUE``, the value read as YAML; a
module that imported the name into its own namespace keeps its copy), set for B's runs and restored after. Both
variants must leave the same counts (silver rows, recomputed users, ...), or the script stops.

Reported per stage: each variant's seconds per round, and the ratio of the B and A medians. The scratch folder
(``--workdir``, default a new temporary one) is kept, as :mod:`daily`'s is; each round's copy is removed."""

from __future__ import annotations

import argparse
import importlib
import shutil
import statistics
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml
from daily import INCREMENTAL, config, generated, run_day  # benchmarks/ is on sys.path
from harness import emit, session, workdir

from sparkpromo.config import AppConfig
from sparkpromo.pipeline import RunContext, run_stage


@contextmanager
def constants(settings: list[str]) -> Iterator[None]:
    """``package.module.NAME=VALUE`` set for the block, then restored."""
    saved: list[tuple[Any, str, Any]] = []
    try:
        for setting in settings:
            target, _, value = setting.partition("=")
            module_name, _, name = target.rpartition(".")
            if not module_name:
                raise SystemExit(f"--b-constant {setting}: give the constant as package.module.NAME=VALUE")
            module = importlib.import_module(module_name)
            if not hasattr(module, name):
                raise SystemExit(f"--b-constant: {module_name} has no {name}")
            saved.append((module, name, getattr(module, name)))
            setattr(module, name, yaml.safe_load(value))
        yield
    finally:
        for module, name, old in reversed(saved):
            setattr(module, name, old)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=3, help="runs of each variant (default 3)")
    ap.add_argument("--warm-up", type=int, default=1, help="untimed runs of each variant first (default 1)")
    ap.add_argument("--master", default="local[2]")
    ap.add_argument("--shuffle-partitions", type=int, default=8)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override, both variants")
    ap.add_argument("--b-set", action="append", default=[], metavar="KEY=VALUE", help="config override, variant B")
    ap.add_argument("--b-constant", action="append", default=[], metavar="MODULE.NAME=VALUE",
                    help="module constant, variant B")
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    if not args.b_set and not args.b_constant:
        ap.error("give variant B at least one --b-set or --b-constant")
    if args.rounds < 1 or args.warm_up < 0:
        ap.error("--rounds must be at least 1 and --warm-up at least 0")
    if any(pair.startswith("spark.") for pair in args.b_set):
        ap.error("--b-set spark.*: the session is built once, so a Spark setting cannot differ between the variants")
    work = workdir(args.workdir, "day-ab")

    def cfg_for(lakehouse: Path, extra: list[str]) -> AppConfig:
        return config(work, args.master, args.shuffle_partitions, [*args.set, *extra, f"lakehouse={lakehouse}"], [])

    base = cfg_for(work / "lakehouse", [])
    replay = generated(args.events, args.days, 1, work, base)
    spark = session(base, "day-ab")
    for day in replay.days[:args.days]:
        replay.deliver(day)
    history = RunContext("history", replay.days[args.days - 1])
    for name in INCREMENTAL:
        run_stage(name, spark, base, history)
    day = replay.days[args.days]
    replay.deliver(day)
    frozen = work / "frozen"
    shutil.rmtree(frozen, ignore_errors=True)  # a reused --workdir
    shutil.copytree(work / "lakehouse", frozen)

    seconds: dict[str, dict[str, list[float]]] = {v: {n: [] for n in INCREMENTAL} for v in "AB"}
    counts: dict[str, dict[str, Any]] = {}
    runs = [("warm-up", v) for _ in range(args.warm_up) for v in "AB"] + [
        (str(r), v) for r in range(args.rounds) for v in ("AB" if r % 2 == 0 else "BA")]
    for i, (r, variant) in enumerate(runs):
        lake = work / f"lakehouse-{i}"
        shutil.rmtree(lake, ignore_errors=True)
        shutil.copytree(frozen, lake)
        rows: dict[str, Any] = {}
        try:
            cfg = cfg_for(lake, [] if variant == "A" else args.b_set)
            with constants([] if variant == "A" else args.b_constant):
                per_stage = run_day(spark, cfg, RunContext(RunContext.default_run_id(day), day), rows)
        finally:
            shutil.rmtree(lake, ignore_errors=True)
        if counts.setdefault(variant, rows) != rows:
            raise SystemExit(f"variant {variant} counted {rows} in round {r}, {counts[variant]} before")
        if r != "warm-up":
            for name, s in per_stage.items():
                seconds[variant][name].append(round(s, 2))
        print(f"round {r} {variant}: {per_stage}", file=sys.stderr)
    if counts["A"] != counts["B"]:
        raise SystemExit(f"the variants' outputs differ: A {counts['A']}, B {counts['B']}")
    result: dict[str, Any] = {"events_history": sum(replay.events[:args.days]),
                              "events_day": replay.events[args.days], "rounds": args.rounds,
                              "b": " ".join([*args.b_set, *args.b_constant])}
    for name in (*INCREMENTAL, "day"):
        a, b = (seconds[v][name] if name != "day"
                else [round(sum(x), 2) for x in zip(*seconds[v].values(), strict=True)] for v in "AB")
        result.update({f"{name}.A_s": a, f"{name}.B_s": b,
                       f"{name}.B_over_A": round(statistics.median(b) / statistics.median(a), 3)})
    emit(result, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
