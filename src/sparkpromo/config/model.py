"""The configuration's typed model: one frozen dataclass per section, and the allowed values."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sparkpromo import columns as C
from sparkpromo.config.paths import join_uri

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
# registry/<run_id>.r2/, .r3/, ...: a run trained again while its model is in service (recommend/registry.py).
RETRAINED_SEPARATOR = ".r"
RETRAINED_SUFFIX_RE = re.compile(re.escape(RETRAINED_SEPARATOR) + "[0-9]+$")
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
    if RETRAINED_SUFFIX_RE.search(value):
        raise ConfigError(f"{what}: {value!r} is not a valid id (a '.r<number>' ending names the registry entry of "
                          "a run trained again)")
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
    # A user listed (treated or control) on run date d is not listed again by this campaign on d+1..d+N. None: the
    # type's own period (welcome: signup_within_days, birthday: its 7-day window; others 0 = every run)
    recontact_after_days: int | None = None
    # any type: narrow the audience and the items (a generic campaign's audience is its rule alone)
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


__all__ = [
    "ENVIRONMENTS", "SOURCE_FORMATS", "SOURCE_KINDS", "METRICS", "SPLITS", "SEARCHES", "DEDUPE_MODES",
    "CONSENT_CHOICES", "DEFAULT_PATTERNS", "CAMPAIGN_TYPES", "RULE_OPERATORS", "CAMPAIGN_ID_RE", "RUN_ID_RE",
    "RETRAINED_SEPARATOR", "RETRAINED_SUFFIX_RE",
    "MAPPABLE_EVENT_COLUMNS", "MAPPABLE_USER_COLUMNS", "MAPPABLE_ITEM_COLUMNS", "USER_RULE_FIELDS",
    "ITEM_RULE_FIELDS", "ConfigError", "redact_uri", "check_path_id", "SparkSettings", "FileSource",
    "SourcesConfig", "GenerateConfig", "CleanConfig", "PrivacyConfig", "CLEAN_PRIVACY_KEYS", "FeaturesConfig",
    "GridConfig", "TrainConfig", "Condition", "Rule", "Offer", "Campaign", "RecommendConfig", "MeasureConfig",
    "MlflowConfig", "AppConfig",
]
