#!/usr/bin/env bash
# Run the whole test suite (sets the machine up first if needed). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check .
# Two test processes, each with its own session-scoped SparkSession: one Spark driver keeps about one core busy
# (planning, Delta log replay, py4j), so two of them fill a 2-core CI machine. A test file stays on one process
# (its module fixtures are built once), handed out in collection order, where tests/conftest.py puts the files with
# slow tests first (xdist's own order, most tests first, left the longest one-test files for the end).
# SPARKPROMO_TEST_WORKERS=0 runs in this process; a later -n wins.
exec .venv/bin/python -m pytest -n "${SPARKPROMO_TEST_WORKERS:-2}" --dist loadfile --no-loadscope-reorder "$@"
