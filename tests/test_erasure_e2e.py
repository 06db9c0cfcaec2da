"""Erasure end to end (issue 21): after ``forget --user U`` on a lakehouse built by ``run --sample`` (U in bronze,
silver, gold, quarantine and the offers), U's raw id is in no file under the lakehouse: no data file, no
``_delta_log`` commit or checkpoint, registry, report, quarantine payload or MLflow store. Re-ingesting the
original landing files and running the pipeline again brings none of U's rows back."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from sparkpromo import columns as C
from sparkpromo import delta_io
from sparkpromo.cli import main
from sparkpromo.forget import forgotten_uri
from sparkpromo.privacy import pseudonym
from tests.conftest import CONF_DIR, make_config
from tests.measure import record

pytestmark = pytest.mark.slow

KEY_ENV = "SPARKPROMO_HMAC_KEY"
KEY = "erasure-test-key-0123456789"
RUN_DATE = "2026-11-01"
# Small, but every layer holds users with quarantined rows and offers; one grid point, so no CV folds are fitted.
SETS = ("train.grid.rank=[4]", "train.grid.max_iter=[3]", "train.folds=2", "spark.shuffle_partitions=2",
        "mlflow.enabled=true")


def cli_run(root: Path, *args: str) -> int:
    sets = [a for s in SETS for a in ("--set", s)]
    return main([*args, "--conf-dir", str(CONF_DIR), "--run-date", RUN_DATE, *sets])


def token(user_id: str) -> re.Pattern[str]:
    """The id as a whole field (ids are prefixes of one another: u0001 of u00012)."""
    return re.compile(r"(?<![A-Za-z0-9_])" + re.escape(user_id) + r"(?![A-Za-z0-9_])")


def parquet_strings(spark: SparkSession, files: list[Path]) -> list[str]:
    """Every row of the Parquet files as JSON text (checkpoints hold nested structs: to_json covers them)."""
    out: list[str] = []
    for f in files:
        df = spark.read.parquet(str(f))
        out += [r[0] for r in df.select(F.to_json(F.struct(*[F.col(f"`{c}`") for c in df.columns]))).collect()]
    return out


def files_holding(spark: SparkSession, root: Path, pattern: re.Pattern[str]) -> dict[str, int]:
    """File -> matches of ``pattern``, over every file under ``root``: Parquet read as rows, the rest as text."""
    hits: dict[str, int] = {}
    parquet = [f for f in root.rglob("*.parquet") if f.is_file()]
    # One read per table directory: a job per data file would dominate the test's time.
    tables: dict[Path, list[Path]] = {}
    for f in parquet:
        if "_delta_log" in f.parts:
            n = sum(len(pattern.findall(s)) for s in parquet_strings(spark, [f]))
            if n:
                hits[str(f)] = n
        else:
            table = next((d for d in f.parents if (d / "_delta_log").is_dir()), f.parent)
            tables.setdefault(table, []).append(f)
    for table, files in tables.items():
        df = spark.read.option("mergeSchema", "true").parquet(*map(str, files))
        texts = [r[0] for r in df.select(F.to_json(F.struct(*[F.col(f"`{c}`") for c in df.columns]))).collect()]
        n = sum(len(pattern.findall(s)) for s in texts)
        if n:
            hits[str(table)] = n
    for f in root.rglob("*"):
        if f.is_file() and f.suffix != ".parquet":
            n = len(pattern.findall(f.read_bytes().decode("latin-1")))
            if n:
                hits[str(f)] = n
    return hits


def user_rows(spark: SparkSession, cfg: Any, user: str) -> dict[str, int]:
    """Rows naming ``user`` per table, read through Delta (bronze by source column, quarantine by payload)."""
    def count(layer: str, name: str, cond: Any) -> int:
        uri = cfg.table(layer, name)
        return delta_io.read(spark, uri).where(cond).count() if delta_io.is_delta(spark, uri) else -1

    idx = delta_io.read(spark, cfg.table("gold", "id_map")).where(
        (F.col(C.ID_KIND) == "user") & (F.col(C.ORIGINAL_ID) == user)).select(C.IDX).collect()
    return {
        "bronze.events": count("bronze", "events", F.trim(F.col(C.USER_ID)) == user),
        "bronze.users": count("bronze", "users", F.trim(F.col(C.USER_ID)) == user),
        "silver.events": count("silver", "events", F.col(C.USER_ID) == user),
        "silver.users": count("silver", "users", F.col(C.USER_ID) == user),
        "quarantine.rows": count("quarantine", "rows", F.col(C.Q_PAYLOAD).rlike(
            r"(^|[^A-Za-z0-9_])" + re.escape(user) + r"([^A-Za-z0-9_]|$)")),
        "gold.user_features": count("gold", "user_features", F.col(C.USER_ID) == user),
        "gold.id_map": len(idx),
        "gold.interactions": (count("gold", "interactions", F.col(C.USER_IDX) == int(idx[0][0])) if idx else 0),
        "gold.recommendations": count("gold", "recommendations", F.col(C.USER_ID) == user),
    }


def pick_user(spark: SparkSession, cfg: Any) -> str:
    """A user with quarantined rows, silver rows, features and offers: present in every layer."""
    recs = delta_io.read(spark, cfg.table("gold", "recommendations")).select(C.USER_ID)
    quarantined = (delta_io.read(spark, cfg.table("quarantine", "rows")).where(F.col(C.Q_SOURCE) == "events")
                   .select(F.trim(F.get_json_object(C.Q_PAYLOAD, "$.user_id")).alias(C.USER_ID)))
    users: DataFrame = (recs.join(quarantined, C.USER_ID, "left_semi")
                        .join(delta_io.read(spark, cfg.table("silver", "users")), C.USER_ID, "left_semi")
                        .join(delta_io.read(spark, cfg.table("gold", "user_features")), C.USER_ID, "left_semi"))
    row = users.distinct().orderBy(C.USER_ID).first()
    assert row is not None, "the sample has no user in every layer"
    return str(row[0])


def test_forget_leaves_no_trace_and_reingest_brings_nothing_back(
        spark: SparkSession, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lake, landing = tmp_path / "lakehouse", tmp_path / "landing"
    monkeypatch.setenv(KEY_ENV, KEY)
    monkeypatch.setenv("SPARKPROMO_LAKEHOUSE", str(lake))
    monkeypatch.setenv("SPARKPROMO_LANDING", str(landing))
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    monkeypatch.chdir(tmp_path)
    cfg = make_config(tmp_path)  # same lakehouse layout as the CLI's: only table paths are read from it
    assert cli_run(tmp_path, "run", "--sample", "--events", "2500", "--run-id", "r1") == 0
    assert cli_run(tmp_path, "report", "--run-id", "r1") == 0
    user = pick_user(spark, cfg)
    present = user_rows(spark, cfg, user)
    assert all(n > 0 for n in present.values()), present
    pattern = token(user)
    before = files_holding(spark, lake, pattern)
    # The scan sees the id where it is; no commit or checkpoint holds it even before (no statistics of id columns).
    assert any(f.endswith("silver/events") for f in before) and any("quarantine" in f for f in before), before
    assert not [f for f in before if "_delta_log" in f], before

    assert cli_run(tmp_path, "forget", "--user", user) == 0

    left = files_holding(spark, lake, pattern)
    assert left == {}, left
    assert all(n == 0 for n in user_rows(spark, cfg, user).values())
    forgotten = delta_io.read(spark, forgotten_uri(cfg)).collect()
    assert [r["id_hash"] for r in forgotten] == [pseudonym(user, KEY.encode())]

    # The original landing files again, re-sent under new names (ingest reads a file name once).
    for f in [f for f in landing.rglob("*") if f.is_file() and not f.name.startswith((".", "_"))]:
        shutil.copyfile(f, f.with_name(f"resent-{f.name}"))
    assert cli_run(tmp_path, "run", "--run-id", "r2", "--force") == 0
    after = user_rows(spark, cfg, user)
    assert all(n == 0 for n in after.values()), after
    stages = delta_io.read(spark, cfg.table("metrics", "stages")).where(
        (F.col(C.RUN_ID) == "r2") & (F.col("stage") == "ingest")).first()
    assert stages is not None and '"events_forgotten": ' in stages["result"]
    dropped = int(re.search(r'"events_forgotten": (\d+)', stages["result"]).group(1))  # type: ignore[union-attr]
    assert dropped == present["bronze.events"]
    assert files_holding(spark, lake, pattern) == {}
    record("erasure", f"forget --user on a `run --sample` lakehouse (2500 events), id in {len(before)} files before",
           sum(present.values()), f"0 files hold the id after (data, _delta_log JSON/checkpoints, registry, "
           f"reports, quarantine, mlruns); {len(present)} tables 0 rows", "pass")
    record("erasure", "re-ingest of the original landing files (re-sent under new names) + rerun of every stage",
           dropped, f"{dropped} rows of the forgotten user dropped at ingest; 0 rows in {len(after)} tables", "pass")
