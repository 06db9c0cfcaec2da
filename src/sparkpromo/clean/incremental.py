"""An incremental clean: the bronze rows added since the last clean, judged with the rows they share a key with,
merged into silver and quarantine."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from sparkpromo import columns as C
from sparkpromo import delta_io, schemas
from sparkpromo import tables as T
from sparkpromo.clean.checks import RUN_KEYS, CleanError, RejectShareError, outcome, summarise
from sparkpromo.clean.dimensions import (
    age_band_movers,
    classify_items,
    classify_users,
    silver_items,
    silver_users,
    users_consent,
)
from sparkpromo.clean.events import (
    bot_candidates,
    bot_threshold,
    bot_users,
    check_references,
    event_rules,
    flag_bots,
    keyed_events,
    of_users,
    silver_events,
    sums_quantity,
)
from sparkpromo.clean.rules import (
    DIMENSION_KEYS,
    NEW,
    accepted,
    canonicalise,
    mark_duplicates,
    payload,
    personal_columns,
    quarantine_rows,
)
from sparkpromo.clean.state import SOURCES, CleanState, appends_in_feed
from sparkpromo.config import AppConfig
from sparkpromo.frame import Transform, broadcast_if_small, local_rows
from sparkpromo.ingest import CORRUPT
from sparkpromo.parallel import checkpoint_all, run_all

log = logging.getLogger(__name__)

__all__ = [
    "Q_KEY", "OP", "SourceChanges", "tag_new", "in_slice", "silver_diff", "appended_pairs", "incremental_clean",
    "incremental_totals", "check_total_shares", "merge_silver", "merge_quarantine"
]


Q_KEY = (C.Q_SOURCE, C.Q_RULE, C.Q_PAYLOAD, C.SOURCE_FILE)
OP = "_op"
_AU, _IN, _NID = "_affected", "_in_slice", "_new_id"


@dataclass
class SourceChanges:
    """One source's changes, computed before anything is written."""
    key: str
    upserts: DataFrame  # silver rows to insert or update (by ``key``)
    deletes: DataFrame  # silver keys to delete
    q_inserts: DataFrame  # quarantine rows to add (quarantine's shape)
    q_deletes: DataFrame  # quarantine rows to remove (``Q_KEY`` columns, distinct)
    silver_rows: int = 0  # silver rows to upsert or delete
    quarantine_rows: int = 0  # quarantine rows to add or remove
    known: DataFrame | None = None  # users/items: every id silver holds after this run
    changed: DataFrame | None = None  # users/items: ids that became known or unknown


def tag_new(new_batches: DataFrame) -> Transform:
    """``_new``: the row came with one of ``new_batches`` (source file, ingest time)."""
    def step(df: DataFrame) -> DataFrame:
        flags = new_batches.withColumn(NEW, F.lit(True))
        return (df.join(F.broadcast(flags), [C.SOURCE_FILE, C.INGEST_TS], "left")
                .withColumn(NEW, F.coalesce(F.col(NEW), F.lit(False))))
    return step


def in_slice(keys: DataFrame, key: str, flag: str) -> Transform:
    """``flag``: the row's ``key`` is in ``keys`` (distinct)."""
    def step(df: DataFrame) -> DataFrame:
        return (df.join(keys.select(key).withColumn(flag, F.lit(True)), key, "left")
                .withColumn(flag, F.coalesce(F.col(flag), F.lit(False))))
    return step


def silver_diff(now_rows: DataFrame, base_rows: DataFrame, key: str) -> tuple[DataFrame, DataFrame]:
    """Rows to upsert (new or changed) and keys to delete so that the slice ``base_rows`` becomes ``now_rows``."""
    base = base_rows.select(*now_rows.columns)
    return now_rows.exceptAll(base), base.select(key).subtract(now_rows.select(key))


