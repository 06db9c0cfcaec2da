"""The recommend stage: per-campaign offers from the champion model, written to ``gold/recommendations``.

Flow of :func:`run_recommend` for one ``run_date``:

1. the campaigns whose validity window contains ``run_date``; each one's audience (:mod:`sparkpromo.campaigns`;
   consenting users only) and eligible items (in stock, the campaign's ``items`` rule);
2. candidates per (campaign, user), by precedence ``level``: 0 = the primary source (ALS
   ``recommendForUserSubset`` for the union of the audiences, or global popularity tagged ``popularity`` when the
   champion is the popularity baseline or no model is registered; bundle campaigns use co-occurrence, ``bundle``),
   1 = popularity in the user's segment (``recommend.segment``), 2 = global popularity. Bundle campaigns get no
   popularity fill: an unrelated popular item is not "bought together";
3. eligibility filter BEFORE the top-K cut (so lists are not cut short), purchased items dropped (except
   ``repeatable_categories``), items already in the open cart dropped for cart campaigns, one row per item (the
   lowest level wins), per-category cap, top ``top_k`` by (level, score desc, item_id);
4. across campaigns: the contact cap (``max_offers_per_user`` campaigns per user, by priority desc then campaign
   id), then each campaign's budget (users chosen by best level, best score, then a hash), then a deterministic
   hash-based control group (``xxhash64(campaign_id, user_id)``) flagged ``is_control``/``delivered = false``.
   Control users count towards the contact cap and budget, so the control group is a random slice of exactly the
   population that is treated;
5. reasons (ALS: the user's past items most cosine-similar in item-factor space; otherwise a plain text), offers;
6. each active campaign's ``(campaign_id, run_date)`` partition is replaced in its own Delta commit, also when it
   is empty, so a rerun clears stale rows. Partitions of other campaigns and dates are never touched.

Output: the Delta table ``T.RECOMMENDATIONS.uri(cfg)`` (:data:`RECOMMENDATIONS`), partitioned by
``campaign_id`` and ``run_date``. ``user_id`` is the id found in the gold tables: the pseudonym when
``privacy.pseudonymise`` is on (ids are pseudonymised before silver), so coupon codes carry the pseudonym too.
Only the per-campaign summary rows are collected to the driver.

One module per concern: :mod:`.registry` (the model in service), :mod:`.candidates`, :mod:`.policy`,
:mod:`.offers` and :mod:`.stage` (:func:`run_recommend`); the exposure and fairness metrics of what it serves
are in :mod:`sparkpromo.evaluate.exposure`, next to the offline metrics;
:mod:`.common` holds the shared names; the output table is declared in :mod:`sparkpromo.tables`.
"""

from sparkpromo.recommend.candidates import *  # noqa: F403
from sparkpromo.recommend.common import *  # noqa: F403
from sparkpromo.recommend.offers import *  # noqa: F403
from sparkpromo.recommend.policy import *  # noqa: F403
from sparkpromo.recommend.registry import *  # noqa: F403
from sparkpromo.recommend.stage import *  # noqa: F403
