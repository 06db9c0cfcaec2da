"""Semantic validation of a converted configuration (ranges, references, combinations)."""

from __future__ import annotations

import datetime as dt
import math
import re
from typing import Any

from pyspark.sql.types import BooleanType, DataType, DateType, NumericType, StringType, TimestampType

from sparkpromo import columns as C
from sparkpromo import schemas as S
from sparkpromo.config.convert import _Where
from sparkpromo.config.model import (
    _ENV_NAME_RE,
    CAMPAIGN_ID_RE,
    CAMPAIGN_TYPES,
    CONSENT_CHOICES,
    DEDUPE_MODES,
    ITEM_RULE_FIELDS,
    MAPPABLE_EVENT_COLUMNS,
    MAPPABLE_ITEM_COLUMNS,
    MAPPABLE_USER_COLUMNS,
    METRICS,
    RULE_OPERATORS,
    SEARCHES,
    SOURCE_FORMATS,
    SOURCE_KINDS,
    SPLITS,
    USER_RULE_FIELDS,
    AppConfig,
    Campaign,
    Condition,
    ConfigError,
    FileSource,
    Rule,
)


# ----------------------------------------------------------------------------------------------------------------
# Semantic validation
# ----------------------------------------------------------------------------------------------------------------
def _validate(cfg: AppConfig, where: _Where) -> None:
    def need(cond: bool, key: str, msg: str) -> None:
        if not cond:
            raise where.error(key, msg)

    need(bool(cfg.lakehouse), "lakehouse", "must not be empty")
    need(cfg.spark.shuffle_partitions > 0, "spark.shuffle_partitions", "must be > 0")
    need(cfg.spark.log_level.upper() in SPARK_LOG_LEVELS, "spark.log_level",
         f"must be one of {', '.join(sorted(SPARK_LOG_LEVELS))}, got {cfg.spark.log_level!r}")
    need(not cfg.spark.remote or cfg.spark.remote.startswith("sc://"), "spark.remote",
         f"must be a Spark Connect URL sc://host:port, got {cfg.spark.remote!r}")
    need(cfg.generate.events >= 1_000, "generate.events", "must be at least 1000")
    need(cfg.generate.days >= 1, "generate.days", "must be >= 1")
    g = cfg.generate
    need(0 <= g.response_base_rate < 1, "generate.response_base_rate", "must be in [0, 1)")
    for kind, lift in g.response_uplift.items():
        need(kind in CAMPAIGN_TYPES, f"generate.response_uplift.{kind}",
             f"unknown campaign type (expected one of: {', '.join(CAMPAIGN_TYPES)})")
        need(-g.response_base_rate <= lift <= 1 - g.response_base_rate, f"generate.response_uplift.{kind}",
             "base rate + uplift must stay within [0, 1]")
    need(g.response_base_rate + sum(max(0.0, v) for v in g.response_uplift.values()) <= 1,
         "generate.response_uplift", "base rate + every positive uplift must be at most 1")
    need(cfg.sources.kind in SOURCE_KINDS, "sources.kind", f"must be one of {', '.join(SOURCE_KINDS)}")
    for name, allowed in (("events", MAPPABLE_EVENT_COLUMNS), ("users", MAPPABLE_USER_COLUMNS),
                          ("items", MAPPABLE_ITEM_COLUMNS)):
        src: FileSource | None = getattr(cfg.sources, name)
        if src is None:
            continue
        k = f"sources.{name}"
        need(bool(src.path), f"{k}.path", "must not be empty")
        need(src.format in SOURCE_FORMATS, f"{k}.format", f"must be one of {', '.join(SOURCE_FORMATS)}")
        for canon, col in src.columns.items():
            need(canon in allowed, f"{k}.columns.{canon}",
                 f"unknown canonical column (expected one of: {', '.join(allowed)})")
            need(bool(col), f"{k}.columns.{canon}", "source column name must not be empty")
        for raw, canon in src.event_type_map.items():
            need(canon in C.ALL_EVENT_TYPES, f"{k}.event_type_map.{raw}",
                 f"unknown event type '{canon}' (expected one of: {', '.join(C.ALL_EVENT_TYPES)})")
        if src.constant_event_type:
            need(src.constant_event_type in C.ALL_EVENT_TYPES, f"{k}.constant_event_type",
                 f"unknown event type '{src.constant_event_type}'")
        need(not src.dedupe or src.dedupe in DEDUPE_MODES, f"{k}.dedupe",
             f"must be one of {', '.join(DEDUPE_MODES)}")
        need(src.bot_max_events_per_day is None or src.bot_max_events_per_day >= 0,
             f"{k}.bot_max_events_per_day", "must be >= 0 (0 = off)")
        need(all(bool(p) for p in src.patterns), f"{k}.patterns", "patterns must not be empty")
        for canon, pattern in src.exclude.items():
            need(canon in allowed, f"{k}.exclude.{canon}",
                 f"unknown canonical column (expected one of: {', '.join(allowed)})")
            try:
                re.compile(pattern)
            except re.error as e:
                raise where.error(f"{k}.exclude.{canon}", f"invalid regular expression ({e})") from None
    if cfg.sources.kind == "ratings":
        need(C.RATING in cfg.sources.events.columns, "sources.events.columns.rating",
             "a ratings source must map its rating column")
    # Secrets come from the environment only: the config names the variable, it never holds the key.
    need(not cfg.privacy.consent_without_users or cfg.privacy.consent_without_users in CONSENT_CHOICES,
         "privacy.consent_without_users", f"must be one of {', '.join(CONSENT_CHOICES)}")
    if cfg.sources.users is None and not cfg.privacy.consent_without_users:
        # Named after the file that dropped the users source: that is where the statement belongs.
        raise ConfigError(f"{where.file_of('sources.users')}: privacy.consent_without_users: there is no users "
                          "source, so say whether these users consented to marketing: granted or denied")
    need(cfg.privacy.log_retention_days > 0, "privacy.log_retention_days", "must be > 0")
    need(bool(_ENV_NAME_RE.fullmatch(cfg.privacy.key_env)), "privacy.key_env",
         "must be the name of an environment variable holding the key (letters, digits, _), not the key itself")
    c = cfg.clean
    need(c.bot_max_events_per_day > 0, "clean.bot_max_events_per_day", "must be > 0")
    need(c.max_string_length > 0, "clean.max_string_length", "must be > 0")
    need(0 < c.max_reject_share <= 1, "clean.max_reject_share", "must be in (0, 1]")
    f = cfg.features
    for et, w in f.event_weights.items():
        need(et in C.ALL_EVENT_TYPES, f"features.event_weights.{et}", "unknown event type")
        need(0 < w < math.inf, f"features.event_weights.{et}", "must be > 0 and finite")
    need(0 < f.half_life_days < math.inf, "features.half_life_days", "must be > 0 and finite")
    need(f.session_gap_minutes > 0, "features.session_gap_minutes", "must be > 0")
    need(f.max_count_per_type > 0, "features.max_count_per_type", "must be > 0")
    need(list(f.price_bands) == sorted(f.price_bands), "features.price_bands", "must be ascending")
    need(f.min_rating >= 0, "features.min_rating", "must be >= 0")
    need(f.lookback_days >= 0, "features.lookback_days", "must be >= 0 (0 = every event)")
    t = cfg.train
    need(t.k > 0, "train.k", "must be > 0")
    need(t.metric in METRICS, "train.metric", f"must be one of {', '.join(METRICS)}")
    need(t.folds >= 2, "train.folds", "must be >= 2")
    need(t.parallelism >= 1, "train.parallelism", "must be >= 1")
    need(t.split in SPLITS, "train.split", f"must be one of {', '.join(SPLITS)}")
    need(0 < t.test_fraction < 1, "train.test_fraction", "must be between 0 and 1")
    need(t.test_days > 0, "train.test_days", "must be > 0")
    need(t.leave_last_k > 0, "train.leave_last_k", "must be > 0")
    need(t.checkpoint_interval > 0, "train.checkpoint_interval", "must be > 0")
    need(0 <= t.incumbent_margin <= 1, "train.incumbent_margin", "must be between 0 and 1")
    need(t.search in SEARCHES, "train.search", f"must be one of {', '.join(SEARCHES)}")
    need(t.trials >= 1, "train.trials", "must be >= 1")
    for gk in ("rank", "reg_param", "alpha", "max_iter"):
        values = getattr(t.grid, gk)
        need(len(values) > 0, f"train.grid.{gk}", "must list at least one value")
        need(all(v > 0 if gk != "reg_param" else v >= 0 for v in values), f"train.grid.{gk}",
             "values must be positive")
    need(t.search != "random" or len(set(t.grid.reg_param)) == 1 or min(t.grid.reg_param) > 0,
         "train.grid.reg_param", "random search samples it log-uniformly: values must be > 0")
    need(len(t.grid.implicit_prefs) > 0, "train.grid.implicit_prefs", "must list at least one value")
    need(len(t.grid.nonnegative) > 0, "train.grid.nonnegative", "must list at least one value")
    need(cfg.sources.kind == "ratings" or all(t.grid.implicit_prefs), "train.grid.implicit_prefs",
         "explicit ALS (false) fits rating values: it needs sources.kind: ratings")
    r = cfg.recommend
    need(r.candidates > 0, "recommend.candidates", "must be > 0")
    need(r.max_offers_per_user > 0, "recommend.max_offers_per_user", "must be > 0")
    need(r.max_per_category >= 0, "recommend.max_per_category", "must be >= 0")
    need(r.budget_shortlist >= 0, "recommend.budget_shortlist", "must be >= 0")
    need(r.segment in ("country", "age_band"), "recommend.segment", "must be country or age_band")
    m = cfg.measure
    need(1 <= m.window_days <= 365, "measure.window_days", "must be between 1 and 365")
    need(m.min_users >= 1, "measure.min_users", "must be >= 1")
    need(m.min_runs >= 1, "measure.min_runs", "must be >= 1")
    _validate_campaigns(cfg.campaigns, where)


