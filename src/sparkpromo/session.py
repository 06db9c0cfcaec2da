"""The one place a SparkSession is built.

* Local mode (a laptop, tests, CI): Delta is enabled through delta-spark's own ``configure_spark_with_delta_pip``,
  which resolves the Delta jars from Maven (cached in ~/.ivy2 after the first start). A Maven mirror configured in
  ``~/.m2/settings.xml`` (or ``SPARKPROMO_MAVEN_REPO``) is honoured instead of hard-coding a host.
* Under spark-submit or Databricks the launcher already supplied the master, the packages and the Delta
  extensions: we only add what is missing and never override those.
* Spark Connect (``spark.remote`` / ``--remote sc://host:port``, or ``SPARK_REMOTE``; Databricks serverless and
  shared-access clusters): the server owns the JVM. There is no SparkContext on the client, so the log level, the
  checkpoint directory and the task progress tracker are the server's business (:func:`is_connect` guards them):
  start the server with ``spark.checkpoint.dir`` set and its own log4j2 configuration.
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pyspark
from pyspark.sql import SparkSession

from sparkpromo.config import AppConfig

log = logging.getLogger(__name__)

DELTA_EXTENSION = "io.delta.sql.DeltaSparkSessionExtension"
DELTA_CATALOG = "org.apache.spark.sql.delta.catalog.DeltaCatalog"
# Keys a launcher owns: when spark-submit or Databricks set them, they win.
LAUNCHER_OWNED = ("spark.master", "spark.jars.packages", "spark.sql.extensions", "spark.sql.catalog.spark_catalog",
                  "spark.jars.repositories", "spark.driver.memory")


def remote_url(cfg: AppConfig) -> str:
    """The Spark Connect URL to use: ``spark.remote``, else ``$SPARK_REMOTE``; "" for a classic session."""
    return cfg.spark.remote or os.environ.get("SPARK_REMOTE", "")


def is_connect(spark: SparkSession) -> bool:
    """True for a Spark Connect session (no SparkContext, no driver JVM on this side). By class, not by importing
    ``pyspark.sql.connect``, which needs the Connect client's extra dependencies a classic install lacks."""
    return type(spark).__module__.startswith("pyspark.sql.connect")


def set_log_level(spark: SparkSession, level: str) -> None:
    """The driver's log level for a classic session; a Connect server keeps its own logging configuration."""
    if is_connect(spark):
        log.debug("Spark Connect: the server's log level stands (wanted %s)", level)
        return
    spark.sparkContext.setLogLevel(level)


def set_checkpoint_dir(spark: SparkSession, uri: str) -> None:
    """Where ALS checkpoints its factors. Connect has no client-side SparkContext: the server's
    ``spark.checkpoint.dir`` (a static conf, set when it starts) is used instead."""
    if is_connect(spark):
        if not spark.conf.get("spark.checkpoint.dir", None):
            log.warning("Spark Connect server has no spark.checkpoint.dir: ALS checkpoints are off (want %s)", uri)
        return
    spark.sparkContext.setCheckpointDir(uri)


def default_parallelism(spark: SparkSession, fallback: int) -> int:
    """The cores Spark spreads work over: the SparkContext's count in a classic session; over Connect (no
    SparkContext) ``spark.default.parallelism``, else N of a ``local[N]`` master, else ``fallback``."""
    if not is_connect(spark):
        return int(spark.sparkContext.defaultParallelism)
    configured = spark.conf.get("spark.default.parallelism", None)
    if configured and configured.isdigit():
        return int(configured)
    m = re.fullmatch(r"local(?:\[(\d+|\*)(?:,\d+)?\])?", spark.conf.get("spark.master", None) or "")
    if m:
        n = m.group(1) or "1"
        return (os.cpu_count() or 1) if n == "*" else int(n)
    return fallback


def launched_externally() -> bool:
    """True under spark-submit (the JVM gateway already exists) or on Databricks."""
    return bool(os.environ.get("PYSPARK_GATEWAY_PORT") or os.environ.get("DATABRICKS_RUNTIME_VERSION")
                or os.environ.get("SPARK_SUBMIT_MODE"))


def maven_mirrors(settings_file: Path | None = None) -> list[str]:
    """Mirror URLs from Maven's settings.xml (``SPARKPROMO_MAVEN_REPO`` first, if set)."""
    urls: list[str] = []
    if os.environ.get("SPARKPROMO_MAVEN_REPO"):
        urls.append(os.environ["SPARKPROMO_MAVEN_REPO"])
    path = settings_file or Path(os.environ.get("MAVEN_SETTINGS", Path.home() / ".m2" / "settings.xml"))
    if path.is_file():
        try:
            root = ET.parse(path).getroot()
        except ET.ParseError:
            log.warning("ignoring unparsable Maven settings file %s", path)
            return urls
        for el in root.iter():
            if el.tag.rsplit("}", 1)[-1] == "mirror":
                for child in el:
                    if child.tag.rsplit("}", 1)[-1] == "url" and child.text:
                        urls.append(child.text.strip())
    return urls


