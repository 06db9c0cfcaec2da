"""A local Spark Connect server for the tests: ``python -m tests.connect_server PORT CHECKPOINT_DIR``.

A classic local session built by sparkpromo's own builder (so the Delta jars and extensions are the ones the suite
uses) with Spark's Connect plugin listening on PORT; it serves until it is terminated.
"""

from __future__ import annotations

import sys
import threading

from sparkpromo.session import build_session
from tests.conftest import SMALL_DATA_CONF, make_config


def main(port: int, checkpoint_dir: str) -> None:
    cfg = make_config(checkpoint_dir, spark={
        "master": "local[2]", "shuffle_partitions": 2, "driver_memory": "2g", "checkpoint_dir": checkpoint_dir,
        # The suite's small-data settings as the server's defaults, so its sessions run as the classic ones do.
        "conf": {**SMALL_DATA_CONF, "spark.plugins": "org.apache.spark.sql.connect.SparkConnectPlugin",
                 "spark.connect.grpc.binding.port": str(port), "spark.checkpoint.dir": checkpoint_dir}})
    build_session(cfg, app_name="sparkpromo-connect-test-server")
    print(f"connect server listening on {port}", file=sys.stderr, flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2])
