"""`sparkpromo doctor` finds what is wrong and says how to fix it, without starting Spark."""

from __future__ import annotations

import base64
import http.server
import threading
from pathlib import Path

import pytest

from sparkpromo import doctor
from tests.conftest import CONF_DIR
from tests.test_cli import cli


@pytest.mark.parametrize(("text", "major"), [('openjdk version "17.0.15" 2025-04-15', 17),
                                             ('java version "1.8.0_392"', 8), ('openjdk version "21" 2023', 21),
                                             ("garbage", None)])
def test_java_major(text: str, major: int | None) -> None:
    assert doctor.java_major(text) == major


def fake_java(tmp_path: Path, version: str) -> Path:
    home = tmp_path / "jdk"
    (home / "bin").mkdir(parents=True)
    java = home / "bin" / "java"
    java.write_text(f"#!/bin/sh\necho 'openjdk version \"{version}\" 2020-01-01' >&2\n")
    java.chmod(0o755)
    return home


def test_old_java_fails_with_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JAVA_HOME", str(fake_java(tmp_path, "11.0.2")))
    c = doctor.check_java()
    assert not c.ok and "Java 11" in c.detail and "JAVA_HOME" in c.fix


def test_missing_java(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "nope"))
    c = doctor.check_java()
    assert not c.ok and "openjdk-17" in c.fix


def test_config_problem_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("spark:\n  shuffle_partitions: -1\n")
    c = doctor.check_config("local", str(CONF_DIR), [str(bad)])
    assert not c.ok and "bad.yaml: spark.shuffle_partitions: must be > 0" in c.detail


def test_doctor_checks_the_configuration_with_its_overrides(tmp_path: Path) -> None:
    """`doctor --set` and `--remote` are checked as every other command would take them: a value that command
    refuses fails the config check, and a malformed --set is a usage error."""
    res = cli("doctor", "--conf-dir", str(CONF_DIR), "--offline", "--set", "train.folds=1", cwd=tmp_path)
    assert res.returncode == 1 and "train.folds: must be >= 2" in res.stdout, res.stdout + res.stderr
    res = cli("doctor", "--conf-dir", str(CONF_DIR), "--offline", "--remote", "http://x", cwd=tmp_path)
    assert res.returncode == 1 and "spark.remote" in res.stdout, res.stdout + res.stderr
    res = cli("doctor", "--conf-dir", str(CONF_DIR), "--offline", "--set", "nokey", cwd=tmp_path)
    assert res.returncode == 2 and res.stderr.strip() == "error: --set: expected KEY=VALUE, got 'nokey'"


def test_unreachable_maven(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))  # no Ivy cache here
    monkeypatch.setenv("SPARKPROMO_MAVEN_REPO", "http://127.0.0.1:9/maven2")
    monkeypatch.setenv("MAVEN_SETTINGS", str(tmp_path / "none.xml"))
    c = doctor.check_delta_jars("4.0.1", timeout=2)
    assert not c.ok and "127.0.0.1:9" in c.detail and "mirror" in c.fix


def test_maven_mirrors_in_every_form_spark_takes(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A file: mirror, a mirror with credentials in its URL (sent as HTTP basic auth, never printed) and a
    malformed one (a failed check, not a traceback)."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("MAVEN_SETTINGS", str(tmp_path / "none.xml"))
    jar = tmp_path / "m2" / "io/delta/delta-spark_2.13/4.0.1/delta-spark_2.13-4.0.1.jar"
    monkeypatch.setenv("SPARKPROMO_MAVEN_REPO", (tmp_path / "m2").as_uri())
    assert not doctor.check_delta_jars("4.0.1").ok
    jar.parent.mkdir(parents=True)
    jar.write_bytes(b"PK")
    assert doctor.check_delta_jars("4.0.1").ok

    seen: list[str | None] = []

    class Repo(http.server.BaseHTTPRequestHandler):
        def do_HEAD(self) -> None:  # noqa: N802 - the handler's protocol
            seen.append(self.headers.get("Authorization"))
            ok = self.headers.get("Authorization") == "Basic " + base64.b64encode(b"me:s3cret").decode()
            self.send_response(200 if ok else 401)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Repo)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = server.server_address[1]
        monkeypatch.setenv("SPARKPROMO_MAVEN_REPO", f"http://me:s3cret@127.0.0.1:{port}/maven2")
        c = doctor.check_delta_jars("4.0.1", timeout=5)
        assert c.ok and "s3cret" not in c.detail, c.detail
        monkeypatch.setenv("SPARKPROMO_MAVEN_REPO", f"http://me:wrong@127.0.0.1:{port}/maven2")
        c = doctor.check_delta_jars("4.0.1", timeout=5)
        assert not c.ok and "wrong" not in c.detail, c.detail
    finally:
        server.shutdown()
    assert len(seen) == 2
    monkeypatch.setenv("SPARKPROMO_MAVEN_REPO", "repo.example/maven2")
    c = doctor.check_delta_jars("4.0.1", timeout=2)
    assert not c.ok and "not a repository URL" in c.detail


def test_cli_exit_codes(tmp_path: Path) -> None:
    ok = cli("doctor", "--conf-dir", str(CONF_DIR), "--offline", "--json", cwd=tmp_path)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert '"java": {"ok": true' in ok.stdout.splitlines()[-1]
    bad = cli("doctor", "--conf-dir", str(tmp_path), "--offline", cwd=tmp_path)
    assert bad.returncode == 1 and "[FAIL] config" in bad.stdout and "base.yaml" in bad.stdout
