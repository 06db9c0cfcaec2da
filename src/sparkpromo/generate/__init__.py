"""Deterministic generator of a realistic online shop's raw landing files: pure Python + numpy, no Spark.

Everything is drawn from one ``numpy.random.default_rng(seed)``, so the same arguments give byte-identical files.

Files under ``out_dir`` (exactly what the ``sources:`` section of ``conf/base.yaml`` reads):

* ``events/part-00000.csv``, ``part-00001.csv``, ... -- CSV with the header
  ``event_id,user_id,product_id,event_type,event_time,price,quantity,session_id``, at most ``ROWS_PER_PART`` data
  rows per file. ``event_time`` is ISO-8601 UTC (``2026-10-01T12:34:56Z``); event types are ``view``,
  ``favorite``, ``add_to_cart``, ``purchase``; ``price`` (2 decimals, the item's catalogue price) and ``quantity``
  (int >= 1) are set on ``add_to_cart``/``purchase`` rows and blank on ``view``/``favorite`` rows. Rows are in time
  order with increasing event ids, except the re-sent duplicates (a later exact copy of an earlier row).
* ``users/users.jsonl`` -- JSON lines with ``user_id`` (``u000123``), ``signup_date`` and ``birth_date``
  (``YYYY-MM-DD``), ``country`` (ISO-2, skewed over 8 countries), ``marketing_consent`` (JSON bool, ~85% true).
* ``items/items.csv`` -- CSV with the header ``product_id,category,brand,price,stock`` (``p00042``).
* ``_generation_report.json`` -- the :class:`GenerationReport` (paths relative to ``out_dir``).

The window: valid events lie in ``[end - days, end)`` (UTC, ``end`` exclusive, default ``DEFAULT_END``), so the last
event day is ``end - 1``. Behaviour: sessions of a few events minutes apart, Zipf-like item popularity, per-user
affinity for 1-3 categories, view -> add_to_cart -> purchase funnels (a purchase always follows a cart of the same
item in the same session, at checkout at the end of the session; a cart follows a view of the item), ~6% of users
signed up in the last 30 days before ``end`` (a third of them in the last 3 days; a quarter of them have no
events), birthdays spread over the year, plenty of abandoned carts worth >= 50.

Dirty records (``dirty=True`` only). Each dirty row carries exactly ONE defect, so every kind is countable, and the
exact count of each kind is in ``GenerationReport.dirt``. Count = ``max(1, round(share * denominator))``:

======================  ======  ============================================================================
kind                    share   what (share of ``n_events`` unless said otherwise)
======================  ======  ============================================================================
missing_required        0.5%    user_id, product_id or event_type is the empty string
unknown_event_type      0.5%    event_type in ``UNKNOWN_EVENT_TYPES`` (click, hover, scroll, share)
malformed_timestamp     0.3%    event_time in ``MALFORMED_TIMESTAMPS``
future_timestamp        0.3%    a valid event_time 100 to 104 years after ``end`` (after any ingest)
negative_value          0.3%    an add_to_cart/purchase row with a negative price or negative quantity
duplicate_event         1.0%    an exact re-sent copy of an earlier clean row (same event_id), a few rows later
unknown_user            0.5%    user_id not in users.jsonl (looks valid, e.g. ``u012345``)
unknown_item            0.5%    product_id not in items.csv (looks valid)
whitespace_case_noise   5.0%    FIXABLE, not to be rejected: event_type upper/title-cased and/or padded with
                                spaces (`` VIEW ``, ``Add_To_Cart``) or user_id/product_id padded with spaces
user_duplicate          0.2%    of users: an exact copy of a valid user line
user_bad_birth_date     0.2%    of users: an extra user (no events) whose birth_date is in ``BAD_BIRTH_DATES``
user_blank_id           0.1%    of users: an extra user line whose user_id is ``""``
item_negative_price     0.25%   of items: an extra item (no events) with a negative price
item_blank_id           0.25%   of items: an extra item row whose product_id is blank
======================  ======  ============================================================================

Bots (also ``dirty=True`` only): ``min(2 + n_events // 2_000_000, (n_events // 4) // BOT_MAX_VIEWS)`` extra users
(none below 4,800 events, 1 below 9,600, 2 from there up to 2M, 7 at 10M) that exist in users.jsonl and each
produce ``BOT_MIN_VIEWS`` to ``BOT_MAX_VIEWS - 1`` views of random items within ONE UTC day (so a filter at 1000
events/day catches them; organic users stay far below it unless ``n_users`` is set absurdly small). Bot events
COUNT WITHIN ``n_events``: the event files always hold exactly ``n_events`` data rows (organic + dirty + duplicates +
bot views). Bot rows are otherwise clean. ``dirt["bot_users"]`` and ``dirt["bot_events"]`` hold their counts.

For a cleaner: valid rows = ``events - duplicate_event - bot_events - sum(REJECTED_EVENT_KINDS)``, reported as
``GenerationReport.expected_clean_events`` (the whitespace/case-noise rows are among the valid ones). Only
generated files are removed before writing (``events/part-*.csv``, the users and items files, the daily batches
below); temporary files are hidden (``.name.tmp``).

Daily batches (:func:`generate_daily`): the same shop, row for row, as one batch per arrival day: mostly that day's
events, ``LATE_SHARE`` of rows sent 1 to ``MAX_LATE_DAYS`` days late, and every re-sent duplicate sent again 1 to
``MAX_LATE_DAYS`` days after its original (so most duplicates cross days); users exported on their signup day plus
daily updates of users already sent, the catalogue on the first day plus daily stock updates. They are staged under
``_daily/<day>/`` and :func:`deliver_day` moves one day into the landing zone as ``events/events-<day>.csv``,
``users/users-<day>.jsonl`` and ``items/items-<day>.csv`` (names the default source patterns read).
"""

from sparkpromo.generate.daily import *  # noqa: F403
from sparkpromo.generate.responses import *  # noqa: F403
from sparkpromo.generate.shop import *  # noqa: F403
from sparkpromo.generate.spec import *  # noqa: F403
