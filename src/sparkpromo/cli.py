"""The ``sparkpromo`` command line. Each ``<stage>_main`` is also a console-script entry point, so spark-submit
(``jobs/*.py``), the console script and a Databricks ``python_wheel_task`` all run the same code.

Exit codes: 0 success; 1 the stage failed at run time; 2 bad arguments or configuration (reported before any
SparkSession starts).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from sparkpromo import __version__
from sparkpromo.config import (
    ENVIRONMENTS,
    AppConfig,
    ConfigError,
    check_input_paths,
    check_path_id,
    default_conf_dir,
    load_config,
    load_yaml,
)

log = logging.getLogger("sparkpromo.cli")

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
SAMPLE_CONF = "sample.yaml"  # in the conf dir: what `run --sample` merges before any --config file

EXAMPLES = {
    "generate": ("sparkpromo generate --events 100000\n  sparkpromo generate --env local --set generate.seed=11\n"
                 "  sparkpromo generate --days 30 --run-date 2026-11-30   # 30 daily batches, late and re-sent rows\n"
                 "  sparkpromo generate --respond-to lakehouse --run-date 2026-12-01   # purchases after the offers"),
    "ingest": "sparkpromo ingest --env local --run-date 2026-11-29",
    "clean": ("sparkpromo clean --run-date 2026-11-29 --json\n"
              "  sparkpromo clean --run-date 2026-11-29 --full-refresh   # rebuild silver from all of bronze"),
    "features": "sparkpromo features --run-date 2026-11-29",
    "train": "sparkpromo train --json\n  sparkpromo train --set train.metric=map --set train.folds=3",
    "recommend": "sparkpromo recommend --run-date 2026-11-29 --json",
    "measure": ("sparkpromo measure --run-date 2026-12-08       # campaign runs whose window closed by then\n"
                "  sparkpromo measure --set measure.window_days=14 --json"),
    "run": ("sparkpromo run --sample                       # whole pipeline on generated data\n"
            "  SPARKPROMO_ML100K=../shared/data/ml-100k sparkpromo run --config conf/examples/movielens.yaml\n"
            "  sparkpromo run --from-date 2026-11-01 --to-date 2026-11-07   # backfill a date range\n"
            "  sparkpromo run --sample --days 7             # a generated week, one run per day as it arrives"),
    "doctor": "sparkpromo doctor\n  sparkpromo doctor --env cluster --offline",
    "forget": ("sparkpromo forget --user u000123\n  sparkpromo forget --user u000123 --env cluster --json\n"
               "  sparkpromo forget --users-file erasure-requests.txt"),
    "report": "sparkpromo report                      # the newest run\n  sparkpromo report --run-id 20261129",
    "explain": ("sparkpromo explain --user u000123\n"
                "  sparkpromo explain --user u000123 --campaign welcome-new-users --json"),
}


class UsageError(ValueError):
    pass


class _Parser(argparse.ArgumentParser):
    """argparse that reports one line and exits 2 (its default usage dump is noise in scheduler logs)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message}")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--env", default=os.environ.get("SPARKPROMO_ENV", "local"), choices=ENVIRONMENTS,
                   help="configuration overlay (default: $SPARKPROMO_ENV or local)")
    p.add_argument("--conf-dir", default=None, help="directory with base.yaml and overlays (default: ./conf)")
    p.add_argument("--config", action="append", default=[], metavar="FILE",
                   help="extra YAML file merged last (repeatable)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                   help="override one config key, e.g. --set train.folds=3 (value parsed as YAML)")
    p.add_argument("--run-date", type=_date, default=None,
                   help="logical date of the run, YYYY-MM-DD (default: today, UTC)")
    p.add_argument("--run-id", default=None, help="run id (default: the run date as YYYYMMDD)")
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    p.add_argument("--verbose", action="store_true", help="show Spark's own logs")
    p.add_argument("--remote", default=None, metavar="sc://HOST:PORT",
                   help="run on a Spark Connect server (sets spark.remote; default: $SPARK_REMOTE, else classic)")
    p.add_argument("--force", action="store_true",
                   help="rerun a stage even when its tables are unchanged since its last success for this run id")
    p.add_argument("--strict", action="store_true",
                   help="fail (exit 1) when a stage ends with a warning, e.g. no campaign served any offer "
                        "(scheduled jobs use it)")


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid date '{text}', expected YYYY-MM-DD") from None


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="sparkpromo", description="Personalised promotions from shop logs with Spark on Delta.",
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"sparkpromo {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    helps = {
        "generate": "write the generated sample shop (CSV / JSON lines) into the landing zone",
        "ingest": "landing files -> bronze Delta tables (append-only, idempotent)",
        "clean": "bronze -> silver + quarantine, with per-rule counts",
        "features": "silver -> gold features, interactions and stable id map",
        "train": "ALS tuned by CrossValidator, compared with a popularity baseline",
        "recommend": "per-campaign offers -> the recommendations table",
        "measure": "what each campaign changed: treated vs control uplift with 95% CIs, Qini by score decile",
        "run": "the whole pipeline (optionally on generated sample data, or a backfill)",
        "doctor": "check Java, the Spark/Delta pair, the Delta jars and the configuration; say what to fix",
        "forget": "erase users from every table, purge the old files and keep them out of later loads",
        "report": "write one run's HTML report (timings, data quality, CV grid, holdout, campaigns); prints its path",
        "explain": "show one user's current offers and the past items behind each",
    }
    for name, text in helps.items():
        p = sub.add_parser(name, help=text, description=text, epilog=f"examples:\n  {EXAMPLES[name]}",
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        _common(p)
        if name == "generate":
            p.add_argument("--respond-to", default=None, metavar="LAKEHOUSE",
                           help="instead of a new shop: the shop's purchases in the measure window after the offers "
                                "this lakehouse listed on --run-date (planted uplift per campaign type)")
        if name in ("generate", "run"):
            p.add_argument("--events", type=int, default=None, help="sample size in events (default: generate.events)")
            p.add_argument("--days", type=int, default=None, metavar="N",
                           help="a daily sample: one landing batch per day of the N days ending on the run date "
                                "(sets generate.days=N and generate.daily=true); `run --sample` then runs once per "
                                "day, each day's batch arriving just before its run")
        if name == "doctor":
            p.add_argument("--offline", action="store_true", help="skip the Maven reachability check")
        if name == "forget":
            who = p.add_mutually_exclusive_group(required=True)
            who.add_argument("--user", help="the user's original id (as in the source data)")
            who.add_argument("--users-file", metavar="FILE", help="a text file of original ids, one per line")
        if name == "explain":
            p.add_argument("--user", required=True,
                           help="the user's original id (looked up by its pseudonym in privacy mode)")
            p.add_argument("--campaign", default=None, help="only this campaign's offers")
            p.add_argument("--top", type=int, default=3, help="past items shown per offer (default: 3)")
        if name in ("clean", "features", "measure", "run"):
            p.add_argument("--full-refresh", action="store_true",
                           help="clean rebuilds silver and quarantine from the whole of bronze, features gold "
                                "from the whole of silver, and measure measures every campaign run again, instead "
                                "of taking in what changed since their last run (for recovery)")
        if name == "run":
            p.add_argument("--sample", action="store_true", help="generate the sample shop first")
            p.add_argument("--from-date", type=_date, default=None, help="backfill start (inclusive)")
            p.add_argument("--to-date", type=_date, default=None, help="backfill end (inclusive)")
            p.add_argument("--stages",
                           default=",".join(("ingest", "clean", "features", "train", "recommend", "measure")),
                           help="comma-separated subset of stages to run, in pipeline order")
    return parser


def _overrides(pairs: Sequence[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"--set: expected KEY=VALUE, got '{pair}'")
        try:
            out[key] = load_yaml(value)
        except yaml.YAMLError:
            raise UsageError(f"--set {key}: value is not valid YAML") from None
    return out


CONSOLE_WIDTH = 100


def _table_lines(table: dict[str, dict[str, Any]], width: int = CONSOLE_WIDTH) -> list[str]:
    """A {row: {column: number}} table as lines of at most ``width`` characters: the columns wrap into blocks,
    each headed by its column names and repeating the row labels."""
    cols = sorted({c for r in table.values() for c, x in r.items()
                   if isinstance(x, (int, float)) and not isinstance(x, bool)})
    # Each column is as wide as its name plus a gap, so long names never run into each other.
    widths = {c: max(10, len(c) + 2) for c in cols}
    label = min(max(12, max(len(str(name)) for name in table) + 2), width // 3)
    blocks: list[list[str]] = [[]]
    for c in cols:
        if blocks[-1] and 2 + label + sum(widths[x] for x in blocks[-1]) + widths[c] > width:
            blocks.append([])
        blocks[-1].append(c)
    lines: list[str] = []
    for i, block in enumerate(blocks):
        if i:
            lines.append("")
        lines.append("  " + " " * label + "".join(f"{c:>{widths[c]}}" for c in block))
        for name, r in table.items():
            cells = "".join(f"{r[c]:>{widths[c]}.4g}" if isinstance(r.get(c), (int, float)) else " " * widths[c]
                            for c in block)
            lines.append(f"  {str(name)[:label - 1]:<{label}}{cells}")
    return lines


def _scalar_lines(result: dict[str, Any], width: int = CONSOLE_WIDTH) -> list[str]:
    """``key  value`` lines of the result's scalars, keys aligned; a long value wraps at its spaces under itself (a
    path or other unbroken word longer than the space left stays whole)."""
    scalars = {k: v for k, v in result.items() if not isinstance(v, (dict, list))}
    keys = max((len(k) for k in scalars), default=0)
    room = max(width - keys - 2, 20)
    lines: list[str] = []
    for k, v in scalars.items():
        parts = textwrap.wrap(str(v), room, break_long_words=False, break_on_hyphens=False) or [""]
        lines += [f"{k:<{keys}}  {parts[0]}", *(" " * (keys + 2) + p for p in parts[1:])]
    return lines


def _print_result(result: dict[str, Any], as_json: bool) -> None:
    for line in _scalar_lines(result):
        print(line)
    for key, table in result.items():
        # Nested {row: {column: number}} results (train's metrics, recommend's campaigns) print as a table.
        if isinstance(table, dict) and table and all(isinstance(r, dict) for r in table.values()):
            print(f"\n{key}:")
            for line in _table_lines(table):
                print(line)
    if as_json:
        print(json.dumps(result, default=str, sort_keys=True))


def _prepare(argv: Sequence[str] | None) -> tuple[argparse.Namespace, AppConfig]:
    args = build_parser().parse_args(argv)
    if getattr(args, "run_id", None) is not None:
        check_path_id(args.run_id, "--run-id")  # it names registry/<run id>/ and reports/<run id>.html
    overrides = _overrides(args.overrides)
    if getattr(args, "remote", None) is not None:
        overrides["spark.remote"] = args.remote
    if args.command == "doctor":
        args.overrides = overrides  # checked with the configuration, which doctor reports on itself
        return args, None  # type: ignore[return-value]
    if getattr(args, "events", None) is not None:
        overrides["generate.events"] = args.events
    if args.command == "run" and (args.from_date or args.to_date):
        if not (args.from_date and args.to_date):
            raise UsageError("run: --from-date and --to-date go together")
        if args.to_date < args.from_date:
            raise UsageError("run: --to-date is before --from-date")
        if args.run_date or args.run_id:
            raise UsageError("run: a backfill takes --from-date/--to-date, not --run-date/--run-id")
        if args.days is not None:
            raise UsageError("run --days: a backfill's dates come from --from-date/--to-date; give one or the other")
    if getattr(args, "days", None) is not None:
        if args.days < 1:
            raise UsageError(f"--days: must be >= 1, got {args.days}")
        if args.command == "run" and not args.sample:
            raise UsageError("run --days: a daily replay of the generated sample needs --sample "
                             "(backfill your own data with --from-date/--to-date)")
        if args.command == "run" and args.days > 1 and args.run_id:
            raise UsageError("run --days: each day's run takes its date as its id (YYYYMMDD); --run-id names one run")
        overrides.update({"generate.days": args.days, "generate.daily": True})
    if args.command == "run" and args.sample and args.from_date:
        # A sample backfill: one daily batch per date of the range, each landing just before its date's run.
        overrides.update({"generate.days": (args.to_date - args.from_date).days + 1, "generate.daily": True})
    extra = list(args.config)
    if args.command == "run" and args.sample:
        sample = Path(args.conf_dir or default_conf_dir()) / SAMPLE_CONF
        if sample.is_file():
            extra.insert(0, str(sample))
    cfg = load_config(args.env, args.conf_dir, extra, overrides)
    if args.command == "run":
        stages = [s.strip() for s in args.stages.split(",") if s.strip()]
        from sparkpromo.pipeline import STAGES

        unknown = [s for s in stages if s not in STAGES]
        if not stages:
            raise UsageError(f"run --stages: no stage given (known: {', '.join(STAGES)})")
        if unknown:
            raise UsageError(f"run --stages: unknown stage(s) {', '.join(unknown)} (known: {', '.join(STAGES)})")
        args.stages = [s for s in STAGES if s in stages]
    if args.command == "explain" and args.campaign is not None \
            and args.campaign not in {c.id for c in cfg.campaigns}:
        raise UsageError(f"explain --campaign: no campaign '{args.campaign}' in the configuration "
                         f"(configured: {', '.join(c.id for c in cfg.campaigns) or 'none'})")
    if args.command == "generate" and args.respond_to and cfg.privacy.pseudonymise:
        raise UsageError("generate --respond-to: privacy.pseudonymise is on, so gold/recommendations holds "
                         "pseudonyms, not the user ids a shop's purchases would carry")
    needs_inputs = args.command == "ingest" or (args.command == "run" and "ingest" in args.stages
                                                   and not args.sample)
    if needs_inputs:
        check_input_paths(cfg)
    if args.command == "forget":
        from sparkpromo.forget import ForgetError, read_ids_file
        from sparkpromo.privacy import PrivacyError, hmac_key

        try:
            args.users = [args.user] if args.user is not None else read_ids_file(args.users_file)
            hmac_key(cfg.privacy.key_env)  # forgotten ids are recorded as keyed hashes: no key, no forget
        except (ForgetError, PrivacyError) as e:
            raise UsageError(str(e)) from None
        if not any(u.strip() for u in args.users):
            raise UsageError("--user: empty id")
    if args.command in ("train", "run"):
        from sparkpromo.tracking import TrackingError, check_available

        try:
            check_available(cfg)  # mlflow.enabled without MLflow installed: exit 2 before Spark starts
        except TrackingError as e:
            raise UsageError(str(e)) from None
    return args, cfg


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``sparkpromo`` console script."""
    try:
        args, cfg = _prepare(argv)
    except (ConfigError, UsageError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except SystemExit as e:  # --help / --version
        return int(e.code or 0)

    if args.command == "doctor":
        from sparkpromo.doctor import run_doctor

        checks = run_doctor(args.env, args.conf_dir, args.config, network=not args.offline, overrides=args.overrides)
        for c in checks:
            print(c.line())
        if args.json:
            print(json.dumps({c.name: {"ok": c.ok, "detail": c.detail, "fix": c.fix} for c in checks}))
        return EXIT_OK if all(c.ok for c in checks) else EXIT_FAILED

    from sparkpromo.logs import setup_logging
    from sparkpromo.pipeline import RunContext

    run_date = args.run_date or dt.datetime.now(dt.UTC).date()
    ctx = RunContext(run_id=args.run_id or RunContext.default_run_id(run_date), run_date=run_date)
    setup_logging(args.verbose, ctx.run_id)
    try:
        result = _dispatch(args, cfg, ctx)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - one line for the scheduler; the traceback goes to the log
        log.debug("failure", exc_info=True)
        from sparkpromo.logs import error_summary

        print(f"error: {args.command} failed: {error_summary(e)}", file=sys.stderr)
        return EXIT_FAILED
    if args.command == "report" and not args.json:
        print(result["report"])  # the path alone, as the last line, for scripts
        return EXIT_OK
    if args.command == "explain":
        from sparkpromo.explain import format_offers

        for line in format_offers(args.user, result["offers"]):
            print(line)
        if args.json:
            print(json.dumps(result, default=str, sort_keys=True))
        return EXIT_OK
    _print_result(result, args.json)
    return EXIT_OK


def _dispatch(args: argparse.Namespace, cfg: AppConfig, ctx: Any) -> dict[str, Any]:
    from sparkpromo.pipeline import RunContext, generate_sample, run_days, run_stage, sample_dates

    if args.command == "generate" and not args.respond_to:
        return {"run_id": ctx.run_id, **generate_sample(cfg, ctx, args.events)}
    result: dict[str, Any] = {"run_id": ctx.run_id, "run_date": ctx.run_date.isoformat()}
    dates = [ctx.run_date]
    if args.command == "run" and args.from_date:
        n = (args.to_date - args.from_date).days + 1
        dates = [args.from_date + dt.timedelta(days=i) for i in range(n)]
    elif args.command == "run" and args.sample and cfg.generate.daily:
        dates = sample_dates(cfg, ctx.run_date)
    if args.command == "run" and args.sample:
        last = ctx if len(dates) == 1 else RunContext(RunContext.default_run_id(dates[-1]), dates[-1])
        # A daily sample's batches are moved into the landing zone one per day, by the run loop below.
        result.update(generate_sample(cfg, last, args.events, deliver=False))
        if not cfg.generate.daily:
            check_input_paths(cfg)

    from sparkpromo.session import build_session, set_log_level

    spark = build_session(cfg)
    if args.verbose:
        set_log_level(spark, "INFO")
    if args.command == "generate":
        from sparkpromo.config import has_scheme
        from sparkpromo.pipeline import generate_responses_sample

        lakehouse = args.respond_to if has_scheme(args.respond_to) else str(Path(args.respond_to).resolve())
        return {"run_id": ctx.run_id, **generate_responses_sample(spark, cfg, ctx, lakehouse)}
    if args.command == "forget":
        from sparkpromo.forget import forget_users

        deleted = forget_users(spark, cfg, args.users)
        result["forgotten_ids"] = len({u.strip() for u in args.users if u.strip()})
        result.update({f"deleted.{uri.rstrip('/').rsplit('/', 2)[-2]}.{uri.rstrip('/').rsplit('/', 1)[-1]}": n
                       for uri, n in deleted.items()})
        return result
    if args.command == "report":
        from sparkpromo.report import write_report

        # args.run_id, not ctx.run_id: no --run-id means the newest recorded run, not today's date.
        path = write_report(spark, cfg, args.run_id)
        return {"run_id": PurePosixPath(path).stem, "report": path}
    if args.command == "explain":
        from sparkpromo.explain import explain_user

        return {"user": args.user, "offers": explain_user(spark, cfg, args.user, args.campaign, top_n=args.top)}
    if args.command != "run":
        result.update(run_stage(args.command, spark, cfg, ctx, force=args.force, strict=args.strict,
                                full_refresh=getattr(args, "full_refresh", False)))
        return result
    daily = args.sample and cfg.generate.daily
    result.update(run_days(spark, cfg, dates, args.stages, force=args.force, strict=args.strict, deliver=daily,
                           ctx=ctx, full_refresh=args.full_refresh))
    return result


def _stage_main(command: str) -> Any:
    def entry(argv: Sequence[str] | None = None) -> int:
        code = main([command, *(sys.argv[1:] if argv is None else argv)])
        if code:
            # A Databricks python_wheel_task calls the entry point and ignores what it returns: only an exception
            # fails the task (and its retries, its downstream tasks and its alerts follow from that).
            raise SystemExit(code)
        return code
    entry.__name__ = f"{command}_main"
    entry.__doc__ = f"Entry point of ``sparkpromo {command}`` (console script ``sparkpromo-{command}``)."
    return entry


def __getattr__(name: str) -> Any:
    """``<command>_main`` for every command: the entry point of the console script ``sparkpromo-<command>``, of
    ``jobs/<command>.py`` (spark-submit) and of the Databricks wheel task, all :func:`main` with the command first."""
    command = name.removesuffix("_main")
    if command != name and command in EXAMPLES:
        return _stage_main(command)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if __name__ == "__main__":
    sys.exit(main())
