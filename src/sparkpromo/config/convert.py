"""Generic conversion of a mapping into the typed dataclasses; errors name the file and the key."""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
import types
import typing
from collections.abc import Mapping
from typing import Any, Union

from sparkpromo.config.model import ConfigError


# ----------------------------------------------------------------------------------------------------------------
# Generic conversion of a mapping into the typed dataclasses
# ----------------------------------------------------------------------------------------------------------------
class _Where:
    def __init__(self, origin: Mapping[str, str], default_file: str) -> None:
        self.origin = origin
        self.default_file = default_file

    def file_of(self, key: str) -> str:
        # A list element's key (rank[1], campaigns[welcome]) was set by whichever file set the list.
        parts = re.sub(r"\[[^\]]*\]", "", key).split(".")
        for i in range(len(parts), 0, -1):
            f = self.origin.get(".".join(parts[:i]))
            if f:
                return f
        return self.default_file

    def error(self, key: str, msg: str) -> ConfigError:
        return ConfigError(f"{self.file_of(key)}: {key}: {msg}")


def _convert(tp: Any, value: Any, key: str, where: _Where) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _convert(inner[0], value, key, where)
    if dataclasses.is_dataclass(tp):
        return _convert_dataclass(tp, value, key, where)
    if tp is Any:
        if isinstance(value, (dict, set)):
            raise where.error(key, "expected a scalar or list")
        return tuple(value) if isinstance(value, list) else value
    if origin is tuple:
        if not isinstance(value, list):
            raise where.error(key, f"expected a list, got {_tname(value)}")
        return tuple(_convert(args[0], v, f"{key}[{i}]", where) for i, v in enumerate(value))
    if origin in (Mapping, dict, typing.Mapping):
        if not isinstance(value, dict):
            raise where.error(key, f"expected a mapping, got {_tname(value)}")
        return types.MappingProxyType(
            {str(k): _convert(args[1], v, f"{key}.{k}", where) for k, v in value.items()})
    if tp is bool:
        if not isinstance(value, bool):
            raise where.error(key, f"expected true/false, got {_tname(value)} {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise where.error(key, f"expected an integer, got {_tname(value)} {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise where.error(key, f"expected a number, got {_tname(value)} {value!r}")
        return float(value)
    if tp is str:
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise where.error(key, f"expected a string, got {_tname(value)}")
        return str(value)
    if tp is dt.date:
        if isinstance(value, dt.datetime):
            return value.date()
        if isinstance(value, dt.date):
            return value
        if isinstance(value, str):
            try:
                return dt.date.fromisoformat(value)
            except ValueError:
                pass
        raise where.error(key, f"expected a date (YYYY-MM-DD), got {value!r}")
    raise where.error(key, f"unsupported type {tp}")  # pragma: no cover - programming error


def _convert_dataclass(tp: Any, value: Any, key: str, where: _Where) -> Any:
    if not isinstance(value, dict):
        raise where.error(key or "<root>", f"expected a mapping, got {_tname(value)}")
    hints = typing.get_type_hints(tp)
    flds = {f.name: f for f in dataclasses.fields(tp)}
    for k in value:
        if k not in flds:
            full = f"{key}.{k}" if key else str(k)
            raise where.error(full, f"unknown key (expected one of: {', '.join(sorted(flds))})")
    kwargs: dict[str, Any] = {}
    for name, f in flds.items():
        full = f"{key}.{name}" if key else name
        if name in value:
            kwargs[name] = _convert(hints[name], value[name], full, where)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise where.error(full, "missing required key")
    return tp(**kwargs)


def _tname(v: Any) -> str:
    return {dict: "mapping", list: "list", str: "string", bool: "boolean", int: "integer",
            float: "number", type(None): "null"}.get(type(v), type(v).__name__)
