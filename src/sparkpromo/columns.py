"""Column names, defined once. Every module refers to these constants, never to string literals."""

from __future__ import annotations

# --- canonical event columns (silver.events) ---
EVENT_ID = "event_id"
USER_ID = "user_id"
ITEM_ID = "item_id"
EVENT_TYPE = "event_type"
EVENT_TS = "event_ts"
PRICE = "price"
QUANTITY = "quantity"
RATING = "rating"
SESSION_ID = "session_id"
EVENT_DATE = "event_date"

# --- users (silver.users) ---
SIGNUP_DATE = "signup_date"
BIRTH_DATE = "birth_date"  # bronze only: reduced to month/day at the silver boundary
BIRTH_MONTH = "birth_month"
BIRTH_DAY = "birth_day"
AGE_BAND = "age_band"
COUNTRY = "country"
MARKETING_CONSENT = "marketing_consent"

# --- items (silver.items) ---
CATEGORY = "category"
BRAND = "brand"
STOCK = "stock"
ITEM_NAME = "name"  # a product's name or description, for people reading offers

# --- ingestion metadata (bronze) ---
SOURCE_FILE = "_source_file"
INGEST_TS = "_ingest_ts"
RUN_ID = "_run_id"

# --- quarantine ---
Q_SOURCE = "source"  # events | users | items
Q_RULE = "rule"
Q_PAYLOAD = "payload"  # the raw bronze row as JSON

# --- gold ---
USER_IDX = "user_idx"
ITEM_IDX = "item_idx"
CONFIDENCE = "confidence"
ID_KIND = "kind"  # user | item
ORIGINAL_ID = "original_id"
IDX = "idx"

# --- model output / recommendations ---
SCORE = "score"  # gold.recommendations: calibrated relevance in [0, 1]
RAW_SCORE = "raw_score"  # the source's own score (ALS rating, popularity count, co-occurrence)
RANK = "rank"
PREDICTION = "prediction"
CAMPAIGN_ID = "campaign_id"
RUN_DATE = "run_date"
MODEL_RUN_ID = "model_run_id"
SOURCE = "source"  # als | segment_popularity | global_popularity | ...
IS_CONTROL = "is_control"
OFFER = "offer"
REASON = "reason"

# --- canonical event types, weakest to strongest signal ---
VIEW = "view"
FAVORITE = "favorite"
ADD_TO_CART = "add_to_cart"
PURCHASE = "purchase"
RATING_EVENT = "rating"
EVENT_TYPES: tuple[str, ...] = (VIEW, FAVORITE, ADD_TO_CART, PURCHASE)
ALL_EVENT_TYPES: tuple[str, ...] = (*EVENT_TYPES, RATING_EVENT)
# Events after which an item is the user's already: bought, or rated (a film seen). Serving leaves these out
# (unless the category is repeatable), and so does the served evaluation (evaluate.purchased_pairs).
CONSUMED_EVENT_TYPES: tuple[str, ...] = (PURCHASE, RATING_EVENT)

# --- model stage: features.py, evaluate.py, train.py ---
# user features (names match config.USER_RULE_FIELDS)
ACTIVE_DAYS = "active_days"
SESSIONS = "sessions"
PURCHASES = "purchases"
MONETARY = "monetary"
RECENCY_DAYS = "recency_days"
AVG_SESSION_SECONDS = "avg_session_seconds"
CART_VALUE = "cart_value"
TOP_CATEGORY = "top_category"
DAYS_SINCE_SIGNUP = "days_since_signup"
# item features (names match config.ITEM_RULE_FIELDS)
POPULARITY = "popularity"
CONVERSION_RATE = "conversion_rate"
PRICE_BAND = "price_band"
# evaluation: top-K lists and holdout labels (array<double> for RankingEvaluator)
RECOMMENDATIONS = "recommendations"
LABEL = "label"
FOLD = "_fold"
# metrics/model Delta table (its run id is RUN_ID, as in every table; before, it was LEGACY_RUN_ID)
LEGACY_RUN_ID = "run_id"
CONTENDER = "contender"
METRIC = "metric"
VALUE = "value"

