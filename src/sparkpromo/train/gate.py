"""The model in service against the new champion: loading the incumbent, the gate holdout, the decision, and
scores with serving's exclusion."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

from pyspark import StorageLevel
from pyspark.ml.recommendation import ALSModel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from sparkpromo import columns as C
from sparkpromo import delta_io
from sparkpromo import evaluate as E
from sparkpromo import recommend as R
from sparkpromo import tables as T
from sparkpromo.config import AppConfig, join_uri
from sparkpromo.frame import local_rows
from sparkpromo.train import search
from sparkpromo.train.search import ALS, POPULARITY, registry_uri

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Incumbent:
    """The model in service: its run id, champion, for an ALS champion the model, and the gold.interactions
    version it was fitted on (``input_versions`` of its params.json; None when not recorded)."""

    run_id: str
    champion: str
    model: ALSModel | None
    trained_on: int | None = None


def _first_line(e: BaseException) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


def load_incumbent(spark: SparkSession, cfg: AppConfig) -> tuple[Incumbent | None, bool]:
    """``(incumbent, registered)``: the model in service (``registry/LATEST``, loaded as serving loads it) and
    whether any model is registered. No incumbent, with a WARNING, when it cannot be loaded (the gate is then
    against popularity only). A rerun of the run whose model is in service is gated against that model like any
    other run (it writes a new registry entry, :func:`~sparkpromo.recommend.next_entry`)."""
    try:
        if R.latest_run_id(spark, cfg) is None:
            return None, False
        served_run, model, champion = R.load_champion(spark, cfg)
    except Exception as e:  # noqa: BLE001 - an unreadable incumbent must not stop a new model being published
        log.warning("the model in service could not be loaded (%s): no incumbent, the new model is gated against "
                    "popularity only", _first_line(e))
        return None, True
    if not served_run:
        return None, False
    return Incumbent(served_run, champion, model, _trained_on(spark, cfg, served_run)), True


def _trained_on(spark: SparkSession, cfg: AppConfig, run_id: str) -> int | None:
    """The gold.interactions version in ``run_id``'s params.json (``input_versions``); None when absent."""
    try:
        params = json.loads(R.read_small_text(spark, join_uri(registry_uri(cfg, run_id), "params.json")) or "{}")
        version = params.get("input_versions", {}).get("gold.interactions")
    except Exception:  # noqa: BLE001 - unknown: the gate then has no fair holdout
        return None
    return version if isinstance(version, int) and not isinstance(version, bool) else None


@dataclass(frozen=True)
class GateHoldout:
    """The holdout the incumbent gate compares on: ``test`` (None: no fair evidence), its size, and a one-line
    note saying what it is or why there is none."""

    test: DataFrame | None
    rows: int | None
    users: int | None
    note: str


def gate_holdout(spark: SparkSession, interactions_uri: str, incumbent: Incumbent, test: DataFrame) -> GateHoldout:
    """The holdout pairs the model in service was not fitted on. An ALS incumbent was fitted on every interaction
    of the gold.interactions version its params.json records, this run's holdout pairs included (the split
    withholds the same pairs each run), which would inflate its score: only the ``test`` pairs absent from that
    version (anti-join on user_idx, item_idx) are fair evidence. A popularity incumbent is this run's popularity
    baseline (nothing fitted was kept): the whole holdout. ``test`` is None, with a WARNING, when no pair is left or
    that version is unknown or unreadable (e.g. vacuumed). A returned frame other than ``test`` is persisted: the
    caller unpersists it."""
    def size(df: DataFrame) -> tuple[int, int]:
        row = df.agg(F.count("*"), F.countDistinct(C.USER_IDX)).first()
        return (int(row[0]), int(row[1])) if row else (0, 0)

    if incumbent.model is None:
        rows, users = size(test)
        return GateHoldout(test, rows, users, f"the whole holdout, {rows} rows of {users} users (popularity "
                                              "in service)")
    version = incumbent.trained_on
    if version is None:
        why = f"run {incumbent.run_id}'s params.json records no gold.interactions version"
        log.warning("no fair gate holdout: %s; publishing without comparing", why)
        return GateHoldout(None, None, None, why)
    fresh = None
    try:
        seen = delta_io.read(spark, interactions_uri, version=version).select(C.USER_IDX, C.ITEM_IDX).distinct()
        fresh = test.join(seen, [C.USER_IDX, C.ITEM_IDX], "left_anti").persist(StorageLevel.MEMORY_AND_DISK)
        rows, users = size(fresh)
    except Exception as e:  # noqa: BLE001 - e.g. a vacuumed version: no evidence, not a failed run
        if fresh is not None:
            fresh.unpersist()
        why = f"gold.interactions version {version} (run {incumbent.run_id}'s training data) unreadable: " \
              f"{_first_line(e)}"
        log.warning("no fair gate holdout: %s; publishing without comparing", why)
        return GateHoldout(None, None, None, why)
    if rows == 0:
        fresh.unpersist()
        why = (f"every holdout pair is in gold.interactions version {version}, which the model in service (run "
               f"{incumbent.run_id}) was fitted on")
        log.warning("no fair gate holdout: %s; publishing without comparing", why)
        return GateHoldout(None, 0, 0, why)
    return GateHoldout(fresh, rows, users, f"{rows} rows of {users} users absent from gold.interactions version "
                                           f"{version}, which the model in service was fitted on")


