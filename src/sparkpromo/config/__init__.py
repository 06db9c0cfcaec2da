"""YAML configuration: base file + environment overlay (+ optional extra files), validated into frozen dataclasses.

Every error is a :class:`ConfigError` whose message names the file and the dotted key, so the CLI can print one
line and exit with code 2 before any SparkSession exists.
"""

from __future__ import annotations

from sparkpromo.config.loading import _read_yaml, build_config, check_input_paths, default_conf_dir, load_config
from sparkpromo.config.model import (
    CAMPAIGN_ID_RE,
    CAMPAIGN_TYPES,
    CLEAN_PRIVACY_KEYS,
    CONSENT_CHOICES,
    DEDUPE_MODES,
    DEFAULT_PATTERNS,
    ENVIRONMENTS,
    ITEM_RULE_FIELDS,
    MAPPABLE_EVENT_COLUMNS,
    MAPPABLE_ITEM_COLUMNS,
    MAPPABLE_USER_COLUMNS,
    METRICS,
    RULE_OPERATORS,
    RUN_ID_RE,
    SEARCHES,
    SOURCE_FORMATS,
    SOURCE_KINDS,
    SPLITS,
    USER_RULE_FIELDS,
    AppConfig,
    Campaign,
    CleanConfig,
    Condition,
    ConfigError,
    FeaturesConfig,
    FileSource,
    GenerateConfig,
    GridConfig,
    MeasureConfig,
    MlflowConfig,
    Offer,
    PrivacyConfig,
    RecommendConfig,
    Rule,
    SourcesConfig,
    SparkSettings,
    TrainConfig,
    check_path_id,
    redact_uri,
)
from sparkpromo.config.paths import has_scheme, join_uri, local_path

__all__ = [
    "AppConfig", "CAMPAIGN_ID_RE", "CAMPAIGN_TYPES", "CLEAN_PRIVACY_KEYS", "CONSENT_CHOICES", "Campaign",
    "CleanConfig", "Condition", "ConfigError", "DEDUPE_MODES", "DEFAULT_PATTERNS", "ENVIRONMENTS",
    "FeaturesConfig", "FileSource", "GenerateConfig", "GridConfig", "ITEM_RULE_FIELDS", "MAPPABLE_EVENT_COLUMNS",
    "MAPPABLE_ITEM_COLUMNS", "MAPPABLE_USER_COLUMNS", "METRICS", "MeasureConfig", "MlflowConfig", "Offer",
    "PrivacyConfig", "RULE_OPERATORS", "RUN_ID_RE", "RecommendConfig", "Rule", "SEARCHES", "SOURCE_FORMATS",
    "SOURCE_KINDS", "SPLITS", "SourcesConfig", "SparkSettings", "TrainConfig", "USER_RULE_FIELDS", "_read_yaml",
    "build_config", "check_input_paths", "check_path_id", "default_conf_dir", "has_scheme", "join_uri",
    "load_config", "local_path", "redact_uri",
]
