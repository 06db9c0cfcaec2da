"""What the incremental stages read from a table's history before they trust a version range: clean builds on bronze
only when every commit since its last run appended rows (``appends_only``), features reads silver's change data
feed only when every commit since its last run changed rows one by one and the feed is on (``row_changes_only``).
Both read the range through ``delta_io.commits_between``."""

from __future__ import annotations

from pathlib import Path

from delta.tables import DeltaTable
from pyspark.sql import SparkSession

from sparkpromo import delta_io
from sparkpromo.clean.state import appends_only


def table(spark: SparkSession, path: Path, change_feed: bool) -> str:
    """A two-row table (version 0), with or without its change data feed."""
    uri = str(path)
    (spark.createDataFrame([(1, "a"), (2, "b")], "id INT, v STRING").write.format("delta")
     .option(delta_io.CHANGE_FEED, str(change_feed).lower()).save(uri))
    return uri


def append(spark: SparkSession, uri: str, row: tuple[int, str]) -> None:
    delta_io.append(spark.createDataFrame([row], "id INT, v STRING"), uri)


def test_commits_between_lists_each_commit_of_the_range_in_order(spark: SparkSession, tmp_path: Path) -> None:
    uri = table(spark, tmp_path / "t", change_feed=True)
    append(spark, uri, (3, "c"))
    DeltaTable.forPath(spark, uri).delete("id = 1")
    commits = delta_io.commits_between(spark, uri, 0, 2)
    assert commits is not None and [op for op, _ in commits] == ["WRITE", "DELETE"]
    assert commits[0][1]["mode"] == "Append"
    assert delta_io.commits_between(spark, uri, 1, 2) == commits[1:]
    # A range reaching past the last commit is not fully recorded: neither predicate may trust it.
    assert delta_io.commits_between(spark, uri, 0, 3) is None
    assert not appends_only(spark, uri, 0, 3) and not delta_io.row_changes_only(spark, uri, 0, 3)


def test_appends_keep_both_a_delete_breaks_appends_only_and_an_overwrite_breaks_both(spark: SparkSession,
                                                                                    tmp_path: Path) -> None:
    uri = table(spark, tmp_path / "t", change_feed=True)
    append(spark, uri, (3, "c"))  # v1
    assert appends_only(spark, uri, 0, 1) and delta_io.row_changes_only(spark, uri, 0, 1)
    DeltaTable.forPath(spark, uri).delete("id = 1")  # v2: what forget does to bronze
    assert not appends_only(spark, uri, 0, 2) and not appends_only(spark, uri, 1, 2)
    assert delta_io.row_changes_only(spark, uri, 0, 2)  # the change feed records the deleted row
    (spark.createDataFrame([(9, "z")], "id INT, v STRING").write.format("delta").mode("overwrite")
     .save(uri))  # v3
    assert not appends_only(spark, uri, 2, 3) and not delta_io.row_changes_only(spark, uri, 2, 3)
    assert appends_only(spark, uri, 1, 1) and delta_io.row_changes_only(spark, uri, 1, 1)  # no commit at all


def test_a_vacuum_always_leaves_its_commits_and_ends_what_the_change_feed_can_tell(spark: SparkSession,
                                                                                    tmp_path: Path) -> None:
    """Delta logs a VACUUM by default only on some file systems (not s3a:); off here as it would be there. The
    purge forget runs drops the change files of a DELETE, so the feed no longer tells that range's changes."""
    uri = table(spark, tmp_path / "t", change_feed=True)
    DeltaTable.forPath(spark, uri).delete("id = 1")  # v1
    spark.conf.set(delta_io.VACUUM_LOGGING, "false")
    try:
        spark.conf.set("spark.databricks.delta.retentionDurationCheck.enabled", "false")
        delta_io.vacuum(spark, uri, 0)
    finally:
        spark.conf.unset("spark.databricks.delta.retentionDurationCheck.enabled")
        spark.conf.unset(delta_io.VACUUM_LOGGING)
    end = delta_io.version(spark, uri)
    commits = delta_io.commits_between(spark, uri, 0, end or 0)
    assert commits is not None and [op for op, _ in commits] == ["DELETE", "VACUUM START", "VACUUM END"]
    assert not delta_io.row_changes_only(spark, uri, 0, end or 0)
    assert not delta_io.change_feed_complete(spark, uri, 0, end or 0)


def test_row_changes_only_needs_the_change_data_feed(spark: SparkSession, tmp_path: Path) -> None:
    uri = table(spark, tmp_path / "t", change_feed=False)
    append(spark, uri, (3, "c"))
    assert appends_only(spark, uri, 0, 1)
    assert not delta_io.row_changes_only(spark, uri, 0, 1)


def test_last_commit_metrics_are_the_latest_commits(spark: SparkSession, tmp_path: Path) -> None:
    """The rows each commit wrote, from Delta's SQL history (what features reports, over Connect too)."""
    uri = table(spark, tmp_path / "t", change_feed=False)
    assert delta_io.last_commit_metrics(spark, uri)["numOutputRows"] == "2"
    append(spark, uri, (3, "c"))
    assert delta_io.last_commit_metrics(spark, uri)["numOutputRows"] == "1"


def history_commit(spark: SparkSession, uri: str) -> tuple[int, int] | None:
    """What Delta's own history says of the latest commit, as ``latest_commit`` answers: (version, epoch ms)."""
    return delta_io._commit(DeltaTable.forPath(spark, uri).history(1).select("version", "timestamp").first())


def test_the_log_listing_gives_the_latest_commit_delta_history_gives(spark: SparkSession, tmp_path: Path) -> None:
    """A local table's latest version and commit time read off its log's file names are Delta's, after appends, a
    DELETE, an overwrite and a checkpoint (version 10); a ``file:`` URI is the same table."""
    uri = table(spark, tmp_path / "t", change_feed=False)
    for n in range(1, 12):
        if n == 5:
            DeltaTable.forPath(spark, uri).delete("id = 1")
        elif n == 8:
            delta_io.overwrite(spark.createDataFrame([(9, "z")], "id INT, v STRING"), uri)
        else:
            append(spark, uri, (n + 2, "x"))
        listed = delta_io._listed_commit(uri)
        assert listed is not None and listed[0] == n
        assert listed == history_commit(spark, uri) == delta_io.latest_commit(spark, uri)
    assert (tmp_path / "t" / "_delta_log" / f"{10:020d}.checkpoint.parquet").exists()
    assert delta_io._listed_commit(f"file://{uri}") == delta_io._listed_commit(uri)
    assert delta_io.version(spark, uri) == 11


def test_delta_answers_where_the_listing_cannot_tell(spark: SparkSession, tmp_path: Path) -> None:
    """No table, no local log, or a commit staged outside the log's own folder (coordinated commits): the listing
    declines, and the lookup asks Delta."""
    assert delta_io._listed_commit(str(tmp_path / "missing")) is None
    assert delta_io.latest_commit(spark, str(tmp_path / "missing")) is None
    assert delta_io._listed_commit("s3a://bucket/lake/silver/events") is None
    uri = table(spark, tmp_path / "t", change_feed=False)
    append(spark, uri, (3, "c"))
    assert delta_io._listed_commit(uri) == (1, history_commit(spark, uri)[1])  # type: ignore[index]
    staged = tmp_path / "t" / "_delta_log" / "_staged_commits"
    staged.mkdir(exist_ok=True)
    (staged / f"{2:020d}.uuid.json").write_text("{}")
    assert delta_io._listed_commit(uri) is None
    assert delta_io.latest_commit(spark, uri) == history_commit(spark, uri)