def _validate_campaigns(campaigns: tuple[Campaign, ...], where: _Where) -> None:
    seen: set[str] = set()
    for i, camp in enumerate(campaigns):
        key = f"campaigns[{i}]"
        if not CAMPAIGN_ID_RE.match(camp.id):
            raise where.error(f"{key}.id", f"invalid campaign id {camp.id!r}: use letters, digits, '-' and '_' only")
        key = f"campaigns[{camp.id}]"
        if camp.id in seen:
            raise where.error(f"{key}.id", "duplicate campaign id")
        seen.add(camp.id)
        if camp.type not in CAMPAIGN_TYPES:
            raise where.error(f"{key}.type", f"unknown campaign type '{camp.type}' "
                                             f"(expected one of: {', '.join(CAMPAIGN_TYPES)})")
        if camp.valid_to < camp.valid_from:
            raise where.error(f"{key}.valid_to", "empty validity window: valid_to is before valid_from")
        if camp.top_k <= 0:
            raise where.error(f"{key}.top_k", "must be > 0")
        if camp.budget < 0:
            raise where.error(f"{key}.budget", "must be >= 0")
        if camp.recontact_after_days is not None and camp.recontact_after_days < 0:
            raise where.error(f"{key}.recontact_after_days", "must be >= 0 (0 = list the user on every run)")
        if not 0 <= camp.control_share < 1:
            raise where.error(f"{key}.control_share", "must be in [0, 1)")
        if not 0 <= camp.offer.discount_pct <= 100:
            raise where.error(f"{key}.offer.discount_pct", "must be between 0 and 100")
        if "{user}" in camp.offer.coupon_template:
            raise where.error(f"{key}.offer.coupon_template",
                              "{user} would put the user id into a coupon: use {code} (derived, not reversible)")
        if camp.type == "cart_threshold" and camp.cart_threshold <= 0:
            raise where.error(f"{key}.cart_threshold", "must be > 0 for a cart_threshold campaign")
        if camp.type == "generic" and camp.audience is None and camp.items is None:
            raise where.error(f"{key}.audience", "a generic campaign needs an audience or an items rule")
        for rule_name, fields_ in (("audience", USER_RULE_FIELDS), ("items", ITEM_RULE_FIELDS)):
            rule: Rule | None = getattr(camp, rule_name)
            if rule is None:
                continue
            if not rule.all and not rule.any:
                raise where.error(f"{key}.{rule_name}", "a rule needs 'all' or 'any' conditions")
            for group in ("all", "any"):
                for j, cond in enumerate(getattr(rule, group)):
                    ck = f"{key}.{rule_name}.{group}[{j}]"
                    if cond.field not in fields_:
                        raise where.error(f"{ck}.field", f"unknown field '{cond.field}' "
                                                         f"(expected one of: {', '.join(fields_)})")
                    if cond.op not in RULE_OPERATORS:
                        raise where.error(f"{ck}.op", f"unknown operator '{cond.op}' "
                                                      f"(expected one of: {', '.join(RULE_OPERATORS)})")
                    _check_value(cond, ck, where, rule_name)
    # Overlapping windows are only a problem for two campaigns of the same type and audience: the per-user
    # contact cap decides between different types, but two identical campaigns at once are a config mistake.
    by_type: dict[tuple[str, Rule | None], list[Campaign]] = {}
    for camp in campaigns:
        by_type.setdefault((camp.type, camp.audience), []).append(camp)
    for group_ in by_type.values():
        group_.sort(key=lambda x: x.valid_from)
        for a, b in zip(group_, group_[1:], strict=False):
            if b.valid_from <= a.valid_to:
                raise where.error(f"campaigns[{b.id}].valid_from",
                                  f"validity window overlaps campaign '{a.id}' of the same type and audience")


