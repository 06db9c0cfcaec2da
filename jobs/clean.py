"""spark-submit entry point for `sparkpromo clean`: the same main() as the console script and the wheel task."""

import sys

from sparkpromo.cli import clean_main

if __name__ == "__main__":
    sys.exit(clean_main())
