"""spark-submit entry point for `sparkpromo ingest`: the same main() as the console script and the wheel task."""

import sys

from sparkpromo.cli import ingest_main

if __name__ == "__main__":
    sys.exit(ingest_main())
