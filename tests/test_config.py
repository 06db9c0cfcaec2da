"""Config loading and validation: every error names the file and the key, and nothing needs Spark."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from sparkpromo.config import ConfigError, load_config
from tests.conftest import CONF_DIR


def write(tmp_path: Path, text: str, name: str = "extra.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def error_of(tmp_path: Path, text: str) -> str:
    extra = write(tmp_path, text)
    with pytest.raises(ConfigError) as exc:
        load_config("local", CONF_DIR, [extra])
    msg = str(exc.value)
    assert "\n" not in msg, "config errors are one line"
    return msg


@pytest.mark.parametrize("env", ["local", "cluster", "databricks"])
def test_every_environment_loads(env: str) -> None:
    cfg = load_config(env, CONF_DIR)
    assert cfg.env == env
    assert {c.type for c in cfg.campaigns} == {"welcome", "birthday", "cart_threshold", "bundle", "generic"}


def test_overlay_wins_over_base() -> None:
    base = load_config("local", CONF_DIR)
    cluster = load_config("cluster", CONF_DIR)
    assert cluster.spark.shuffle_partitions == 64 != base.spark.shuffle_partitions
    assert cluster.train.k == base.train.k  # untouched keys come from base


def test_config_is_frozen() -> None:
    cfg = load_config("local", CONF_DIR)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.lakehouse = "elsewhere"  # type: ignore[misc]
    with pytest.raises(TypeError):
        cfg.sources.events.columns["x"] = "y"  # type: ignore[index]


def test_relative_lakehouse_is_under_working_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SPARKPROMO_LAKEHOUSE", raising=False)
    cfg = load_config("local", CONF_DIR)
    assert cfg.lakehouse == str(tmp_path / "lakehouse")
    assert cfg.table("silver", "events") == str(tmp_path / "lakehouse" / "silver" / "events")


@pytest.mark.parametrize("uri", ["s3a://bucket/lake", "abfss://c@acct.dfs.core.windows.net/lake", "dbfs:/lake",
                                 "file:///tmp/lake"])
def test_uri_lakehouse_kept_verbatim(tmp_path: Path, uri: str) -> None:
    cfg = load_config("local", CONF_DIR, [write(tmp_path, f"lakehouse: '{uri}'\n")])
    assert cfg.lakehouse == uri
    assert cfg.table("gold", "interactions") == f"{uri}/gold/interactions"


def test_env_var_expansion(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPARKPROMO_LAKEHOUSE", "s3a://b/x")
    assert load_config("cluster", CONF_DIR).lakehouse == "s3a://b/x"


def test_unknown_key_names_file_and_key(tmp_path: Path) -> None:
    msg = error_of(tmp_path, "train:\n  foldz: 3\n")
    assert "extra.yaml" in msg and "train.foldz" in msg and "unknown key" in msg


def test_unknown_top_level_key(tmp_path: Path) -> None:
    assert "extra.yaml: bogus: unknown key" in error_of(tmp_path, "bogus: 1\n")


def test_wrong_type_names_file_and_key(tmp_path: Path) -> None:
    msg = error_of(tmp_path, "train:\n  folds: three\n")
    assert "extra.yaml: train.folds: expected an integer" in msg


def test_wrong_type_in_base_names_base(tmp_path: Path) -> None:
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "base.yaml").write_text((CONF_DIR / "base.yaml").read_text().replace("shuffle_partitions: 8",
                                                                                 "shuffle_partitions: [8]"))
    (conf / "local.yaml").write_text("{}\n")
    with pytest.raises(ConfigError, match=r"base\.yaml: spark\.shuffle_partitions: expected an integer"):
        load_config("local", conf)


def test_bool_is_not_an_int(tmp_path: Path) -> None:
    assert "train.k: expected an integer" in error_of(tmp_path, "train:\n  k: true\n")


def test_semantic_validation(tmp_path: Path) -> None:
    assert "train.metric: must be one of" in error_of(tmp_path, "train:\n  metric: rmse2\n")
    assert "train.grid.rank: must list at least one value" in error_of(tmp_path, "train:\n  grid:\n    rank: []\n")
    assert "features.event_weights.click: unknown event type" in error_of(
        tmp_path, "features:\n  event_weights: {click: 1.0}\n")
    assert "recommend.budget_shortlist: must be >= 0" in error_of(tmp_path, "recommend:\n  budget_shortlist: -1\n")


def test_unknown_mapped_canonical_column(tmp_path: Path) -> None:
    msg = error_of(tmp_path, "sources:\n  events:\n    columns: {colour: c}\n")
    assert "sources.events.columns.colour: unknown canonical column" in msg


def test_missing_input_path(tmp_path: Path) -> None:
    extra = write(tmp_path, f"sources:\n  events:\n    path: {tmp_path}/nope\n")
    with pytest.raises(ConfigError, match=r"sources\.events\.path: input path does not exist"):
        load_config("local", CONF_DIR, [extra], check_inputs=True)


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config("local", CONF_DIR, [tmp_path / "absent.yaml"])


def test_invalid_yaml(tmp_path: Path) -> None:
    assert "invalid YAML" in error_of(tmp_path, "train: [unclosed\n")


def test_python_object_tags_rejected(tmp_path: Path) -> None:
    msg = error_of(tmp_path, "train: !!python/object/apply:os.system ['echo pwned']\n")
    assert "invalid YAML" in msg


def test_unknown_environment() -> None:
    with pytest.raises(ConfigError, match="unknown environment 'prod'"):
        load_config("prod", CONF_DIR)


def test_unset_env_var_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SPARKPROMO_TEST_UNSET", raising=False)
    assert "SPARKPROMO_TEST_UNSET is referenced but not set" in error_of(
        tmp_path, "lakehouse: ${SPARKPROMO_TEST_UNSET}\n")


def test_overrides() -> None:
    cfg = load_config("local", CONF_DIR, overrides={"train.folds": 4, "train.grid.rank": [3]})
    assert cfg.train.folds == 4 and cfg.train.grid.rank == (3,)


def test_example_configs_load() -> None:
    ml = load_config("local", CONF_DIR, [CONF_DIR / "examples" / "movielens.yaml"])
    assert ml.sources.kind == "ratings" and ml.sources.users is None
    assert ml.sources.events.timestamp_format == "unix"
    gro = load_config("local", CONF_DIR, [CONF_DIR / "examples" / "grocery.yaml"])
    assert gro.sources.events.constant_event_type == "purchase"


CAMPAIGN = """
campaigns:
  - id: {id}
    type: {type}
    valid_from: 2026-01-01
    valid_to: {valid_to}
    top_k: {top_k}
{extra}
"""


def campaign_error(tmp_path: Path, id: str = "c1", type: str = "welcome", valid_to: str = "2026-12-31",
                   top_k: int = 3, extra: str = "") -> str:
    return error_of(tmp_path, CAMPAIGN.format(id=id, type=type, valid_to=valid_to, top_k=top_k, extra=extra))


def test_campaign_errors_name_campaign_and_field(tmp_path: Path) -> None:
    assert "campaigns[c1].type: unknown campaign type 'raffle'" in campaign_error(tmp_path, type="raffle")
    assert "campaigns[c1].valid_to: empty validity window" in campaign_error(tmp_path, valid_to="2025-01-01")
    assert "campaigns[c1].top_k: must be > 0" in campaign_error(tmp_path, top_k=0)


@pytest.mark.parametrize("bad_id", ["../etc", "a/b", "a b", "x;drop", ".."])
def test_campaign_id_rejected(tmp_path: Path, bad_id: str) -> None:
    assert "invalid campaign id" in campaign_error(tmp_path, id=f"'{bad_id}'")


def test_rule_rejects_unknown_field_and_operator(tmp_path: Path) -> None:
    rule = "    audience:\n      all:\n        - {field: %s, op: %s, value: 1}\n"
    assert "unknown field 'password'" in campaign_error(tmp_path, type="generic", extra=rule % ("password", "eq"))
    assert "unknown operator 'like'" in campaign_error(tmp_path, type="generic", extra=rule % ("purchases", "like"))


def test_overlapping_windows_rejected(tmp_path: Path) -> None:
    text = CAMPAIGN.format(id="a", type="welcome", valid_to="2026-06-30", top_k=3, extra="") + \
        "  - {id: b, type: welcome, valid_from: 2026-06-01, valid_to: 2026-12-31, top_k: 3}\n"
    assert "campaigns[b].valid_from: validity window overlaps campaign 'a'" in error_of(tmp_path, text)