def appended_pairs(spark: SparkSession, uri: str, start: int, end: int, feed: bool) -> DataFrame:
    """The distinct (``_source_file``, ``_ingest_ts``) of the rows appended to the bronze table ``uri`` after version
    ``start`` up to ``end``, every commit between them an append. With ``feed`` (:func:`appends_in_feed`) they
    come from the change data feed, which reads the appended files alone; else from the pairs of version ``end``
    less those of version ``start``: every row of both, and ``start``'s snapshot rebuilt from the log."""
    def pairs(df: DataFrame) -> DataFrame:
        return df.select(C.SOURCE_FILE, C.INGEST_TS).distinct()

    if feed:
        return pairs(delta_io.changes(spark, uri, start, end).where(F.col("_change_type") == "insert"))
    return pairs(delta_io.read(spark, uri, version=end)).subtract(pairs(delta_io.read(spark, uri, version=start)))


def incremental_clean(spark: SparkSession, cfg: AppConfig, run_id: str, now: dt.datetime, state: CleanState,
                      versions: Mapping[str, int | None]) -> dict[str, Any]:
    """Clean the bronze rows added since ``state`` and merge the outcome into silver and quarantine.

    The rules that look across rows stay exact by re-judging a *slice*: every bronze row sharing a key with a new
    row (users, items: the id; events: the event id, and for some users all their events), with the rules of a
    full clean. For events the slice holds the new events and every copy of their ids, plus every event of the
    users whose record became known or unknown, of those with events of an item that did, and of the users of new
    events with enough rows on some day to be a bot (:func:`bot_candidates`); so a late event is judged with the
    user's earlier days (bot rule), an event quarantined as ``unknown_user`` moves to silver when its user arrives,
    and a user that becomes a bot has its earlier silver events moved to quarantine. A user who cannot be a bot
    keeps the outcome of their earlier events: none of their rules reads the new rows. The slice's outcome is
    diffed against what silver and quarantine hold for it, and only the differences are merged. Every check (the
    run's balance, reject shares, the totals) runs before the first write.

    The users slice also holds every user whose age band as of ``now`` is not the one silver holds
    (:func:`age_band_movers`), so the band is as of this run for everyone. Rows outside the slices keep the outcome
    of the run that judged them, which is the one a rebuild gives: their rules read only the row itself
    (``future_timestamp`` compares the event with the row's own arrival in bronze). So the result is the one
    :func:`full_clean` gives for the same bronze as of ``now``.
    """
    from sparkpromo.forget import forgotten_set, without_forgotten

    cached: list[DataFrame] = []

    def keep(*frames: DataFrame) -> list[DataFrame]:
        # Computed now and cut from its lineage: each frame here builds on the ones before, and with their whole
        # plans inlined the last merges planned trees of ~10^6 nodes (a 2 GiB driver ran out of heap). Frames
        # kept together are independent and computed side by side.
        kept = checkpoint_all(spark, frames)
        cached.extend(kept)
        return kept

    forgotten = forgotten_set(spark, cfg)
    quarantine = delta_io.read(spark, T.QUARANTINE.uri(cfg))

    def bronze(source: str) -> tuple[DataFrame, DataFrame]:
        """The source's bronze rows at this run's version with ``_new`` (the tagged rows), and the same rows
        untagged (tagging keeps every row: counted untagged, Delta answers from its file statistics when
        nothing was ever forgotten)."""
        uri, end, start = T.BRONZE[source].uri(cfg), versions[source], state.bronze.get(source)
        rows = delta_io.read(spark, uri, version=end)
        if start == end:
            pairs = rows.select(C.SOURCE_FILE, C.INGEST_TS).limit(0)
        else:
            feed = appends_in_feed(spark, uri, start, end)
            log.info("bronze.%s: the rows appended after version %d %s", source, start,
                     "from the change data feed" if feed else f"by comparing it with version {end}")
            pairs = appended_pairs(spark, uri, start, end, feed)
        src = getattr(cfg.sources, source)
        if source in ("events", "users"):
            rows = rows.transform(without_forgotten(forgotten, src.columns.get(C.USER_ID, C.USER_ID), CORRUPT))
        return rows.transform(tag_new(*keep(pairs))), rows

    def diff(source: str, key: str, emitted: DataFrame, silver_now: DataFrame, silver_base: DataFrame,
             untagged: DataFrame, also: Sequence[DataFrame] = ()
             ) -> tuple[SourceChanges, dict[str, int], list[DataFrame]]:
        """The changes of one source's slice and its counts; ``emitted`` (checkpointed, or a small plan over
        checkpointed frames) and ``silver_base`` (checkpointed: the merges change silver) hold the slice's marked
        rows and what silver holds for it, ``untagged`` the source's bronze rows. ``also``: frames checkpointed in
        the same round as the slice's quarantine rows, returned third."""
        personal = personal_columns(cfg, source)
        olds = (emitted.where(~F.col(NEW))
                .select(payload(personal, source == "users").alias(C.Q_PAYLOAD), F.col(C.SOURCE_FILE)).distinct())
        q_base, *kept = keep(quarantine.where(F.col(C.Q_SOURCE) == source)
                             .join(olds, [C.Q_PAYLOAD, C.SOURCE_FILE], "left_semi").select(*Q_KEY), *also)
        # Everything below derives from checkpointed frames by a small plan, so it stays lazy: computed by the one
        # count query here and again by the merges, with no round of checkpoints of its own.
        upserts, deletes = silver_diff(silver_now, silver_base, key)
        q_now = emitted.transform(quarantine_rows(source, run_id, personal)).select(*Q_KEY)
        q_ins, q_gone = q_now.exceptAll(q_base).withColumn(C.RUN_ID, F.lit(run_id)), q_base.exceptAll(q_now)
        new_rows = emitted.where(F.col(NEW))
        in_base = silver_base.select(key).withColumn("_in_base", F.lit(True))
        # One query for every count of the slice: outcomes of its new and earlier rows, quarantine and silver
        # changes.
        kind, tag, rule = "_kind", "_change", "_rule"

        def part(name: str, df: DataFrame, tag_col: Any, rule_col: Any = None) -> DataFrame:
            rule_value = F.lit(None).cast("string") if rule_col is None else rule_col
            return df.select(F.lit(name).alias(kind), tag_col.cast("string").alias(tag), rule_value.alias(rule))

        stats = (part("age", emitted, F.col(NEW), outcome())
                 .unionByName(part("q", q_ins, F.lit("+"), F.col(C.Q_RULE)))
                 .unionByName(part("q", q_gone, F.lit("-"), F.col(C.Q_RULE)))
                 .unionByName(part("q", q_base, F.lit("base"), F.col(C.Q_RULE)))
                 .unionByName(part("s", upserts.select(key).join(in_base, key, "left"),
                                   F.when(F.col("_in_base").isNull(), "inserted").otherwise("updated")))
                 .unionByName(part("s", deletes, F.lit("deleted")))
                 .unionByName(part("s", silver_base, F.lit("base")))
                 .unionByName(part("s", accepted(new_rows).select(key).join(in_base, key, "left_semi"),
                                   F.lit("run_updated")))
                 .groupBy(kind, tag, rule).count().collect())
        by_age = [(r[tag] == "true", r[rule], int(r["count"])) for r in stats if r[kind] == "age"]
        outcomes = {metric: n for new, metric, n in by_age if new}
        q_stats = {(r[tag], r[rule]): int(r["count"]) for r in stats if r[kind] == "q"}
        s_stats = {r[tag]: int(r["count"]) for r in stats if r[kind] == "s"}
        run_updated, inserted_keys = s_stats.get("run_updated", 0), s_stats.get("inserted", 0)
        run_quarantined = sum(v for k, v in outcomes.items() if k.startswith("quarantine:"))
        q_inserted = sum(v for (t, _), v in q_stats.items() if t == "+")
        earlier = sum(n for new, _, n in by_age if not new)
        counts = {
            "run_bronze_rows": sum(outcomes.values()),
            "run_inserted": outcomes.get("silver", 0) - run_updated, "run_updated": run_updated,
            "run_quarantined": run_quarantined, "run_duplicates": outcomes.get("duplicate", 0),
            "rejudged_to_silver": max(inserted_keys - (outcomes.get("silver", 0) - run_updated), 0),
            "rejudged_to_quarantine": max(q_inserted - run_quarantined, 0),
            "rejudged_rows": earlier,  # earlier rows judged again
            # for the totals
            "_silver_delta": inserted_keys - s_stats.get("deleted", 0),
            "_dup_now": sum(n for _, metric, n in by_age if metric == "duplicate"),
            "_dup_before": (earlier - s_stats.get("base", 0)
                            - sum(v for (t, _), v in q_stats.items() if t == "base")),
            # A count of its own: Delta answers it from file statistics (no file read) when nothing was forgotten.
            "_bronze_total": untagged.count(),
            "_keys_changed": inserted_keys + s_stats.get("deleted", 0),
        }
        for (t, rule_name), v in q_stats.items():
            if t in ("+", "-"):
                counts[f"_q{t}{rule_name}"] = v
        changes = SourceChanges(key, upserts, deletes, q_ins, q_gone.distinct(),
                                silver_rows=inserted_keys + s_stats.get("updated", 0) + s_stats.get("deleted", 0),
                                quarantine_rows=sum(v for (t, _), v in q_stats.items() if t != "base"))
        return changes, counts, kept

    def dimension(source: str, movers: DataFrame | None) -> tuple[SourceChanges, dict[str, int]]:
        """``movers``: ids to re-judge besides those of the new rows (users whose age band moved)."""
        src = getattr(cfg.sources, source)
        key, max_len = DIMENSION_KEYS[source], cfg.clean.max_string_length
        raw, untagged = bronze(source)
        classify, to_silver = ((classify_users(max_len, src.exclude),
                                silver_users(now.date(), users_consent(cfg, raw.columns)))
                               if source == "users" else (classify_items(max_len, src.exclude), silver_items))
        canon = raw.transform(canonicalise(source, src))
        keys = canon.where(F.col(NEW) & F.col(key).isNotNull()).select(key)
        # Not checkpointed: a dimension's bronze is small, and the slice, silver's rows and the known ids read it.
        keys = (keys if movers is None else keys.unionByName(movers)).distinct()
        silver_table = delta_io.read(spark, T.SILVER[source].uri(cfg))
        emitted, silver_base = keep(canon.transform(in_slice(keys, key, _IN)).where(F.col(NEW) | F.col(_IN))
                                    .transform(mark_duplicates(key, True)).transform(classify),
                                    silver_table.join(keys, key, "left_semi"))
        silver_now = emitted.transform(to_silver)
        now_keys, base_keys = silver_now.select(key), silver_base.select(key)
        changes, counts, kept = diff(source, key, emitted, silver_now, silver_base, untagged,
                                     also=[silver_table.select(key).join(keys, key, "left_anti").unionByName(now_keys)])
        changes.known = kept[0]
        # The ids that became known (inserted) or unknown (deleted): lazy, from checkpointed frames.
        if counts.pop("_keys_changed"):
            changes.changed = (changes.upserts.select(key).join(base_keys, key, "left_anti")
                               .unionByName(changes.deletes.select(key)))
        return changes, counts

    def events(known: Mapping[str, DataFrame | None], changed: Mapping[str, DataFrame]
               ) -> tuple[SourceChanges, dict[str, int]]:
        """The events slice: the new events and every copy of their ids; every event of the users whose outcome
        may change as a whole (a user or item record became known or unknown, or the user has enough rows on some
        day to be a bot, :func:`bot_candidates`, before or after this batch). Any other user's earlier events keep
        their outcome: no rule of theirs reads a row this batch added, except the copies of a new id, which are in."""
        raw, untagged = bronze("events")
        keyed = raw.transform(keyed_events(cfg))
        bot_limit = bot_threshold(cfg)
        # One pass over all of bronze keeps the few columns that decide the slice; every step that picks the
        # slice's users and ids reads that, and a second pass takes the slice's rows. (Each step reading bronze
        # itself made the cost of a day grow with the history: six passes.) Aliased: a checkpointed frame keeps
        # its columns' ids, and joining one back to the frame it came from is then a conflict Spark cannot
        # resolve.
        needed = [C.EVENT_ID, C.USER_ID, NEW, *([C.ITEM_ID] if "items" in changed else []),
                  *([C.EVENT_TS] if bot_limit else [])]
        index, = keep(keyed.select(*[F.col(c).alias(c) for c in needed]))
        new_ids, = keep(index.where(F.col(NEW) & F.col(C.EVENT_ID).isNotNull())
                        .select(F.col(C.EVENT_ID).alias(C.EVENT_ID)).distinct())
        # The slice's key sets are a day's worth (counted: a few jobs over checkpointed rows), so they are broadcast
        # to the passes over bronze and silver, which then are not shuffled to meet them.
        new_ids = broadcast_if_small(new_ids, new_ids.count())
        index = index.transform(in_slice(new_ids, C.EVENT_ID, _NID))
        affected = index.select(C.USER_ID).limit(0)
        if "users" in changed:
            affected = affected.unionByName(changed["users"].select(C.USER_ID))
        if "items" in changed:
            affected = affected.unionByName(index.join(changed["items"], C.ITEM_ID, "left_semi").select(C.USER_ID))
        if bot_limit:
            touched = index.where(F.col(NEW) | F.col(_NID)).select(C.USER_ID).distinct()
            affected = affected.unionByName(index.transform(of_users(touched))
                                            .transform(bot_candidates(bot_limit, cfg.sources.events)))
        users, = keep(affected.where(F.col(C.USER_ID).isNotNull()).select(F.col(C.USER_ID).alias(C.USER_ID))
                      .distinct())
        users = broadcast_if_small(users, users.count())
        # Every copy of a slice event's id, whoever's it is: which copy is kept is decided among all of them.
        # What silver holds for the slice is read in the same round.
        ids, silver_base = keep(index.transform(in_slice(users, C.USER_ID, _AU)).where(F.col(_AU) | F.col(NEW))
                                .where(F.col(C.EVENT_ID).isNotNull()).select(F.col(C.EVENT_ID).alias(C.EVENT_ID))
                                .distinct(),
                                delta_io.read(spark, T.SILVER_EVENTS.uri(cfg))
                                .transform(in_slice(users, C.USER_ID, _AU))
                                .transform(in_slice(new_ids, C.EVENT_ID, _NID))
                                .where(F.col(_AU) | F.col(_NID)).drop(_AU, _NID))
        ids = broadcast_if_small(ids, ids.count())
        marked, = keep(keyed.transform(in_slice(new_ids, C.EVENT_ID, _NID))
                       .transform(in_slice(users, C.USER_ID, _AU)).transform(in_slice(ids, C.EVENT_ID, _IN))
                       .where(F.col(_AU) | F.col(NEW) | F.col(_IN))
                       .transform(mark_duplicates(C.EVENT_ID, False, sum_quantity=sums_quantity(cfg, raw)))
                       .transform(event_rules(cfg, now))
                       .transform(check_references(known["users"], known["items"])))
        if bot_limit:
            marked = marked.transform(flag_bots(*keep(marked.transform(bot_users(bot_limit)))))
        # The other copies of an earlier slice user's ids came in only to rank copies; they are not re-judged.
        # Lazy: a small plan over checkpointed frames, read by the counts and the merges.
        emitted = marked.where(F.col(_AU) | F.col(NEW) | F.col(_NID))
        change, count, _ = diff("events", C.EVENT_ID, emitted, silver_events(emitted), silver_base, untagged)
        count.pop("_keys_changed")
        return change, count

    try:
        changes: dict[str, SourceChanges] = {}
        counts: dict[str, dict[str, int]] = {}
        known: dict[str, DataFrame | None] = {source: None for source in DIMENSION_KEYS}
        changed: dict[str, DataFrame] = {}
        def judged(source: str) -> tuple[SourceChanges, dict[str, int]] | None:
            """One dimension's changes and counts; None when nothing is new and nobody is to be re-judged."""
            movers = age_band_movers(spark, cfg, now, versions[source]) if source == "users" else None
            if state.bronze.get(source) == versions[source] and (movers is None or movers.isEmpty()):
                return None
            return dimension(source, movers)

        # Users and items are independent of each other: judged side by side.
        dims = [source for source in DIMENSION_KEYS if versions.get(source) is not None]
        judgements = run_all(spark, [lambda s=s: judged(s) for s in dims], "sparkpromo-clean")
        for source, out in zip(dims, judgements, strict=True):
            if out is None:
                # nothing new, nobody to re-judge: silver's ids are the known ones
                known[source] = delta_io.read(spark, T.SILVER[source].uri(cfg)).select(DIMENSION_KEYS[source])
                continue
            changes[source], counts[source] = out
            known[source] = out[0].known
            if out[0].changed is not None:
                changed[source] = out[0].changed
        if state.bronze.get("events") != versions["events"] or changed:
            changes["events"], counts["events"] = events(known, changed)

        results, outcomes = incremental_totals(cfg, state, counts)
        for k, v in results.items():
            if ".quarantine:" in k:
                log.info("quarantine %s = %d", k, v)

        for name in (*DIMENSION_KEYS, "events"):
            if name in changes:
                merge_silver(spark, T.SILVER[name].uri(cfg), changes[name], T.SILVER[name].key)
        merge_quarantine(spark, T.QUARANTINE.uri(cfg), [changes[s] for s in changes])
        dq_rows = [(run_id, source, metric, n) for source, per in outcomes.items() for metric, n in per.items()]
        dq = local_rows(spark, dq_rows, schemas.DQ_STATS)
        delta_io.replace_partition(dq, T.DATA_QUALITY.uri(cfg), {C.RUN_ID: run_id},
                                   name=T.DATA_QUALITY.key)
    finally:
        # Newest first: a frame is dropped after the frames built on it, so Spark never re-plans a cached frame
        # whose input left the cache (which costs minutes with this many).
        for df in reversed(cached):
            df.unpersist()
    return results


