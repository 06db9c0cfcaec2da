"""spark-submit entry point for `sparkpromo recommend`: the same main() as the console script and the wheel task."""

import sys

from sparkpromo.cli import recommend_main

if __name__ == "__main__":
    sys.exit(recommend_main())
