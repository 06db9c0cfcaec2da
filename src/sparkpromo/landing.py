"""Landing files: which of the new files Spark's file stream found to read (name patterns, skipped and empty files)
and the header line of a CSV file as Spark would name its columns. Nothing is listed and no rows are read here:
:mod:`sparkpromo.ingest` discovers new files with Spark's streaming file source and reads them.

Headers of local files are read with Python; those of remote URIs (s3a:, abfss:, dbfs:) through Spark's public
reader API, so nothing reaches into the JVM.
"""

from __future__ import annotations

import bz2
import codecs
import csv
import gzip
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import IO

from pyspark.sql import SparkSession

from sparkpromo.config import FileSource, local_path

log = logging.getLogger(__name__)

GLOB_CHARS = "*?["
# How many skipped file names the warning lists before a count.
SHOWN_SKIPPED = 10
# Hadoop codecs Python cannot open: such a file's header is read by Spark.
SPARK_ONLY_CODECS = (".deflate", ".lz4", ".snappy", ".zst")
# Spark globs every path it is given; these characters in a listed file name must be escaped to mean themselves.
_SPARK_GLOB_RE = re.compile(r"([\\{}\[\]*?])")
# Spark's two-character escapes for single-character CSV options (sep, quote, escape).
_CHAR_ESCAPES = {"\\t": "\t", "\\r": "\r", "\\b": "\b", "\\f": "\f", '\\"': '"', "\\'": "'", "\\\\": "\\"}


class IngestError(ValueError):
    """A source that cannot be ingested as configured (no file, missing mapped column, schema drift...)."""


# ----------------------------------------------------------------------------------------------------------------
# Which of a batch's files to read
# ----------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Listing:
    """The files of a source to read, and the files skipped because no pattern matches their name.

    ``local``: the paths are local filesystem paths (their headers are read with Python), not URIs.
    ``base_path``: the directory the files were found under, from which Spark infers partition columns
    (key=value directories).
    """
    files: tuple[str, ...]
    skipped: tuple[str, ...] = ()
    local: bool = True
    base_path: str | None = None


def has_glob(path: str) -> bool:
    return any(ch in path for ch in GLOB_CHARS)


def matches(name: str, patterns: Sequence[str]) -> bool:
    return any(fnmatchcase(name, p) for p in patterns)


def single_file(src: FileSource) -> Path | None:
    """The local file ``src.path`` names, or None (a directory, a glob or a remote URI)."""
    local = local_path(src.path)
    if local is None or has_glob(src.path) or not local.is_file():
        return None
    return local


def batch_listing(source: str, src: FileSource, found: Sequence[tuple[str, int]]) -> Listing:
    """Which of the files Spark found new (``found``: URI and length) to read: all of them when the source path
    names one file, else those whose name matches one of the source's ``patterns``; the others are skipped and
    logged. Empty files hold no rows and are neither read nor counted as skipped."""
    is_local = local_path(src.path) is not None
    paths = sorted(_local(p) if is_local else p for p, length in found if length > 0)
    empty = len(found) - len(paths)
    if empty:
        log.info("sources.%s: %d new empty file(s); nothing to read in them", source, empty)
    if single_file(src) is not None:
        return Listing(tuple(paths), (), is_local)
    patterns = src.file_patterns()
    files = [p for p in paths if matches(_basename(p), patterns)]
    skipped = [p for p in paths if not matches(_basename(p), patterns)]
    if skipped:
        names = [_basename(p) for p in skipped]
        more = f" and {len(names) - SHOWN_SKIPPED} more" if len(names) > SHOWN_SKIPPED else ""
        log.warning("sources.%s: skipped %d new file(s) under %s matching none of %s: %s%s", source, len(skipped),
                    src.path, ", ".join(patterns), ", ".join(names[:SHOWN_SKIPPED]), more)
    base = None if has_glob(src.path) else src.path
    return Listing(tuple(files), tuple(skipped), is_local, base)


def _local(uri: str) -> str:
    # Spark names local files file:/path; errors and Python's header reading want the plain path.
    local = local_path(uri)
    return uri if local is None else str(local)


def _basename(path: str) -> str:
    return path.rstrip("/").rsplit("/", 1)[-1]