def incremental_totals(cfg: AppConfig, state: CleanState, counts: Mapping[str, Mapping[str, int]]
                       ) -> tuple[dict[str, int], dict[str, dict[str, int]]]:
    """The totals after this run's changes (the keys of :func:`summarise`, and per source the outcome counts as
    :func:`written_counts` stores them) and its per-run balance, checked before anything is written: the run's
    new rows all end somewhere, and the tables' totals still add up to bronze."""
    # Silver and quarantine are as the last clean left them (full_refresh_reason checked their versions), so its
    # totals are theirs: no count of either table.
    q_before = {(k.split(".", 1)[0], k.split(":", 1)[1]): int(v) for k, v in state.result.items()
                if ".quarantine:" in k}
    results: dict[str, int] = {}
    outcomes: dict[str, dict[str, int]] = {}
    for source in SOURCES:
        if source in counts or f"{source}.bronze_rows" not in state.result:
            continue
        # No new rows and nothing re-judged: the source's totals are the last clean's.
        totals = {k.split(".", 1)[1]: int(v) for k, v in state.result.items() if k.startswith(f"{source}.")
                  and k.split(".", 1)[1] in ("silver_rows", "duplicates") or k.startswith(f"{source}.quarantine:")}
        per_rule = {"silver": totals.pop("silver_rows"), "duplicate": totals.pop("duplicates"), **totals}
        results.update(summarise(source, per_rule))
        results.update({f"{source}.{k}": 0 for k in RUN_KEYS})
        outcomes[source] = per_rule
    for source, c in counts.items():
        run = {k: c[k] for k in RUN_KEYS}
        new_rows = c["_bronze_total"] - int(state.result.get(f"{source}.bronze_rows", 0))
        if run["run_bronze_rows"] != new_rows:
            raise CleanError(f"{source}: bronze has {new_rows} new rows but {run['run_bronze_rows']} were judged "
                             f"({run}); nothing was written")
        silver_before = int(state.result.get(f"{source}.silver_rows", 0))
        per_rule = {"silver": silver_before + c["_silver_delta"],
                    "duplicate": int(state.result.get(f"{source}.duplicates", 0)) + c["_dup_now"] - c["_dup_before"]}
        rules = {r for (s, r) in q_before if s == source} | {k[3:] for k in c if k.startswith(("_q+", "_q-"))}
        for rule in rules:
            n = q_before.get((source, rule), 0) + c.get(f"_q+{rule}", 0) - c.get(f"_q-{rule}", 0)
            if n:
                per_rule[f"quarantine:{rule}"] = n
        if sum(per_rule.values()) != c["_bronze_total"]:
            raise CleanError(f"{source}: bronze has {c['_bronze_total']} rows but silver + quarantine + duplicates "
                             f"would be {sum(per_rule.values())} ({per_rule}); nothing was written")
        # Shares of the whole bronze, as a full clean of it judges them: a small batch may be mostly one rule's
        # (a one-row users export that fails, a bot's next events) without saying anything about the format.
        check_total_shares(source, per_rule, c["_bronze_total"], cfg.clean.max_reject_share)
        results.update(summarise(source, per_rule))
        results.update({f"{source}.{k}": v for k, v in run.items()})
        outcomes[source] = per_rule
    return results, outcomes


