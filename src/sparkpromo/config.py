"""YAML configuration: base file + environment overlay (+ optional extra files), validated into frozen dataclasses.

Every error is a :class:`ConfigError` whose message names the file and the dotted key, so the CLI can print one
line and exit with code 2 before any SparkSession exists.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import yaml

from sparkpromo import columns as C

ENVIRONMENTS = ("local", "cluster", "databricks")
SOURCE_FORMATS = ("csv", "json", "parquet")
SOURCE_KINDS = ("events", "ratings")
METRICS = ("ndcg", "precision", "recall", "map")
SPLITS = ("random", "last_days", "leave_last_k")
SEARCHES = ("grid", "random")
DEDUPE_MODES = ("exact", "sum_quantity")
CONSENT_CHOICES = ("granted", "denied")
# File name patterns (globs) read from a landing directory when a source names none: the format's extensions.
DEFAULT_PATTERNS = {"csv": ("*.csv",), "json": ("*.json", "*.jsonl"), "parquet": ("*.parquet",)}
CAMPAIGN_TYPES = ("welcome", "birthday", "cart_threshold", "bundle", "generic")
RULE_OPERATORS = ("eq", "ne", "lt", "le", "gt", "ge", "in", "not_in", "between", "is_null", "not_null")
CAMPAIGN_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
# A run id names a registry folder and a report file: one path component, never `..`, no separator, no NUL.
RUN_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
# Canonical columns a source may map; the value is whether the column is required for that source.
MAPPABLE_EVENT_COLUMNS = (C.EVENT_ID, C.USER_ID, C.ITEM_ID, C.EVENT_TYPE, C.EVENT_TS, C.PRICE, C.QUANTITY,
                          C.RATING, C.SESSION_ID)
MAPPABLE_USER_COLUMNS = (C.USER_ID, C.SIGNUP_DATE, C.BIRTH_DATE, C.COUNTRY, C.MARKETING_CONSENT)
MAPPABLE_ITEM_COLUMNS = (C.ITEM_ID, C.CATEGORY, C.BRAND, C.PRICE, C.STOCK, C.ITEM_NAME)
# Columns that campaign rules may reference: user-level and item-level feature columns.
USER_RULE_FIELDS = ("country", "age_band", "marketing_consent", "signup_date", "days_since_signup", "active_days",
                    "sessions", "purchases", "monetary", "recency_days", "cart_value", "top_category")
ITEM_RULE_FIELDS = ("category", "brand", "price", "stock", "price_band", "popularity", "conversion_rate")

_ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
_ENV_VAR_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class ConfigError(ValueError):
    """A configuration problem; ``str()`` is a one-line message naming the file and key."""


_URI_USERINFO_RE = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<info>[^/@\s]+)@")
_URI_SECRET_PARAM_RE = re.compile(r"(?i)(?P<name>[?&](?:sig|token|access_token|key|password|secret|credential)[^=&]*=)"
                                  r"[^&#\s]*")


def redact_uri(text: str) -> str:
    """``text`` with the credentials of any URI in it masked: ``https://user:pass@host`` -> ``https://***@host``,
    and the values of secret-looking query parameters (``sig=``, ``token=``, ``password=``...) -> ``***``."""
    text = _URI_USERINFO_RE.sub(lambda m: f"{m['scheme']}***@", text)
    return _URI_SECRET_PARAM_RE.sub(lambda m: f"{m['name']}***", text)


def check_path_id(value: str, what: str) -> str:
    """``value`` if it is safe as one path component (:data:`RUN_ID_RE`, no ``..``); else :class:`ConfigError`
    naming ``what`` (the argument or key it came from)."""
    if not RUN_ID_RE.fullmatch(value) or ".." in value:  # fullmatch: `$` alone accepts a trailing newline
        raise ConfigError(f"{what}: {value!r} is not a valid id (1-64 letters, digits, '.', '_' or '-', starting "
                          "with a letter or digit, no '..')")
    return value


# ----------------------------------------------------------------------------------------------------------------
# Sections
# ----------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SparkSettings:
    app_name: str = "sparkpromo"
    # Used only when nothing (spark-submit, Databricks) has supplied a master already.
    master: str = "local[*]"
    shuffle_partitions: int = 8
    driver_memory: str = "2g"
    checkpoint_dir: str = ""  # "" = <lakehouse>/_checkpoints
    log_level: str = "WARN"
    # A Spark Connect server, sc://host:port[/;options]; "" = $SPARK_REMOTE, else a classic session.
    remote: str = ""
    conf: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class FileSource:
    path: str
    format: str = "csv"
    options: Mapping[str, str] = field(default_factory=dict)
    # canonical column -> source column; unmapped canonical columns take their own name if present
    columns: Mapping[str, str] = field(default_factory=dict)
    # "" = ISO-8601 (with optional offset), "unix" = epoch seconds, otherwise a Spark datetime pattern
    timestamp_format: str = ""
    # source event name (case-insensitive) -> canonical event type
    event_type_map: Mapping[str, str] = field(default_factory=dict)
    # every row gets this event type (e.g. a purchase-only transaction log)
    constant_event_type: str = ""
    # file name globs read from a landing directory; () = the format's extensions (DEFAULT_PATTERNS). Other files
    # are skipped and listed; a path naming one file is always read.
    patterns: tuple[str, ...] = ()
    # canonical column -> regular expression: rows whose value matches it wholly are quarantined as `excluded`
    # (e.g. non-product codes, cancellation invoices)
    exclude: Mapping[str, str] = field(default_factory=dict)
    # events without an event id: "exact" drops repeated identical rows as duplicates, "sum_quantity" sums the
    # quantities of identical rows within one file (a line bought twice); "" = sum_quantity for a purchase log
    # (constant_event_type: purchase), exact otherwise
    dedupe: str = ""
    # events: more valid events than this by one user on one day quarantines that user's events as
    # bot_activity; None = clean.bot_max_events_per_day for event logs, off for ratings; 0 = off
    bot_max_events_per_day: int | None = None

    def file_patterns(self) -> tuple[str, ...]:
        return self.patterns or DEFAULT_PATTERNS[self.format]

    def dedupe_mode(self) -> str:
        if self.dedupe:
            return self.dedupe
        return "sum_quantity" if self.constant_event_type == C.PURCHASE else "exact"


@dataclass(frozen=True)
class SourcesConfig:
    events: FileSource
    kind: str = "events"
    users: FileSource | None = None
    items: FileSource | None = None


@dataclass(frozen=True)
class GenerateConfig:
    events: int = 20_000
    users: int = 0  # 0 = derived from events
    items: int = 0  # 0 = derived from events
    seed: int = 7
    days: int = 60
    dirty: bool = True
    # true: the shop as one landing batch per day of the `days` ending on the run date (late and re-sent events
    # across days), and `run --sample` runs once per day as each batch arrives; `--days N` sets it
    daily: bool = False
    # `generate --respond-to`: each listed user buys in the attribution window with this probability, plus the
    # campaign type's true uplift for each campaign the user was treated (not control) in.
    response_base_rate: float = 0.10
    response_uplift: Mapping[str, float] = field(default_factory=lambda: {
        "welcome": 0.06, "birthday": 0.03, "cart_threshold": 0.04, "bundle": 0.0, "generic": 0.02})


@dataclass(frozen=True)
class CleanConfig:
    bot_max_events_per_day: int = 1000
    future_tolerance_minutes: int = 60
    max_string_length: int = 256
    allow_schema_evolution: bool = False
    # A source whose rows fail one rule in a larger share than this stops the run before silver is written.
    max_reject_share: float = 0.5


@dataclass(frozen=True)
class PrivacyConfig:
    pseudonymise: bool = False
    key_env: str = "SPARKPROMO_HMAC_KEY"
    # Marketing consent of every user when there is no users source, or the users source has no consent column:
    # granted | denied. No silent default: such a configuration must say which.
    consent_without_users: str = ""
    # Source columns (canonical or as the source names them) kept out of quarantine payloads: the rejected row is
    # stored without them, and an unparsable line has their values masked.
    personal_columns: tuple[str, ...] = ("birth_date", "email", "phone", "name", "address")
    # delta.logRetentionDuration of every lakehouse table: how long a commit file (and the statistics of a table
    # created before ids were kept out of them) outlives a `forget`. Train's incumbent gate time-travels to the
    # version its model was fitted on, so this bounds how old an incumbent can be re-scored too.
    log_retention_days: int = 30

    def consent_default(self) -> bool | None:
        """The stated consent for users without a consent column (None: not stated)."""
        return {"granted": True, "denied": False}.get(self.consent_without_users)


# The privacy settings a clean's outcome depends on (the log retention is a table property, not a rule).
CLEAN_PRIVACY_KEYS = ("pseudonymise", "key_env", "consent_without_users", "personal_columns")


@dataclass(frozen=True)
class FeaturesConfig:
    event_weights: Mapping[str, float] = field(
        default_factory=lambda: {C.VIEW: 1.0, C.FAVORITE: 2.0, C.ADD_TO_CART: 4.0, C.PURCHASE: 8.0,
                                C.RATING_EVENT: 1.0})
    half_life_days: float = 30.0
    max_count_per_type: int = 10
    session_gap_minutes: int = 30
    price_bands: tuple[float, ...] = (10.0, 50.0, 200.0)
    # ratings sources: ratings below this are not interactions (0 = keep every rating)
    min_rating: float = 0.0
    # Days of silver events the gold features are built from, counted back from the decay reference (the earlier
    # of the run date and the last event date); 0 = every event. Two years keeps the bundled examples whole.
    lookback_days: int = 730


@dataclass(frozen=True)
class GridConfig:
    rank: tuple[int, ...] = (8, 16)
    reg_param: tuple[float, ...] = (0.1,)
    alpha: tuple[float, ...] = (10.0,)
    max_iter: tuple[int, ...] = (8,)
    # true: implicit ALS (confidence 1 + alpha * value); false: explicit ALS fitted to rating values (ratings
    # sources only). Listing both lets CV choose by the ranking metric.
    implicit_prefs: tuple[bool, ...] = (True,)
    # nonnegative factors: slower per iteration and, on the data measured so far, a worse ranking
    nonnegative: tuple[bool, ...] = (False,)


@dataclass(frozen=True)
class TrainConfig:
    k: int = 10
    metric: str = "ndcg"
    folds: int = 2
    parallelism: int = 1
    seed: int = 42
    split: str = "random"
    test_fraction: float = 0.2
    test_days: int = 7
    leave_last_k: int = 1
    checkpoint_interval: int = 5
    champion_gate: bool = True
    # The model in service is replaced only when the new champion scores at least incumbent * (1 - margin) on
    # ``metric`` over this run's holdout (relative; 0 = never worse, 1 = always publish).
    incumbent_margin: float = 0.02
    # grid: every point of ``grid``; random: ``trials`` points sampled from the grid's ranges (seeded by ``seed``)
    search: str = "grid"
    trials: int = 8
    grid: GridConfig = field(default_factory=GridConfig)


@dataclass(frozen=True)
class Condition:
    field: str
    op: str
    value: Any = None


@dataclass(frozen=True)
class Rule:
    all: tuple[Condition, ...] = ()
    any: tuple[Condition, ...] = ()


@dataclass(frozen=True)
class Offer:
    discount_pct: float = 0.0
    # "" = "<CAMPAIGN-ID>-{code}" when the offer has a discount, no coupon otherwise. {code}: 10 characters derived
    # from campaign, run and (pseudonymous) user, never the user id itself; {campaign}: the campaign id.
    coupon_template: str = ""
    # "" = the campaign type's default (see recommend.DEFAULT_OFFER_TEXT); placeholders {campaign} (its name),
    # {discount}, {item_name}, {coupon}
    text: str = ""


@dataclass(frozen=True)
class Campaign:
    id: str
    type: str
    valid_from: dt.date
    valid_to: dt.date
    name: str = ""
    priority: int = 0
    top_k: int = 5
    budget: int = 0  # max users served; 0 = unlimited
    control_share: float = 0.1
    offer: Offer = field(default_factory=Offer)
    # welcome
    signup_within_days: int = 30
    # cart_threshold
    cart_threshold: float = 0.0
    cart_slack: float = 0.0
    lookback_days: int = 14
    # bundle
    min_co_occurrence: int = 2
    # generic
    audience: Rule | None = None
    items: Rule | None = None


@dataclass(frozen=True)
class RecommendConfig:
    candidates: int = 100
    max_offers_per_user: int = 2
    max_per_category: int = 0  # 0 = no diversity cap
    repeatable_categories: tuple[str, ...] = ("grocery",)
    segment: str = "country"  # country | age_band
    reasons: int = 2
    # A campaign with a budget scores only its ``budget * budget_shortlist`` audience users of highest ALS affinity
    # (0 = score the whole audience).
    budget_shortlist: int = 4


@dataclass(frozen=True)
class MeasureConfig:
    # Days after a run date in which a served or control user's purchases count for that run (its attribution
    # window); a (campaign, run date) is measured once its window has closed by the measure run's date.
    window_days: int = 7
    # Fewer users than this in either arm (treated or control) marks a result `small_sample`: shown, not trusted.
    min_users: int = 100
    # true: pause a campaign whose conversion uplift CI lies wholly below zero in its last `min_runs` measured runs.
    pause_negative: bool = False
    min_runs: int = 3
    # true: re-split the summed budgets of budgeted campaigns in proportion to their measured incremental revenue
    # per offer (campaigns without a budget keep none).
    reallocate_budgets: bool = False


@dataclass(frozen=True)
class MlflowConfig:
    enabled: bool = False
    experiment: str = "sparkpromo"
    tracking_uri: str = ""  # "" = MLFLOW_TRACKING_URI or a local file store under the lakehouse


@dataclass(frozen=True)
class AppConfig:
    sources: SourcesConfig
    env: str = "local"
    lakehouse: str = "lakehouse"
    landing: str = "lakehouse/landing"
    spark: SparkSettings = field(default_factory=SparkSettings)
    generate: GenerateConfig = field(default_factory=GenerateConfig)
    clean: CleanConfig = field(default_factory=CleanConfig)
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)
    features: FeaturesConfig = field(default_factory=FeaturesConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    recommend: RecommendConfig = field(default_factory=RecommendConfig)
    campaigns: tuple[Campaign, ...] = ()
    measure: MeasureConfig = field(default_factory=MeasureConfig)
    mlflow: MlflowConfig = field(default_factory=MlflowConfig)

    def table(self, layer: str, name: str) -> str:
        """URI of a Delta table, e.g. ``table("silver", "events")``."""
        return join_uri(self.lakehouse, layer, name)

    @property
    def checkpoint_dir(self) -> str:
        return self.spark.checkpoint_dir or join_uri(self.lakehouse, "_checkpoints")

    def stream_checkpoint(self, *parts: str) -> str:
        """URI of a streaming query's checkpoint, e.g. ``stream_checkpoint("ingest", "events")``.

        Always under the lakehouse, never under ``spark.checkpoint_dir``: it records which landing files the bronze
        tables already hold, so it must live and be deleted together with them, not in a scratch directory."""
        return join_uri(self.lakehouse, "_checkpoints", *parts)


# ----------------------------------------------------------------------------------------------------------------
# Paths
# ----------------------------------------------------------------------------------------------------------------
_SCHEME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


def has_scheme(path: str) -> bool:
    return bool(_SCHEME_RE.match(path))


def join_uri(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *(p.strip("/") for p in parts)])


def local_path(uri: str) -> Path | None:
    """The local filesystem path of a ``file:`` URI or a plain path; None for remote URIs (s3a:, abfss:, dbfs:)."""
    if uri.startswith("file:"):
        return Path(re.sub(r"^file:(//)?", "", uri))
    return None if has_scheme(uri) else Path(uri)


def _absolutise(path: str, base_dir: Path) -> str:
    if not path or has_scheme(path):
        return path
    p = Path(path)
    return str(p if p.is_absolute() else (base_dir / p).resolve())


# ----------------------------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------------------------
def default_conf_dir() -> Path:
    return Path(os.environ.get("SPARKPROMO_CONF_DIR", "conf"))


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: unreadable config file ({e.__class__.__name__})") from None
    try:
        data = yaml.safe_load(text)  # safe_load: no Python object tags, ever
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{path}:{where}: invalid YAML: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    return data


def _merge(base: dict[str, Any], overlay: dict[str, Any], origin: dict[str, str], src: str,
           prefix: str = "") -> dict[str, Any]:
    """Deep-merge ``overlay`` into ``base``; record in ``origin`` which file set each dotted key."""
    out = dict(base)
    for key, value in overlay.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and isinstance(out.get(key), dict) and key != "columns":
            out[key] = _merge(out[key], value, origin, src, dotted + ".")
        else:
            out[key] = value
            _record(origin, dotted, value, src)
    return out


def _record(origin: dict[str, str], dotted: str, value: Any, src: str) -> None:
    origin[dotted] = src
    if isinstance(value, dict):
        for k, v in value.items():
            _record(origin, f"{dotted}.{k}", v, src)


def _expand_env(value: Any) -> Any:
    if isinstance(value, str):
        def repl(m: re.Match[str]) -> str:
            name, default = m.group(1), m.group(2)
            if name in os.environ:
                return os.environ[name]
            if default is not None:
                return default
            raise KeyError(name)
        return _ENV_VAR_RE.sub(repl, value)
    if isinstance(value, dict):
        return {k: _expand_env(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand_env(v) for v in value]
    return value


def load_config(env: str = "local", conf_dir: str | Path | None = None, extra: typing.Sequence[str | Path] = (),
                overrides: Mapping[str, Any] | None = None, check_inputs: bool = False) -> AppConfig:
    """Load ``base.yaml``, the ``<env>.yaml`` overlay, then any extra files, in that order of precedence."""
    conf_dir = Path(conf_dir) if conf_dir is not None else default_conf_dir()
    if env not in ENVIRONMENTS:
        raise ConfigError(f"--env: unknown environment '{env}' (expected one of {', '.join(ENVIRONMENTS)})")
    files = [conf_dir / "base.yaml", conf_dir / f"{env}.yaml", *(Path(p) for p in extra)]
    origin: dict[str, str] = {}
    merged: dict[str, Any] = {}
    for f in files:
        merged = _merge(merged, _read_yaml(f), origin, str(f))
    if overrides:
        for dotted, value in overrides.items():
            merged = _merge(merged, _nest(dotted, value), origin, "--set")
    merged["env"] = env
    cfg = build_config(merged, origin, default_file=str(files[-1]))
    if check_inputs:
        check_input_paths(cfg)
    return cfg


def _nest(dotted: str, value: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    cur = out
    parts = dotted.split(".")
    for p in parts[:-1]:
        cur = cur.setdefault(p, {})
    cur[parts[-1]] = value
    return out


def build_config(data: Mapping[str, Any], origin: Mapping[str, str] | None = None,
                 default_file: str = "<config>", base_dir: Path | None = None) -> AppConfig:
    """Validate a merged mapping into an :class:`AppConfig`."""
    origin = origin or {}
    where = _Where(origin, default_file)
    try:
        data = _expand_env(dict(data))
    except KeyError as e:
        raise ConfigError(f"{default_file}: environment variable {e.args[0]} is referenced but not set") from None
    cfg = _convert(AppConfig, data, "", where)
    base_dir = base_dir or Path.cwd()
    cfg = dataclasses.replace(
        cfg,
        lakehouse=_absolutise(cfg.lakehouse, base_dir),
        landing=_absolutise(cfg.landing, base_dir),
        sources=_resolve_sources(cfg.sources, base_dir),
    )
    _validate(cfg, where)
    return cfg


def _resolve_sources(s: SourcesConfig, base_dir: Path) -> SourcesConfig:
    def fix(fs: FileSource | None) -> FileSource | None:
        return None if fs is None else dataclasses.replace(fs, path=_absolutise(fs.path, base_dir))
    return dataclasses.replace(s, events=fix(s.events), users=fix(s.users), items=fix(s.items))


def check_input_paths(cfg: AppConfig) -> None:
    """Fail before Spark starts when a local input path does not exist (remote URIs are checked by Spark)."""
    for name in ("events", "users", "items"):
        src: FileSource | None = getattr(cfg.sources, name)
        if src is None:
            continue
        p = local_path(src.path)
        if p is not None and not p.exists() and not any(ch in src.path for ch in "*?["):
            raise ConfigError(f"sources.{name}.path: input path does not exist: {src.path}")


# ----------------------------------------------------------------------------------------------------------------
# Generic conversion of a mapping into the typed dataclasses
# ----------------------------------------------------------------------------------------------------------------
class _Where:
    def __init__(self, origin: Mapping[str, str], default_file: str) -> None:
        self.origin = origin
        self.default_file = default_file

    def file_of(self, key: str) -> str:
        parts = key.split(".")
        for i in range(len(parts), 0, -1):
            f = self.origin.get(".".join(parts[:i]))
            if f:
                return f
        return self.default_file

    def error(self, key: str, msg: str) -> ConfigError:
        return ConfigError(f"{self.file_of(key)}: {key}: {msg}")


def _convert(tp: Any, value: Any, key: str, where: _Where) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _convert(inner[0], value, key, where)
    if dataclasses.is_dataclass(tp):
        return _convert_dataclass(tp, value, key, where)
    if tp is Any:
        if isinstance(value, (dict, set)):
            raise where.error(key, "expected a scalar or list")
        return tuple(value) if isinstance(value, list) else value
    if origin is tuple:
        if not isinstance(value, list):
            raise where.error(key, f"expected a list, got {_tname(value)}")
        return tuple(_convert(args[0], v, f"{key}[{i}]", where) for i, v in enumerate(value))
    if origin in (Mapping, dict, typing.Mapping):
        if not isinstance(value, dict):
            raise where.error(key, f"expected a mapping, got {_tname(value)}")
        return types.MappingProxyType(
            {str(k): _convert(args[1], v, f"{key}.{k}", where) for k, v in value.items()})
    if tp is bool:
        if not isinstance(value, bool):
            raise where.error(key, f"expected true/false, got {_tname(value)} {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise where.error(key, f"expected an integer, got {_tname(value)} {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise where.error(key, f"expected a number, got {_tname(value)} {value!r}")
        return float(value)
    if tp is str:
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise where.error(key, f"expected a string, got {_tname(value)}")
        return str(value)
    if tp is dt.date:
        if isinstance(value, dt.datetime):
            return value.date()
        if isinstance(value, dt.date):
            return value
        if isinstance(value, str):
            try:
                return dt.date.fromisoformat(value)
            except ValueError:
                pass
        raise where.error(key, f"expected a date (YYYY-MM-DD), got {value!r}")
    raise where.error(key, f"unsupported type {tp}")  # pragma: no cover - programming error


def _convert_dataclass(tp: Any, value: Any, key: str, where: _Where) -> Any:
    if not isinstance(value, dict):
        raise where.error(key or "<root>", f"expected a mapping, got {_tname(value)}")
    hints = typing.get_type_hints(tp)
    flds = {f.name: f for f in dataclasses.fields(tp)}
    for k in value:
        if k not in flds:
            full = f"{key}.{k}" if key else str(k)
            raise where.error(full, f"unknown key (expected one of: {', '.join(sorted(flds))})")
    kwargs: dict[str, Any] = {}
    for name, f in flds.items():
        full = f"{key}.{name}" if key else name
        if name in value:
            kwargs[name] = _convert(hints[name], value[name], full, where)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise where.error(full, "missing required key")
    return tp(**kwargs)


def _tname(v: Any) -> str:
    return {dict: "mapping", list: "list", str: "string", bool: "boolean", int: "integer",
            float: "number", type(None): "null"}.get(type(v), type(v).__name__)


# ----------------------------------------------------------------------------------------------------------------
# Semantic validation
# ----------------------------------------------------------------------------------------------------------------
def _validate(cfg: AppConfig, where: _Where) -> None:
    def need(cond: bool, key: str, msg: str) -> None:
        if not cond:
            raise where.error(key, msg)

    need(bool(cfg.lakehouse), "lakehouse", "must not be empty")
    need(cfg.spark.shuffle_partitions > 0, "spark.shuffle_partitions", "must be > 0")
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
        need(w > 0, f"features.event_weights.{et}", "must be > 0")
    need(f.half_life_days > 0, "features.half_life_days", "must be > 0")
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
                    _check_value(cond, ck, where)
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


def _check_value(cond: Condition, key: str, where: _Where) -> None:
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
    for x in values:
        if not isinstance(x, (str, int, float, bool, dt.date)):
            raise where.error(f"{key}.value", f"unsupported value {x!r}")