# --- campaigns / recommendations: campaigns.py, recommend/ ---
MIN_PRICE = "min_price"  # per-user eligible price band of an audience (cart_threshold), null = unbounded
MAX_PRICE = "max_price"
LINE_VALUE = "line_value"  # value of one open cart line
OTHER_ITEM_ID = "other_item_id"  # item-to-item co-occurrence
CO_COUNT = "co_count"
SEGMENT = "segment"  # the user's value of recommend.segment (country or age_band)
AFFINITY = "affinity"  # a user's mean ALS score over a campaign's eligible items (budget shortlist)
LEVEL = "level"  # candidate precedence: 0 primary (als/popularity/bundle), 1 segment, 2 global popularity
DELIVERED = "delivered"  # false for control-group rows: kept for uplift, never sent
DISCOUNT_PCT = "discount_pct"
COUPON_CODE = "coupon_code"
CAMPAIGN_NAME = "campaign_name"
OFFER_TEXT = "text"

# --- campaign outcomes and uplift: measure.py (metrics/campaign_outcomes, metrics/uplift) ---
MEASURED_ON = "measured_on"  # the run date of the measure run that wrote the row
STATUS = "status"  # ok | small_sample | window_open | no_control | no_treated
IN_CONFIG = "in_config"  # false: the campaign is no longer configured (its past runs are still measured)
WINDOW_END = "window_end"  # last day of the attribution window (inclusive)
DECILE = "decile"  # 1 = the top-scored tenth of a campaign's listed users
CONVERTED = "converted"  # any purchase in the window
OFFER_CONVERTED = "offer_converted"  # a purchase of an item on the user's list in the window
REVENUE = "revenue"  # purchase value in the window (price x quantity)
OFFER_REVENUE = "offer_revenue"  # purchase value of listed items in the window
USER_SCORE = "user_score"  # the user's best listed score in the campaign (the ALS score of their first offer)
CAMPAIGN_TYPE = "campaign_type"
USERS_TREATED = "users_treated"
USERS_CONTROL = "users_control"
CONVERSIONS_TREATED = "conversions_treated"
CONVERSIONS_CONTROL = "conversions_control"
CONVERSION_TREATED = "conversion_treated"  # share of treated users with a purchase in the window
CONVERSION_CONTROL = "conversion_control"
UPLIFT = "uplift"  # conversion_treated - conversion_control (absolute, a share)
UPLIFT_RELATIVE = "uplift_relative"  # uplift / conversion_control
UPLIFT_CI_LOW = "uplift_ci_low"  # 95% two-proportion (Wald, unpooled) interval of the uplift
UPLIFT_CI_HIGH = "uplift_ci_high"
OFFER_CONVERSION_TREATED = "offer_conversion_treated"  # share with a purchase of an item on their list
OFFER_CONVERSION_CONTROL = "offer_conversion_control"
OFFER_UPLIFT = "offer_uplift"
OFFER_UPLIFT_CI_LOW = "offer_uplift_ci_low"
OFFER_UPLIFT_CI_HIGH = "offer_uplift_ci_high"
REVENUE_TREATED = "revenue_per_user_treated"
REVENUE_CONTROL = "revenue_per_user_control"
REVENUE_UPLIFT = "revenue_uplift"  # per user, treated - control
REVENUE_UPLIFT_CI_LOW = "revenue_uplift_ci_low"  # 95% Welch interval
REVENUE_UPLIFT_CI_HIGH = "revenue_uplift_ci_high"
INCREMENTAL_CONVERSIONS = "incremental_conversions"  # uplift x users_treated
INCREMENTAL_REVENUE = "incremental_revenue"  # revenue_uplift x users_treated
DISCOUNT_COST = "discount_cost"  # discount given on treated users' purchases of listed items
INCREMENTAL_ROI = "incremental_roi"  # (incremental_revenue - discount_cost) / discount_cost
AUUC = "auuc"  # area under the Qini curve (incremental conversions x share of users targeted)
AUUC_RANDOM = "auuc_random"  # the same area for random targeting (the diagonal)
QINI_COEFFICIENT = "qini_coefficient"  # auuc - auuc_random: > 0 when the score finds the persuadable users
CUM_SHARE = "cum_share"  # share of a campaign run's listed users in deciles 1..d
QINI = "qini"  # cumulative incremental conversions of deciles 1..d
QINI_RANDOM = "qini_random"
ACTION = "action"  # campaign_actions: pause | budget
ACTION_VALUE = "action_value"
ACTION_REASON = "action_reason"

# privacy.forgotten
ID_HASH = "id_hash"
FORGOTTEN_AT = "forgotten_at"