def gate_exclusion(train: DataFrame, test: DataFrame, gate_test: DataFrame) -> DataFrame:
    """(user_idx, item_idx) pairs neither contender may list when scored on ``gate_test``: the train pairs and the
    holdout pairs outside the gate holdout, which the model in service was fitted on. Listed, they would be misses
    that only the model in service is drawn to (it has seen them), so the gate would under-score it."""
    pairs = [C.USER_IDX, C.ITEM_IDX]
    stale = test.select(*pairs).join(gate_test.select(*pairs), pairs, "left_anti")
    return train.select(*pairs).unionByName(stale)


def gate_rankings(incumbent: ALSModel, challenger: ALSModel | None, train: DataFrame, exclusion: DataFrame,
                  users: DataFrame, k: int, seen_max: int, n_users: int) -> tuple[DataFrame, DataFrame]:
    """Top-K lists of the model in service (as serving builds them: popularity of ``train`` for users it has no
    factors for) and of the new champion (``challenger``; None: popularity) for ``users``, both excluding
    ``exclusion`` (:func:`gate_exclusion`; ``seen_max``, ``n_users``: its :func:`~sparkpromo.evaluate.seen_summary`)."""
    served = E.model_or_popularity_top_k(incumbent, train, k, users, seen_max=seen_max, n_users=n_users,
                                         exclude=exclusion)
    new = (E.popularity_top_k(train, k, users=users, seen_max=seen_max, exclude=exclusion) if challenger is None
           else E.top_k_excluding_seen(challenger, exclusion, k, users=users, seen_max=seen_max, n_users=n_users))
    return served, new


def score_gate(incumbent: Incumbent, challenger: ALSModel | None, train: DataFrame, test: DataFrame,
               gate_test: DataFrame, k: int, popularity: dict[str, float], champion: dict[str, float]
               ) -> tuple[dict[str, float], dict[str, float]] | None:
    """(model in service, new champion) metrics on ``gate_test`` with this run's code. A popularity champion in
    service is this run's baseline: ``popularity`` against ``champion`` (both on the whole holdout, which is then
    the gate holdout). An ALS one is scored against the new champion (``challenger``, None for popularity) on
    the pairs it was not fitted on, each listing neither train pairs nor the holdout pairs it was fitted on
    (:func:`gate_exclusion`). None, with a WARNING, when the model in service cannot be scored (treated as no
    incumbent)."""
    if incumbent.model is None:
        return dict(popularity), dict(champion)
    exclusion = gate_exclusion(train, test, gate_test).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        seen_max, n_users = E.seen_summary(exclusion)
        users = gate_test.select(C.USER_IDX).distinct()
        try:
            served, new = gate_rankings(incumbent.model, challenger, train, exclusion, users, k, seen_max, n_users)
            served_metrics = E.evaluate_recommendations(served, gate_test, train, k)
        except Exception as e:  # noqa: BLE001 - same as an incumbent that does not load
            log.warning("the model in service (run %s) could not be scored (%s): no incumbent, the new model is "
                        "gated against popularity only", incumbent.run_id, _first_line(e))
            return None
        return served_metrics, E.evaluate_recommendations(new, gate_test, train, k)
    finally:
        exclusion.unpersist()


