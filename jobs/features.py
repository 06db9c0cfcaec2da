"""spark-submit entry point for `sparkpromo features`: the same main() as the console script and the wheel task."""

import sys

from sparkpromo.cli import features_main

if __name__ == "__main__":
    sys.exit(features_main())
