"""spark-submit entry point for `sparkpromo generate`: the same main() as the console script and the wheel task."""

import sys

from sparkpromo.cli import generate_main

if __name__ == "__main__":
    sys.exit(generate_main())