def spark_path(path: str) -> str:
    """``path`` as Spark must be given it to read exactly that file (Spark expands glob characters)."""
    return _SPARK_GLOB_RE.sub(r"\\\1", path)


def reader_option(options: Mapping[str, str], *keys: str, default: str = "") -> str:
    # Spark's reader options are case-insensitive.
    lowered = {str(k).lower(): str(v) for k, v in options.items()}
    return next((lowered[k] for k in keys if k in lowered), default)


def reader_flag(options: Mapping[str, str], key: str) -> bool:
    return reader_option(options, key, default="false").strip().lower() == "true"


def without_options(options: Mapping[str, str], *keys: str) -> dict[str, str]:
    return {k: v for k, v in options.items() if str(k).lower() not in keys}


# ----------------------------------------------------------------------------------------------------------------
# Reader options and CSV headers
# ----------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CsvDialect:
    """The reader options that decide how a header line splits into names."""
    sep: str = ","
    quote: str = '"'
    escape: str = "\\"
    comment: str = ""
    encoding: str = "utf-8"
    null_value: str = ""


def csv_dialect(options: Mapping[str, str]) -> CsvDialect | None:
    """The dialect of Spark CSV ``options``, or None when Python's csv module cannot split a line like Spark (a
    multi-character separator, an unknown encoding): such headers are read by Spark."""
    sep = _char(reader_option(options, "sep", "delimiter", default=","))
    quote = reader_option(options, "quote", default='"')
    quote = "" if quote in ("", "\u0000") else _char(quote)
    escape = _char(reader_option(options, "escape", default="\\"))
    comment = reader_option(options, "comment")
    comment = "" if comment == "\u0000" else _char(comment)
    encoding = reader_option(options, "encoding", "charset", default="utf-8")
    try:
        codec = codecs.lookup(encoding).name
    except LookupError:
        return None
    if len(sep) != 1 or len(quote) > 1 or len(escape) != 1 or len(comment) > 1:
        return None
    # utf-8-sig: a byte-order mark is not part of the first column's name.
    return CsvDialect(sep, quote, escape, comment, "utf-8-sig" if codec == "utf-8" else codec,
                      reader_option(options, "nullvalue"))


def _char(value: str) -> str:
    return _CHAR_ESCAPES.get(value, value)


def local_csv_header(path: Path, dialect: CsvDialect) -> list[str] | None:
    """The fields of the first non-blank, non-comment line of a local CSV file (None: the file has none)."""
    with _open_text(path, dialect.encoding) as f:
        for line in f:
            if not line.strip() or (dialect.comment and line.startswith(dialect.comment)):
                continue
            reader = csv.reader([line.rstrip("\r\n")], delimiter=dialect.sep, quotechar=dialect.quote or None,
                                escapechar=dialect.escape if dialect.escape != dialect.quote else None,
                                quoting=csv.QUOTE_MINIMAL if dialect.quote else csv.QUOTE_NONE, doublequote=True,
                                strict=False)
            return next(reader, [])
    return None


def _open_text(path: Path, encoding: str) -> IO[str]:
    if path.name.endswith(".gz"):
        return gzip.open(path, "rt", encoding=encoding, errors="replace")
    if path.name.endswith(".bz2"):
        return bz2.open(path, "rt", encoding=encoding, errors="replace")
    return open(path, encoding=encoding, errors="replace")


def safe_header(raw: Sequence[str], null_value: str = "", case_sensitive: bool = False) -> list[str]:
    """Column names from header fields as Spark makes them: an empty (or null-valued) field becomes ``_c<i>``, and
    duplicate names get their position appended."""
    def key(name: str) -> str:
        return name if case_sensitive else name.lower()
    keys = [key(n) for n in raw]
    dups = {k for k in keys if keys.count(k) > 1}
    out: list[str] = []
    for i, name in enumerate(raw):
        if name == "" or name == null_value:
            out.append(f"_c{i}")
        elif key(name) in dups:
            out.append(f"{name}{i}")
        else:
            out.append(name)
    return out


def spark_csv_header(spark: SparkSession, options: Mapping[str, str], path: str) -> list[str]:
    """The column names Spark gives one CSV file with a header (reads its first line only)."""
    # Without basePath: partition columns are not in the file.
    return spark.read.options(**without_options(options, "inferschema", "basepath")).csv(spark_path(path)).columns
