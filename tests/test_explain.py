"""explain_user: a user's current offers and the past items behind each ALS offer."""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from pathlib import Path

import pytest
from conftest import make_config
from pyspark.ml.recommendation import ALS
from pyspark.sql import SparkSession

from sparkpromo import delta_io, schemas
from sparkpromo import recommend as R
from sparkpromo import tables as T
from sparkpromo.config import AppConfig, Campaign
from sparkpromo.explain import ExplainError, explain_user, format_offers
from sparkpromo.privacy import pseudonym

KEY_ENV = "SPARKPROMO_TEST_EXPLAIN_KEY"
KEY = "0123456789abcdef-explain"
ALICE = pseudonym("alice", KEY.encode())
DAY = dt.date(2026, 11, 29)
MODEL_RUN = "20261129"
USERS = ("u0001", "u0002", "u0010", ALICE)
ITEMS = ("i1", "i2", "i3", "i4", "i5", "i6")
HISTORY = {"u0001": ("i1", "i2", "i4"), "u0002": ("i1", "i2", "i3"), "u0010": ("i4", "i5", "i6"),
           ALICE: ("i4", "i5")}


def _rec(cid: str, user: str, item: str, rank: int, source: str = R.ALS, day: dt.date = DAY) -> tuple:
    return (cid, day, user, item, rank, 1.0 / rank, 2.0 / rank, source, False, True, MODEL_RUN,
            (10.0, None, cid.upper(), f"10% off {item}"),
            [f"{R.REASON_SIMILAR}x"] if source == R.ALS else [R.REASON_POPULAR], "run")


@pytest.fixture(scope="module")
def shop(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory) -> tuple[AppConfig, dict[str, list[float]]]:
    """id map, interactions, a tiny ALS in the registry and a few recommendations; returns the item factors."""
    root = tmp_path_factory.mktemp("explain")
    cfg = make_config(root)
    uidx = {u: i for i, u in enumerate(USERS)}
    iidx = {it: i for i, it in enumerate(ITEMS)}
    id_map = [("user", u, i) for u, i in uidx.items()] + [("item", it, i) for it, i in iidx.items()]
    delta_io.overwrite(spark.createDataFrame(id_map, schemas.ID_MAP), cfg.table("gold", "id_map"))
    inter = spark.createDataFrame([(uidx[u], iidx[it], 1.0 + n, None) for u, items in HISTORY.items()
                                   for n, it in enumerate(items)], schemas.INTERACTIONS)
    delta_io.overwrite(inter, cfg.table("gold", "interactions"))
    model = ALS(rank=3, maxIter=5, regParam=0.05, implicitPrefs=True, alpha=5.0, nonnegative=True, seed=3,
                userCol="user_idx", itemCol="item_idx", ratingCol="confidence", numUserBlocks=1,
                numItemBlocks=1).fit(inter)
    model.write().overwrite().save(str(Path(cfg.lakehouse) / "registry" / MODEL_RUN / "model"))
    recs = [_rec("c1", "u0001", "i3", 1), _rec("c1", "u0001", "i6", 2, R.GLOBAL_POPULARITY),
            _rec("c2", "u0001", "i4", 1), _rec("c1", ALICE, "i6", 1),
            _rec("c1", "u0001", "i5", 1, day=DAY - dt.timedelta(days=1))]  # an older run: not shown
    delta_io.overwrite(spark.createDataFrame(recs, R.RECOMMENDATIONS), R.table_uri(cfg),
                       partition_by=T.RECOMMENDATIONS.partition_by)
    # i3 has a name, i4 only a category and price; u0001 bought i4 before (a repeatable category, say)
    delta_io.overwrite(spark.createDataFrame([("i3", "Red kettle", "kitchen", 12.5), ("i4", None, "grocery", 2.0)],
                                       "item_id string, name string, category string, price double"),
                       cfg.table("gold", "item_features"))
    delta_io.overwrite(spark.createDataFrame([("u0001", "i4", "purchase"), ("u0001", "i3", "view"),
                                        ("u0002", "i6", "purchase")],
                                       "user_id string, item_id string, event_type string"),
                       cfg.table("silver", "events"))
    factors = {ITEMS[r["id"]]: list(r["features"]) for r in model.itemFactors.collect()}
    return cfg, factors


def _cos(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True)) / max(math.hypot(*a) * math.hypot(*b), 1e-12)


def _expected(factors: dict[str, list[float]], user: str, target: str, n: int = 3) -> list[str]:
    past = [i for i in HISTORY[user] if i != target]
    return sorted(past, key=lambda i: -_cos(factors[i], factors[target]))[:n]


