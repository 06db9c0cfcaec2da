"""The sample-shop generator: pure Python + numpy, no Spark. Files are parsed back with the csv/json modules."""

from __future__ import annotations

import collections
import csv
import datetime as dt
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sparkpromo import columns as C
from sparkpromo import generate as G
from sparkpromo.generate import DIRT_SHARES, GenerationReport, generate_shop
from sparkpromo.generate import files as generate_files

N = 20_000
TS_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
CANONICAL = set(C.EVENT_TYPES)


# ----------------------------------------------------------------------------------------------------------------
# Parsing helpers (independent of the generator's internals)
# ----------------------------------------------------------------------------------------------------------------
def read_events(report: GenerationReport) -> list[dict[str, str]]:
    rows: list[dict[str, str]] = []
    for path in report.event_files:
        with path.open(newline="", encoding="utf-8") as fh:
            rows.extend(csv.DictReader(fh))
    return rows


def read_users(report: GenerationReport) -> list[dict[str, Any]]:
    with report.users_file.open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


def read_items(report: GenerationReport) -> list[dict[str, str]]:
    with report.items_file.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def parse_ts(value: str) -> dt.datetime | None:
    try:
        return dt.datetime.strptime(value, TS_FORMAT)
    except ValueError:
        return None


def parse_date(value: str) -> dt.date | None:
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        return None


def number(value: str) -> float | None:
    return float(value) if value.strip() else None


def valid_user_ids(users: list[dict[str, Any]]) -> set[str]:
    return {u[C.USER_ID] for u in users if u[C.USER_ID] and parse_date(u[C.BIRTH_DATE])}


def valid_item_ids(items: list[dict[str, str]]) -> set[str]:
    return {i["product_id"] for i in items if i["product_id"] and float(i[C.PRICE]) >= 0}


def classify(report: GenerationReport, rows: list[dict[str, str]], users: list[dict[str, Any]],
             items: list[dict[str, str]]) -> collections.Counter[str]:
    """Label every event row with the one defect it carries ("clean" when none)."""
    known_users, known_items = valid_user_ids(users), valid_item_ids(items)
    bots = set(report.bot_user_ids)
    end = dt.datetime.combine(report.end, dt.time())
    first_copy: dict[str, dict[str, str]] = {}
    labels: collections.Counter[str] = collections.Counter()
    for r in rows:
        eid = r[C.EVENT_ID]
        if eid in first_copy:
            assert r == first_copy[eid], "a duplicate event id must be an exact copy"
            labels["duplicate_event"] += 1
            continue
        first_copy[eid] = r
        uid, pid, et = r[C.USER_ID], r["product_id"], r[C.EVENT_TYPE]
        ts = parse_ts(r["event_time"])
        price, qty = number(r[C.PRICE]), number(r[C.QUANTITY])
        if "" in (uid, pid, et):
            label = "missing_required"
        elif et.strip().lower() not in CANONICAL:
            label = "unknown_event_type"
        elif ts is None:
            label = "malformed_timestamp"
        elif ts >= end:
            label = "future_timestamp"
        elif (price is not None and price < 0) or (qty is not None and qty < 0):
            label = "negative_value"
        elif uid.strip() not in known_users:
            label = "unknown_user"
        elif pid.strip() not in known_items:
            label = "unknown_item"
        elif uid in bots:
            label = "bot_events"
        elif (uid, pid, et) != (uid.strip(), pid.strip(), et.strip().lower()):
            label = "whitespace_case_noise"
        else:
            label = "clean"
        labels[label] += 1
    return labels


def clean_rows(rows: list[dict[str, str]]) -> Iterator[dict[str, str]]:
    for r in rows:
        if r[C.EVENT_TYPE] in CANONICAL:
            yield r


# ----------------------------------------------------------------------------------------------------------------
# Fixtures: one dirty and one clean shop for the module
# ----------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> GenerationReport:
    return generate_shop(tmp_path_factory.mktemp("dirty"), N, seed=7)


@pytest.fixture(scope="module")
def shop_rows(shop: GenerationReport) -> list[dict[str, str]]:
    return read_events(shop)


@pytest.fixture(scope="module")
def tidy(tmp_path_factory: pytest.TempPathFactory) -> GenerationReport:
    return generate_shop(tmp_path_factory.mktemp("tidy"), N, seed=7, dirty=False)