def gate_decision(new: float, incumbent: float | None, margin: float, registered: bool, metric: str = "metric",
                  fresh_holdout: bool = True) -> str:
    """published when there is no incumbent score (first_model when nothing was ever registered;
    published_no_fresh_holdout when there is an incumbent but not ``fresh_holdout``, no pair it was not fitted on to
    compare on) or when ``new`` >= ``incumbent * (1 - margin)``; otherwise kept_incumbent, with a WARNING."""
    if not fresh_holdout:
        return search.PUBLISHED_NO_FRESH_HOLDOUT
    if incumbent is None:
        return search.PUBLISHED if registered else search.FIRST_MODEL
    if new >= incumbent * (1 - margin):
        return search.PUBLISHED
    log.warning("the new champion scores %s=%.4f, below the model in service's %.4f by more than the margin %.3g: "
                "keeping the model in service", metric, new, incumbent, margin)
    return search.KEPT_INCUMBENT


def read_purchases(spark: SparkSession, cfg: AppConfig, versions: dict[str, int | None]
                   ) -> tuple[DataFrame | None, str]:
    """The (user_idx, item_idx) pairs serving excludes (:func:`~sparkpromo.evaluate.purchased_pairs`) from silver
    events and gold.item_features at pinned versions (added to ``versions``), lazily; None and the reason when
    there are no silver events or id map."""
    events_uri, items_uri = T.SILVER_EVENTS.uri(cfg), T.ITEM_FEATURES.uri(cfg)
    versions["silver.events"] = delta_io.version(spark, events_uri)
    versions["gold.item_features"] = delta_io.version(spark, items_uri)
    if versions["silver.events"] is None or versions["gold.id_map"] is None:
        return None, "not computed: no silver.events or gold.id_map table to know what serving excludes"
    events = delta_io.read(spark, events_uri, version=versions["silver.events"]).select(C.USER_ID, C.ITEM_ID,
                                                                                 C.EVENT_TYPE)
    id_map = delta_io.read(spark, T.ID_MAP.uri(cfg), version=versions["gold.id_map"])
    repeatable = cfg.recommend.repeatable_categories
    if versions["gold.item_features"] is None:
        if repeatable:
            log.warning("no gold.item_features table: no item counts as repeatable in the served evaluation")
        items = local_rows(spark, [], f"{C.ITEM_ID} string, {C.CATEGORY} string")
    else:
        items = delta_io.read(spark, items_uri, version=versions["gold.item_features"]).select(C.ITEM_ID, C.CATEGORY)
    return E.purchased_pairs(events, id_map, items, repeatable), ""


def served_metrics(als_model: ALSModel, train: DataFrame, test: DataFrame, purchased: DataFrame, k: int,
                   seen_max: int, n_users: int) -> tuple[dict[str, dict[str, float]], str]:
    """Holdout metrics of ALS and popularity when only serving's exclusion applies, keyed ``als_served`` and
    ``popularity_served``, and a one-line note. Nothing is scored when that exclusion is every train pair (the
    metrics would be the offline ones): the note says so."""
    served = E.served_exclusion(train, purchased).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        pairs = train.select(C.USER_IDX, C.ITEM_IDX)
        if pairs.join(served, [C.USER_IDX, C.ITEM_IDX], "left_anti").limit(1).isEmpty():
            return {}, "same as offline: serving excludes every train pair (all are bought or rated, none repeatable)"
        users = test.select(C.USER_IDX).distinct()
        # seen_max/n_users of all train pairs bound the served ones: enough candidates survive the exclusion.
        als = E.top_k_excluding_seen(als_model, served, k, users=users, seen_max=seen_max, n_users=n_users)
        pop = E.popularity_top_k(train, k, users=users, seen_max=seen_max, exclude=served)
        return ({ALS + search.SERVED: E.evaluate_recommendations(als, test, train, k),
                 POPULARITY + search.SERVED: E.evaluate_recommendations(pop, test, train, k)},
                "computed: only non-repeatable bought or rated items excluded, as in serving")
    finally:
        served.unpersist()


__all__ = [
    "Incumbent", "load_incumbent", "GateHoldout", "gate_holdout", "gate_exclusion", "gate_rankings",
    "score_gate", "gate_decision",
    "read_purchases", "served_metrics",
]
