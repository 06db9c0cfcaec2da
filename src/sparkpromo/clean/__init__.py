"""Clean: bronze → silver (typed, trimmed, UTC, deduplicated, bot-filtered) + quarantine (every rejected row, with
the rule that rejected it).

Each bronze row ends in exactly one place, which is what the balance test checks::

    bronze rows = silver rows + quarantined rows + dropped duplicates

Rules are applied in a fixed precedence (the first that fails names the row's rule). Duplicates (a later copy of
an event id, or an older export of a user/item) are dropped and counted, not quarantined.

A full clean (:func:`full_clean`) recomputes silver from the whole bronze snapshot and overwrites each table in one
Delta commit; an incremental clean (:func:`incremental_clean`) judges the bronze rows added since the last clean,
with the rows they share a key with, and merges the difference. :func:`run_clean` picks one; every check runs
before the first write.
"""

from sparkpromo.clean import checks, dimensions, events, full, incremental, rules, stage, state
from sparkpromo.clean.checks import *  # noqa: F403
from sparkpromo.clean.dimensions import *  # noqa: F403
from sparkpromo.clean.events import *  # noqa: F403
from sparkpromo.clean.full import *  # noqa: F403
from sparkpromo.clean.incremental import *  # noqa: F403
from sparkpromo.clean.rules import *  # noqa: F403
from sparkpromo.clean.stage import *  # noqa: F403
from sparkpromo.clean.state import *  # noqa: F403

__all__ = [
    *rules.__all__, *events.__all__, *dimensions.__all__, *checks.__all__, *state.__all__, *full.__all__,
    *incremental.__all__, *stage.__all__
]  # noqa: F405
