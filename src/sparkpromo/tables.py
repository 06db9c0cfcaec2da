"""Every Delta table sparkpromo writes, declared once: where it lives under the lakehouse, its schema (from
:mod:`sparkpromo.schemas`), its partitioning, its CHECK constraints and its table properties.

Writers take the partitioning, constraints and properties from here; readers and writers resolve the location with
:meth:`Table.uri`; the pipeline's stage inputs and outputs and the run manifest name tables by :attr:`Table.key`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pyspark.sql.types import StructType

from sparkpromo import columns as C
from sparkpromo import delta_io
from sparkpromo import schemas as S

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from sparkpromo.config import AppConfig


@dataclass(frozen=True, eq=False)
class Table:
    layer: str
    name: str
    # None for bronze: its columns are the source's, plus the ingestion metadata.
    schema: StructType | None
    partition_by: tuple[str, ...] = ()
    checks: Mapping[str, str] = field(default_factory=dict)  # constraint name -> CHECK expression
    not_null: tuple[str, ...] = ()
    properties: Mapping[str, str] = field(default_factory=dict)

    @property
    def key(self) -> str:
        """``layer.name``: how the run manifest and the logs name the table."""
        return f"{self.layer}.{self.name}"

    def uri(self, cfg: AppConfig) -> str:
        return cfg.table(self.layer, self.name)


# The change data feed hands an incremental clean the rows appended since its last run without reading bronze as it
# was then (clean/incremental.py). Ingest sets it when it creates a bronze table; one created before keeps its own.
BRONZE_PROPERTIES = {"delta.enableChangeDataFeed": "true"}
BRONZE_EVENTS = Table("bronze", "events", None, properties=BRONZE_PROPERTIES)
BRONZE_USERS = Table("bronze", "users", None, properties=BRONZE_PROPERTIES)
BRONZE_ITEMS = Table("bronze", "items", None, properties=BRONZE_PROPERTIES)
BRONZE = {"events": BRONZE_EVENTS, "users": BRONZE_USERS, "items": BRONZE_ITEMS}

SILVER_EVENTS = Table(
    "silver", "events", S.SILVER_EVENTS,
    checks={"valid_event_type": f"event_type IN ({', '.join(repr(t) for t in C.ALL_EVENT_TYPES)})",
            "non_negative_price": "price IS NULL OR price >= 0",
            "positive_quantity": "quantity IS NULL OR quantity >= 1"},
    not_null=(C.EVENT_ID, C.USER_ID, C.ITEM_ID, C.EVENT_TYPE, C.EVENT_TS),
    # Delta collects min/max statistics for the first 32 columns by default; on silver events only the time columns
    # and the type ever prune files (ids are spread over every file), and skipping the rest makes the write ~20%
    # cheaper.
    # The change data feed tells an incremental features run which rows a clean changed (features/incremental.py).
    properties={"delta.dataSkippingStatsColumns": f"{C.EVENT_DATE},{C.EVENT_TS},{C.EVENT_TYPE}",
                "delta.enableChangeDataFeed": "true"})
SILVER_USERS = Table("silver", "users", S.SILVER_USERS, not_null=(C.USER_ID, C.MARKETING_CONSENT),
                     properties={"delta.enableChangeDataFeed": "true"})
SILVER_ITEMS = Table("silver", "items", S.SILVER_ITEMS,
                     checks={"non_negative_item_price": "price IS NULL OR price >= 0",
                             "non_negative_stock": "stock IS NULL OR stock >= 0"},
                     not_null=(C.ITEM_ID,), properties={"delta.enableChangeDataFeed": "true"})
SILVER = {"events": SILVER_EVENTS, "users": SILVER_USERS, "items": SILVER_ITEMS}
QUARANTINE = Table("quarantine", "rows", S.QUARANTINE, partition_by=(C.Q_SOURCE,))
# Tables that gain a small file on every run and are read whole on every run (the run record by every stage, the
# clean state by every clean): Delta's auto compaction rewrites them into one file whenever 50 small files have
# gathered, so their read costs the same on day 365 as on day 2.
AUTO_COMPACT = {"delta.autoOptimize.autoCompact": "true"}

DATA_QUALITY = Table("metrics", "data_quality", S.DQ_STATS)
CLEAN_STATE = Table("metrics", "clean_state", S.CLEAN_STATE, properties=AUTO_COMPACT)

USER_FEATURES = Table("gold", "user_features", S.USER_FEATURES)
ITEM_FEATURES = Table("gold", "item_features", S.ITEM_FEATURES)
INTERACTIONS = Table("gold", "interactions", S.INTERACTIONS)
ID_MAP = Table("gold", "id_map", S.ID_MAP)

# Keyed by the model run: the registry entry (registry/<run_id>/, or <run_id>.r2/ ... for a run trained again while
# its model was in service), the id LATEST and gold/recommendations.model_run_id name.
MODEL_METRICS = Table("metrics", "model", S.MODEL_METRICS)

RECOMMENDATIONS = Table(
    "gold", "recommendations", S.RECOMMENDATIONS, partition_by=(C.CAMPAIGN_ID, C.RUN_DATE),
    # A control-group row is never a delivered one (README "Measuring campaigns": why control users get no offer).
    checks={"control_never_delivered": f"NOT ({C.IS_CONTROL} AND {C.DELIVERED})"},
    # The change data feed tells an incremental measure run which run dates' lists changed (measure/stage.py).
    properties={"delta.enableChangeDataFeed": "true"})

CAMPAIGN_OUTCOMES = Table("metrics", "campaign_outcomes", S.OUTCOMES)
UPLIFT = Table("metrics", "uplift", S.UPLIFT)
CAMPAIGN_ACTIONS = Table("metrics", "campaign_actions", S.ACTIONS)

STAGE_RUNS = Table("metrics", "stages", S.STAGE_RUNS, properties=AUTO_COMPACT)
CAMPAIGN_METRICS = Table("metrics", "campaigns", S.CAMPAIGN_METRICS)

FORGOTTEN = Table("privacy", "forgotten", S.FORGOTTEN)



def legacy_run_id_renamed(df: DataFrame) -> DataFrame:
    """``df`` with a run-id column under its old name (``run_id``: metrics/model before every table used
    ``_run_id``) renamed; any other frame as it is."""
    if C.LEGACY_RUN_ID in df.columns and C.RUN_ID not in df.columns:
        return df.withColumnRenamed(C.LEGACY_RUN_ID, C.RUN_ID)
    return df


def migrate_legacy_run_id(spark: SparkSession, table: Table, cfg: AppConfig) -> bool:
    """Rename a table's run-id column written under its old name (``run_id``, metrics/model before every table used
    ``_run_id``); True when it did. Small metric tables only: it rewrites the table."""
    uri = table.uri(cfg)
    if not delta_io.is_delta(spark, uri):
        return False
    current = delta_io.read(spark, uri)
    if legacy_run_id_renamed(current) is current:
        return False
    delta_io.rename_column_by_rewrite(spark, uri, C.LEGACY_RUN_ID, C.RUN_ID, name=table.key)
    return True


ALL: tuple[Table, ...] = (
    BRONZE_EVENTS, BRONZE_USERS, BRONZE_ITEMS, SILVER_EVENTS, SILVER_USERS, SILVER_ITEMS, QUARANTINE, DATA_QUALITY,
    CLEAN_STATE, USER_FEATURES, ITEM_FEATURES, INTERACTIONS, ID_MAP, MODEL_METRICS, RECOMMENDATIONS,
    CAMPAIGN_OUTCOMES, UPLIFT, CAMPAIGN_ACTIONS, STAGE_RUNS, CAMPAIGN_METRICS, FORGOTTEN)
BY_KEY: dict[str, Table] = {t.key: t for t in ALL}
