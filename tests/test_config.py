"""Config loading and validation: every error names the file and the key, and nothing needs Spark."""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from sparkpromo import columns as C
from sparkpromo import config
from sparkpromo.config import (
    AppConfig,
    CleanConfig,
    ConfigError,
    FeaturesConfig,
    FileSource,
    GenerateConfig,
    GridConfig,
    MeasureConfig,
    MlflowConfig,
    PrivacyConfig,
    RecommendConfig,
    SparkSettings,
    TrainConfig,
    load_config,
)
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
    assert "features.lookback_days: must be >= 0" in error_of(tmp_path, "features:\n  lookback_days: -1\n")
    assert "train.search: must be one of grid, random" in error_of(tmp_path, "train:\n  search: bayes\n")
    assert "train.trials: must be >= 1" in error_of(tmp_path, "train:\n  trials: 0\n")
    assert "train.incumbent_margin: must be between 0 and 1" in error_of(tmp_path, "train:\n  incumbent_margin: -0.1\n")
    assert "train.grid.reg_param: random search samples it log-uniformly" in error_of(
        tmp_path, "train:\n  search: random\n  grid:\n    reg_param: [0, 0.1]\n")
    # values that once passed here and failed only after Spark had started (exit 1, a traceback)
    assert "features.session_gap_minutes: must be > 0" in error_of(tmp_path, "features:\n  session_gap_minutes: 0\n")
    assert "features.event_weights.purchase: must be > 0 and finite" in error_of(
        tmp_path, "features:\n  event_weights: {purchase: .inf}\n")
    assert "features.half_life_days: must be > 0 and finite" in error_of(
        tmp_path, "features:\n  half_life_days: .nan\n")
    assert "spark.log_level: must be one of ALL, DEBUG" in error_of(tmp_path, "spark:\n  log_level: WARNING\n")
    assert "lakehouse: holds a NUL character" in error_of(tmp_path, 'lakehouse: "lh\\0x"\n')
    assert "sources.events.path: holds a NUL character" in error_of(tmp_path, 'sources:\n  events:\n    path: "e\\0"\n')


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


def test_a_set_of_one_column_keeps_the_rest_of_the_mapping_and_a_whole_mapping_replaces_it() -> None:
    example = [CONF_DIR / "examples" / "movielens.yaml"]
    mapped = dict(load_config("local", CONF_DIR, example).sources.events.columns)
    assert len(mapped) > 2 and mapped[C.USER_ID] != "uid"
    one = load_config("local", CONF_DIR, example, overrides={"sources.events.columns.user_id": "uid"})
    assert dict(one.sources.events.columns) == {**mapped, C.USER_ID: "uid"}
    with pytest.raises(ConfigError, match="must map its rating column"):  # a whole mapping replaces the file's
        load_config("local", CONF_DIR, example, overrides={"sources.events.columns": {C.USER_ID: "uid"}})
    base = dict(load_config("local", CONF_DIR).sources.events.columns)
    assert dict(load_config("local", CONF_DIR, overrides={"sources.events.columns.user_id": "uid"})
                .sources.events.columns) == {**base, C.USER_ID: "uid"}


def test_example_configs_load() -> None:
    ml = load_config("local", CONF_DIR, [CONF_DIR / "examples" / "movielens.yaml"])
    assert ml.sources.kind == "ratings" and ml.sources.users is None
    assert ml.sources.events.timestamp_format == "unix"
    gro = load_config("local", CONF_DIR, [CONF_DIR / "examples" / "grocery.yaml"])
    assert gro.sources.events.constant_event_type == "purchase"


# ----------------------------------------------------------------------------------------------------------------
# conf/base.yaml states every key of every section, and what it states is what the pipeline uses
# ----------------------------------------------------------------------------------------------------------------
# dotted path in base.yaml -> the dataclass that section is read into
BASE_SECTIONS: dict[str, type] = {
    "spark": SparkSettings,
    "generate": GenerateConfig,
    "clean": CleanConfig,
    "privacy": PrivacyConfig,
    "features": FeaturesConfig,
    "train": TrainConfig,
    "train.grid": GridConfig,
    "recommend": RecommendConfig,
    "measure": MeasureConfig,
    "mlflow": MlflowConfig,
    "sources.events": FileSource,
}


