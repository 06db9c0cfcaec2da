#!/usr/bin/env bash
# Set up a fresh machine for sparkpromo: Java 17 (if missing), a virtual environment in .venv, the package with
# its local-Spark and test extras (the plain wheel leaves Spark to the platform). Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v java >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing Java 17 (openjdk-17-jre-headless)" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openjdk-17-jre-headless >/dev/null
  else
    echo "setup: Java 17 is required (e.g. apt-get install openjdk-17-jre-headless)" >&2
    exit 1
  fi
fi

# The report test renders pages in Debian's Chromium; install it where we can (root + apt), else that test skips.
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 \
   && [ "${SPARKPROMO_NO_BROWSER:-}" != 1 ]; then
  echo "setup: installing chromium (for the report test)" >&2
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
    || echo "setup: could not install chromium; the browser test will skip" >&2
fi

PY=${PYTHON:-}
if [ -z "$PY" ]; then
  for c in python3.11 python3.12 python3; do
    if command -v "$c" >/dev/null 2>&1; then PY=$c; break; fi
  done
fi
"$PY" -c 'import sys; assert sys.version_info >= (3, 11), sys.version' 2>/dev/null || {
  echo "setup: Python 3.11+ is required (found: $($PY --version 2>&1))" >&2; exit 1; }

# A venv whose creation failed half-way (Debian's python3.11 without python3.11-venv leaves .venv/bin/python but no
# pip) is made again rather than taken for a finished one.
if ! .venv/bin/python -m pip --version >/dev/null 2>&1; then
  rm -rf .venv
  if ! "$PY" -m venv .venv 2>/dev/null; then
    rm -rf .venv
    ver=$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
      echo "setup: installing python$ver-venv" >&2
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "python$ver-venv" >/dev/null
      "$PY" -m venv .venv
    else
      echo "setup: $PY cannot create a virtual environment (e.g. apt-get install python$ver-venv)" >&2
      exit 1
    fi
  fi
fi
stamp=.venv/.sparkpromo-installed
if [ ! -f "$stamp" ] || [ setup.py -nt "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip >/dev/null
  .venv/bin/python -m pip install -q -e '.[local,test]'
  touch "$stamp"
fi
