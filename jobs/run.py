"""spark-submit entry point for `sparkpromo run`: the same main() as the console script and the wheel task."""

import sys

from sparkpromo.cli import run_main

if __name__ == "__main__":
    sys.exit(run_main())
