"""The wheel a platform installs: it requires what the code needs on top of a Spark runtime, never Spark itself."""

from __future__ import annotations

import email.parser
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def requires_dist(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """Requires-Dist of the wheel built the way the bundle builds it (``pip wheel --no-deps``), offline."""
    out = tmp_path_factory.mktemp("wheel")
    build = tmp_path_factory.mktemp("build")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out),
                    str(ROOT)], check=True, cwd=build, timeout=300)
    (wheel,) = out.glob("sparkpromo-*.whl")
    with zipfile.ZipFile(wheel) as z:
        (meta,) = [n for n in z.namelist() if n.endswith(".dist-info/METADATA")]
        headers = email.parser.Parser().parsestr(z.read(meta).decode("utf-8"))
    return [" ".join(r.split()) for r in headers.get_all("Requires-Dist") or []]


def _unconditional(reqs: list[str]) -> list[str]:
    return [r for r in reqs if ";" not in r]


def test_plain_wheel_does_not_require_spark(requires_dist: list[str]) -> None:
    plain = _unconditional(requires_dist)
    assert not [r for r in plain if r.lower().startswith(("pyspark", "delta-spark", "delta_spark"))], plain
    assert {r.split(">")[0].split("=")[0].split("<")[0].lower() for r in plain} == {"pyyaml", "numpy"}


def test_local_extra_carries_the_spark_delta_pair(requires_dist: list[str]) -> None:
    local = sorted(r.split(";")[0].strip() for r in requires_dist if 'extra == "local"' in r)
    assert local == ["delta-spark==4.0.1", "pyspark==4.0.1"]


def test_connect_extra_is_a_client_with_delta_python_api(requires_dist: list[str]) -> None:
    connect = sorted(r.split(";")[0].strip() for r in requires_dist if 'extra == "connect"' in r)
    assert connect == ["delta-spark==4.0.1", "pyspark[connect]==4.0.1"]


def test_test_extra_includes_local_and_the_connect_client(requires_dist: list[str]) -> None:
    test = {r.split(";")[0].strip() for r in requires_dist if 'extra == "test"' in r}
    assert {"pyspark==4.0.1", "delta-spark==4.0.1", "pyspark[connect]==4.0.1"} <= test


def test_setup_script_installs_the_local_extra() -> None:
    """README's two commands stay as they are: scripts/setup.sh brings Spark in through the `local` extra."""
    text = (ROOT / "scripts" / "setup.sh").read_text()
    assert "pip install -q -e '.[local,test]'" in text
