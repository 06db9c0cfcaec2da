"""Every example command in ``--help`` and in the README runs as written: its arguments parse and its
configuration loads and validates (campaign ids included), with the data paths it names taken as given."""

from __future__ import annotations

import re
import shlex

import pytest

from sparkpromo import cli, forget
from tests.conftest import CONF_DIR

ROOT = CONF_DIR.parent
FENCE = re.compile(r"```(?:bash|sh)?\n(.*?)```", re.S)


def _commands(text: str) -> list[str]:
    """The ``sparkpromo ...`` commands in shell text (comments, line continuations and ``&&`` chains handled)."""
    out = []
    for line in text.replace("\\\n", " ").splitlines():
        for part in line.split("&&"):
            words = shlex.split(part, comments=True)
            if any(w.rsplit("/", 1)[-1] == "sparkpromo" for w in words):
                out.append(part.strip())
    return out


def _argv(command: str) -> tuple[list[str], list[str]]:
    """``(VAR=value assignments, arguments after sparkpromo)``."""
    words = shlex.split(command, comments=True)
    start = next(i for i, w in enumerate(words) if w.rsplit("/", 1)[-1] == "sparkpromo")
    return words[:start], words[start + 1:]


def help_examples() -> list[str]:
    return [c for text in cli.EXAMPLES.values() for c in _commands(text)]


def readme_examples() -> list[str]:
    return [c for block in FENCE.findall((ROOT / "README.md").read_text()) for c in _commands(block)]


def test_there_are_examples_for_every_command() -> None:
    assert {_argv(c)[1][0] for c in help_examples()} == set(cli.EXAMPLES)
    assert readme_examples(), "README.md has no sparkpromo command in a code block"


@pytest.mark.parametrize("command", sorted(set(help_examples() + readme_examples())))
def test_example_runs_as_written(command: str, monkeypatch: pytest.MonkeyPatch) -> None:
    assignments, argv = _argv(command)
    for assignment in assignments:
        name, _, value = assignment.partition("=")
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(ROOT)
    # The examples name the user's own data: whether it is there is not the example's fault.
    monkeypatch.setattr(cli, "check_input_paths", lambda _cfg: None)
    monkeypatch.setattr(forget, "read_ids_file", lambda _path: ["u000123"])
    # forget needs the privacy key (README "Privacy"): the shop's secret, set in its environment, not in the example.
    monkeypatch.setenv("SPARKPROMO_HMAC_KEY", "0123456789abcdef0123")
    args, cfg = cli._prepare(argv)
    assert args.command in cli.EXAMPLES
    if args.command == "explain" and args.campaign:
        assert args.campaign in {c.id for c in cfg.campaigns}


def test_explain_rejects_an_unknown_campaign_before_spark(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    with pytest.raises(cli.UsageError, match="no campaign 'welcome'"):
        cli._prepare(["explain", "--user", "u1", "--campaign", "welcome"])


def test_run_sample_merges_the_sample_grid(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    _, sample = cli._prepare(["run", "--sample"])
    _, plain = cli._prepare(["run", "--sample", "--set", "train.grid.rank=[8, 16]"])
    assert sample.train.grid.rank == (8,) and plain.train.grid.rank == (8, 16)
