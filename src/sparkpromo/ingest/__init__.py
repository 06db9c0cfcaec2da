"""Ingest: new landing files (CSV, JSON lines, Parquet) → append-only bronze Delta tables.

Bronze keeps every source column as a string under its source name, plus ingestion metadata (source file,
ingest time, run id) and, for CSV/JSON, the raw text of any line the parser could not split
(``_corrupt_record``). Typing, mapping and validation happen in ``clean``, so nothing is lost here.

**New files only, found by Spark.** Each source is a Structured Streaming query run with
``trigger(availableNow=True)`` (the open-source code path under Databricks' Auto Loader), checkpointed at
``<lakehouse>/_checkpoints/ingest/<source>`` (:meth:`AppConfig.stream_checkpoint`). Its source is Spark's
``binaryFile`` file stream selecting only ``path``, ``modificationTime`` and ``length``: without the ``content``
column that source reads no byte of a file (``tests/test_ingest.py`` streams a 2.2 GB sparse file), so the stream
only *discovers* files; its checkpoint remembers every file it has handed out, and each run gets the files no
earlier run got. A ``foreachBatch`` function then reads exactly those files with the header-aware reader below and
appends them to bronze. Why not a CSV/JSON stream directly: a streaming CSV source applies one schema by
position to every file, so files with the same columns in another order would be read with values swapped, and a
missing column could not be reported per file before anything is written; the discovery stream keeps all of
that (header names, per-file column checks, patterns, skipped and empty files, JSON/Parquet, codecs) unchanged.

Which files (:mod:`sparkpromo.landing`): a path naming one local file is read whatever its name (streamed as its
directory filtered to that name); for a directory (or glob) Spark's listing applies (hidden names such as
``_SUCCESS`` or ``.x.crc`` and non-partition subdirectories are not files of the source), then only new files
whose name matches one of the source's ``patterns`` are read; the others are skipped, logged and counted
(``<source>_skipped_files``) in the run that first finds them, and remembered like every other file, so a file
skipped once is not read after ``patterns`` changes unless it is sent again under a new name. A remote URI must
name a directory or a glob. CSV files with a header are read by header name: files are grouped by identical
header, each group is read with its own schema and the groups are unioned by name.

Every file (CSV with a header) or the batch as a whole (JSON, Parquet, CSV without a header) must hold every
mapped and every required column, and the batch's columns must match bronze's (new columns only with
``clean.allow_schema_evolution``); otherwise ingest fails with a one-line :class:`IngestError` before anything is
written. A failed batch is not committed to the checkpoint: the next run retries the same files (read again, so
a corrected file sent under the same name is read in its corrected form, and a file deleted meanwhile is left out).

**Idempotence.** Each batch is appended with Delta's ``txnAppId`` (the source and the streaming query's id, which
a new checkpoint changes) and ``txnVersion`` (the batch id): a batch retried after its append committed but
before the checkpoint recorded it (a crash in between) is skipped by Delta, so no row is appended twice. A file
is identified by its path alone, as by Spark's file source: a file re-sent under a name already ingested, even
with new content or a new modification time, is not read again (Auto Loader's ``cloudFiles.allowOverwrites`` has
no counterpart in Spark's own source); send corrections under a new name. Two ingests of one source in one
driver take turns; in two processes the checkpoint's atomic batch log lets only one plan a batch.

**Cost per run.** No data file is read again and no bronze row is scanned (only bronze's schema, for the drift
check), so the data read grows with the new files only. What still grows with the landing directory is Spark's
listing of file names (each run lists the source path, as the batch reader did) and the restore of the
checkpoint's compacted list of files seen. ``maxFileAge`` is set to ten years: Spark ignores a file older than the
newest one seen by more than that, and the default (7 days) would silently skip a late file that kept an old
modification time (a copied backfill); it bounds the memory of the seen-file map, not the listing.
``latestFirst`` is off (files are read oldest first). To bound the listing, move ingested files out of the
landing directory or land each day under its own directory and point the source at a glob.

**Privacy.** Rows of users recorded in ``privacy/forgotten`` (:mod:`sparkpromo.forget`) are dropped before the
append, so no re-sent file brings a forgotten user back. Because the checkpoint remembers files, a file whose rows
all belonged to forgotten users is read once and not again by each later ingest (it used to be).
"""

from sparkpromo.ingest.read import *  # noqa: F403
from sparkpromo.ingest.stage import *  # noqa: F403
from sparkpromo.ingest.stream import *  # noqa: F403
