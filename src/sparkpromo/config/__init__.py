"""YAML configuration: base file + environment overlay (+ optional extra files), validated into frozen dataclasses.

Every error is a :class:`ConfigError` whose message names the file and the dotted key, so the CLI can print one
line and exit with code 2 before any SparkSession exists.
"""

from sparkpromo.config.loading import *  # noqa: F403
from sparkpromo.config.loading import _read_yaml  # noqa: F401 - used by tests
from sparkpromo.config.model import *  # noqa: F403
from sparkpromo.config.paths import *  # noqa: F403
