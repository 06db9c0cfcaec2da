"""Landing files: which files of a source to read (listing, name patterns, skipped files) and the header line of a
CSV file as Spark would name its columns. No rows are read here; :mod:`sparkpromo.ingest` reads them.

Local paths are listed and their headers read with Python; remote URIs (s3a:, abfss:, dbfs:) through Spark's
public reader API, so nothing reaches into the JVM.
"""

from __future__ import annotations

import bz2
import codecs
import csv
import glob
import gzip
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import IO
from urllib.parse import urlparse

from pyspark.errors import AnalysisException
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
# Listing
# ----------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Listing:
    """The files of a source to read, and the files skipped because no pattern matches their name.

    ``local``: the paths are local filesystem paths (their headers are read with Python), not URIs listed by Spark.
    ``base_path``: the directory listed, from which Spark infers partition columns (key=value directories).
    """
    files: tuple[str, ...]
    skipped: tuple[str, ...] = ()
    local: bool = True
    base_path: str | None = None


def hidden(name: str) -> bool:
    """Spark's rule for names it never reads: markers (``_SUCCESS``), checksums (``.x.crc``), copies in flight."""
    return (name.startswith("_") and "=" not in name) or name.startswith(".") or name.endswith("._COPYING_")


def has_glob(path: str) -> bool:
    return any(ch in path for ch in GLOB_CHARS)


def matches(name: str, patterns: Sequence[str]) -> bool:
    return any(fnmatchcase(name, p) for p in patterns)


def list_files(spark: SparkSession, source: str, src: FileSource) -> Listing:
    """The files of ``src`` to read: the one file its path names, or the files under it matching its patterns.

    Raises :class:`IngestError` when the path does not exist or no file matches.
    """
    patterns = src.file_patterns()
    local = local_path(src.path)
    found = local_listing(local) if local is not None else None
    is_local = found is not None
    if found is None:
        # A remote URI, or a plain path that is not on this machine (e.g. on the cluster's default filesystem).
        found = spark_listing(spark, source, src.path)
    paths, single = found
    if single:
        return Listing(tuple(paths), (), is_local)
    files = [p for p in paths if matches(_basename(p), patterns)]
    skipped = [p for p in paths if not matches(_basename(p), patterns)]
    if skipped:
        names = [_basename(p) for p in skipped]
        more = f" and {len(names) - SHOWN_SKIPPED} more" if len(names) > SHOWN_SKIPPED else ""
        log.warning("sources.%s: skipped %d file(s) under %s matching none of %s: %s%s", source, len(skipped),
                    src.path, ", ".join(patterns), ", ".join(names[:SHOWN_SKIPPED]), more)
    if not files:
        raise IngestError(f"sources.{source}: no file under {src.path} matches {', '.join(patterns)} "
                          f"({len(skipped)} other file(s); set sources.{source}.patterns to read them)")
    base = None if has_glob(src.path) else src.path
    return Listing(tuple(files), tuple(skipped), is_local, base)


def _basename(path: str) -> str:
    return path.rstrip("/").rsplit("/", 1)[-1]


def local_listing(root: Path) -> tuple[list[str], bool] | None:
    """(files, whether the path names one file), or None when nothing exists there."""
    text = str(root)
    if has_glob(text):
        hits = sorted(glob.glob(text))
        if not hits:
            return None
        out: list[str] = []
        for hit in map(Path, hits):
            if hit.is_dir():
                out.extend(_walk(hit))
            elif hit.is_file() and not hidden(hit.name):
                out.append(str(hit))
        return out, False
    if root.is_file():
        return [text], True
    if root.is_dir():
        return _walk(root), False
    return None


def _walk(root: Path) -> list[str]:
    # As Spark reads a directory: its own files and those of partition directories (key=value); other
    # subdirectories are not read.
    out: list[str] = []
    for p in sorted(root.iterdir()):
        if hidden(p.name):
            continue
        if p.is_dir():
            if "=" in p.name:
                out.extend(_walk(p))
        elif p.is_file():
            out.append(str(p))
    return out


def spark_listing(spark: SparkSession, source: str, path: str) -> tuple[list[str], bool]:
    # binaryFile without its ``content`` column lists files (Spark's own listing, hidden names excluded) and
    # reads none of their bytes.
    try:
        rows = spark.read.format("binaryFile").load(path).select("path").collect()
    except AnalysisException as e:
        if e.getCondition() == "PATH_NOT_FOUND":
            raise IngestError(f"sources.{source}: path does not exist: {path}") from None
        raise
    files = sorted(str(r["path"]) for r in rows)
    single = (not has_glob(path) and len(files) == 1
              and urlparse(files[0]).path.rstrip("/") == urlparse(path).path.rstrip("/"))
    return files, single


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
