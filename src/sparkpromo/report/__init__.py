"""The run report: one self-contained HTML page per run, for people rather than schedulers.

:func:`write_report` reads the small metric tables the stages leave behind and writes
``<lakehouse>/reports/<run_id>.html`` (a local ``reports/`` folder when the lakehouse is remote). Charts are inline
base64 PNGs drawn with matplotlib's Agg canvas (the optional ``report`` extra); without matplotlib the page still has
every table and says where the charts would be. Sections, each an ``<section id=...>`` with an ``<h2>``:

* ``stages``: elapsed time per stage (``metrics/stages``);
* ``data-quality``: rows in, silver, duplicates and quarantine by rule per source (``metrics/data_quality``);
* ``cv-grid``: the cross-validation grid, metric by rank and regParam/alpha (``registry/<run>/cv.json``);
* ``holdout``: holdout metrics of ALS against the popularity baseline, with serving's exclusion too, and the model in
  service with the gate's decision (``metrics/model``, ``registry/<run>/params.json``);
* ``campaigns``: audience, served, control, fallback share, coverage and exposure Gini per campaign
  (``metrics/campaigns`` when a stage stores it, otherwise computed from this run's ``gold/recommendations``);
* ``outcomes``: per campaign, what it changed against its control group over its run dates up to this run's:
  uplift with its 95% interval, the Qini curve of the latest measured run, incremental revenue against the
  discount cost, in words too, and the automatic changes made (``metrics/campaign_outcomes``, ``metrics/uplift``,
  ``metrics/campaign_actions``).

A section whose data is missing says so on the page. Only small metric tables are collected to the driver.
"""

from sparkpromo.report.html import *  # noqa: F403
from sparkpromo.report.outcomes import *  # noqa: F403
from sparkpromo.report.page import *  # noqa: F403
from sparkpromo.report.reading import *  # noqa: F403
from sparkpromo.report.sections import *  # noqa: F403