@pytest.fixture(scope="module")
def tidy_rows(tidy: GenerationReport) -> list[dict[str, str]]:
    return read_events(tidy)


def all_bytes(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# ----------------------------------------------------------------------------------------------------------------
# Layout, sizes, determinism
# ----------------------------------------------------------------------------------------------------------------
def test_files_headers_and_sizes(shop: GenerationReport, shop_rows: list[dict[str, str]]) -> None:
    root = shop.out_dir
    assert [p.name for p in shop.event_files] == ["part-00000.csv"]
    assert shop.event_files[0].parent == root / "events"
    first_line = shop.event_files[0].read_text(encoding="utf-8").split("\n", 1)[0]
    assert first_line == "event_id,user_id,product_id,event_type,event_time,price,quantity,session_id"
    assert shop.items_file == root / "items" / "items.csv"
    assert shop.items_file.read_text(encoding="utf-8").split("\n", 1)[0] == "product_id,category,brand,price,stock"
    assert shop.users_file == root / "users" / "users.jsonl"
    users, items = read_users(shop), read_items(shop)
    assert all(list(u) == ["user_id", "signup_date", "birth_date", "country", "marketing_consent"] for u in users)
    assert len(shop_rows) == shop.events == N
    assert len(users) == shop.user_rows and len(items) == shop.item_rows
    assert len(valid_user_ids(users)) == shop.users == N // 40 + shop.dirt["bot_users"]
    assert len(valid_item_ids(items)) == shop.items == 200
    # no stray files: temp files renamed, the report written beside the data
    assert sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()) == [
        "_generation_report.json", "events/part-00000.csv", "items/items.csv", "users/users.jsonl"]
    assert json.loads((root / "_generation_report.json").read_text()) == shop.to_dict()


def test_formats_of_valid_rows(tidy: GenerationReport, tidy_rows: list[dict[str, str]]) -> None:
    for r in tidy_rows:
        assert r[C.EVENT_ID].startswith("e") and r[C.USER_ID].startswith("u") and r["product_id"].startswith("p")
        assert r["event_time"].endswith("Z") and parse_ts(r["event_time"]) is not None
        assert r[C.SESSION_ID].startswith("s")
        if r[C.EVENT_TYPE] in (C.ADD_TO_CART, C.PURCHASE):
            assert float(r[C.PRICE]) > 0 and int(r[C.QUANTITY]) >= 1
        else:
            assert r[C.PRICE] == "" and r[C.QUANTITY] == ""
    items = {i["product_id"]: i for i in read_items(tidy)}
    priced = [r for r in tidy_rows if r[C.PRICE]]
    assert priced and all(r[C.PRICE] == items[r["product_id"]][C.PRICE] for r in priced)
    ids = [r[C.EVENT_ID] for r in tidy_rows]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)  # clean export: increasing ids, in time order
    times = [r["event_time"] for r in tidy_rows]
    assert times == sorted(times)


def test_same_seed_same_bytes_other_seed_differs(tmp_path: Path) -> None:
    a = generate_shop(tmp_path / "a", 10_000, seed=3)
    b = generate_shop(tmp_path / "b", 10_000, seed=3)
    c = generate_shop(tmp_path / "c", 10_000, seed=4)
    bytes_a, bytes_b, bytes_c = all_bytes(a.out_dir), all_bytes(b.out_dir), all_bytes(c.out_dir)
    assert len(bytes_a) == 4
    assert bytes_a == bytes_b
    for name in ("events/part-00000.csv", "users/users.jsonl", "items/items.csv"):
        assert bytes_a[name] != bytes_c[name]


