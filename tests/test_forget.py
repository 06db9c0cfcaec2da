"""`forget`: the user is gone from every table, and no Parquet file left on disk still contains the id."""

from __future__ import annotations

import datetime as dt
import logging
import re
from pathlib import Path

import pytest
from chispa import assert_df_equality
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from sparkpromo import columns as C
from sparkpromo import delta_io, schemas
from sparkpromo.clean import run_clean
from sparkpromo.features.id_map import USER_KIND, extend_id_map
from sparkpromo.forget import (
    ID_HASH,
    LOG_RETENTION,
    forget_user,
    forget_users,
    forgotten_set,
    forgotten_uri,
    ids_frame,
    merge_keys,
    read_ids_file,
    targets,
    tombstone,
)
from sparkpromo.ingest import CORRUPT, run_ingest
from sparkpromo.pipeline import RunContext, run_stage
from sparkpromo.privacy import PrivacyError, pseudonym
from tests.conftest import make_config
from tests.measure import record

GONE = "u77"  # the user to forget
KEEP = "u7"   # a prefix of the forgotten id: must survive
KEY = "forget-test-key-0123456789"


def landing(root: Path) -> None:
    (root / "landing" / "events").mkdir(parents=True)
    (root / "landing" / "users").mkdir(parents=True)
    (root / "landing" / "items").mkdir(parents=True)
    (root / "landing" / "events" / "e.csv").write_text(
        "event_id,user_id,product_id,event_type,event_time,price,quantity,session_id\n"
        f"e1,{GONE},p1,view,2026-11-01T10:00:00Z,,,s1\n"
        f"e2, {GONE} ,p1,purchase,2026-11-01T10:01:00Z,5,1,s1\n"
        f"e3,{GONE},p1,click,2026-11-01T10:02:00Z,,,s1\n"          # quarantined: unknown type
        f"e4,{GONE},p1,view,oops\n"                                # quarantined: malformed record
        f"e5,{KEEP},p1,view,2026-11-01T10:00:00Z,,,s2\n")
    (root / "landing" / "users" / "u.jsonl").write_text(
        f'{{"user_id": "{GONE}", "signup_date": "2026-01-01", "birth_date": "1990-01-01", "country": "DE", '
        '"marketing_consent": true}\n'
        f'{{"user_id": "{KEEP}", "signup_date": "2026-01-01", "birth_date": "1990-01-01", "country": "DE", '
        '"marketing_consent": true}\n')
    (root / "landing" / "items" / "i.csv").write_text("product_id,category,brand,price,stock\np1,books,a,5,3\n")


def all_strings_in_parquet_files(spark: SparkSession, lakehouse: Path) -> set[str]:
    """Every string value of every Parquet file on disk, read raw (not through the Delta log)."""
    tables: dict[Path, list[str]] = {}
    for f in lakehouse.rglob("*.parquet"):
        root = next((d for d in f.parents if (d / "_delta_log").is_dir()), f.parent)
        tables.setdefault(root, []).append(str(f))
    values: set[str] = set()
    for root, files in tables.items():  # one read per table: a job per file would dominate the test's time
        df = spark.read.option("basePath", str(root)).option("mergeSchema", "true").parquet(*files)
        cols = [c for c, t in df.dtypes if t == "string"]
        for row in df.select(*cols).collect():
            values.update(v for v in row if v is not None)
    return values


