"""``sparkpromo doctor``: check the machine before a run and say what to fix. Starts no Spark."""

from __future__ import annotations

import base64
import glob
import os
import re
import shutil
import subprocess
import sys
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from sparkpromo.config import ConfigError, load_config, local_path, redact_uri
from sparkpromo.session import maven_mirrors

# Spark 4.0 runs on Java 17 and 21.
SUPPORTED_JAVA = (17, 21)
# The Spark line each delta-spark line is built for.
DELTA_FOR_SPARK = {"4.0": "4.0"}
# Spark's own default when no mirror is configured (what --packages resolves against).
DEFAULT_MAVEN = "https://repo1.maven.org/maven2"


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""

    def line(self) -> str:
        mark = "ok  " if self.ok else "FAIL"
        tail = f" -> fix: {self.fix}" if not self.ok and self.fix else ""
        return f"[{mark}] {self.name}: {self.detail}{tail}"


def check_python() -> Check:
    v = sys.version_info
    return Check("python", v >= (3, 11), f"{v.major}.{v.minor}.{v.micro}", "use Python 3.11 or newer")


def java_major(output: str) -> int | None:
    m = re.search(r'version "(\d+)(?:\.(\d+))?', output)
    if not m:
        return None
    major = int(m.group(1))
    return int(m.group(2)) if major == 1 and m.group(2) else major


def check_java() -> Check:
    home = os.environ.get("JAVA_HOME")
    java = str(Path(home) / "bin" / "java") if home else shutil.which("java")
    if not java or not Path(java).exists():
        return Check("java", False, "not found", "install Java 17 (apt-get install openjdk-17-jre-headless) or set "
                                                 "JAVA_HOME")
    try:
        out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30).stderr
    except (OSError, subprocess.TimeoutExpired) as e:
        return Check("java", False, f"{java} did not run ({e})", "reinstall Java 17")
    major = java_major(out)
    return Check("java", major in SUPPORTED_JAVA, f"{java} (Java {major})",
                 f"Spark 4.0 needs Java {' or '.join(map(str, SUPPORTED_JAVA))}; set JAVA_HOME to one")


def check_versions() -> tuple[Check, str | None]:
    try:
        spark_v, delta_v = version("pyspark"), version("delta-spark")
    except PackageNotFoundError as e:
        return Check("spark/delta", False, f"{e.name} is not installed", "pip install -e . (scripts/setup.sh)"), None
    line = ".".join(spark_v.split(".")[:2])
    want = DELTA_FOR_SPARK.get(".".join(delta_v.split(".")[:2]))
    return Check("spark/delta", want == line, f"pyspark {spark_v}, delta-spark {delta_v}",
                 f"delta-spark {delta_v} is built for Spark {want}; install the matching pair from setup.py"), delta_v


def check_delta_jars(delta_v: str | None, timeout: float = 10.0) -> Check:
    if delta_v is None:
        return Check("delta jars", False, "delta-spark not installed", "pip install -e .")
    jar = f"io.delta_delta-spark_2.13-{delta_v}.jar"
    cached = glob.glob(str(Path.home() / ".ivy2*" / "jars" / jar))
    if cached:
        return Check("delta jars", True, f"cached at {cached[0]}")
    repos = maven_mirrors() or [DEFAULT_MAVEN]
    path = f"io/delta/delta-spark_2.13/{delta_v}/delta-spark_2.13-{delta_v}.jar"
    errors = []
    for repo in repos:
        url = f"{repo.rstrip('/')}/{path}"
        shown = redact_uri(url)
        local = local_path(url) if url.startswith("file:") else None
        if local is not None:  # urllib gives a file: URL no status
            if local.is_file():
                return Check("delta jars", True, f"not cached yet; found at {shown}")
            errors.append(f"{redact_uri(repo)}: no {path} there")
            continue
        parts = urllib.parse.urlsplit(url)
        request_url = url
        headers: dict[str, str] = {}
        if parts.username is not None:  # Spark's user:password@host form: urllib would take it as the host name
            request_url = urllib.parse.urlunsplit(parts._replace(netloc=parts.hostname + (
                f":{parts.port}" if parts.port else "")))
            token = f"{urllib.parse.unquote(parts.username)}:{urllib.parse.unquote(parts.password or '')}"
            headers["Authorization"] = "Basic " + base64.b64encode(token.encode()).decode()
        try:
            req = urllib.request.Request(request_url, method="HEAD", headers=headers)
            with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - URL is a Maven repo
                if resp.status == 200:
                    return Check("delta jars", True, f"not cached yet; reachable at {shown}")
        except OSError as e:
            errors.append(f"{redact_uri(repo)}: {redact_uri(str(e))}")
        except ValueError as e:  # no scheme, or one urllib does not know
            errors.append(f"{redact_uri(repo)}: not a repository URL ({e.__class__.__name__})")
    return Check("delta jars", False, "not cached and not reachable (" + "; ".join(errors) + ")",
                 "allow access to Maven Central or set a mirror in ~/.m2/settings.xml / SPARKPROMO_MAVEN_REPO")


def check_config(env: str, conf_dir: str | None, extra: list[str], overrides: Mapping[str, Any] | None = None
                 ) -> Check:
    try:
        cfg = load_config(env, conf_dir, extra, overrides)
    except ConfigError as e:
        return Check("config", False, str(e), "correct the file and key named above")
    lake = local_path(cfg.lakehouse)
    if lake is not None:
        probe = lake if lake.exists() else next((p for p in lake.parents if p.exists()), Path("/"))
        if not os.access(probe, os.W_OK):
            return Check("config", False, f"lakehouse {cfg.lakehouse} is not writable", "set lakehouse: elsewhere")
    return Check("config", True, f"env={env}, lakehouse={cfg.lakehouse}, {len(cfg.campaigns)} campaign(s)")


def run_doctor(env: str, conf_dir: str | None, extra: list[str], network: bool = True,
               overrides: Mapping[str, Any] | None = None) -> list[Check]:
    versions, delta_v = check_versions()
    checks = [check_python(), check_java(), versions, check_config(env, conf_dir, extra, overrides)]
    if network:
        checks.append(check_delta_jars(delta_v))
    return checks