def base_yaml() -> dict[str, Any]:
    return yaml.safe_load((CONF_DIR / "base.yaml").read_text())


def yaml_section(data: dict[str, Any], dotted: str) -> Any:
    for part in dotted.split("."):
        data = data[part]
    return data


def config_section(cfg: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        cfg = getattr(cfg, part)
    return cfg


def plain(value: Any) -> Any:
    """A config value as YAML would state it: dataclasses and mappings as dicts, tuples as lists."""
    if dataclasses.is_dataclass(value):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [plain(v) for v in value]
    return value


@pytest.mark.parametrize("dotted", sorted(BASE_SECTIONS))
def test_base_yaml_lists_every_key(dotted: str) -> None:
    section = yaml_section(base_yaml(), dotted)
    assert isinstance(section, dict), f"base.yaml: {dotted} must be a mapping"
    missing = [f.name for f in dataclasses.fields(BASE_SECTIONS[dotted]) if f.name not in section]
    assert missing == [], f"conf/base.yaml: {dotted} lacks key(s) {missing}: give each its default value"


@pytest.mark.parametrize("dotted", sorted(BASE_SECTIONS))
def test_base_yaml_is_the_effective_default(dotted: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # base.yaml alone: an empty environment overlay, no environment variables, paths relative to tmp_path
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "base.yaml").write_text((CONF_DIR / "base.yaml").read_text())
    (conf / "local.yaml").write_text("{}\n")
    for var in ("SPARKPROMO_LAKEHOUSE", "SPARKPROMO_LANDING"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)
    stated = dict(yaml_section(base_yaml(), dotted))
    if "path" in stated:  # ${VAR:-default} with VAR unset, then made absolute
        stated["path"] = str((tmp_path / re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", stated["path"])).resolve())
    effective = plain(config_section(load_config("local", conf), dotted))
    differ = {k: (stated.get(k, "<absent>"), v) for k, v in effective.items() if stated.get(k, "<absent>") != v}
    assert differ == {}, f"base.yaml {dotted}: (stated, effective) differ"


CHOICE_SETS = ("SOURCE_KINDS", "SOURCE_FORMATS", "METRICS", "SPLITS", "SEARCHES", "DEDUPE_MODES", "CONSENT_CHOICES",
               "CAMPAIGN_TYPES", "RULE_OPERATORS", "USER_RULE_FIELDS", "ITEM_RULE_FIELDS")
CHOICES: dict[str, tuple[str, ...]] = {name: getattr(config, name) for name in CHOICE_SETS}


@pytest.mark.parametrize("name", sorted(CHOICES))
def test_base_yaml_comments_list_every_choice(name: str) -> None:
    # Only comment text counts (a value set somewhere documents no choice), and every choice of one set must sit
    # within two consecutive lines, so a stray word elsewhere cannot stand in for a missing choice.
    comments = [line.split("#", 1)[1] if "#" in line else "" for line in
                (CONF_DIR / "base.yaml").read_text().splitlines()]
    windows = [" ".join(comments[i:i + 2]) for i in range(len(comments))]

    def lists(window: str, choice: str) -> bool:
        return re.search(rf"(?<![\w-]){re.escape(choice)}(?![\w-])", window) is not None

    best = max(windows, key=lambda w: sum(lists(w, c) for c in CHOICES[name]))
    missing = [c for c in CHOICES[name] if not lists(best, c)]
    assert missing == [], f"no comment in conf/base.yaml lists every {name} choice; closest lacks {missing}"


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


def test_rule_values_of_the_wrong_type_are_refused_before_spark_starts(tmp_path: Path) -> None:
    """A value a rule's column cannot be compared with once failed only in recommend, after four stages had run."""
    rule = "    audience:\n      all:\n        - {field: %s, op: %s, value: %s}\n"
    assert ("campaigns[c1].audience.all[0].value: rule field 'country' (string) cannot be compared with 44"
            in campaign_error(tmp_path, type="generic", extra=rule % ("country", "eq", "44")))
    assert "cannot be compared with '3'" in campaign_error(tmp_path, type="generic",
                                                             extra=rule % ("purchases", "ge", "'3'"))
    assert "'soon' is not a date" in campaign_error(tmp_path, type="generic",
                                                    extra=rule % ("signup_date", "ge", "soon"))
    items = "    items:\n      any:\n        - {field: price, op: between, value: [1, 'ten']}\n"
    assert "campaigns[c1].items.any[0].value: rule field 'price' (double) cannot be compared with 'ten'" in \
        campaign_error(tmp_path, type="generic", extra=items)


def test_overlapping_windows_rejected(tmp_path: Path) -> None:
    text = CAMPAIGN.format(id="a", type="welcome", valid_to="2026-06-30", top_k=3, extra="") + \
        "  - {id: b, type: welcome, valid_from: 2026-06-01, valid_to: 2026-12-31, top_k: 3}\n"
    assert "campaigns[b].valid_from: validity window overlaps campaign 'a'" in error_of(tmp_path, text)


def test_measure_errors_name_the_key(tmp_path: Path) -> None:
    assert "measure.window_days: must be between 1 and 365" in error_of(tmp_path, "measure:\n  window_days: 0\n")
    assert "measure.min_runs: must be >= 1" in error_of(tmp_path, "measure:\n  min_runs: 0\n")
    assert "measure.min_users: must be >= 1" in error_of(tmp_path, "measure:\n  min_users: 0\n")
    assert "measure.pause_negative: expected true/false" in error_of(tmp_path, "measure:\n  pause_negative: 1\n")
    assert "measure.window: unknown key" in error_of(tmp_path, "measure:\n  window: 3\n")
    assert "generate.response_uplift.raffle: unknown campaign type" in error_of(
        tmp_path, "generate:\n  response_uplift: {raffle: 0.1}\n")
    assert "generate.response_base_rate: must be in [0, 1)" in error_of(
        tmp_path, "generate:\n  response_base_rate: 1.5\n")


def test_log_retention_must_be_positive_and_becomes_the_sessions_table_default(tmp_path: Path) -> None:
    from sparkpromo.session import session_settings

    assert "privacy.log_retention_days: must be > 0" in error_of(tmp_path, "privacy: {log_retention_days: 0}\n")
    cfg = load_config("local", CONF_DIR, [write(tmp_path, "privacy: {log_retention_days: 7}\n")])
    assert session_settings(cfg)["spark.databricks.delta.properties.defaults.logRetentionDuration"] == \
        "interval 7 days"


def test_log_retention_is_no_rule_so_changing_it_does_not_rebuild_silver(tmp_path: Path) -> None:
    from sparkpromo.clean import settings_fingerprint
    from sparkpromo.pipeline import stage_fingerprint

    def config_fingerprint(cfg: AppConfig, stage: str) -> object:
        return stage_fingerprint(cfg, stage, dt.date(2026, 11, 1))["config"]

    base = load_config("local", CONF_DIR)
    longer = load_config("local", CONF_DIR, [write(tmp_path, "privacy: {log_retention_days: 90}\n")])
    masked = load_config("local", CONF_DIR, [write(tmp_path, "privacy: {personal_columns: [email]}\n", "m.yaml")])
    assert settings_fingerprint(longer) == settings_fingerprint(base) != settings_fingerprint(masked)
    assert config_fingerprint(longer, "clean") == config_fingerprint(base, "clean") != \
        config_fingerprint(masked, "clean")


def _differences(code: Any, yaml_side: Any, path: str = "") -> list[str]:
    if dataclasses.is_dataclass(code) and not isinstance(code, type):
        return [d for f in dataclasses.fields(code)
                for d in _differences(getattr(code, f.name), getattr(yaml_side, f.name), f"{path}.{f.name}")]
    return [] if code == yaml_side else [f"{path}: code {code!r}, base.yaml {yaml_side!r}"]


def test_base_yaml_restates_the_code_defaults_and_nothing_else() -> None:
    """conf/base.yaml documents every default; the values live in config.py's dataclasses, and the two never
    disagree (a run and a test built without base.yaml get the same pipeline)."""
    from sparkpromo.config import _read_yaml, build_config, default_conf_dir

    base = _read_yaml(default_conf_dir() / "base.yaml")
    required = {k: base[k] for k in ("sources", "campaigns") if k in base}
    assert _differences(build_config(required), build_config(base)) == []
    # The check itself sees a difference.
    changed = {**base, "train": {**base["train"], "folds": base["train"]["folds"] + 1}}
    assert _differences(build_config(required), build_config(changed)) == [
        f".train.folds: code {base['train']['folds']}, base.yaml {base['train']['folds'] + 1}"]
