"""Lakehouse and landing locations: URIs with a scheme, local paths, joining."""

from __future__ import annotations

import re
from pathlib import Path

# ----------------------------------------------------------------------------------------------------------------
# Paths
# ----------------------------------------------------------------------------------------------------------------
_SCHEME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


def has_scheme(path: str) -> bool:
    return bool(_SCHEME_RE.match(path))


def join_uri(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *(p.strip("/") for p in parts)])


def local_path(uri: str) -> Path | None:
    """The local filesystem path of a ``file:`` URI or a plain path; None for remote URIs (s3a:, abfss:, dbfs:)."""
    if uri.startswith("file:"):
        return Path(re.sub(r"^file:(//)?", "", uri))
    return None if has_scheme(uri) else Path(uri)


def _absolutise(path: str, base_dir: Path) -> str:
    if not path or has_scheme(path):
        return path
    p = Path(path)
    return str(p if p.is_absolute() else (base_dir / p).resolve())


__all__ = [
    "has_scheme", "join_uri", "local_path",
]
