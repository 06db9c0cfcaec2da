#!/usr/bin/env bash
# Run the whole test suite (sets the machine up first if needed). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check src jobs tests benchmarks
exec .venv/bin/python -m pytest "$@"