# What SparkContext.setLogLevel accepts (in any case).
SPARK_LOG_LEVELS = frozenset({"ALL", "DEBUG", "ERROR", "FATAL", "INFO", "OFF", "TRACE", "WARN"})
# The columns a campaign's rules compare, with their types: a value of another type is refused before Spark starts.
_RULE_COLUMNS = {"audience": S.USER_FEATURES, "items": S.ITEM_FEATURES}


def rule_value(field: str, dtype: DataType, value: Any) -> Any:
    """``value`` as a rule compares it with a column of type ``dtype`` (an ISO date string becomes a date);
    ValueError, one line, when the two cannot be compared."""
    if isinstance(dtype, BooleanType):
        ok = isinstance(value, bool)
    elif isinstance(dtype, NumericType):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif isinstance(dtype, StringType):
        ok = isinstance(value, str)
    elif isinstance(dtype, (DateType, TimestampType)):
        if isinstance(value, str):
            try:
                value = dt.date.fromisoformat(value)
            except ValueError:
                raise ValueError(f"rule field '{field}': {value!r} is not a date (YYYY-MM-DD)") from None
        ok = isinstance(value, dt.date)
    else:
        ok = True
    if not ok:
        raise ValueError(f"rule field '{field}' ({dtype.simpleString()}) cannot be compared with {value!r}")
    return value


def _check_value(cond: Condition, key: str, where: _Where, rule_name: str) -> None:
    v = cond.value
    if cond.op in ("is_null", "not_null"):
        if v is not None:
            raise where.error(f"{key}.value", f"operator '{cond.op}' takes no value")
        return
    if cond.op in ("in", "not_in"):
        if not isinstance(v, tuple) or not v:
            raise where.error(f"{key}.value", f"operator '{cond.op}' needs a non-empty list")
        values: tuple[Any, ...] = v
    elif cond.op == "between":
        if not isinstance(v, tuple) or len(v) != 2:
            raise where.error(f"{key}.value", "operator 'between' needs a list of two values")
        values = v
    else:
        if v is None or isinstance(v, tuple):
            raise where.error(f"{key}.value", f"operator '{cond.op}' needs a single value")
        values = (v,)
    dtype = _RULE_COLUMNS[rule_name][cond.field].dataType
    for x in values:
        if not isinstance(x, (str, int, float, bool, dt.date)):
            raise where.error(f"{key}.value", f"unsupported value {x!r}")
        try:
            rule_value(cond.field, dtype, x)
        except ValueError as e:
            raise where.error(f"{key}.value", str(e)) from None
