"""A throwaway Spark standalone cluster (one master, N one-core workers on 127.0.0.1) for integration tests.

Everything runs from the installed ``pyspark`` package (``SPARK_HOME`` = its directory) through ``bin/spark-class``,
so no Spark distribution is needed. Every process is started in its own session (``start_new_session=True``), so
its process group holds the JVM and everything it forks (a worker's executors and their Python daemons); stopping
kills those groups by id: SIGTERM, then SIGKILL after a grace period. Nothing is ever killed by name.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyspark

SPARK_HOME = Path(pyspark.__file__).resolve().parent
# Variables that would make a child process join (or be configured by) the test's own Spark, or another Spark.
_INHERITED_SPARK_VARS = ("PYSPARK_GATEWAY_PORT", "PYSPARK_GATEWAY_SECRET", "PYSPARK_PYTHON", "PYSPARK_DRIVER_PYTHON",
                         "PYSPARK_SUBMIT_ARGS", "SPARK_SUBMIT_MODE", "SPARK_MASTER", "SPARK_CONF_DIR",
                         "SPARK_HOME", "SPARK_ENV_LOADED", "SPARK_SCALA_VERSION")


def free_port() -> int:
    """A TCP port nothing listens on right now (the OS picks it; a tiny race with other processes remains)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def is_listening(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(1)
        return s.connect_ex((host, port)) == 0


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without any Spark wiring of the test session, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k not in _INHERITED_SPARK_VARS}
    env.update(extra)
    return env


def tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError as e:
        return f"<{path}: {e}>"
    return "\n".join(text[-lines:])


def stop_group(proc: subprocess.Popen[Any], grace_s: float = 15.0) -> None:
    """Stop ``proc`` and everything in its process group (pgid = its pid: it was started in a new session):
    SIGTERM, and SIGKILL for whatever is still alive ``grace_s`` seconds later."""
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break  # the whole group is gone already
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if proc.poll() is not None and not _group_alive(proc.pid):
                return
            time.sleep(0.2)
    if proc.poll() is None:
        proc.wait(timeout=10)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class CommandResult:
    args: Sequence[str]
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    def describe(self, lines: int = 60) -> str:
        out = "\n".join(self.stdout.splitlines()[-lines:])
        err = "\n".join(self.stderr.splitlines()[-lines:])
        return (f"$ {' '.join(self.args)}\nexit code {self.returncode} after {self.seconds:.0f}s\n"
                f"--- stdout (tail) ---\n{out}\n--- stderr (tail) ---\n{err}")

    def last_json(self) -> dict[str, Any]:
        """The ``--json`` object: the last stdout line that parses as a JSON object."""
        for line in reversed(self.stdout.splitlines()):
            if line.startswith("{"):
                try:
                    return dict(json.loads(line))
                except json.JSONDecodeError:
                    continue
        raise AssertionError(f"no JSON object in the output:\n{self.describe()}")


def run_command(args: Sequence[str], *, env: Mapping[str, str], cwd: Path, timeout_s: float) -> CommandResult:
    """Run ``args`` in its own process group; on timeout the whole group is killed and a 124 result returned."""
    t0 = time.monotonic()
    proc = subprocess.Popen(list(args), cwd=cwd, env=dict(env), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout_s)
        code = proc.returncode
    except subprocess.TimeoutExpired:
        stop_group(proc, grace_s=5)
        out, err = proc.communicate()
        code, err = 124, f"{err}\n<killed: still running after {timeout_s:.0f}s>"
    finally:
        if proc.poll() is None or _group_alive(proc.pid):  # e.g. a Python worker that outlived its JVM
            stop_group(proc, grace_s=5)
    return CommandResult(args, code, out, err, time.monotonic() - t0)


@dataclass
class StandaloneCluster:
    """``with StandaloneCluster(root) as c:`` starts a master and ``workers`` workers and waits until every worker
    has registered; leaving the block (also on an error) stops every process it started."""

    root: Path
    workers: int = 2
    worker_cores: int = 1
    worker_memory: str = "1g"
    start_timeout_s: float = 180.0
    host: str = "127.0.0.1"
    port: int = field(default_factory=free_port)
    webui_port: int = field(default_factory=free_port)
    procs: dict[str, subprocess.Popen[Any]] = field(default_factory=dict)

    @property
    def master_url(self) -> str:
        return f"spark://{self.host}:{self.port}"

    @property
    def log_dir(self) -> Path:
        return self.root / "logs"

    def worker_dir(self, i: int) -> Path:
        return self.root / f"work-{i}"

    def env(self) -> dict[str, str]:
        return clean_env(SPARK_HOME=str(SPARK_HOME), SPARK_LOG_DIR=str(self.log_dir),
                         SPARK_LOCAL_DIRS=str(self.root / "local"), SPARK_LOCAL_IP=self.host,
                         SPARK_DAEMON_MEMORY="256m")

    def __enter__(self) -> StandaloneCluster:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _spawn(self, name: str, args: Sequence[str], **extra_env: str) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_dir / f"{name}.log", "wb") as log:
            self.procs[name] = subprocess.Popen(
                [str(SPARK_HOME / "bin" / "spark-class"), *args], env={**self.env(), **extra_env}, cwd=self.root,
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def start(self) -> None:
        (self.root / "local").mkdir(parents=True, exist_ok=True)
        self._spawn("master", ["org.apache.spark.deploy.master.Master", "--host", self.host,
                               "--port", str(self.port), "--webui-port", str(self.webui_port)])
        self._wait("the master to listen on its port", lambda: is_listening(self.host, self.port))
        for i in range(1, self.workers + 1):
            self.worker_dir(i).mkdir(parents=True, exist_ok=True)
            self._spawn(f"worker-{i}", ["org.apache.spark.deploy.worker.Worker", "--cores", str(self.worker_cores),
                                        "--memory", self.worker_memory, "--host", self.host,
                                        "--webui-port", str(free_port()), self.master_url],
                        SPARK_WORKER_DIR=str(self.worker_dir(i)))
        self._wait(f"{self.workers} workers to register",
                   lambda: (self.state() or {}).get("aliveworkers") == self.workers)

    def _wait(self, what: str, ready: Any) -> None:
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            dead = {n: p.returncode for n, p in self.procs.items() if p.poll() is not None}
            if dead:
                raise RuntimeError(f"while waiting for {what}, process(es) exited: {dead}\n{self.logs()}")
            if ready():
                return
            time.sleep(1)
        raise RuntimeError(f"timed out after {self.start_timeout_s:.0f}s waiting for {what} "
                           f"(master {self.master_url}, web UI port {self.webui_port})\n{self.logs()}")

    def state(self) -> dict[str, Any] | None:
        """The master's JSON status (workers, apps), or None while its web UI does not answer."""
        try:
            with urllib.request.urlopen(f"http://{self.host}:{self.webui_port}/json/", timeout=5) as r:
                return dict(json.load(r))
        except (OSError, urllib.error.URLError, ValueError):
            return None

    def logs(self, lines: int = 30) -> str:
        parts = []
        for name in self.procs:
            parts.append(f"--- {name} ({self.log_dir / (name + '.log')}), last {lines} lines ---\n"
                         f"{tail(self.log_dir / f'{name}.log', lines)}")
        return "\n".join(parts)

    def stop(self) -> None:
        """Workers first (they take their executors down with their process group), then the master."""
        for name in sorted(self.procs, key=lambda n: n == "master"):
            stop_group(self.procs[name])
