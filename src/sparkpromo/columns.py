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
SCORE = "score"
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
