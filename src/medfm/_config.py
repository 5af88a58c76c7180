"""Dataclasses are the configuration; YAML/JSON only serialise them.

``to_dict`` turns a (nested) dataclass into plain JSON types; ``from_dict`` builds one back
and refuses unknown keys, so a typo in a config file is an error, not a silent default.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

from medfm.errors import ConfigError

T = TypeVar("T")


def to_dict(obj: Any) -> Any:
    """Dataclass / tuple / set / Path / numpy scalar -> JSON-serialisable structure."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): to_dict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, (set, frozenset)):
        return sorted(to_dict(v) for v in obj)
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item") and callable(obj.item) and getattr(obj, "shape", None) == ():
        return obj.item()  # numpy / torch scalar
    return obj


def _convert(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if value is None:
        return None
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return from_dict(tp, value, where=where)
    if origin in (typing.Union, types.UnionType):
        non_none = [a for a in args if a is not type(None)]
        if len(non_none) == 1:
            return _convert(non_none[0], value, where)
        return value
    if origin in (list, tuple, set, frozenset) or tp in (list, tuple, set, frozenset):
        if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
            value = [value]
        inner = args[0] if args else Any
        items = [_convert(inner, v, where) for v in value]
        container = origin or tp
        return container(items)
    if origin is dict:
        return dict(value)
    if tp is Path:
        return Path(value)
    if tp is float and isinstance(value, int):
        return float(value)
    return value


def from_dict(cls: type[T], data: dict[str, Any], where: str = "config") -> T:
    """Build dataclass ``cls`` from a mapping; unknown keys raise ConfigError naming ``where``."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping for {cls.__name__}, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown} for {cls.__name__}; allowed: {sorted(fields)}")
    hints = typing.get_type_hints(cls)
    kwargs = {k: _convert(hints.get(k, Any), v, f"{where}.{k}") for k, v in data.items()}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}") from exc


def load_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML or JSON file into a dict, with a clear error naming the file."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: config file not found")
    try:
        text = p.read_text()
        data = json.loads(text) if p.suffix == ".json" else yaml.safe_load(text)
    except (OSError, ValueError, yaml.YAMLError) as exc:
        raise ConfigError(f"{p}: cannot parse config ({exc})") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: top level must be a mapping")
    return data


def dump_yaml(obj: Any) -> str:
    import yaml

    return yaml.safe_dump(to_dict(obj), sort_keys=False)
