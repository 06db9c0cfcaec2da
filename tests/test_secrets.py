"""Secrets come only from the environment and never show up in logs, Spark confs or printed query plans."""

from __future__ import annotations

import datetime as dt
import logging
import re
from pathlib import Path

import pytest
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from sparkpromo import columns as C
from sparkpromo import delta_io
from sparkpromo.clean import run_clean
from sparkpromo.config import ConfigError
from sparkpromo.features import run_features
from sparkpromo.ingest import run_ingest
from sparkpromo.privacy import keyed_hash, pseudonym, pseudonymise_users
from sparkpromo.recommend import run_recommend
from sparkpromo.session import HMAC_PAD_LITERAL, add_redaction
from tests.conftest import make_config
from tests.measure import record

KEY_ENV = "SPARKPROMO_TEST_SECRET_KEY"
KEY = "k3y-that-must-never-leak-0123456789"
PADS = [bytes(b ^ x for b in KEY.encode().ljust(64, b"\0")).hex() for x in (0x36, 0x5C)]


@pytest.mark.parametrize("value", [KEY, "0123456789abcdef", "my key", "${HOME}x/y"])
def test_config_takes_a_variable_name_not_a_key(tmp_path: Path, value: str) -> None:
    with pytest.raises(ConfigError, match=r"privacy\.key_env: must be the name of an environment variable"):
        make_config(tmp_path, privacy={"pseudonymise": True, "key_env": value})
    with pytest.raises(ConfigError, match=r"privacy\.key: unknown key"):
        make_config(tmp_path, privacy={"pseudonymise": True, "key": KEY})
    assert make_config(tmp_path, privacy={"key_env": KEY_ENV}).privacy.key_env == KEY_ENV


def test_spark_redacts_secret_confs_and_hmac_pads(spark: SparkSession, capsys: pytest.CaptureFixture[str]) -> None:
    # Secret-looking conf keys (e.g. fs.s3a.secret.key, a token or password) are covered by Spark's redaction.
    regex = spark.sparkContext.getConf().get("spark.redaction.regex", "(?i)secret|password|token|access[.]?key")
    assert all(w in regex for w in ("secret", "password", "token"))
    df = keyed_hash(spark.createDataFrame([("u1",)], "user_id string"), F.col("user_id"), "h", KEY.encode())
    df.explain(extended=True)
    plan = capsys.readouterr().out
    assert "Project" in plan and "sha2" in plan
    assert not any(p.lower() in plan.lower() for p in PADS)
    assert df.first()["h"] == pseudonym("u1", KEY.encode())


@pytest.mark.slow
def test_key_never_in_logs_or_spark_conf(spark: SparkSession, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv(KEY_ENV, KEY)
    cfg = make_config(tmp_path, privacy={"pseudonymise": True, "key_env": KEY_ENV},
                      campaigns=[{"id": "all", "type": "generic", "valid_from": "2026-01-01", "valid_to": "2026-12-31",
                                  "control_share": 0.0,
                                  "audience": {"all": [{"field": "purchases", "op": "ge", "value": 0}]}}])
    for name, text in (("events/e.csv", "event_id,user_id,product_id,event_type,event_time,price,quantity,"
                        "session_id\ne1,u1,p1,view,2026-11-01T10:00:00Z,,,s1\n"),
                       ("users/u.jsonl", '{"user_id": "u1", "marketing_consent": true}\n'),
                       ("items/i.csv", "product_id\np1\n")):
        (tmp_path / "landing" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "landing" / name).write_text(text)
    with caplog.at_level(logging.DEBUG):
        run_ingest(spark, cfg, "r1")
        run_clean(spark, cfg, "r1", dt.datetime(2026, 11, 2))
        run_features(spark, cfg, "r1", dt.date(2026, 11, 2))
        run_recommend(spark, cfg, "r1", dt.date(2026, 11, 2))
    # From silver on every table holds the pseudonym, never the raw id: the offers too (README, "the offers table").
    alias = pseudonym("u1", KEY.encode())
    for table, column, kind in (("silver/events", C.USER_ID, None), ("silver/users", C.USER_ID, None),
                                ("gold/user_features", C.USER_ID, None), ("gold/id_map", C.ORIGINAL_ID, "user"),
                                ("gold/recommendations", C.USER_ID, None)):
        df = delta_io.read(spark, cfg.table(*table.split("/")))
        df = df if kind is None else df.where(F.col(C.ID_KIND) == kind)
        assert [r[0] for r in df.select(column).collect()] == [alias], table
    logs = caplog.text + "\n".join(str(r.args) for r in caplog.records)
    confs = [*spark.sparkContext.getConf().getAll(), *spark.conf.getAll.items()]
    leaked = [s for s in (KEY, *PADS) if s in logs or any(s in f"{k}={v}" for k, v in confs)]
    assert caplog.records and not leaked
    record("security", "HMAC key in logs / Spark conf / printed plans (pseudonymised clean run)",
           len(caplog.records), f"{len(caplog.records)} log records, {len(confs)} Spark confs scanned",
           "key and pads absent")


def test_redaction_keeps_what_the_launcher_set(spark: SparkSession) -> None:
    key = "spark.sql.redaction.string.regex"
    before = spark.conf.get(key, None)
    try:
        spark.conf.set(key, "launcher-secret-[0-9]+")
        add_redaction(spark, HMAC_PAD_LITERAL)
        combined = spark.conf.get(key)
        assert re.search(combined, "launcher-secret-42") and re.search(combined, "X'" + "ab" * 64 + "'")
        add_redaction(spark, HMAC_PAD_LITERAL)
        assert spark.conf.get(key) == combined  # adding it again changes nothing
    finally:
        spark.conf.set(key, before or HMAC_PAD_LITERAL)


def key_derived_texts(key: bytes) -> list[str]:
    """The key and its pads as hex (both cases), base64, text and Python's bytes repr: what a plan could print."""
    import base64

    padded = key.ljust(64, b"\0")
    blobs = [key, *(bytes(b ^ x for b in padded) for x in (0x36, 0x5C))]
    out = [key.decode()]
    for b in blobs:
        out += [b.hex(), b.hex().upper(), base64.b64encode(b).decode(), repr(b)[2:-1]]
    return out


def test_plan_text_holds_no_key_material_even_without_redaction(
        spark: SparkSession, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv(KEY_ENV, KEY)
    key = "spark.sql.redaction.string.regex"
    before = spark.conf.get(key, None)
    spark.conf.unset(key)  # what the plan itself holds, not what redaction hides
    try:
        users = spark.createDataFrame([("u1", "p1"), ("u2", "p2")], "user_id string, item_id string")
        out = pseudonymise_users({"events": users}, KEY_ENV)["events"]
        out.explain(extended=True)
        out.explain(mode="formatted")
        plan = capsys.readouterr().out
    finally:
        if before is not None:
            spark.conf.set(key, before)
    texts = key_derived_texts(KEY.encode())
    leaked = [t for t in texts if t.lower() in plan.lower()]
    assert "== Physical Plan ==" in plan and "_hmac_ipad" in plan and "sha2" in plan
    assert leaked == [] and not re.search(HMAC_PAD_LITERAL, plan)
    assert dict(out.select(C.ITEM_ID, C.USER_ID).collect()) == {"p1": pseudonym("u1", KEY.encode()),
                                                                "p2": pseudonym("u2", KEY.encode())}
    record("security", "key material in explain(extended) + formatted plan text of a pseudonymising query, "
           "redaction off", len(texts), f"{len(plan)} plan characters, 0 of {len(texts)} key-derived strings",
           "absent")
