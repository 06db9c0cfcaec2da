#!/usr/bin/env bash
# Submit a sparkpromo job with spark-submit: builds the wheel, ships it with --py-files, gets Delta from its
# Maven coordinates, and forwards every remaining argument to the job.
#
#   ./spark-submit.sh [--master URL] [--deploy-mode client] [--conf k=v]... <job> [job args...]
#   ./spark-submit.sh run --sample                      # local[*]
#   SPARK_MASTER=spark://host:7077 ./spark-submit.sh run --env cluster --run-date 2026-11-29
#
# <job> is one of: generate ingest clean features train recommend run (jobs/<job>.py).
# Environment: SPARK_MASTER (default local[*]), SPARK_HOME (default: the spark-submit of the project's venv),
# PYTHON (default .venv/bin/python), SPARKPROMO_WHEEL (a prebuilt wheel to ship instead of building one),
# SPARKPROMO_ENV_ARCHIVE (a prebuilt venv-pack archive to ship instead of packing one; non-local masters only).
#
# A non-local master gets the Python environment as Spark documents it: the wheel's own dependencies packed with
# venv-pack (cached in build/submit-env/), shipped with --archives and started on every executor as
# ./env/bin/python; the executors' pyspark comes from their Spark installation. sparkpromo's log lines go to stderr.
set -euo pipefail
# The script works from its own directory; paths the caller gives (job arguments, environment) are made absolute
# against the caller's first, so they mean what they meant where the command was typed.
CALLER=$PWD
absolute() { case "$1" in /*|*://*|"") printf '%s' "$1" ;; *) printf '%s' "$CALLER/$1" ;; esac; }
for var in PYTHON SPARKPROMO_WHEEL SPARKPROMO_ENV_ARCHIVE SPARKPROMO_CONF_DIR SPARKPROMO_LAKEHOUSE SPARKPROMO_LANDING; do
  if [ -n "${!var:-}" ]; then export "$var=$(absolute "${!var}")"; fi
done
cd "$(dirname "$0")"
die() { echo "spark-submit.sh: $*" >&2; exit 2; }

PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=$(command -v python3) || die "no Python found; run scripts/setup.sh first"
# Absolute (not symlink-resolved, so a venv stays a venv): executors start it from their own work directory.
case "$PY" in /*) ;; *) PY=$PWD/$PY ;; esac
MASTER=${SPARK_MASTER:-local[*]}
DEPLOY_MODE=client
EXTRA=()
while [ $# -gt 0 ]; do
  case "$1" in
    --master) [ $# -ge 2 ] || die "--master needs a value"; MASTER=$2; shift 2 ;;
    --master=*) MASTER=${1#*=}; shift ;;
    --deploy-mode) [ $# -ge 2 ] || die "--deploy-mode needs a value"; DEPLOY_MODE=$2; shift 2 ;;
    --conf) [ $# -ge 2 ] || die "--conf needs a value"; EXTRA+=(--conf "$2"); shift 2 ;;
    -h|--help) awk 'NR > 1 && !/^#/ {exit} NR > 1' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    --) shift; break ;;
    -*) die "unknown option $1 (options go before the job name)" ;;
    *) break ;;
  esac
done
[ $# -ge 1 ] || die "missing job name (one of: $(cd jobs && ls *.py | sed 's/\.py$//' | tr '\n' ' '))"
JOB=$1; shift
[ -f "jobs/$JOB.py" ] || die "unknown job '$JOB' (no jobs/$JOB.py)"
# The job's path arguments, absolute (see CALLER above).
JOB_ARGS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --config|--conf-dir|--users-file|--respond-to)
      JOB_ARGS+=("$1"); shift
      if [ $# -gt 0 ]; then JOB_ARGS+=("$(absolute "$1")"); shift; fi ;;
    --config=*|--conf-dir=*|--users-file=*|--respond-to=*) JOB_ARGS+=("${1%%=*}=$(absolute "${1#*=}")"); shift ;;
    *) JOB_ARGS+=("$1"); shift ;;
  esac
done
set -- ${JOB_ARGS[@]+"${JOB_ARGS[@]}"}

# Versions: the Delta jar must be the one built for this Spark line.
read -r SPARK_VERSION DELTA_VERSION < <("$PY" - <<'PY'
from importlib.metadata import version
print(version("pyspark"), version("delta-spark"))
PY
) || die "pyspark and delta-spark must be installed in $PY (run scripts/setup.sh)"
export SPARK_HOME=${SPARK_HOME:-$("$PY" -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))')}
SUBMIT=$SPARK_HOME/bin/spark-submit
[ -x "$SUBMIT" ] || die "spark-submit not found at $SUBMIT (set SPARK_HOME)"
CLUSTER_SPARK=$("$SUBMIT" --version 2>&1 | sed -n 's/.*version \([0-9][0-9.]*\).*/\1/p' | head -1 || true)
if [ -n "$CLUSTER_SPARK" ] && [ "${CLUSTER_SPARK%.*}" != "${SPARK_VERSION%.*}" ]; then
  die "Spark $CLUSTER_SPARK at $SUBMIT does not match delta-spark $DELTA_VERSION (built for Spark ${SPARK_VERSION%.*}); use a matching SPARK_HOME or reinstall"
fi

# A standalone master must answer before we submit (otherwise spark-submit retries for minutes).
case "$MASTER" in
  spark://*)
    hostport=${MASTER#spark://}; hostport=${hostport%%,*}; host=${hostport%:*}; port=${hostport##*:}
    if ! (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null; then
      die "Spark master $MASTER is not reachable (nothing listening on $host:$port)"
    fi ;;
esac

# The code travels as a wheel on --py-files (a wheel is a zip that Python can import from).
if [ -n "${SPARKPROMO_WHEEL:-}" ]; then
  WHEEL=$SPARKPROMO_WHEEL
  [ -f "$WHEEL" ] || die "wheel not found: $WHEEL"
else
  rm -rf dist/sparkpromo-*.whl
  "$PY" -m pip wheel -q --no-deps --no-build-isolation -w dist . >/dev/null 2>&1 \
    || "$PY" -m pip wheel -q --no-deps -w dist . >/dev/null || die "building the wheel failed"
  WHEEL=$(ls dist/sparkpromo-*.whl 2>/dev/null | head -1)
  [ -n "$WHEEL" ] || die "wheel not found in dist/ after building"
fi

REPOS=$("$PY" -c 'from sparkpromo.session import maven_mirrors; print(",".join(maven_mirrors()))' 2>/dev/null || true)
ARGS=(--master "$MASTER" --deploy-mode "$DEPLOY_MODE" --name "sparkpromo-$JOB"
      --packages "io.delta:delta-spark_2.13:$DELTA_VERSION"
      --conf "spark.log.level=${SPARK_LOG_LEVEL:-WARN}"
      --conf spark.sql.extensions=io.delta.sql.DeltaSparkSessionExtension
      --conf spark.sql.catalog.spark_catalog=org.apache.spark.sql.delta.catalog.DeltaCatalog
      --py-files "$WHEEL")
[ -n "$REPOS" ] && ARGS+=(--repositories "$REPOS")

# The wheel's required dependencies (Requires-Dist without an extra), read from the wheel being shipped.
wheel_requirements() {
  "$PY" - "$WHEEL" <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as whl:
    meta = next(n for n in whl.namelist() if n.endswith(".dist-info/METADATA"))
    for line in whl.read(meta).decode().splitlines():
        if line.startswith("Requires-Dist:") and "extra ==" not in line:
            print(line.split(":", 1)[1].strip())
PY
}

# A venv holding only those dependencies, packed once per (Python version, requirements) into build/submit-env/.
packed_env() {
  local reqs pyver key dir venv archive
  reqs=$(wheel_requirements) || die "cannot read the requirements of $WHEEL"
  pyver=$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
  key=$(printf '%s\n%s\n' "$pyver" "$reqs" | sha256sum | cut -c1-12)
  dir=build/submit-env; venv=$dir/venv-$key; archive=$dir/sparkpromo-env-py$pyver-$key.tar.gz
  if [ ! -f "$archive" ]; then
    echo "spark-submit.sh: packing the executors' Python environment into $archive (once)" >&2
    rm -rf "$venv"; mkdir -p "$dir"
    "$PY" -m venv "$venv" >&2 || die "python -m venv $venv failed"
    mapfile -t req_list <<< "$reqs"
    "$venv/bin/python" -m pip install -q --disable-pip-version-check venv-pack ${req_list[@]+"${req_list[@]}"} >&2 \
      || die "installing the dependencies into $venv failed (pip needs a package index)"
    # venv-pack infers the format from the name's extension, so the partial file keeps .tar.gz at its end.
    "$venv/bin/venv-pack" -q -p "$venv" -o "$dir/partial-$key.tar.gz" -f >&2 || die "venv-pack of $venv failed"
    mv "$dir/partial-$key.tar.gz" "$archive"
  fi
  echo "$archive"
}

case "$MASTER" in
  local|local\[*)
    # Every Python process is on this host: the venv itself serves. The driver is the only JVM, so it gets the
    # settings the session factory gives local mode (a --conf of yours for the same key comes later and wins).
    ARGS+=(--conf "spark.pyspark.python=$PY" --conf "spark.pyspark.driver.python=$PY")
    while IFS= read -r kv; do if [ -n "$kv" ]; then ARGS+=(--conf "$kv"); fi; done < <("$PY" -c \
      'from sparkpromo.session import LOCAL_JVM; print("\n".join(f"{k}={v}" for k, v in LOCAL_JVM.items()))' 2>/dev/null || true)
    export PYSPARK_PYTHON=$PY ;;
  *)
    if [ -n "${SPARKPROMO_ENV_ARCHIVE:-}" ]; then
      ARCHIVE=$SPARKPROMO_ENV_ARCHIVE
      [ -f "$ARCHIVE" ] || die "environment archive not found: $ARCHIVE"
    else
      ARCHIVE=$(packed_env)
    fi
    # In cluster deploy mode the driver runs on the cluster too: from the same unpacked archive, with conf/ shipped
    # next to it (the jobs read ./conf unless SPARKPROMO_CONF_DIR says otherwise).
    DRIVER_PY=$PY
    SHIP=$ARCHIVE#env
    if [ "$DEPLOY_MODE" = cluster ]; then
      DRIVER_PY=./env/bin/python
      mkdir -p build/submit-env
      tar -czf build/submit-env/conf.tar.gz -C conf . || die "packing conf/ failed"
      SHIP=$SHIP,build/submit-env/conf.tar.gz#conf
    fi
    ARGS+=(--archives "$SHIP" --conf spark.pyspark.python=./env/bin/python
           --conf "spark.pyspark.driver.python=$DRIVER_PY")
    export PYSPARK_DRIVER_PYTHON=$DRIVER_PY ;;
esac
# spark-submit starts the Python driver with its stderr merged into its stdout (PythonRunner), so sparkpromo's log
# lines and its one-line errors would land among the job's output (the --json object): route them back to stderr.
LOG_LINE='^[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9] [A-Z][A-Z]* run=|^error: '
"$SUBMIT" "${ARGS[@]}" ${EXTRA[@]+"${EXTRA[@]}"} "jobs/$JOB.py" "$@" \
  | awk -v re="$LOG_LINE" '$0 ~ re { print > "/dev/stderr"; fflush("/dev/stderr"); next } { print; fflush() }'