def test_parts_split_without_changing_content_and_overwrite_cleanly(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    one = generate_shop(tmp_path / "one", 10_000, seed=5)
    monkeypatch.setattr(generate_files, "ROWS_PER_PART", 3_000)  # where the writer reads them
    monkeypatch.setattr(generate_files, "WRITE_CHUNK", 700)
    many = generate_shop(tmp_path / "many", 10_000, seed=5)
    assert [p.name for p in many.event_files] == [f"part-{i:05d}.csv" for i in range(math.ceil(10_000 / 3_000))]
    per_part = [len(p.read_text(encoding="utf-8").splitlines()) - 1 for p in many.event_files]
    assert per_part == [3_000, 3_000, 3_000, 1_000]
    assert read_events(many) == read_events(one)
    # regenerate into the same folder with big parts: the old part files are gone, nothing else is left over
    monkeypatch.setattr(generate_files, "ROWS_PER_PART", 1_000_000)
    again = generate_shop(tmp_path / "many", 10_000, seed=5)
    assert sorted(p.name for p in (tmp_path / "many" / "events").iterdir()) == ["part-00000.csv"]
    assert all_bytes(again.out_dir) == all_bytes(one.out_dir)


def test_end_date_is_accepted_and_bounds_the_window(tmp_path: Path) -> None:
    end = dt.date(2027, 3, 15)
    rep = generate_shop(tmp_path, 10_000, seed=1, days=30, end=end, dirty=False)
    assert (rep.start, rep.end) == (dt.date(2027, 2, 13), end)
    times = [parse_ts(r["event_time"]) for r in read_events(rep)]
    lo, hi = dt.datetime(2027, 2, 13), dt.datetime(2027, 3, 15)
    assert all(t is not None and lo <= t < hi for t in times)
    assert min(times) < lo + dt.timedelta(days=2) and max(times) > hi - dt.timedelta(days=2)  # spans the window
    assert G.DEFAULT_END == generate_shop(tmp_path / "d", 1_000, dirty=False).end  # fixed default, not today


def test_explicit_sizes_and_invalid_arguments(tmp_path: Path) -> None:
    rep = generate_shop(tmp_path, 5_000, n_users=120, n_items=80, dirty=False)
    assert (rep.users, rep.items, rep.events) == (120, 80, 5_000)
    assert len({r[C.USER_ID] for r in read_events(rep)} - {u[C.USER_ID] for u in read_users(rep)}) == 0
    with pytest.raises(ValueError, match="n_events"):
        generate_shop(tmp_path, 999)
    with pytest.raises(ValueError, match="days"):
        generate_shop(tmp_path, 10_000, days=0)


# ----------------------------------------------------------------------------------------------------------------
# Dirt
# ----------------------------------------------------------------------------------------------------------------
def test_event_dirt_counts_match_the_report(shop: GenerationReport, shop_rows: list[dict[str, str]]) -> None:
    labels = classify(shop, shop_rows, read_users(shop), read_items(shop))
    for kind in G.EVENT_DIRT_KINDS:
        assert labels[kind] == shop.dirt[kind], kind
    assert labels["bot_events"] == shop.dirt["bot_events"]
    assert labels["clean"] + labels["whitespace_case_noise"] == shop.expected_clean_events
    assert sum(labels.values()) == N


@pytest.mark.parametrize("kind", G.EVENT_DIRT_KINDS)
def test_event_dirt_shares_are_as_documented(shop: GenerationReport, kind: str) -> None:
    share = shop.dirt[kind] / shop.events
    assert share == pytest.approx(DIRT_SHARES[kind], rel=0.05)


def test_dirty_values_are_the_documented_strings(shop_rows: list[dict[str, str]]) -> None:
    bad_ts = {r["event_time"] for r in shop_rows if parse_ts(r["event_time"]) is None}
    assert bad_ts == set(G.MALFORMED_TIMESTAMPS)
    unknown = {r[C.EVENT_TYPE] for r in shop_rows if r[C.EVENT_TYPE] and r[C.EVENT_TYPE].strip().lower()
               not in CANONICAL}
    assert unknown == set(G.UNKNOWN_EVENT_TYPES)
    noisy_types = {r[C.EVENT_TYPE] for r in shop_rows if r[C.EVENT_TYPE].strip().lower() in CANONICAL
                   and r[C.EVENT_TYPE] not in CANONICAL}
    assert {" VIEW ", "Add_To_Cart"} <= noisy_types
    future = [t for r in shop_rows if (t := parse_ts(r["event_time"])) and t.date() > G.DEFAULT_END]
    assert future and min(future).date() >= G.DEFAULT_END + dt.timedelta(days=365)
    negatives = [r for r in shop_rows if r[C.PRICE].startswith("-") or r[C.QUANTITY].startswith("-")]
    assert negatives and all(r[C.EVENT_TYPE] in (C.ADD_TO_CART, C.PURCHASE) for r in negatives)
    assert {r[C.PRICE].startswith("-") for r in negatives} == {True, False}  # both kinds of negative value


def test_user_and_item_dirt(shop: GenerationReport) -> None:
    users = read_users(shop)
    ids = [u[C.USER_ID] for u in users]
    named = [i for i in ids if i]
    lines = [line for line in shop.users_file.read_text(encoding="utf-8").splitlines() if '"user_id":""' not in line]
    assert len(lines) - len(set(lines)) == len(named) - len(set(named)) == shop.dirt["user_duplicate"] >= 1
    assert ids.count("") == shop.dirt["user_blank_id"] >= 1
    bad = [u for u in users if u[C.USER_ID] and parse_date(u[C.BIRTH_DATE]) is None]
    assert len(bad) == shop.dirt["user_bad_birth_date"] >= 1
    assert {u[C.BIRTH_DATE] for u in bad} <= set(G.BAD_BIRTH_DATES)
    event_users = {r[C.USER_ID].strip() for r in read_events(shop)}
    assert not event_users & {u[C.USER_ID] for u in bad}  # the rejected users have no events to orphan
    items = read_items(shop)
    assert sum(1 for i in items if not i["product_id"]) == shop.dirt["item_blank_id"] >= 1
    assert sum(1 for i in items if float(i[C.PRICE]) < 0) == shop.dirt["item_negative_price"] >= 1
    organic_users = shop.users - shop.dirt["bot_users"]
    expected = {"user_duplicate": organic_users, "user_blank_id": organic_users, "user_bad_birth_date": organic_users,
                "item_negative_price": shop.items, "item_blank_id": shop.items}
    for kind, denominator in expected.items():
        assert shop.dirt[kind] == max(1, round(DIRT_SHARES[kind] * denominator))


def test_bots_exceed_a_thousand_views_in_one_day(shop: GenerationReport, shop_rows: list[dict[str, str]]) -> None:
    assert shop.dirt["bot_users"] == len(shop.bot_user_ids) == 2
    per_day: collections.Counter[tuple[str, str]] = collections.Counter(
        (r[C.USER_ID].strip(), r["event_time"][:10]) for r in shop_rows)
    heavy = {u for (u, _), n in per_day.items() if n > 1000}
    assert heavy == set(shop.bot_user_ids)
    assert set(shop.bot_user_ids) <= {u[C.USER_ID] for u in read_users(shop)}
    bot_rows = [r for r in shop_rows if r[C.USER_ID] in set(shop.bot_user_ids)]
    assert len(bot_rows) == shop.dirt["bot_events"] < N // 4
    assert {r[C.EVENT_TYPE] for r in bot_rows} == {C.VIEW}


def test_clean_shop_has_no_dirt(tidy: GenerationReport, tidy_rows: list[dict[str, str]]) -> None:
    assert all(v == 0 for v in tidy.dirt.values()) and set(DIRT_SHARES) <= set(tidy.dirt)
    assert tidy.bot_user_ids == () and tidy.expected_clean_events == tidy.events == N
    labels = classify(tidy, tidy_rows, read_users(tidy), read_items(tidy))
    assert labels == {"clean": N}
    users, items = read_users(tidy), read_items(tidy)
    assert len(users) == len({u[C.USER_ID] for u in users}) == len(valid_user_ids(users)) == tidy.users
    assert len(items) == len(valid_item_ids(items)) == tidy.items


# ----------------------------------------------------------------------------------------------------------------
# Realism
# ----------------------------------------------------------------------------------------------------------------
def test_item_popularity_is_zipf_like(tidy_rows: list[dict[str, str]]) -> None:
    views = collections.Counter(r["product_id"] for r in tidy_rows if r[C.EVENT_TYPE] == C.VIEW)
    counts = sorted(views.values(), reverse=True)
    top = counts[: max(1, len(counts) // 10)]
    assert sum(top) / sum(counts) > 0.4  # uniform popularity would give ~0.1


def test_funnel_views_carts_purchases(tidy_rows: list[dict[str, str]]) -> None:
    by_type = collections.Counter(r[C.EVENT_TYPE] for r in tidy_rows)
    assert by_type[C.VIEW] > by_type[C.ADD_TO_CART] > by_type[C.PURCHASE] > 0
    assert by_type[C.FAVORITE] > 0
    seen: dict[tuple[str, str, str], set[str]] = collections.defaultdict(set)
    for r in tidy_rows:  # rows are in time order
        key = (r[C.SESSION_ID], r[C.USER_ID], r["product_id"])
        et = r[C.EVENT_TYPE]
        if et == C.ADD_TO_CART:
            assert C.VIEW in seen[key], "a cart follows a view of the item in the session"
        if et == C.PURCHASE:
            assert C.ADD_TO_CART in seen[key], "a purchase follows a cart of the item in the session"
        seen[key].add(et)


def test_sessions_cluster_a_users_events(tidy_rows: list[dict[str, str]]) -> None:
    sessions: dict[str, list[dict[str, str]]] = collections.defaultdict(list)
    for r in tidy_rows:
        sessions[r[C.SESSION_ID]].append(r)
    assert all(len({r[C.USER_ID] for r in rs}) == 1 for rs in sessions.values())
    sizes = [len(rs) for rs in sessions.values()]
    assert 2 <= sum(sizes) / len(sizes) <= 10
    spans = sorted((parse_ts(rs[-1]["event_time"]) - parse_ts(rs[0]["event_time"])).total_seconds()  # type: ignore
                   for rs in sessions.values())
    assert spans[len(spans) // 2] < 30 * 60  # the median session lasts minutes
    assert spans[-1] < 24 * 3600
    per_user = collections.Counter(rs[0][C.USER_ID] for rs in sessions.values())
    assert max(per_user.values()) > 1  # users come back in several sessions


def test_users_prefer_a_few_categories(tidy: GenerationReport, tidy_rows: list[dict[str, str]]) -> None:
    category = {i["product_id"]: i[C.CATEGORY] for i in read_items(tidy)}
    per_user: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for r in tidy_rows:
        per_user[r[C.USER_ID]][category[r["product_id"]]] += 1
    shares = sorted(c.most_common(1)[0][1] / c.total() for c in per_user.values() if c.total() >= 30)
    assert len(shares) > 50
    assert shares[len(shares) // 2] > 0.4  # no affinity would give about the biggest category's share (~0.15)


def test_new_signups_for_the_welcome_campaign(tidy: GenerationReport, tidy_rows: list[dict[str, str]]) -> None:
    users = read_users(tidy)
    signup = {u[C.USER_ID]: dt.date.fromisoformat(u[C.SIGNUP_DATE]) for u in users}
    recent = {u for u, d in signup.items() if d >= tidy.end - dt.timedelta(days=30)}
    assert len(recent) / len(users) >= 0.03
    assert all(d < tidy.end for d in signup.values())
    assert any(d >= tidy.end - dt.timedelta(days=3) for d in signup.values())
    active = collections.Counter(r[C.USER_ID] for r in tidy_rows)
    assert any(active[u] == 0 for u in recent) and any(active[u] > 0 for u in recent)
    # nobody acts before signing up
    assert all(r["event_time"][:10] >= signup[r[C.USER_ID]].isoformat() for r in tidy_rows)


def test_user_attributes_are_spread(tidy: GenerationReport) -> None:
    users = read_users(tidy)
    months = collections.Counter(u[C.BIRTH_DATE][5:7] for u in users)
    assert len(months) == 12 and max(months.values()) < 3 * min(months.values())
    ages = [(tidy.end - dt.date.fromisoformat(u[C.BIRTH_DATE])).days / 365.25 for u in users]
    assert min(ages) >= 17.9 and max(ages) <= 86
    countries = collections.Counter(u[C.COUNTRY] for u in users)
    assert len(countries) == 8 and all(len(c) == 2 and c.isupper() for c in countries)
    assert countries.most_common(1)[0][1] / len(users) > 0.2  # skewed, not uniform (1/8)
    consent = sum(u[C.MARKETING_CONSENT] is True for u in users) / len(users)
    assert all(isinstance(u[C.MARKETING_CONSENT], bool) for u in users) and 0.78 <= consent <= 0.92


def test_catalogue(tidy: GenerationReport) -> None:
    items = read_items(tidy)
    categories = collections.Counter(i[C.CATEGORY] for i in items)
    assert set(categories) == {"electronics", "computers", "grocery", "books", "fashion", "home", "toys", "sports",
                               "beauty"}
    assert all(i["product_id"].startswith("p") and len(i["product_id"]) == 6 for i in items)
    prices = {c: sorted(float(i[C.PRICE]) for i in items if i[C.CATEGORY] == c) for c in categories}
    assert all(p[0] > 0 for p in prices.values())
    assert prices["computers"][len(prices["computers"]) // 2] > 5 * prices["grocery"][len(prices["grocery"]) // 2]
    stock = [int(i[C.STOCK]) for i in items]
    assert any(s == 0 for s in stock) and sum(s > 0 for s in stock) > 0.8 * len(stock)
    brands = collections.defaultdict(set)
    for i in items:
        brands[i[C.CATEGORY]].add(i[C.BRAND])
    assert all(len(b) >= 2 for b in brands.values()) and not brands["books"] & brands["grocery"]


def test_recent_carts_worth_fifty(tidy: GenerationReport, tidy_rows: list[dict[str, str]]) -> None:
    since = (tidy.end - dt.timedelta(days=14)).isoformat()
    value: collections.Counter[str] = collections.Counter()
    for r in tidy_rows:
        if r[C.EVENT_TYPE] == C.ADD_TO_CART and r["event_time"][:10] >= since:
            value[r[C.USER_ID]] += float(r[C.PRICE]) * int(r[C.QUANTITY])
    assert sum(v >= 50 for v in value.values()) >= 10


# ----------------------------------------------------------------------------------------------------------------
# Daily batches
# ----------------------------------------------------------------------------------------------------------------
DAILY_END = dt.date(2026, 11, 8)  # exclusive: batches 2026-11-01 .. 2026-11-07


@pytest.fixture(scope="module")
def daily(tmp_path_factory: pytest.TempPathFactory) -> G.DailyReport:
    return G.generate_daily(tmp_path_factory.mktemp("daily"), 10_000, seed=7, days=7, end=DAILY_END)


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_daily_writes_one_batch_of_three_files_per_day(daily: G.DailyReport) -> None:
    days = [DAILY_END - dt.timedelta(days=7 - k) for k in range(7)]
    assert [b.day for b in daily.batches] == days
    root = daily.shop.out_dir
    for b in daily.batches:
        assert [p.relative_to(root).as_posix() for p in b.files()] == [
            f"_daily/{b.day}/events/events-{b.day}.csv", f"_daily/{b.day}/users/users-{b.day}.jsonl",
            f"_daily/{b.day}/items/items-{b.day}.csv"]
        assert len(read_csv(b.events_file)) == b.events > 0
        assert len(read_jsonl(b.users_file)) == b.users > 0
        assert len(read_csv(b.items_file)) == b.items > 0
    # Staged only: nothing in the landing folders the sources read until a day is delivered.
    assert not (root / "events").exists() and not (root / "users").exists()
    report = json.loads((root / "_daily" / "_generation_report.json").read_text())
    assert [b["day"] for b in report["batches"]] == [d.isoformat() for d in days]


def test_daily_batches_hold_the_single_batch_shop_row_for_row(daily: G.DailyReport, tmp_path: Path) -> None:
    single = generate_shop(tmp_path, 10_000, seed=7, days=7, end=DAILY_END)
    def rows(paths: list[Path]) -> collections.Counter[tuple[str, ...]]:
        return collections.Counter(tuple(r.values()) for p in paths for r in read_csv(p))
    assert rows([b.events_file for b in daily.batches]) == rows(list(single.event_files))
    assert daily.shop.expected_clean_events == single.expected_clean_events
    assert daily.shop.dirt == single.dirt
    first_users = [json.dumps(u, sort_keys=True) for b in daily.batches for u in read_jsonl(b.users_file)]
    assert collections.Counter(json.dumps(u, sort_keys=True) for u in read_users(single)) <= \
        collections.Counter(first_users)  # every single-batch user line, plus the later updates
    assert read_csv(daily.batches[0].items_file) == read_items(single)


def test_daily_batches_carry_late_and_cross_day_resent_events(daily: G.DailyReport) -> None:
    sent: dict[str, dict[str, str]] = {}
    late = resent = 0
    for b in daily.batches:
        rows = read_csv(b.events_file)
        on_time = 0
        for r in rows:
            ts = parse_ts(r[G.EVENT_TIME])
            if ts is not None and ts.date() < b.day and ts.date() >= daily.shop.start:
                late += 1
            if ts is not None and ts.date() == b.day:
                on_time += 1
            if r[C.EVENT_ID] in sent:
                assert r == sent[r[C.EVENT_ID]]  # an exact re-send of the row an earlier batch sent
                resent += 1
        sent.update({r[C.EVENT_ID]: r for r in rows})
        assert on_time > len(rows) / 2  # mostly the day's own events
    assert late >= 0.02 * daily.shop.events
    assert resent > 0.5 * daily.shop.dirt["duplicate_event"]  # most duplicates cross days
    assert sum(b.late for b in daily.batches) >= late and sum(b.resent for b in daily.batches) >= resent


def test_daily_users_exports_add_new_users_and_update_known_ones(daily: G.DailyReport) -> None:
    known: dict[str, dict[str, Any]] = {}
    new_later = updated = 0
    for k, b in enumerate(daily.batches):
        users = read_jsonl(b.users_file)
        for u in users:
            if not u[C.USER_ID]:
                continue
            if u[C.USER_ID] not in known and k:
                new_later += 1
                assert u[C.SIGNUP_DATE] == b.day.isoformat()  # a new user arrives on their signup day
            elif u[C.USER_ID] in known and k and u != known[u[C.USER_ID]]:
                updated += 1
                assert u[C.MARKETING_CONSENT] != known[u[C.USER_ID]][C.MARKETING_CONSENT]
            known[u[C.USER_ID]] = u
    assert new_later > 0 and updated == sum(b.user_updates for b in daily.batches) > 0
    later_items = [r for b in daily.batches[1:] for r in read_csv(b.items_file)]
    catalogue = {r["product_id"]: r for r in read_csv(daily.batches[0].items_file)}
    assert later_items and all(r["product_id"] in catalogue for r in later_items)
    assert any(r[C.STOCK] != catalogue[r["product_id"]][C.STOCK] for r in later_items)


def test_daily_is_deterministic_by_seed(tmp_path: Path) -> None:
    def tree(root: Path) -> dict[str, bytes]:
        return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
    G.generate_daily(tmp_path / "a", 3_000, seed=3, days=4)
    G.generate_daily(tmp_path / "b", 3_000, seed=3, days=4)
    G.generate_daily(tmp_path / "c", 3_000, seed=4, days=4)
    a, b, c = tree(tmp_path / "a"), tree(tmp_path / "b"), tree(tmp_path / "c")
    assert a == b and len(a) == 3 * 4 + 1
    assert a.keys() == c.keys() and a != c


def test_deliver_day_lands_one_day_once(tmp_path: Path) -> None:
    rep = G.generate_daily(tmp_path, 3_000, seed=3, days=3, end=DAILY_END)
    second = rep.batches[1]
    landed = G.deliver_day(tmp_path, second.day)
    assert [p.relative_to(tmp_path).as_posix() for p in landed] == [
        f"events/events-{second.day}.csv", f"users/users-{second.day}.jsonl", f"items/items-{second.day}.csv"]
    assert [p.read_bytes() for p in landed] == [p.read_bytes() for p in second.files()]
    assert sorted(p.name for p in (tmp_path / "events").iterdir()) == [f"events-{second.day}.csv"]
    stamps = [p.stat().st_mtime_ns for p in landed]
    assert G.deliver_day(tmp_path, second.day) == landed
    assert [p.stat().st_mtime_ns for p in landed] == stamps  # ingest sees the same (path, size, mtime)
    assert G.staged_days(tmp_path) == tuple(b.day for b in rep.batches)
    with pytest.raises(FileNotFoundError, match="no daily batch of 2026-12-01"):
        G.deliver_day(tmp_path, dt.date(2026, 12, 1))


def test_a_new_shop_replaces_the_other_layout(tmp_path: Path) -> None:
    rep = G.generate_daily(tmp_path, 3_000, seed=3, days=3)
    for b in rep.batches:
        G.deliver_day(tmp_path, b.day)
    generate_shop(tmp_path, 3_000, seed=3, days=3)
    landed = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
    assert landed == ["_generation_report.json", "events/part-00000.csv", "items/items.csv", "users/users.jsonl"]
    G.generate_daily(tmp_path, 3_000, seed=3, days=3)
    assert not [p for d in ("events", "users", "items") for p in (tmp_path / d).rglob("*") if p.is_file()]