HMAC_PAD_LITERAL = r"(?:0x|X')[0-9A-Fa-f]{128}"

# Runtime-settable defaults worth having in every environment.
RUNTIME_DEFAULTS = {
    # Delta's snapshot reconstruction defaults to 50 partitions: far too many for small tables.
    "spark.databricks.delta.snapshotPartitions": "2",
    # spark.shuffle_partitions is an upper bound: AQE coalesces each shuffle to the data's size (Spark 3.2+ has it on
    # by default; a launcher that turned it off keeps its choice).
    "spark.sql.adaptive.enabled": "true",
    "spark.sql.adaptive.coalescePartitions.enabled": "true",
}


# The driver JVM of a local-mode run, where it is the only JVM and does all the work (spark-submit.sh passes the
# same for a local master). Both are fixed when the JVM starts.
LOCAL_JVM = {
    # Spark keeps 100 generated classes by default, dropping the least recently used. A run of every stage generates
    # ~1,240, so a cache smaller than that keeps none of them for the next run in the same session (at 1,000 a rerun
    # compiled ~1,050 again: Janino, then the JIT). A later run date writes new date literals into the code anyway.
    "spark.sql.codegen.cache.maxEntries": "4000",
    # The parallel collector, not G1: batch jobs want throughput, not short pauses (BENCHMARKS.md, clean
    # throughput round 6). Deep query plans need the larger thread stack.
    "spark.driver.extraJavaOptions": "-Xss16m -XX:+UseParallelGC",
}


LOG4J2_PROPERTIES = Path(__file__).with_name("log4j2.properties")


