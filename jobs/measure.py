"""spark-submit entry point for `sparkpromo measure`: the same main() as the console script and the wheel task."""

import sys

from sparkpromo.cli import measure_main

if __name__ == "__main__":
    sys.exit(measure_main())
