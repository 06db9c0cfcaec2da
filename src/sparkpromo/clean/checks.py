"""What a clean must add up to: per-row outcomes, per-source counts, the reject-share stop and the balance
``bronze rows = silver + quarantine + duplicates``; silver's constraints."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from pyspark.sql import Column, DataFrame, Row
from pyspark.sql import functions as F

from sparkpromo import columns as C
from sparkpromo.clean.rules import DUP, EXAMPLE

__all__ = [
    "RUN_KEYS", "outcome", "outcome_counts", "summarise", "CleanError",
    "RejectShareError", "check_reject_shares", "balance"
]


def outcome() -> Column:
    """A marked row's outcome: ``silver``, ``duplicate`` or ``quarantine:<rule>``."""
    return (F.when(F.col(DUP), F.lit("duplicate"))
            .when(F.col(C.Q_RULE).isNull(), F.lit("silver"))
            .otherwise(F.concat(F.lit("quarantine:"), F.col(C.Q_RULE))))


def outcome_counts(df: DataFrame) -> DataFrame:
    """Rows per outcome (a handful of rows), see :func:`outcome`."""
    return df.groupBy(outcome().alias("metric")).count()


def summarise(source: str, counts: Mapping[str, int]) -> dict[str, int]:
    total = sum(counts.values())
    out = {f"{source}.bronze_rows": total, f"{source}.silver_rows": counts.get("silver", 0),
           f"{source}.duplicates": counts.get("duplicate", 0),
           f"{source}.quarantined": sum(v for k, v in counts.items() if k.startswith("quarantine:"))}
    for k, v in sorted(counts.items()):
        if k.startswith("quarantine:"):
            out[f"{source}.{k}"] = v
    return out


class CleanError(RuntimeError):
    """The clean stage's own invariant failed (a row would have vanished): never expected, always loud."""


class RejectShareError(CleanError):
    """A source whose rows mostly fail one rule: a wrong format or mapping, not bad rows. Nothing was written."""


def check_reject_shares(quarantined: DataFrame, bronze_rows: Mapping[str, int], max_share: float) -> None:
    """Raise :class:`RejectShareError` (one line: source, rule, share, an example value) when the rows of one source
    that fail one rule are more than ``max_share`` of its bronze rows. ``quarantined`` is in
    :func:`quarantine_rows`' shape; one small aggregate reaches the driver."""
    stats = (quarantined.groupBy(C.Q_SOURCE, C.Q_RULE)
             .agg(F.count(F.lit(1)).alias("n"), F.min(EXAMPLE).alias(EXAMPLE)).collect())
    worst = sorted(((r["n"] / bronze_rows[r[C.Q_SOURCE]], r) for r in stats if bronze_rows.get(r[C.Q_SOURCE])),
                   key=lambda pair: -pair[0])
    if worst and worst[0][0] > max_share:
        share, r = worst[0]
        total = bronze_rows[r[C.Q_SOURCE]]
        raise RejectShareError(
            f"sources.{r[C.Q_SOURCE]}: {r['n']} of {total} rows ({share:.1%}) fail rule {r[C.Q_RULE]}, above "
            f"clean.max_reject_share {max_share:g}; e.g. {r[EXAMPLE]} (check the source's format and column mapping; "
            "nothing was written)")


def balance(run_id: str, bronze_rows: Mapping[str, int], duplicates: Mapping[str, int], silver_rows: Mapping[str, int],
            per_rule: Sequence[Row]) -> tuple[dict[str, int], list[tuple[str, str, str, int]]]:
    """Per-source outcome counts (``per_rule``: quarantine rows per source and rule), checked against the bronze
    snapshot (``bronze_rows``, per source at the version that was read): raises :class:`CleanError` when a row would
    vanish or appear twice. Returns the results and the ``metrics/data_quality`` rows."""
    results: dict[str, int] = {}
    dq_rows: list[tuple[str, str, str, int]] = []
    for source, total in bronze_rows.items():
        counts = {f"quarantine:{r[C.Q_RULE]}": int(r["count"]) for r in per_rule if r[C.Q_SOURCE] == source}
        counts["silver"] = silver_rows[source]
        counts["duplicate"] = duplicates[source]
        if sum(counts.values()) != total:
            raise CleanError(f"{source}: bronze has {total} rows but silver + quarantine + duplicates = "
                             f"{sum(counts.values())} ({counts}); nothing was written")
        results.update(summarise(source, counts))
        dq_rows += [(run_id, source, k, v) for k, v in counts.items()]
    return results, dq_rows


# The per-run balance of one source: run_bronze_rows = run_inserted + run_updated + run_quarantined +
# run_duplicates (what became of this run's new bronze rows), plus the earlier rows whose outcome the new rows
# changed (rejudged_*).
RUN_KEYS = ("run_bronze_rows", "run_inserted", "run_updated", "run_quarantined", "run_duplicates",
            "rejudged_to_silver", "rejudged_to_quarantine", "rejudged_rows")
