"""Campaign outcome measurement: what each campaign changed, measured against its control group.

Recommend lists every selected user of a campaign, control users too (``is_control``, ``delivered = false``: scored
and given their would-be offers, never sent). For each past ``(campaign_id, run_date)`` of ``gold/recommendations``
this stage joins the listed users with their ``silver/events`` purchases in the attribution window after the run
date, ``(run_date, run_date + measure.window_days]``, and compares the treated arm (delivered) with the control arm:

* conversion (any purchase in the window) and offer conversion (a purchase of an item on the user's list), each
  with the absolute uplift (treated - control), the relative uplift and a 95% two-proportion interval
  (Wald, unpooled: ``d +- 1.96 sqrt(p_t (1 - p_t) / n_t + p_c (1 - p_c) / n_c)``);
* revenue per user (price x quantity of the window's purchases) with a 95% Welch interval (Welch-Satterthwaite
  degrees of freedom; the t quantile by its Cornish-Fisher expansion, exact to 1e-4 from 4 degrees of freedom);
* incremental conversions and revenue (uplift x treated users), the discount cost (the offer's discount on treated
  users' purchases of listed items) and the incremental return on it, ``(incremental revenue - cost) / cost``;
* uplift by score: users in deciles of their best listed score (1 = top), the Qini curve (cumulative incremental
  conversions ``Y_t(d) - Y_c(d) N_t(d) / N_c(d)``) against random targeting, and its area (AUUC, trapezoids over the
  share of users targeted).

Every row has a ``status``: ``window_open`` (the window ends after the measure run's date: counts only),
``no_control`` / ``no_treated`` (an arm is empty: no comparison), ``small_sample`` (an arm has fewer than
``measure.min_users`` users: shown, not to be trusted) or ``ok``. ``in_config`` is false for a campaign no longer
configured: its past runs are still measured (the discount comes from the stored offer, not the config).

Tables (Delta): ``metrics/campaign_outcomes`` (:data:`OUTCOMES`, one row per campaign and run date) and
``metrics/uplift`` (:data:`UPLIFT`, one row per campaign, run date and decile). A measure run replaces the rows of
the run dates up to its own that can have changed since the last measure run (all of them on a first run or a full
refresh; :mod:`sparkpromo.measure.incremental` says which); later run dates are left as they are. With
``measure.pause_negative`` or ``measure.reallocate_budgets``, the decisions go to ``metrics/campaign_actions``
(:data:`ACTIONS`), which recommend applies. Only per-campaign aggregates reach the driver.
"""

from sparkpromo.measure.actions import *  # noqa: F403
from sparkpromo.measure.incremental import *  # noqa: F403
from sparkpromo.measure.outcomes import *  # noqa: F403
from sparkpromo.measure.stage import *  # noqa: F403
from sparkpromo.measure.stats import *  # noqa: F403
from sparkpromo.measure.uplift import *  # noqa: F403
from sparkpromo.schemas import ACTIONS, OUTCOMES, UPLIFT  # noqa: F401 - used by tests