@pytest.mark.slow
def test_forget_erases_user_everywhere(spark: SparkSession, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("SPARKPROMO_HMAC_KEY", KEY)
    landing(tmp_path)
    cfg = make_config(tmp_path)
    run_ingest(spark, cfg, "r1")
    run_clean(spark, cfg, "r1", dt.datetime(2026, 11, 2))
    # Gold tables in the shape the later stages write them.
    id_map = spark.createDataFrame([("user", GONE, 0), ("user", KEEP, 1), ("item", "p1", 0)],
                                   "kind string, original_id string, idx int")
    delta_io.overwrite(id_map, cfg.table("gold", "id_map"))
    delta_io.overwrite(spark.createDataFrame([(0, 0, 3.0, None), (1, 0, 1.0, None)],
                                       "user_idx int, item_idx int, confidence double, event_ts timestamp"),
                       cfg.table("gold", "interactions"))
    recs = spark.createDataFrame([("c1", dt.date(2026, 11, 1), GONE, "p1", 1), ("c1", dt.date(2026, 11, 1), KEEP,
                                                                                 "p1", 1)],
                                 "campaign_id string, run_date date, user_id string, item_id string, rank int")
    delta_io.overwrite(recs, cfg.table("gold", "recommendations"), partition_by=(C.CAMPAIGN_ID, C.RUN_DATE))
    lake = Path(cfg.lakehouse)
    before = all_strings_in_parquet_files(spark, lake)
    assert any(GONE in v for v in before)
    # Every table this session created states its log retention; gold/recommendations plays a table from an
    # earlier version, without it and without the statistics columns.
    old_table = cfg.table("gold", "recommendations")
    assert properties(spark, cfg.table("silver", "events"))[LOG_RETENTION] == "interval 30 days"
    spark.sql(f"ALTER TABLE delta.`{old_table}` UNSET TBLPROPERTIES ('{LOG_RETENTION}', '{delta_io.STATS_COLUMNS}')")
    assert not {LOG_RETENTION, delta_io.STATS_COLUMNS} & set(properties(spark, old_table))

    with caplog.at_level(logging.INFO, logger="sparkpromo.forget"):
        deleted = forget_user(spark, cfg, GONE)

    # Progress as it goes: one line per table when its rows are deleted, one when it is purged.
    lines = [r.getMessage() for r in caplog.records if r.name == "sparkpromo.forget"]
    assert "forget: silver/events: 2 row(s) deleted" in lines
    assert "forget: gold/interactions: 1 row(s) deleted" in lines
    assert sum(line.endswith(": purged") for line in lines) == len(deleted)

    assert deleted[cfg.table("bronze", "events")] == 4
    assert deleted[cfg.table("silver", "events")] == 2
    assert deleted[cfg.table("quarantine", "rows")] == 2
    assert deleted[cfg.table("gold", "interactions")] == 1
    after = all_strings_in_parquet_files(spark, lake)
    leaked = sorted(v for v in after if v == GONE or f'"{GONE}"' in v or f",{GONE}," in v or f" {GONE} " in v)
    assert leaked == []
    # The other user (whose id is a prefix of the forgotten one) is untouched.
    assert delta_io.read(spark, cfg.table("silver", "events")).where(F.col(C.USER_ID) == KEEP).count() == 1
    assert delta_io.read(spark, cfg.table("gold", "recommendations")).collect()[0][C.USER_ID] == KEEP
    assert delta_io.read(spark, cfg.table("gold", "interactions")).collect()[0][C.USER_IDX] == 1
    # No commit or checkpoint holds the id: MERGE records no literal, and no table keeps statistics of id columns.
    logs = [f for f in lake.rglob("*") if f.is_file() and "_delta_log" in f.parts and f.suffix in (".json", ".crc")]
    assert logs and not [str(f) for f in logs if token(GONE).search(f.read_bytes().decode("latin-1"))]
    forgotten = delta_io.read(spark, forgotten_uri(cfg)).collect()
    assert [r[ID_HASH] for r in forgotten] == [pseudonym(GONE, KEY.encode())]
    # The older table now bounds what its log keeps, like the others.
    props = properties(spark, old_table)
    assert props[LOG_RETENTION] == "interval 30 days"
    assert C.USER_ID not in props[delta_io.STATS_COLUMNS].split(",")

    # The same landing files sent again under new names: ingest drops the forgotten user's rows, clean sees none.
    for src, dst in (("events/e.csv", "events/e-resent.csv"), ("users/u.jsonl", "users/u-resent.jsonl")):
        (tmp_path / "landing" / dst).write_text((tmp_path / "landing" / src).read_text())
    again = run_ingest(spark, cfg, "r2")
    assert (again["events_forgotten"], again["events_rows"]) == (4, 1)
    assert (again["users_forgotten"], again["users_rows"]) == (1, 1)
    # Every file is read once: a later ingest opens none of them again, not even those of the forgotten user.
    third = run_ingest(spark, cfg, "r3")
    assert (third["events_new_files"], third["events_forgotten"], third["users_new_files"]) == (0, 0, 0)
    run_clean(spark, cfg, "r2", dt.datetime(2026, 11, 2))
    assert delta_io.read(spark, cfg.table("silver", "users")).where(F.col(C.USER_ID) == GONE).count() == 0
    assert delta_io.read(spark, cfg.table("silver", "events")).where(F.col(C.USER_ID) == GONE).count() == 0
    q = delta_io.read(spark, cfg.table("quarantine", "rows")).where(F.col(C.Q_PAYLOAD).rlike(token(GONE).pattern))
    assert q.count() == 0
    record("erasure", "forget, then the same landing files re-sent under new names (ingest + clean)", 6,
           f"ingest dropped {again['events_forgotten']} event + {again['users_forgotten']} user rows of the "
           f"forgotten id; 0 in bronze, silver, quarantine; 0 of {len(logs)} _delta_log files hold the id", "pass")


def test_forget_finds_unparsable_lines_and_either_form_of_the_id_and_spares_other_users_rows(
        spark: SparkSession, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A JSON line that failed to parse has no user column in bronze: its text is searched. Silver and gold rows
    written before privacy.pseudonymise was switched on hold the raw id, later ones the pseudonym: both go. A parsed
    quarantine row of another user whose item id happens to be the forgotten id stays."""
    monkeypatch.setenv("SPARKPROMO_HMAC_KEY", KEY)
    cfg = make_config(tmp_path, privacy={"pseudonymise": True})
    gone, keep = pseudonym(GONE, KEY.encode()), pseudonym(KEEP, KEY.encode())
    bronze_users = spark.createDataFrame(
        [(GONE, None, "f1"), (None, f'{{"user_id": "{GONE}", "signup_date": ', "f1"), (KEEP, None, "f1"),
         (None, f'{{"user_id": "{KEEP}", "signup_date": ', "f1")],
        f"user_id string, {CORRUPT} string, {C.SOURCE_FILE} string")
    delta_io.overwrite(bronze_users, cfg.table("bronze", "users"))
    parsed_other = f'{{"event_id":"e9","user_id":"{KEEP}","product_id":"{GONE}"}}'
    quarantine = spark.createDataFrame(
        [("events", "unknown_item", parsed_other, "f2", "r1"),
         ("events", "malformed_record", f"e4,{GONE},p1,view,oops", "f2", "r1"),
         ("users", "malformed_record", f'{{"user_id": "{GONE}", "signup_date": ', "f1", "r1")], schemas.QUARANTINE)
    delta_io.overwrite(quarantine, cfg.table("quarantine", "rows"))
    events = spark.createDataFrame([("e1", GONE), ("e2", gone), ("e3", keep)], "event_id string, user_id string")
    delta_io.overwrite(events, cfg.table("silver", "events"))
    id_map = spark.createDataFrame([("user", GONE, 0), ("user", keep, 1)], "kind string, original_id string, idx int")
    delta_io.overwrite(id_map, cfg.table("gold", "id_map"))

    forget_user(spark, cfg, GONE)

    def left(layer: str, name: str, *cols: str) -> list[tuple[object, ...]]:
        rows = delta_io.read(spark, cfg.table(layer, name)).select(*cols).collect()
        return sorted((tuple(r) for r in rows), key=repr)

    assert left("bronze", "users", "user_id", CORRUPT) == sorted(
        [(KEEP, None), (None, f'{{"user_id": "{KEEP}", "signup_date": ')], key=repr)
    assert left("quarantine", "rows", C.Q_PAYLOAD) == [(parsed_other,)]
    assert left("silver", "events", "event_id") == [("e3",)]
    assert left("gold", "id_map", "original_id") == sorted([(tombstone(0),), (keep,)], key=repr)


def test_a_batch_of_ids_is_found_by_one_equality_per_table(spark: SparkSession, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """A MERGE whose condition is an OR or an IN has no join key, and Spark compares every row with every id (a
    nested loop: 300 ids took 20x one id's time on quarantine). Every table's rows are found by one equality, the
    unparsable lines of bronze and quarantine included, and a batch forgets each of its ids whatever form it takes."""
    monkeypatch.setenv("SPARKPROMO_HMAC_KEY", KEY)
    cfg = make_config(tmp_path, privacy={"pseudonymise": True})
    other = "u78"
    keep = pseudonym(KEEP, KEY.encode())
    bronze_events = spark.createDataFrame(
        [(GONE, None), (f" {other}", None), (KEEP, None), (None, f"e8,{other},p1,view,oops"),
         (other, "e9,u78,p1,partly,parsed"), (KEEP, f"e7,{KEEP},p1,view,oops")],
        f"user_id string, {CORRUPT} string")
    delta_io.overwrite(bronze_events, cfg.table("bronze", "events"))
    quarantine = spark.createDataFrame(
        [("events", "unknown_item", f'{{"user_id":"{other}","product_id":"p1"}}', "f2", "r1"),
         ("events", "unknown_item", f'{{"user_id":"{KEEP}","product_id":"{other}"}}', "f2", "r1"),
         ("events", "malformed_record", f"e4,{GONE},p1,view,oops", "f2", "r1"),
         ("users", "missing_field", f'{{"user_id":"{GONE}"}}', "f1", "r1"),
         ("items", "malformed_record", f"p1,{GONE},x", "f3", "r1")], schemas.QUARANTINE)
    delta_io.overwrite(quarantine, cfg.table("quarantine", "rows"))
    events = spark.createDataFrame([("e1", GONE), ("e2", pseudonym(other, KEY.encode())), ("e3", keep)],
                                   "event_id string, user_id string")
    delta_io.overwrite(events, cfg.table("silver", "events"))
    ids = ids_frame(spark, [GONE, other], KEY.encode())

    checked = 0
    for target in targets(cfg):
        if not delta_io.is_delta(spark, target.uri):
            continue
        delta_io.read(spark, target.uri).createOrReplaceTempView("forget_t")
        # The keys as plain rows: their own plan (the ids' hashes, the few unparsable lines) is not the join's.
        spark.createDataFrame(merge_keys(spark, target, ids).collect(), "_key string"
                              ).createOrReplaceTempView("forget_s")
        plan = spark.sql(f"EXPLAIN SELECT * FROM forget_t t LEFT SEMI JOIN forget_s s ON {target.key} = s._key"
                         ).first()[0]
        assert "NestedLoop" not in plan and "Cartesian" not in plan, (target.uri, plan)
        assert "HashJoin" in plan or "SortMergeJoin" in plan, (target.uri, plan)
        checked += 1
    for view in ("forget_t", "forget_s"):
        spark.catalog.dropTempView(view)
    assert checked == 3

    forget_users(spark, cfg, [GONE, other])

    def left(layer: str, name: str, *cols: str) -> list[tuple[object, ...]]:
        return sorted((tuple(r) for r in delta_io.read(spark, cfg.table(layer, name)).select(*cols).collect()),
                      key=repr)

    assert left("bronze", "events", "user_id", CORRUPT) == sorted(
        [(KEEP, None), (KEEP, f"e7,{KEEP},p1,view,oops")], key=repr)
    assert left("quarantine", "rows", C.Q_PAYLOAD) == sorted(
        [(f'{{"user_id":"{KEEP}","product_id":"{other}"}}',), (f"p1,{GONE},x",)], key=repr)
    assert left("silver", "events", "event_id") == [("e3",)]


def test_a_changed_key_stops_loads_instead_of_letting_forgotten_users_back(spark: SparkSession, tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """The forgotten ids are kept as keyed hashes: under another key none would match, and re-sent rows of a
    forgotten user would load again. privacy/forgotten records a check value of its key (not the key)."""
    monkeypatch.setenv("SPARKPROMO_HMAC_KEY", KEY)
    cfg = make_config(tmp_path)
    forget_user(spark, cfg, GONE)
    assert forgotten_set(spark, cfg) is not None
    assert KEY not in str(properties(spark, forgotten_uri(cfg)))
    monkeypatch.setenv("SPARKPROMO_HMAC_KEY", "another-key-0123456789")
    with pytest.raises(PrivacyError, match="is not the one the forgotten ids in privacy.forgotten were hashed with"):
        forgotten_set(spark, cfg)  # what ingest and clean read first
    with pytest.raises(PrivacyError, match="is not the one"):
        forget_user(spark, cfg, KEEP)
    monkeypatch.setenv("SPARKPROMO_HMAC_KEY", KEY)
    assert [r[ID_HASH] for r in delta_io.read(spark, forgotten_uri(cfg)).collect()] == [pseudonym(GONE, KEY.encode())]


def test_an_ids_file_saved_with_a_byte_order_mark_reads_its_first_id(tmp_path: Path) -> None:
    path = tmp_path / "ids.txt"
    path.write_bytes("\ufeffu1\r\n u2 \n\n".encode())
    assert read_ids_file(str(path)) == ["u1", "u2"]


def properties(spark: SparkSession, uri: str) -> dict[str, str]:
    return {r["key"]: r["value"] for r in spark.sql(f"SHOW TBLPROPERTIES delta.`{uri}`").collect()}


def token(user_id: str) -> re.Pattern[str]:
    return re.compile(r"(^|[^A-Za-z0-9_])" + re.escape(user_id) + r"([^A-Za-z0-9_]|$)")


def test_quarantine_payload_leaves_personal_columns_out(spark: SparkSession) -> None:
    from sparkpromo.clean import DUP, RAW, quarantine_rows
    from sparkpromo.ingest import CORRUPT

    rows = [(False, "missing_field", ("u1", "1990-02-03", "a@b.example", "DE"), None, "f"),
            (False, "malformed_record", None, '{"user_id": "u2", "birth_date": "1991-04-05", "email": "x@y.example"',
             "f"),
            (False, "malformed_record", None, "u3,1992-06-07,+49 170 1234567,z@w.example,DE", "f")]
    df = spark.createDataFrame(rows, f"{DUP} boolean, {C.Q_RULE} string, {RAW} struct<user_id: string, "
                                     f"birth_date: string, email: string, country: string>, {CORRUPT} string, "
                                     f"{C.SOURCE_FILE} string")
    out = sorted(r[C.Q_PAYLOAD] for r in df.transform(quarantine_rows("users", "r1", ("birth_date", "email",
                                                                                    "phone"))).collect())
    assert out == sorted(['{"user_id":"u1","country":"DE"}',
                          '{"user_id": "u2", "birth_date": "***", "email": "***"',
                          "u3,***,***,***,DE"])
    joined = " ".join(out)
    assert "1990" not in joined and "1991" not in joined and "1992" not in joined and "@" not in joined
    assert "1234567" not in joined and all(u in joined for u in ("u1", "u2", "u3"))
    # A source's own names for personal columns may be any text: each is dropped as one name, not parsed as SQL
    odd = spark.createDataFrame([(False, "missing_field", ("u4", "1993-08-09", "q@r.example", "x"), None, "f")],
                                f"{DUP} boolean, {C.Q_RULE} string, {RAW} struct<user_id: string, `Date of Birth`: "
                                f"string, `e-mail`: string, `a.b`: string>, {CORRUPT} string, {C.SOURCE_FILE} string")
    got = odd.transform(quarantine_rows("users", "r1", ("Date of Birth", "e-mail", "a.b"))).first()[C.Q_PAYLOAD]
    assert got == '{"user_id":"u4"}'
    record("privacy", "quarantine payloads of users rows (parsed, JSON and CSV unparsable) with birth date, "
           "e-mail, phone", len(rows), f"{len(out)} payloads, 0 birth dates / e-mails / phones", "pass")


def test_a_long_unparsable_line_is_masked_without_blowing_up(spark: SparkSession) -> None:
    """A corrupt line may hold anything. A long quoted value after a personal key overflowed the regex's stack
    (Java recurses per repetition of a group; the StackOverflowError ends a local Spark's JVM), and an e-mail
    pattern retried at every start inside a long word took time quadratic in it (hours for this megabyte)."""
    from sparkpromo.clean import DUP, RAW, quarantine_rows
    from sparkpromo.ingest import CORRUPT

    lines = ['{"event_id": "e1", "email": "' + "y" * 200_000,  # unterminated
             '{"event_id": "e2", "email": "' + '\\"' * 50_000 + '", "name": "a\\\\", "x": "k\\\\"}',
             "x" * 1_000_000 + " q@r.example e3"]
    df = spark.createDataFrame([(False, "malformed_record", None, line, "f") for line in lines],
                               f"{DUP} boolean, {C.Q_RULE} string, {RAW} struct<event_id: string>, {CORRUPT} string, "
                               f"{C.SOURCE_FILE} string")
    out = sorted(r[C.Q_PAYLOAD] for r in df.transform(quarantine_rows("events", "r1", ("email", "name"))).collect())
    assert out == sorted(['{"event_id": "e1", "email": "***"',
                          '{"event_id": "e2", "email": "***", "name": "***", "x": "k\\\\"}',
                          "x" * 1_000_000 + " *** e3"])


def test_a_forgotten_users_index_is_never_given_to_a_new_user(spark: SparkSession, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """The forgotten user held the highest index: its id-map row keeps the index under a tombstone, so the next new
    user is numbered after it (the model in service still has a factor row for that index)."""
    monkeypatch.setenv("SPARKPROMO_HMAC_KEY", KEY)
    cfg = make_config(tmp_path)
    uri = cfg.table("gold", "id_map")
    delta_io.overwrite(spark.createDataFrame([("user", KEEP, 0), ("user", GONE, 1), ("item", "p1", 0)],
                                             schemas.ID_MAP), uri)

    assert forget_user(spark, cfg, GONE)[uri] == 1

    after = delta_io.read(spark, uri)
    expected = spark.createDataFrame([("user", KEEP, 0), ("user", tombstone(1), 1), ("item", "p1", 0)],
                                     schemas.ID_MAP)
    assert_df_equality(after, expected, ignore_row_order=True, ignore_nullable=True)
    new = extend_id_map(after, spark.createDataFrame([("u9",)], "user_id string"), USER_KIND)
    assert [(r[C.ORIGINAL_ID], r[C.IDX]) for r in new.collect()] == [("u9", 2)]


@pytest.mark.slow
def test_clean_takes_in_what_is_ingested_after_a_forget(spark: SparkSession, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """forget records the versions it leaves, bronze's among them; the next cleans still read bronze where ingest
    left it, so rows landed after a forget reach silver."""
    monkeypatch.setenv("SPARKPROMO_HMAC_KEY", KEY)
    landing(tmp_path)
    cfg = make_config(tmp_path)
    day = dt.date(2026, 11, 1)
    for name in ("ingest", "clean"):
        run_stage(name, spark, cfg, RunContext("r1", day))
    forget_user(spark, cfg, GONE)
    (tmp_path / "landing" / "events" / "later.csv").write_text(
        "event_id,user_id,product_id,event_type,event_time,price,quantity,session_id\n"
        f"e6,{KEEP},p1,purchase,2026-11-01T11:00:00Z,5,1,s3\n")
    for name in ("ingest", "clean"):
        run_stage(name, spark, cfg, RunContext("r2", day))
    silver = delta_io.read(spark, cfg.table("silver", "events")).select(C.EVENT_ID, C.USER_ID)
    assert_df_equality(silver, spark.createDataFrame([("e5", KEEP), ("e6", KEEP)], "event_id string, user_id string"),
                       ignore_row_order=True, ignore_nullable=True)