def test_offers_with_contributions(spark: SparkSession, shop: tuple[AppConfig, dict[str, list[float]]]) -> None:
    cfg, factors = shop
    offers = explain_user(spark, cfg, "u0001")
    assert [(o["campaign"], o["rank"], o["item_id"], o["source"]) for o in offers] == [
        ("c1", 1, "i3", R.ALS), ("c1", 2, "i6", R.GLOBAL_POPULARITY), ("c2", 1, "i4", R.ALS)]
    assert all(o["run_date"] == DAY.isoformat() and o["offer"]["discount_pct"] == 10.0 for o in offers)
    by_item = {o["item_id"]: o for o in offers}
    # ALS offers: the user's own past items, most similar first, the offered item itself excluded.
    for target in ("i3", "i4"):
        got = by_item[target]["contributions"]
        assert [c["item_id"] for c in got] == _expected(factors, "u0001", target)
        sims = [c["similarity"] for c in got]
        assert sims == sorted(sims, reverse=True)
        assert all(math.isclose(c["similarity"], _cos(factors[c["item_id"]], factors[target]), abs_tol=1e-6)
                   for c in got)
    assert "i4" not in [c["item_id"] for c in by_item["i4"]["contributions"]]
    assert by_item["i6"]["contributions"] == []  # a popularity fill is not explained by the model
    # item details where the items table has them; a repeat purchase is flagged (a view is not a purchase)
    assert by_item["i3"]["item"] == {"name": "Red kettle", "category": "kitchen", "price": 12.5}
    assert by_item["i6"]["item"] == {}
    assert [o["repeat_purchase"] for o in offers] == [False, False, True]
    lines = format_offers("u0001", offers)
    assert lines[0] == f"user u0001: 3 offer(s) on {DAY.isoformat()}"
    assert lines[1].startswith("c1 #1: i3 'Red kettle' (kitchen, 12.50) source als, score 1.000 -10%")
    assert lines[2] == "    offer: 10% off i3" and lines[3].startswith("    because of ")
    assert any(line.startswith("c2 #1: i4 (grocery, 2.00)") and "[bought before]" in line for line in lines)
    # a control row is labelled as not sent (the user was listed, held out, and got nothing)
    held_out = format_offers("u0001", [{**offers[0], "is_control": True, "delivered": False}])
    assert held_out[1].endswith("[control group: not sent]") and "[control group" not in lines[1]


def test_one_campaign_and_top_n(spark: SparkSession, shop: tuple[AppConfig, dict[str, list[float]]]) -> None:
    cfg, factors = shop
    offers = explain_user(spark, cfg, "u0001", campaign="c2", top_n=1)
    assert [(o["campaign"], o["item_id"]) for o in offers] == [("c2", "i4")]
    assert [c["item_id"] for c in offers[0]["contributions"]] == _expected(factors, "u0001", "i4", 1)
    with pytest.raises(ExplainError, match="unknown campaign 'c3'.*c1"):
        explain_user(spark, cfg, "u0001", campaign="c3")
    # configured, but it served nobody yet (just added): said so, not called unknown
    added = Campaign(id="c3", type="welcome", valid_from=DAY, valid_to=DAY)
    with pytest.raises(ExplainError, match="campaign 'c3' is configured but has no offers in .* yet"):
        explain_user(spark, dataclasses.replace(cfg, campaigns=(added,)), "u0001", campaign="c3")


def test_known_user_without_offers(spark: SparkSession, shop: tuple[AppConfig, dict[str, list[float]]]) -> None:
    assert explain_user(spark, shop[0], "u0002") == []


def test_unknown_user_names_no_other_user(spark: SparkSession, shop: tuple[AppConfig, dict[str, list[float]]]
                                          ) -> None:
    with pytest.raises(ExplainError) as err:
        explain_user(spark, shop[0], "u001")
    msg = str(err.value)
    assert "unknown user 'u001'" in msg
    assert not any(u in msg for u in USERS)  # not even a near miss like u0001


def test_pseudonym_lookup(spark: SparkSession, shop: tuple[AppConfig, dict[str, list[float]]],
                          monkeypatch: pytest.MonkeyPatch) -> None:
    cfg, factors = shop
    private = make_config(Path(cfg.lakehouse).parent, privacy={"pseudonymise": True, "key_env": KEY_ENV})
    monkeypatch.setenv(KEY_ENV, KEY)
    offers = explain_user(spark, private, "alice")
    assert [(o["campaign"], o["item_id"]) for o in offers] == [("c1", "i6")]
    assert [c["item_id"] for c in offers[0]["contributions"]] == _expected(factors, ALICE, "i6")
    with pytest.raises(ExplainError, match="privacy mode") as err:
        explain_user(spark, private, "bob")
    assert "u0001" not in str(err.value)  # no suggestions of other users' pseudonyms or ids
