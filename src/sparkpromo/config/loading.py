"""Loading: base YAML, environment overlay, extra files, ``--set`` overrides, then conversion
and validation."""

from __future__ import annotations

import dataclasses
import os
import re
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from sparkpromo.config.convert import _convert, _Where
from sparkpromo.config.model import _ENV_VAR_RE, ENVIRONMENTS, AppConfig, ConfigError, FileSource, SourcesConfig
from sparkpromo.config.paths import _absolutise, local_path
from sparkpromo.config.validate import _validate


# ----------------------------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------------------------
def default_conf_dir() -> Path:
    return Path(os.environ.get("SPARKPROMO_CONF_DIR", "conf"))


class _Loader(yaml.SafeLoader):
    """``yaml.safe_load``'s loader, except that a scalar shaped like a timestamp but naming no real day
    (``2026-02-30``) stays text: the converter then names its key, where PyYAML would raise without one."""


def _timestamp_or_text(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> Any:
    try:
        return loader.construct_yaml_timestamp(node)
    except ValueError:
        return loader.construct_scalar(node)


_Loader.add_constructor("tag:yaml.org,2002:timestamp", _timestamp_or_text)


def load_yaml(text: str) -> Any:
    """Parse configuration YAML (a file's text or a ``--set`` value): safe tags only, impossible dates as text."""
    return yaml.load(text, Loader=_Loader)  # a SafeLoader: no Python object tags, ever


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: unreadable config file ({e.__class__.__name__})") from None
    try:
        data = load_yaml(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{path}:{where}: invalid YAML: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    return data


def _merge(base: dict[str, Any], overlay: dict[str, Any], origin: dict[str, str], src: str,
           prefix: str = "", into_columns: bool = False) -> dict[str, Any]:
    """Deep-merge ``overlay`` into ``base``; record in ``origin`` which file set each dotted key.

    A source's ``columns`` mapping is replaced whole, not merged: a file that maps its own columns must not inherit
    another file's names for columns it doesn't have. ``into_columns`` merges into it instead, for an override that
    names one entry (``--set sources.events.columns.user_id=uid``).
    """
    out = dict(base)
    for key, value in overlay.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and isinstance(out.get(key), dict) and (key != "columns" or into_columns):
            out[key] = _merge(out[key], value, origin, src, dotted + ".", into_columns)
        else:
            out[key] = value
            _record(origin, dotted, value, src)
    return out


def _record(origin: dict[str, str], dotted: str, value: Any, src: str) -> None:
    origin[dotted] = src
    if isinstance(value, dict):
        for k, v in value.items():
            _record(origin, f"{dotted}.{k}", v, src)


def _expand_env(value: Any, where: _Where, key: str = "") -> Any:
    """``${VAR}`` and ``${VAR:-default}`` expanded in every string of ``value``; an unset variable without a
    default is an error naming the key (and the file that set it)."""
    if isinstance(value, str):
        def repl(m: re.Match[str]) -> str:
            name, default = m.group(1), m.group(2)
            if name in os.environ:
                return os.environ[name]
            if default is not None:
                return default
            raise where.error(key, f"environment variable {name} is referenced but not set")
        return _ENV_VAR_RE.sub(repl, value)
    if isinstance(value, dict):
        return {k: _expand_env(v, where, f"{key}.{k}" if key else str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand_env(v, where, f"{key}[{i}]") for i, v in enumerate(value)]
    return value


def load_config(env: str = "local", conf_dir: str | Path | None = None, extra: typing.Sequence[str | Path] = (),
                overrides: Mapping[str, Any] | None = None, check_inputs: bool = False) -> AppConfig:
    """Load ``base.yaml``, the ``<env>.yaml`` overlay, then any extra files, in that order of precedence."""
    conf_dir = Path(conf_dir) if conf_dir is not None else default_conf_dir()
    if env not in ENVIRONMENTS:
        raise ConfigError(f"--env: unknown environment '{env}' (expected one of {', '.join(ENVIRONMENTS)})")
    files = [conf_dir / "base.yaml", conf_dir / f"{env}.yaml", *(Path(p) for p in extra)]
    origin: dict[str, str] = {}
    merged: dict[str, Any] = {}
    for f in files:
        merged = _merge(merged, _read_yaml(f), origin, str(f))
    if overrides:
        for dotted, value in overrides.items():
            merged = _merge(merged, _nest(dotted, value), origin, "--set",
                            into_columns="columns" in dotted.split(".")[:-1])
    merged["env"] = env
    cfg = build_config(merged, origin, default_file=str(files[-1]))
    if check_inputs:
        check_input_paths(cfg)
    return cfg


def _nest(dotted: str, value: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    cur = out
    parts = dotted.split(".")
    for p in parts[:-1]:
        cur = cur.setdefault(p, {})
    cur[parts[-1]] = value
    return out


def build_config(data: Mapping[str, Any], origin: Mapping[str, str] | None = None,
                 default_file: str = "<config>", base_dir: Path | None = None) -> AppConfig:
    """Validate a merged mapping into an :class:`AppConfig`."""
    origin = origin or {}
    where = _Where(origin, default_file)
    data = _expand_env(dict(data), where)
    cfg = _convert(AppConfig, data, "", where)
    base_dir = base_dir or Path.cwd()
    paths = {"lakehouse": cfg.lakehouse, "landing": cfg.landing,
             **{f"sources.{n}.path": fs.path for n in ("events", "users", "items")
                if (fs := getattr(cfg.sources, n)) is not None}}
    for key, path in paths.items():
        if "\0" in path:  # no file system takes it (pathlib raises ValueError)
            raise where.error(key, "holds a NUL character")
    cfg = dataclasses.replace(
        cfg,
        lakehouse=_absolutise(cfg.lakehouse, base_dir),
        landing=_absolutise(cfg.landing, base_dir),
        sources=_resolve_sources(cfg.sources, base_dir),
    )
    _validate(cfg, where)
    return cfg


def _resolve_sources(s: SourcesConfig, base_dir: Path) -> SourcesConfig:
    def fix(fs: FileSource | None) -> FileSource | None:
        return None if fs is None else dataclasses.replace(fs, path=_absolutise(fs.path, base_dir))
    return dataclasses.replace(s, events=fix(s.events), users=fix(s.users), items=fix(s.items))


def check_input_paths(cfg: AppConfig) -> None:
    """Fail before Spark starts when a local input path does not exist (remote URIs are checked by Spark)."""
    for name in ("events", "users", "items"):
        src: FileSource | None = getattr(cfg.sources, name)
        if src is None:
            continue
        p = local_path(src.path)
        if p is not None and not p.exists() and not any(ch in src.path for ch in "*?["):
            raise ConfigError(f"sources.{name}.path: input path does not exist: {src.path}")


__all__ = [
    "default_conf_dir", "load_config", "load_yaml", "build_config", "check_input_paths",
]