def delta_jars_record() -> Path:
    """Where the local Delta jars resolved by the first session are remembered, per Spark and Delta version."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "sparkpromo"
    delta = importlib.metadata.version("delta-spark")
    return cache / f"delta-jars-spark{pyspark.__version__}-delta{delta}.txt"


def cached_delta_jars() -> list[str]:
    """The Delta jars a previous session resolved, when every one of them is still on disk; else []."""
    record = delta_jars_record()
    if not record.is_file():
        return []
    jars = [j for j in record.read_text().split(",") if j]
    local = [Path(j.removeprefix("file://")) for j in jars]
    return jars if jars and all(p.is_file() for p in local) else []


def remember_delta_jars(spark: SparkSession) -> None:
    """Record the jars spark-submit resolved for ``spark.jars.packages``, so later starts skip Ivy (seconds, and
    ~25 lines of resolution report on every command)."""
    jars = spark.conf.get("spark.jars", None) or ""
    if "delta-spark" not in jars:
        return
    record = delta_jars_record()
    try:
        record.parent.mkdir(parents=True, exist_ok=True)
        record.write_text(jars)
    except OSError as e:
        log.debug("could not record the Delta jars in %s: %s", record, e)


def _set_runtime(spark: SparkSession, key: str, value: str) -> None:
    """Set a runtime conf unless the launcher already chose a value for it."""
    try:
        if spark.conf.get(key, None) is None:
            spark.conf.set(key, value)
    except Exception:  # noqa: BLE001 - a static conf can't be changed at run time; the launcher's value stands
        log.debug("not setting static conf %s at run time", key)


def local_settings(cfg: AppConfig) -> dict[str, str]:
    """Laptop-sized defaults for local mode; everything here can be overridden by ``spark.conf`` in YAML."""
    settings = {
        "spark.master": cfg.spark.master,
        "spark.driver.memory": cfg.spark.driver_memory,
        "spark.sql.extensions": DELTA_EXTENSION,
        "spark.sql.catalog.spark_catalog": DELTA_CATALOG,
        "spark.ui.showConsoleProgress": "false",
        "spark.ui.enabled": "false",
        # With no UI to show them, the SQL listener still kept the plan graphs and metrics of the last 1000 queries:
        # hundreds of MB in a long-lived session (the test suite, a notebook).
        "spark.sql.ui.retainedExecutions": "50",
        **RUNTIME_DEFAULTS,
        **LOCAL_JVM,
        # As a URI: the launcher splits these options on whitespace, and a checkout path may hold a space.
        "spark.driver.extraJavaOptions": f"-Dlog4j2.configurationFile={LOG4J2_PROPERTIES.as_uri()} "
                                         + LOCAL_JVM["spark.driver.extraJavaOptions"],
    }
    mirrors = maven_mirrors()
    if mirrors:
        settings["spark.jars.repositories"] = ",".join(mirrors)
    return settings


def session_settings(cfg: AppConfig) -> dict[str, str]:
    """Settings that are ours in every environment (never the master or Delta wiring)."""
    return {
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.shuffle.partitions": str(cfg.spark.shuffle_partitions),
        # VACUUM (forget) lists a table's directories with this many tasks, 10,000 by default: 45 s of empty tasks
        # per table on a laptop. The shuffle sizing is the deployment's own statement of its parallelism.
        "spark.sql.sources.parallelPartitionDiscovery.parallelism": str(cfg.spark.shuffle_partitions),
        # Bronze keeps every column as text, the columns of key=value landing directories too ("day=08" stays
        # "08"); Delta tables keep their own partition types whatever this says.
        "spark.sql.sources.partitionColumnTypeInference.enabled": "false",
        # Delta's retention check stays on; `forget` overrides it explicitly where it must purge.
        "spark.databricks.delta.schema.autoMerge.enabled": "false",
        # Every table this session creates states its log retention (see privacy.log_retention_days).
        f"{DELTA_TABLE_DEFAULTS}logRetentionDuration": log_retention(cfg),
    }


DELTA_TABLE_DEFAULTS = "spark.databricks.delta.properties.defaults."
PACKAGES = "spark.jars.packages"


def log_retention(cfg: AppConfig) -> str:
    """The ``delta.logRetentionDuration`` value for ``privacy.log_retention_days``."""
    return f"interval {cfg.privacy.log_retention_days} days"


def add_redaction(spark: SparkSession, pattern: str) -> None:
    """Add ``pattern`` to the regex that Spark redacts wherever it prints a plan (explain, the SQL UI, event logs),
    keeping whatever a launcher or the config already redacts.

    Needed for the HMAC pads of :func:`sparkpromo.privacy.hmac_sha256`: 64-byte binary literals in query plans,
    one XOR away from the key.
    """
    key = "spark.sql.redaction.string.regex"
    current = spark.conf.get(key, None)
    if not current:
        spark.conf.set(key, pattern)
    elif pattern not in current:
        spark.conf.set(key, f"(?:{current})|{pattern}")


def build_session(cfg: AppConfig, app_name: str | None = None) -> SparkSession:
    """Build (or join) the SparkSession for ``cfg``."""
    name = app_name or cfg.spark.app_name
    remote = remote_url(cfg)
    existing = SparkSession.getActiveSession()
    if remote:
        # The server owns the master, the jars and the Delta wiring, as a launcher does.
        spark = SparkSession.builder.remote(remote).getOrCreate()
        log.info("connected to Spark Connect server %s", remote.split(";", 1)[0])  # ';' starts tokens and options
        _join_settings(spark, cfg)
    elif existing is not None or launched_externally():
        # No appName here either: spark-submit's --name (or the Databricks job name) stays.
        spark = existing or SparkSession.builder.getOrCreate()
        log.info("joining the session supplied by the launcher (master=%s)", spark.conf.get("spark.master", "?"))
        _join_settings(spark, cfg)
    else:
        from delta import configure_spark_with_delta_pip

        builder = SparkSession.builder.appName(name)
        settings = {**local_settings(cfg), **session_settings(cfg), **dict(cfg.spark.conf)}
        # delta-spark sets spark.jars.packages to Delta's own coordinate: the config's packages go with it.
        packages = [p.strip() for p in settings.pop(PACKAGES, "").split(",") if p.strip()]
        for k, v in settings.items():
            builder = builder.config(k, v)
        jars = [] if any(k.startswith("spark.jars") for k in cfg.spark.conf) else cached_delta_jars()
        if jars:
            # The jars Ivy resolved before: no resolution (and no resolution report on the console) at each start.
            spark = builder.config("spark.jars", ",".join(jars)).getOrCreate()
        else:
            spark = configure_spark_with_delta_pip(builder, extra_packages=packages or None).getOrCreate()
            if not packages:  # the record is Delta's jars alone, which every later start loads
                remember_delta_jars(spark)
        set_log_level(spark, cfg.spark.log_level)
    for k, v in session_settings(cfg).items():
        spark.conf.set(k, cfg.spark.conf.get(k, v))  # a value the config states explicitly stands
    add_redaction(spark, HMAC_PAD_LITERAL)
    set_checkpoint_dir(spark, cfg.checkpoint_dir)
    return spark


def _join_settings(spark: SparkSession, cfg: AppConfig) -> None:
    """Our runtime defaults and ``spark.conf`` on a session someone else built, never what the launcher owns."""
    for k, v in {**RUNTIME_DEFAULTS, **dict(cfg.spark.conf)}.items():
        if k not in LAUNCHER_OWNED and not k.startswith(("spark.driver.", "spark.executor.", "spark.jars")):
            _set_runtime(spark, k, v)
