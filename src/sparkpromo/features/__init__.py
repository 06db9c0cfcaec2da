"""Gold features from silver: user features, item features, implicit interactions and the stable integer id map.

Every function here except :func:`run_features` is a pure ``DataFrame -> DataFrame`` transformation (or a factory of
one); ``run_features`` is the only place that reads and writes tables.

Point in time: every feature is computed *as of* a date. Events dated after ``as_of`` are ignored, so rerunning with
the same ``as_of`` on the same silver snapshot gives the same gold tables.

Bounded window (``features.lookback_days``, :func:`within_lookback`): :func:`run_features` reads only the silver
events of the last ``lookback_days`` days up to the decay reference (:func:`decay_reference`), and rebuilds gold
from them alone. Windowed: every interaction; the behavioural user features (``active_days``, ``sessions``,
``purchases``, ``monetary``, ``recency_days``, ``avg_session_seconds``, ``cart_value``, ``top_category``: a user
whose events all lie before the window is a cold-start user); the event-derived item features (``popularity``,
``conversion_rate``, the mean event price fallback; an item only seen before the window and absent from
silver.items drops out). Not windowed: user attributes (silver.users), item attributes (silver.items), and the id
map, which only ever grows: an id keeps its index when its events leave the window.

Incremental runs (:mod:`sparkpromo.features.incremental`): a run that can build on the last one computes again only
the users, items and pairs whose gold rows can differ, and carries the others over to the new date.

Missing values (explicit, and tested):

* a purchase with a null ``price`` adds nothing to ``monetary`` / ``cart_value`` (it still counts in ``purchases``);
  a null ``quantity`` counts as 1 unit (a purchase event is at least one unit);
* a user with no events (cold start) still gets a row: counts, ``monetary``, ``avg_session_seconds`` and
  ``cart_value`` are 0; ``recency_days`` and ``top_category`` are null (0 would claim "active today");
* a user seen in events but absent from silver.users has null attributes and ``marketing_consent = false``
  (no recorded consent means no consent);
* an item price comes from silver.items, else the mean event price, else null (then ``price_band`` is null);
* ``conversion_rate`` is 0 when an item has no viewers, and capped at 1;
* a rating event with a null rating is ignored; an event type without a weight is a configuration error,
  raised by :func:`interactions` before any data is read (and again, defensively, by Spark at run time).
"""

from sparkpromo.features.common import *  # noqa: F403
from sparkpromo.features.confidence import *  # noqa: F403
from sparkpromo.features.id_map import *  # noqa: F403
from sparkpromo.features.incremental import *  # noqa: F403
from sparkpromo.features.items import *  # noqa: F403
from sparkpromo.features.stage import *  # noqa: F403
from sparkpromo.features.users import *  # noqa: F403
from sparkpromo.schemas import ITEM_FEATURES, RAW_INTERACTIONS, USER_FEATURES  # noqa: F401 - used by tests
