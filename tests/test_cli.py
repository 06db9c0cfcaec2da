"""The command line: bad arguments and bad config exit 2 with one line, before any Spark starts."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sparkpromo.cli import build_parser
from tests.conftest import CONF_DIR
from tests.measure import record

ROOT = CONF_DIR.parent


def cli(*args: str, cwd: Path = ROOT, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sparkpromo.cli", *args], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=120)


def assert_usage_error(res: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    for n in needles:
        assert n in lines[0]
    # Nothing from Spark or Ivy: the session never started.
    assert "Spark" not in res.stderr and "ivy" not in res.stderr.lower()


def test_unknown_key_in_config_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  rnak: 3\n")
    res = cli("train", "--conf-dir", str(CONF_DIR), "--config", str(bad), cwd=tmp_path)
    assert_usage_error(res, "bad.yaml", "train.rnak", "unknown key")
    assert not (tmp_path / "lakehouse").exists()


def test_wrong_type_via_set(tmp_path: Path) -> None:
    res = cli("clean", "--conf-dir", str(CONF_DIR), "--set", "train.folds=many", cwd=tmp_path)
    assert_usage_error(res, "train.folds", "expected an integer")


def test_a_date_no_calendar_has_names_its_file_and_key(tmp_path: Path) -> None:
    bad = tmp_path / "campaign.yaml"
    bad.write_text("campaigns:\n  - id: c1\n    name: C\n    type: welcome\n    valid_from: 2026-01-01\n"
                   "    valid_to: 2026-12-32\n    priority: 1\n    top_k: 2\n    offer: {discount_pct: 5}\n")
    res = cli("train", "--conf-dir", str(CONF_DIR), "--config", str(bad), cwd=tmp_path)
    assert_usage_error(res, "campaign.yaml", "campaigns[0].valid_to", "expected a date", "2026-12-32")
    assert_usage_error(cli("train", "--conf-dir", str(CONF_DIR), "--set", "generate.seed=2026-02-30", cwd=tmp_path),
                       "--set", "generate.seed", "2026-02-30")


def test_a_list_elements_error_names_the_file_that_set_the_list(tmp_path: Path) -> None:
    bad = tmp_path / "grid.yaml"
    bad.write_text("train:\n  grid:\n    rank: [8, sixteen]\n")
    res = cli("train", "--conf-dir", str(CONF_DIR), "--config", str(bad), cwd=tmp_path)
    assert_usage_error(res, f"{bad}: train.grid.rank[1]: expected an integer")


def test_an_unset_variable_names_the_file_and_key_that_use_it(tmp_path: Path) -> None:
    uses = tmp_path / "uses.yaml"
    uses.write_text("lakehouse: ${SPARKPROMO_TEST_UNSET_VAR}\n")
    later = tmp_path / "later.yaml"
    later.write_text("train:\n  folds: 3\n")
    env = {k: v for k, v in os.environ.items() if k != "SPARKPROMO_TEST_UNSET_VAR"}
    res = cli("train", "--conf-dir", str(CONF_DIR), "--config", str(uses), "--config", str(later), cwd=tmp_path,
              env=env)
    assert_usage_error(res, f"{uses}: lakehouse: environment variable SPARKPROMO_TEST_UNSET_VAR is referenced")


def test_missing_input_path(tmp_path: Path) -> None:
    res = cli("ingest", "--conf-dir", str(CONF_DIR), "--set", f"sources.events.path={tmp_path}/none", cwd=tmp_path)
    assert_usage_error(res, "sources.events.path", "does not exist")


def test_unreadable_config(tmp_path: Path) -> None:
    res = cli("run", "--conf-dir", str(tmp_path), cwd=tmp_path)
    assert_usage_error(res, "base.yaml", "config file not found")


def test_unknown_argument_fails_fast(tmp_path: Path) -> None:
    assert_usage_error(cli("recommend", "--campain", "x", cwd=tmp_path), "unrecognized arguments: --campain")


def test_bad_run_date() -> None:
    assert_usage_error(cli("features", "--run-date", "2026-02-30"), "invalid date")


def test_bad_stage_list(tmp_path: Path) -> None:
    assert_usage_error(cli("run", "--stages", "ingest,deploy"), "unknown stage(s) deploy")
    for empty in ("", " , "):
        assert_usage_error(cli("run", "--sample", "--conf-dir", str(CONF_DIR), "--stages", empty, cwd=tmp_path),
                           "run --stages: no stage given")
    assert not list(tmp_path.iterdir())  # refused before generating the sample


def test_backfill_arguments_checked() -> None:
    assert_usage_error(cli("run", "--from-date", "2026-11-02", "--to-date", "2026-11-01"), "before --from-date")


@pytest.mark.parametrize(("args", "needle"), [
    (["run", "--days", "3"], "run --days: a daily replay of the generated sample needs --sample"),
    (["generate", "--days", "0"], "--days: must be >= 1"),
    (["run", "--sample", "--days", "3", "--from-date", "2026-11-01", "--to-date", "2026-11-03"],
     "give one or the other"),
    (["run", "--sample", "--days", "3", "--run-id", "mine"], "run --days: each day's run takes its date as its id"),
])
def test_daily_arguments_checked(args: list[str], needle: str) -> None:
    assert_usage_error(cli(*args), needle)


def test_responses_are_refused_in_privacy_mode() -> None:
    assert_usage_error(cli("generate", "--respond-to", "lakehouse", "--set", "privacy.pseudonymise=true"),
                       "generate --respond-to: privacy.pseudonymise is on")


def test_generate_days_lands_one_batch_per_day_without_spark(tmp_path: Path) -> None:
    res = cli("generate", "--conf-dir", str(CONF_DIR), "--events", "2000", "--days", "3", "--run-date", "2026-11-03",
              "--json", env={"SPARKPROMO_LANDING": str(tmp_path / "landing")}, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    days = ["2026-11-01", "2026-11-02", "2026-11-03"]
    landing = tmp_path / "landing"
    assert sorted(p.name for p in (landing / "events").iterdir()) == [f"events-{d}.csv" for d in days]
    assert sorted(p.name for p in (landing / "users").iterdir()) == [f"users-{d}.jsonl" for d in days]
    assert sorted(p.name for p in (landing / "items").iterdir()) == [f"items-{d}.csv" for d in days]
    assert '"generated_days": 3' in res.stdout.strip().splitlines()[-1]


def test_unknown_environment() -> None:
    assert_usage_error(cli("train", "--env", "prod"), "invalid choice")


@pytest.mark.parametrize("command", ["generate", "ingest", "clean", "features", "train", "recommend", "measure", "run",
                                     "forget", "doctor"])
def test_help_has_examples(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args([command, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "examples:" in out and f"sparkpromo {command}" in out and "--env" in out


def test_every_console_script_runs_its_command(capsys: pytest.CaptureFixture[str]) -> None:
    """Each ``sparkpromo-<command>`` script, loaded as pip's launcher loads it (which also serves jobs/<command>.py
    and the wheel tasks), is main() with its command first; a name that is no command is no entry point."""
    import importlib.metadata

    from sparkpromo import cli

    scripts = {e.name.removeprefix("sparkpromo-"): e for e in importlib.metadata.entry_points(group="console_scripts")
               if e.name.startswith("sparkpromo-")}
    assert sorted(scripts) == sorted(cli.EXAMPLES)
    for command, script in scripts.items():
        assert script.load()(["--help"]) == 0
        assert capsys.readouterr().out.startswith(f"usage: sparkpromo {command} "), command
    with pytest.raises(AttributeError, match="no attribute 'nothing_main'"):
        cli.nothing_main  # noqa: B018 - the attribute lookup is what is tested
    # A failure is an exception, not only a return value: a Databricks wheel task ignores what the call returns.
    with pytest.raises(SystemExit) as failed:
        scripts["clean"].load()(["--run-date", "not-a-date"])
    assert failed.value.code == 2

def test_generate_needs_no_spark(tmp_path: Path) -> None:
    res = cli("generate", "--conf-dir", str(CONF_DIR), "--events", "2000", "--json",
              env={"SPARKPROMO_LANDING": str(tmp_path / "landing")}, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "landing" / "events" / "part-00000.csv").exists()
    assert '"generated_events": 2000' in res.stdout.strip().splitlines()[-1]


def test_result_prints_compact_table_then_json(capsys: pytest.CaptureFixture[str]) -> None:
    from sparkpromo.cli import _print_result

    _print_result({"run_id": "r1", "metrics": {"als": {"ndcg": 0.42}, "popularity": {"ndcg": 0.21}}}, True)
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].split() == ["run_id", "r1"]
    assert ["als", "0.42"] in [ln.split() for ln in lines] and ["popularity", "0.21"] in [ln.split() for ln in lines]
    assert lines[-1].startswith("{") and '"ndcg": 0.42' in lines[-1]


def test_result_table_keeps_long_names_apart(capsys: pytest.CaptureFixture[str]) -> None:
    from sparkpromo.cli import _print_result

    row = {"audience": 24, "baseline_head_share": 1, "fallback_share": 0.3158}
    _print_result({"campaigns": {"a-campaign-with-a-long-name": row, "b": row}}, False)
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[1].split() == ["audience", "baseline_head_share", "fallback_share"]
    assert lines[2].split() == ["a-campaign-with-a-long-name", "24", "1", "0.3158"]
    assert lines[3].split() == ["b", "24", "1", "0.3158"]



def test_campaign_summary_fits_100_columns() -> None:
    from sparkpromo.cli import _table_lines
    from sparkpromo.evaluate import FAIRNESS_METRICS

    keys = ("priority", "audience", "users_listed", "served", "control", "rows", "fallback_share", "coverage",
            "gini", *FAIRNESS_METRICS)
    table = {cid: {"type": "generic", "status": "ok", **{k: 1234.5678 for k in keys}}
             for cid in ("welcome-new-users", "electronics-fans", "cart-50")}
    lines = _table_lines(table)
    assert max(len(line) for line in lines) <= 100
    text = "\n".join(lines)
    assert all(k in text for k in keys) and "status" not in text
    assert sum("welcome-new-users" in line for line in lines) >= 2  # wrapped: each block repeats the row labels


def test_result_lines_fit_100_columns_and_wrap_long_values_under_themselves() -> None:
    from sparkpromo.cli import _scalar_lines

    text = "computed: only non-repeatable bought or rated items excluded, as in serving, and a few words more"
    path = "/a/lakehouse/" + "x" * 90 + "/gold/recommendations"
    lines = _scalar_lines({"train.served_exclusion": text, "recommend.table": path, "rows": 12,
                           "metrics": {"als": {"ndcg": 0.1}}})
    assert [line for line in lines if len(line) > 100] == [f"{'recommend.table':<22}  {path}"]  # one unbroken word
    assert lines[0].startswith("train.served_exclusion  computed:") and len(lines) >= 4
    wrapped = [line for line in lines if line.startswith(" ")]
    assert wrapped and all(line.startswith(" " * 24) and not line[24].isspace() for line in wrapped)
    assert " ".join(line[24:] for line in lines[:1 + len(wrapped)]) == text  # nothing lost
    assert lines[-1] == f"{'rows':<22}  12" and not any("metrics" in line for line in lines)


BAD_RUN_IDS = ["../x", "..", "a/../../b", "/etc/passwd", "/tmp/x", "a/b", "a\\b", "a\x00b", "a\nb", "r1\n", "",
               ".hidden", "-rf", "x" * 65, "r..1", "C:\\x", "day.r2"]


@pytest.mark.parametrize("run_id", BAD_RUN_IDS)
def test_run_id_must_be_one_safe_path_component(run_id: str, capsys: pytest.CaptureFixture[str]) -> None:
    from sparkpromo.cli import main

    # In-process: argv cannot carry a NUL byte to a child process. _prepare rejects it before any Spark starts.
    code = main(["report", "--conf-dir", str(CONF_DIR), f"--run-id={run_id}"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: --run-id: ") and "not a valid id" in err
    assert len(err.strip().splitlines()) == 1  # a newline inside the id is printed escaped


def test_every_bad_run_id_is_refused_by_the_library_too() -> None:
    from sparkpromo.config import ConfigError, check_path_id
    from sparkpromo.pipeline import RunContext

    refused = 0
    for run_id in BAD_RUN_IDS:
        with pytest.raises(ConfigError):
            check_path_id(run_id, "--run-id")
        with pytest.raises(ConfigError):
            RunContext(run_id, dt.date(2026, 11, 29))
        refused += 1
    assert refused == len(BAD_RUN_IDS)
    record("path ids", "--run-id: ../x, .., a/../../b, /etc/passwd, /tmp/x, a/b, a\\b, NUL, newline, trailing "
           "newline, empty, .hidden, -rf, 65 chars, r..1, C:\\x", len(BAD_RUN_IDS),
           f"{refused} refused by the CLI (exit 2, one line naming --run-id, before Spark) and by RunContext",
           "pass")


def test_run_id_escape_rejected_by_cli_before_spark(tmp_path: Path) -> None:
    res = cli("train", "--conf-dir", str(CONF_DIR), "--run-id", "../outside", cwd=tmp_path)
    assert_usage_error(res, "--run-id", "'../outside'", "not a valid id")
    assert not (tmp_path / "lakehouse").exists() and not (tmp_path / "outside").exists()


@pytest.mark.parametrize("run_id", ["20261129", "r1", "nightly-2026-11-29", "a.b_c-d", "x" * 64])
def test_good_run_ids_pass(run_id: str) -> None:
    from sparkpromo.config import check_path_id
    from sparkpromo.pipeline import RunContext

    assert check_path_id(run_id, "--run-id") == run_id
    assert RunContext(run_id, dt.date(2026, 11, 29)).run_id == run_id


def test_run_context_refuses_a_path_id() -> None:
    from sparkpromo.config import ConfigError
    from sparkpromo.pipeline import RunContext

    with pytest.raises(ConfigError, match="run id"):
        RunContext("../../registry", dt.date(2026, 11, 29))


def test_forget_needs_the_key_before_spark(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "SPARKPROMO_HMAC_KEY"}
    res = subprocess.run([sys.executable, "-m", "sparkpromo.cli", "forget", "--conf-dir", str(CONF_DIR), "--user",
                          "u1"], cwd=tmp_path, capture_output=True, text=True, env=env, timeout=120)
    assert_usage_error(res, "SPARKPROMO_HMAC_KEY", "forgotten ids")


@pytest.mark.parametrize(("args", "needle"), [
    (["--users-file", "missing.txt"], "--users-file: cannot read missing.txt"),
    (["--users-file", "empty.txt"], "holds no id"),
    (["--user", "u1", "--users-file", "empty.txt"], "not allowed with argument"),
    ([], "one of the arguments --user --users-file is required"),
])
def test_forget_arguments_checked(tmp_path: Path, args: list[str], needle: str) -> None:
    (tmp_path / "empty.txt").write_text("\n  \n")
    res = cli("forget", "--conf-dir", str(CONF_DIR), *args, cwd=tmp_path,
              env={"SPARKPROMO_HMAC_KEY": "0123456789abcdef0123"})
    assert_usage_error(res, needle)


def test_remote_lakehouse_with_mlflow_needs_a_tracking_uri(tmp_path: Path) -> None:
    """MLflow on a remote lakehouse without a tracking URI: one line naming the key, exit 2, before Spark starts
    (a file store on the driver's disk would vanish with the driver)."""
    pytest.importorskip("mlflow")  # the test extra installs mlflow-skinny; without it the error is "not installed"
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "DATABRICKS_RUNTIME_VERSION")}
    res = subprocess.run([sys.executable, "-m", "sparkpromo.cli", "train", "--conf-dir", str(CONF_DIR),
                          "--set", "lakehouse=s3a://shop-bucket/lake", "--set", "mlflow.enabled=true"],
                         cwd=tmp_path, capture_output=True, text=True, env=env, timeout=120)
    assert_usage_error(res, "mlflow.tracking_uri", "s3a://shop-bucket/lake")
    assert not (tmp_path / "mlruns").exists()


def test_run_sample_merges_small_data_settings_that_a_config_file_overrides(tmp_path: Path) -> None:
    from sparkpromo.cli import _prepare

    _, sample = _prepare(["run", "--sample", "--conf-dir", str(CONF_DIR)])
    assert sample.spark.shuffle_partitions == 2 and sample.train.grid.rank == (8,)
    assert sample.spark.conf["spark.sql.adaptive.enabled"] == "false"
    assert sample.spark.conf["spark.sql.codegen.wholeStage"] == "false"
    _, own = _prepare(["train", "--conf-dir", str(CONF_DIR)])
    assert own.spark.shuffle_partitions == 8 and "spark.sql.adaptive.enabled" not in own.spark.conf
    mine = tmp_path / "mine.yaml"
    mine.write_text("spark:\n  conf:\n    spark.sql.adaptive.enabled: 'true'\n")
    _, overridden = _prepare(["run", "--sample", "--conf-dir", str(CONF_DIR), "--config", str(mine)])
    assert overridden.spark.conf["spark.sql.adaptive.enabled"] == "true"
    assert overridden.spark.conf["spark.sql.codegen.wholeStage"] == "false"
