"""spark-submit entry point for `sparkpromo train`: the same main() as the console script and the wheel task."""

import sys

from sparkpromo.cli import train_main

if __name__ == "__main__":
    sys.exit(train_main())