def check_total_shares(source: str, per_rule: Mapping[str, int], total: int, max_share: float) -> None:
    """:func:`check_reject_shares` on the totals a clean leaves (``per_rule``: outcome -> rows of ``source``)."""
    worst = max(((n, k.split(":", 1)[1]) for k, n in per_rule.items() if k.startswith("quarantine:")), default=None)
    if worst is not None and total and worst[0] / total > max_share:
        raise RejectShareError(
            f"sources.{source}: {worst[0]} of {total} rows ({worst[0] / total:.1%}) fail rule {worst[1]}, above "
            f"clean.max_reject_share {max_share:g} (check the source's format and column mapping; nothing was "
            "written)")


def merge_silver(spark: SparkSession, uri: str, change: SourceChanges, name: str) -> None:
    """Upsert and delete one silver table's changed rows by key, in one commit (none when nothing changed)."""
    ups = change.upserts.withColumn(OP, F.lit("u"))
    dels = change.deletes.select(*[F.col(c) if c == change.key else F.lit(None).cast(t).alias(c)
                                   for c, t in change.upserts.dtypes]).withColumn(OP, F.lit("d"))
    source = ups.unionByName(dels)
    if not change.silver_rows:
        return
    cols = change.upserts.columns
    delta_io.fault_point(f"before_write:{name}")
    key = delta_io.ident(change.key)
    delta_io.merge_into(spark, uri, source, f"t.{key} = s.{key}", [
        f"WHEN MATCHED AND s.{OP} = 'd' THEN DELETE",
        f"WHEN MATCHED AND s.{OP} = 'u' THEN {delta_io.update_all(cols)}",
        f"WHEN NOT MATCHED AND s.{OP} = 'u' THEN {delta_io.insert_all(cols)}"])
    delta_io.fault_point(f"after_write:{name}")


def merge_quarantine(spark: SparkSession, uri: str, changes: Sequence[SourceChanges]) -> None:
    """Remove the re-judged rows and add this run's rejects, in one commit (none when nothing changed)."""
    cols = [*Q_KEY, C.RUN_ID]
    source: DataFrame | None = None
    for change in changes:
        part = (change.q_inserts.select(*cols).withColumn(OP, F.lit("i"))
                .unionByName(change.q_deletes.withColumn(C.RUN_ID, F.lit(None).cast("string"))
                             .select(*cols).withColumn(OP, F.lit("d"))))
        source = part if source is None else source.unionByName(part)
    if source is None or not any(c.quarantine_rows for c in changes):
        return
    match = " AND ".join(f"t.{delta_io.ident(c)} <=> s.{delta_io.ident(c)}" for c in Q_KEY)
    delta_io.fault_point("before_write:quarantine")
    delta_io.merge_into(spark, uri, source, f"s.{OP} = 'd' AND {match}", [
        "WHEN MATCHED THEN DELETE", f"WHEN NOT MATCHED AND s.{OP} = 'i' THEN {delta_io.insert_all(cols)}"])
    delta_io.fault_point("after_write:quarantine")
