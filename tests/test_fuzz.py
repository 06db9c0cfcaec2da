"""Fuzzed landing files → ingest → clean: every malformed row is quarantined under the rule of the one defect it
carries, every good row arrives in silver exactly, and nothing is lost or invented on the way.

The landing zone is written by a seeded generator (``SEED``): ~12,000 event lines in several CSV files (one of them
latin-1 encoded, one with CRLF line ends, one holding re-sent duplicates), users as JSON lines, items as CSV. Each
event line carries a unique tag (``ROW000123``) in its session id, which survives into the quarantine payload even
when the line cannot be parsed, so each quarantined row can be matched to the defect injected into it.
"""

from __future__ import annotations

import datetime as dt
import random
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from chispa import assert_df_equality
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from sparkpromo import clean, delta_io
from sparkpromo import columns as C
from sparkpromo.clean import run_clean
from sparkpromo.config import AppConfig
from sparkpromo.features import extend_id_map
from sparkpromo.ingest import run_ingest
from sparkpromo.schemas import ID_MAP
from tests.conftest import make_config
from tests.measure import record

SEED = 20261101
N_EVENTS = 12_000
AS_OF = dt.datetime(2026, 11, 2)
BOT_MAX = 40
USERS = [f"u{i:04d}" for i in range(400)]
ITEMS = [f"p{i:04d}" for i in range(150)]
BOT = "bot01"
HEADER = "event_id,user_id,product_id,event_type,event_time,price,quantity,session_id"
MB = 1_000_000
TYPE_MAP = {"cart": "add_to_cart", "fav": "favorite", "buy": "purchase"}


# defect kind -> the rule clean must name. ``encoding`` rows are written latin-1: undecodable as UTF-8.
EVENT_DEFECTS: dict[str, str] = {
    "missing_event_id": clean.MISSING_FIELD, "missing_user": clean.MISSING_FIELD,
    "missing_item": clean.MISSING_FIELD, "missing_type": clean.MISSING_FIELD, "missing_ts": clean.MISSING_FIELD,
    "oversized_user": clean.OVERSIZED_FIELD, "oversized_session": clean.OVERSIZED_FIELD,
    "unknown_event_type": clean.UNKNOWN_EVENT_TYPE,
    "malformed_ts": clean.MALFORMED_TIMESTAMP, "future_ts": clean.FUTURE_TIMESTAMP,
    "malformed_price": clean.MALFORMED_NUMBER, "non_finite_price": clean.MALFORMED_NUMBER,
    "malformed_quantity": clean.MALFORMED_NUMBER,
    "negative_price": clean.NEGATIVE_PRICE, "invalid_quantity": clean.INVALID_QUANTITY,
    "unknown_user": clean.UNKNOWN_USER, "unknown_item": clean.UNKNOWN_ITEM,
    "unbalanced_quote": clean.MALFORMED_RECORD, "too_many_fields": clean.MALFORMED_RECORD,
    "too_few_fields": clean.MALFORMED_RECORD, "encoding": clean.MALFORMED_RECORD,
}
# One 1 MB value per column it can land in, and the rule each must get.
HUGE: dict[str, str] = {"user_id": clean.OVERSIZED_FIELD, "session_id": clean.OVERSIZED_FIELD,
                        "event_type": clean.OVERSIZED_FIELD, "event_time": clean.MALFORMED_TIMESTAMP,
                        "price": clean.MALFORMED_NUMBER, "quantity": clean.MALFORMED_NUMBER}


@dataclass
class Landing:
    files: dict[str, list[bytes]] = field(default_factory=dict)  # events file name -> data lines (no header)
    expected_rule: dict[str, str] = field(default_factory=dict)  # tag -> rule, for every bad event line
    kind_of: dict[str, str] = field(default_factory=dict)  # tag -> defect kind injected
    expected_silver: list[tuple[Any, ...]] = field(default_factory=list)
    duplicates: int = 0
    defects: Counter[str] = field(default_factory=Counter)
    bad_users: dict[str, str] = field(default_factory=dict)  # tag -> rule
    good_users: list[tuple[str, str, bool]] = field(default_factory=list)

    @property
    def event_lines(self) -> int:
        return sum(len(v) for v in self.files.values())


def _ts(rng: random.Random) -> tuple[str, dt.datetime]:
    """A random valid timestamp in one of the accepted spellings, and its UTC value."""
    t = dt.datetime(2026, 10, 1) + dt.timedelta(seconds=rng.randrange(29 * 86400))
    style = rng.randrange(3)
    if style == 0:
        return t.strftime("%Y-%m-%dT%H:%M:%SZ"), t
    if style == 1:
        return t.strftime("%Y-%m-%d %H:%M:%S"), t
    return (t + dt.timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%S+02:00"), t


def _good_event(rng: random.Random, i: int, user: str | None = None, when: tuple[str, dt.datetime] | None = None
                ) -> tuple[dict[str, str], tuple[Any, ...]]:
    """A valid event (raw fields) and its expected silver row."""
    eid, uid, iid = f"e{i:06d}", user or rng.choice(USERS), rng.choice(ITEMS)
    raw_type, canon = rng.choice([("view", "view"), ("VIEW", "view"), (" View ", "view"), ("cart", "add_to_cart"),
                                  ("add_to_cart", "add_to_cart"), ("fav", "favorite"), ("buy", "purchase"),
                                  ("purchase", "purchase")])
    ts_raw, ts = when or _ts(rng)
    price = qty = ""
    exp_price: float | None = None
    exp_qty: int | None = None
    if canon in ("purchase", "add_to_cart"):
        cents = rng.randrange(0, 100_000)
        price, exp_price = f"{cents / 100:.2f}", cents / 100
        q = rng.randrange(1, 6)
        qty, exp_qty = str(q), q
    pad = " " if rng.random() < 0.1 else ""
    raw = {"event_id": f"{pad}{eid}{pad}", "user_id": f"{pad}{uid}", "product_id": iid, "event_type": raw_type,
           "event_time": ts_raw, "price": price, "quantity": qty, "session_id": f"ROW{i:06d}"}
    return raw, (eid, uid, iid, canon, ts, exp_price, exp_qty, f"ROW{i:06d}")


def _line(raw: dict[str, str]) -> str:
    return ",".join(raw[c] for c in HEADER.split(","))


def _defect(rng: random.Random, kind: str, raw: dict[str, str], i: int) -> str:
    """Apply one defect to a valid event's fields; returns the CSV line."""
    if kind.startswith("missing_"):
        col = {"missing_event_id": "event_id", "missing_user": "user_id", "missing_item": "product_id",
               "missing_type": "event_type", "missing_ts": "event_time"}[kind]
        raw[col] = rng.choice(["", "  "])
    elif kind == "oversized_user":
        raw["user_id"] = "u" * rng.randrange(257, 2000)
    elif kind == "oversized_session":
        raw["session_id"] += "x" * rng.randrange(250, 1000)
    elif kind == "unknown_event_type":
        raw["event_type"] = rng.choice(["click", "pageview", "purchased", "vi ew", "view\x00", "\u00fcber"])
    elif kind == "malformed_ts":
        raw["event_time"] = rng.choice(["not-a-date", "2026-13-45T99:00:00Z", "31.12.2025 10:00", "yesterday",
                                        "2026-10-01T25:61:00Z"])
    elif kind == "future_ts":
        raw["event_time"] = f"20{rng.randrange(27, 99)}-01-01T00:00:00Z"
    elif kind in ("malformed_price", "non_finite_price", "negative_price", "malformed_quantity", "invalid_quantity"):
        raw["event_type"], raw["price"], raw["quantity"] = "purchase", "9.99", "1"
        if kind == "malformed_price":
            raw["price"] = rng.choice(["abc", "12.3.4", "0x10", "1;5", "$5"])
        elif kind == "non_finite_price":
            raw["price"] = rng.choice(["NaN", "Infinity", "-Infinity", "inf", "1e999"])
        elif kind == "negative_price":
            raw["price"] = rng.choice(["-1.5", "-0.01", "-1e6"])
        elif kind == "malformed_quantity":
            raw["quantity"] = rng.choice(["two", "1/2", "NaN"])
        else:
            raw["quantity"] = rng.choice(["0", "-3", "1.5", "99999999999", "2147483648"])
    elif kind == "unknown_user":
        raw["user_id"] = f"ghost{i}"
    elif kind == "unknown_item":
        raw["product_id"] = f"gone{i}"
    elif kind == "unbalanced_quote":
        col = rng.choice(["event_id", "user_id", "product_id", "event_type"])
        raw[col] = '"' + raw[col]
    elif kind == "too_many_fields":
        return _line(raw) + "," + ",".join(["extra"] * rng.randrange(1, 4))
    elif kind == "too_few_fields":
        return ",".join(_line(raw).split(",")[: rng.randrange(2, 7)] + [raw["session_id"]])
    elif kind == "encoding":
        col = rng.choice(["user_id", "product_id", "session_id"])
        raw[col] += rng.choice(["\u00e9", "\u00fc\u00df", "\u00a3"])  # written latin-1: invalid UTF-8
    return _line(raw)


def fuzz_landing(seed: int = SEED, n: int = N_EVENTS) -> Landing:
    rng = random.Random(seed)
    out = Landing()
    main: list[bytes] = []
    latin: list[bytes] = []
    crlf: list[bytes] = []
    resent: list[bytes] = []
    kinds = list(EVENT_DEFECTS)
    n_huge = len(HUGE)
    n_bot = BOT_MAX + 20
    bot_day = dt.datetime(2026, 10, 20, 8)
    for i in range(n - n_huge - n_bot):
        raw, row = _good_event(rng, i)
        tag = raw["session_id"]
        if rng.random() < 0.55:
            target = crlf if rng.random() < 0.05 else main
            line = _line(raw).encode("utf-8")
            target.append(line)
            out.expected_silver.append(row)
            if rng.random() < 0.03:  # an exact re-send of the same event in a later file: a counted duplicate
                resent.append(line)
                out.duplicates += 1
            continue
        kind = rng.choice(kinds)
        out.defects[kind] += 1
        out.expected_rule[tag] = EVENT_DEFECTS[kind]
        out.kind_of[tag] = kind
        line_text = _defect(rng, kind, raw, i)
        if kind == "encoding":
            latin.append(line_text.encode("latin-1"))
        else:
            main.append(line_text.encode("utf-8"))
    # Good rows in the latin-1 file are plain ASCII, the same bytes in either encoding: they must arrive.
    for j in range(50):
        i = n - n_huge - n_bot + j
        raw, row = _good_event(rng, i)
        latin.append(_line(raw).encode("latin-1"))
        out.expected_silver.append(row)
    # Huge values, one per column, 1 MB each.
    for j, col in enumerate(HUGE):
        i = n - n_huge - n_bot + 50 + j
        raw, _ = _good_event(rng, i)
        raw["event_type"], raw["price"], raw["quantity"] = "purchase", "1.00", "1"
        raw[col] = (raw[col] if col == "session_id" else "") + "9" * MB
        main.append(_line(raw).encode("utf-8"))
        out.expected_rule[f"ROW{i:06d}"] = HUGE[col]
        out.kind_of[f"ROW{i:06d}"] = f"huge_{col}"
        out.defects[f"huge_{col}"] += 1
    # A bot: more than BOT_MAX valid events on one day; every one of them is quarantined.
    for j in range(n_bot):
        i = n - n_bot + 50 + j
        when = bot_day + dt.timedelta(minutes=j)
        raw, _ = _good_event(rng, i, user=BOT, when=(when.strftime("%Y-%m-%dT%H:%M:%SZ"), when))
        main.append(_line(raw).encode("utf-8"))
        out.expected_rule[raw["session_id"]] = clean.BOT_ACTIVITY
        out.kind_of[raw["session_id"]] = "bot"
        out.defects["bot"] += 1
    rng.shuffle(main)
    out.files = {"part-0.csv": main[: len(main) // 2], "part-1.csv": main[len(main) // 2:], "latin1.csv": latin,
                 "crlf.csv": crlf, "resent.csv": resent}
    # Users: every id events refer to, plus defective user lines tagged UBAD<n> (never referenced by events).
    countries = ["DE", "FR", "NL", "PL"]
    out.good_users = [(u, rng.choice(countries), rng.random() < 0.5) for u in [*USERS, BOT]]
    return out


def users_lines(land: Landing, rng: random.Random) -> list[bytes]:
    lines = [(f'{{"user_id": "{u}", "signup_date": "2026-01-0{1 + k % 9}", "birth_date": "1990-05-17", '
              f'"country": "{c.lower()}", "marketing_consent": {str(m).lower()}}}').encode()
             for k, (u, c, m) in enumerate(land.good_users)]
    bad = [
        (b'{"user_id": "UBAD0000", "country": "DE"', clean.MALFORMED_RECORD),                  # truncated object
        (b'{"user_id": "UBAD0001" "country": "DE"}', clean.MALFORMED_RECORD),                  # missing comma
        (b'not json at all UBAD0002', clean.MALFORMED_RECORD),
        ('{"user_id": "UBAD0003\u00e9", "country": "DE"}'.encode("latin-1"), clean.MALFORMED_RECORD),
        (b'{"user_id": "UBAD0004\xff\xfe", "country": "DE"}', clean.MALFORMED_RECORD),
        (b'{"user_id": "", "country": "UBAD0005"}', clean.MISSING_FIELD),
        (b'{"country": "UBAD0006"}', clean.MISSING_FIELD),
        (b'{"user_id": "UBAD0007", "country": "' + b"x" * MB + b'"}', clean.OVERSIZED_FIELD),
        (b'{"user_id": "UBAD0008", "signup_date": "2026-02-30"}', clean.MALFORMED_DATE),
        (b'{"user_id": "UBAD0009", "birth_date": "' + b"1" * MB + b'"}', clean.MALFORMED_DATE),
        (b'{"user_id": "UBAD0010", "marketing_consent": "maybe"}', clean.MALFORMED_VALUE),
    ]
    for line, rule in bad:
        tag = re.search(rb"UBAD\d{4}", line).group().decode()  # type: ignore[union-attr]
        land.bad_users[tag] = rule
    out = lines + [b for b, _ in bad]
    rng.shuffle(out)
    return out


def write_landing(cfg: AppConfig, land: Landing) -> None:
    ev = Path(cfg.sources.events.path)
    ev.mkdir(parents=True)
    for name, lines in land.files.items():
        sep = b"\r\n" if name == "crlf.csv" else b"\n"
        (ev / name).write_bytes(sep.join([HEADER.encode(), *lines]) + sep)
    us = Path(cfg.sources.users.path)
    us.mkdir(parents=True)
    (us / "users.jsonl").write_bytes(b"\n".join(users_lines(land, random.Random(SEED + 1))) + b"\n")
    it = Path(cfg.sources.items.path)
    it.mkdir(parents=True)
    (it / "items.csv").write_text("product_id,category,brand,price,stock\n"
                                  + "".join(f"{p},cat{k % 7},brand{k % 5},{k}.5,{k}\n" for k, p in enumerate(ITEMS)))


@pytest.fixture(scope="module")
def fuzzed(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory
           ) -> tuple[AppConfig, Landing, dict[str, int], dict[str, int]]:
    root = tmp_path_factory.mktemp("fuzz")
    base = make_config(root)
    cfg = make_config(root, clean={"bot_max_events_per_day": BOT_MAX}, sources={
        "events": {"path": base.sources.events.path, "options": {"header": "true"},
                   "columns": {"item_id": "product_id", "event_ts": "event_time"}, "event_type_map": TYPE_MAP},
        "users": {"path": base.sources.users.path, "format": "json"},
        "items": {"path": base.sources.items.path, "options": {"header": "true"},
                  "columns": {"item_id": "product_id"}}})
    land = fuzz_landing()
    write_landing(cfg, land)
    ingested = run_ingest(spark, cfg, "fuzz")
    cleaned = run_clean(spark, cfg, "fuzz", AS_OF)
    return cfg, land, ingested, cleaned


def quarantined(spark: SparkSession, cfg: AppConfig, source: str, tag_re: str) -> DataFrame:
    """(tag, rule) of every quarantined row of ``source``, the tag taken from the raw payload."""
    return (delta_io.read(spark, cfg.table("quarantine", "rows")).where(F.col(C.Q_SOURCE) == source)
            .select(F.regexp_extract(C.Q_PAYLOAD, tag_re, 0).alias("tag"), F.col(C.Q_RULE).alias("rule")))


def assert_rules(got: DataFrame, expected: dict[str, str]) -> None:
    """Exact (tag, rule) set equality; on failure, a summary of (expected rule -> actual rule) mismatches."""
    rows = [(r["tag"], r["rule"]) for r in got.collect()]
    actual = dict(rows)
    wrong = Counter((expected.get(t), actual.get(t)) for t in set(actual) | set(expected)
                    if expected.get(t) != actual.get(t))
    examples = sorted(t for t in set(actual) | set(expected) if expected.get(t) != actual.get(t))[:10]
    assert not wrong, f"(expected, actual) rule mismatches: {dict(wrong)}; e.g. tags {examples}"
    assert len(rows) == len(actual), "a bad row was quarantined more than once"


def test_generator_covers_every_defect(fuzzed: tuple[AppConfig, Landing, dict[str, int], dict[str, int]]) -> None:
    _, land, _, _ = fuzzed
    assert land.event_lines >= N_EVENTS
    assert len(land.expected_rule) >= 5_000  # thousands of bad rows, mixed with thousands of good ones
    assert set(EVENT_DEFECTS) <= set(land.defects) and all(land.defects[k] >= 100 for k in EVENT_DEFECTS)
    assert land.duplicates > 0


def test_nothing_lost_at_ingest(fuzzed: tuple[AppConfig, Landing, dict[str, int], dict[str, int]]) -> None:
    _, land, ingested, cleaned = fuzzed
    assert ingested["events_rows"] == land.event_lines == cleaned["events.bronze_rows"]
    assert ingested["events_files"] == len(land.files)
    assert ingested["users_rows"] == len(land.good_users) + len(land.bad_users)


def test_every_bad_event_quarantined_with_its_rule(spark: SparkSession,
                                                   fuzzed: tuple[AppConfig, Landing, dict[str, int], dict[str, int]]
                                                   ) -> None:
    cfg, land, _, _ = fuzzed
    got = quarantined(spark, cfg, "events", r"ROW\d{6}")
    assert_rules(got, land.expected_rule)
    actual = dict((r["tag"], r["rule"]) for r in got.collect())
    for kind in sorted(set(land.kind_of.values())):
        tags = [t for t, k in land.kind_of.items() if k == kind]
        rule = land.expected_rule[tags[0]]
        n_ok = sum(actual.get(t) == rule for t in tags)
        record("bad input (events)", kind, len(tags), f"{n_ok} in quarantine as {rule}, 0 in silver",
               "pass" if n_ok == len(tags) else "FAIL")
    expected = spark.createDataFrame(sorted(land.expected_rule.items()), "tag string, rule string")
    assert_df_equality(got, expected, ignore_row_order=True, ignore_nullable=True)


def test_good_events_arrive_exactly(spark: SparkSession,
                                    fuzzed: tuple[AppConfig, Landing, dict[str, int], dict[str, int]]) -> None:
    cfg, land, _, _ = fuzzed
    cols = [C.EVENT_ID, C.USER_ID, C.ITEM_ID, C.EVENT_TYPE, C.EVENT_TS, C.PRICE, C.QUANTITY, C.SESSION_ID]
    got = delta_io.read(spark, cfg.table("silver", "events")).select(*cols)
    expected = spark.createDataFrame(land.expected_silver, "event_id string, user_id string, item_id string, "
                                     "event_type string, event_ts timestamp, price double, quantity int, "
                                     "session_id string")
    assert_df_equality(got, expected, ignore_row_order=True, ignore_nullable=True)


def test_balance_input_equals_silver_plus_quarantine_plus_duplicates(
        spark: SparkSession, fuzzed: tuple[AppConfig, Landing, dict[str, int], dict[str, int]]) -> None:
    cfg, land, _, c = fuzzed
    silver = delta_io.read(spark, cfg.table("silver", "events")).count()
    q = delta_io.read(spark, cfg.table("quarantine", "rows")).where(F.col(C.Q_SOURCE) == "events").count()
    assert (silver, q, c["events.duplicates"]) == (len(land.expected_silver), len(land.expected_rule),
                                                   land.duplicates)
    assert silver + q + c["events.duplicates"] == land.event_lines
    record("bad input (events)", f"all fuzzed event lines (seed {SEED})", land.event_lines,
           f"silver {silver} + quarantine {q} + duplicates {c['events.duplicates']}", "balanced")
    rules = Counter(land.expected_rule.values())
    assert {k.split(":", 1)[1]: v for k, v in c.items() if k.startswith("events.quarantine:")} == dict(rules)


def test_users_fuzz(spark: SparkSession, fuzzed: tuple[AppConfig, Landing, dict[str, int], dict[str, int]]) -> None:
    cfg, land, _, c = fuzzed
    expected_q = spark.createDataFrame(sorted(land.bad_users.items()), "tag string, rule string")
    assert_df_equality(quarantined(spark, cfg, "users", r"UBAD\d{4}"), expected_q, ignore_row_order=True,
                       ignore_nullable=True)
    got = delta_io.read(spark, cfg.table("silver", "users")).select(C.USER_ID, C.COUNTRY, C.MARKETING_CONSENT)
    expected = spark.createDataFrame(land.good_users, "user_id string, country string, marketing_consent boolean")
    assert_df_equality(got, expected, ignore_row_order=True, ignore_nullable=True)
    assert c["users.silver_rows"] + c["users.quarantined"] + c["users.duplicates"] == c["users.bronze_rows"]
    for rule, n in sorted(Counter(land.bad_users.values()).items()):
        record("bad input (users, JSON lines)", f"lines that must fail {rule}", n,
               f"{c.get('users.quarantine:' + rule, 0)} quarantined as {rule}", "pass")
    record("bad input (users, JSON lines)", "all user lines", c["users.bronze_rows"],
           f"silver {c['users.silver_rows']} + quarantine {c['users.quarantined']}", "balanced")


# --------------------------------------------------------------------------------------------------------------
# Integer-id sources: ids beyond the Int (and Long) range are opaque strings until the id map numbers them
# --------------------------------------------------------------------------------------------------------------
BIG_IDS = ["196", "2147483647", "2147483648", "99999999999", "18446744073709551616", "-7", "007"]


def test_ratings_ids_outside_int_range(spark: SparkSession, tmp_path: Path) -> None:
    cfg = make_config(tmp_path, sources={"kind": "ratings", "events": {
        "path": str(tmp_path / "landing" / "ml"), "format": "csv", "options": {"header": "false", "sep": "\t"},
        "columns": {"user_id": "_c0", "item_id": "_c1", "rating": "_c2", "event_ts": "_c3"},
        "timestamp_format": "unix", "patterns": ["*.data"]}}, privacy={"consent_without_users": "granted"})
    d = tmp_path / "landing" / "ml"
    d.mkdir(parents=True)
    good = [(u, BIG_IDS[(k + 3) % len(BIG_IDS)], str(1 + k % 5), str(881250949 + k)) for k, u in enumerate(BIG_IDS)]
    bad = [("1", "2", "99999999999999999999x", "881250949"),   # rating not a number
           ("1", "3", "NaN", "881250949"),                    # rating not finite
           ("1", "4", "3", "99999999999999"),                 # timestamp out of range
           ("", "5", "3", "881250949")]                       # missing user
    (d / "u.data").write_text("".join("\t".join(r) + "\n" for r in good + bad))
    run_ingest(spark, cfg, "r1")
    counts = run_clean(spark, cfg, "r1", AS_OF)

    got = delta_io.read(spark, cfg.table("silver", "events")).select(C.USER_ID, C.ITEM_ID, C.RATING)
    expected = spark.createDataFrame([(u, i, float(r)) for u, i, r, _ in good],
                                     "user_id string, item_id string, rating double")
    assert_df_equality(got, expected, ignore_row_order=True, ignore_nullable=True)
    assert counts["events.quarantined"] == len(bad)
    assert {k: v for k, v in counts.items() if k.startswith("events.quarantine:")} == {
        f"events.quarantine:{clean.MALFORMED_NUMBER}": 2, f"events.quarantine:{clean.MALFORMED_TIMESTAMP}": 1,
        f"events.quarantine:{clean.MISSING_FIELD}": 1}
    # The id map numbers them densely in the Int range ALS needs.
    idx = extend_id_map(spark.createDataFrame([], ID_MAP), got.select(C.USER_ID), "user").collect()
    assert sorted(r[C.IDX] for r in idx) == list(range(len(BIG_IDS)))
    assert {r[C.ORIGINAL_ID] for r in idx} == set(BIG_IDS)
    record("bad input (ratings)", "ids beyond Int/Long range (e.g. 99999999999, 2^64)", len(good),
           f"{len(good)} in silver as exact strings, id map idx 0..{len(BIG_IDS) - 1}", "pass")
    record("bad input (ratings)", "bad rating / timestamp / missing id", len(bad),
           f"{counts['events.quarantined']} quarantined", "pass")
