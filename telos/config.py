"""Recipes: YAML → typed dataclasses, with dotted CLI overrides and strict validation.

Every check fails before any work with one line naming the key and what is valid, because a
typo found after twenty minutes of rollouts costs twenty minutes.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

import yaml

from telos.errors import UserError

T = TypeVar("T")


def path_field(default: Any = dataclasses.MISSING, *, kind: str = "file") -> Any:
    """A dataclass field holding a local path that must exist (``kind``: file | dir | any).
    Hub ids and data specs with a scheme (``hf:``, ``procedural:``) are not paths and pass."""
    return dataclasses.field(default=default, metadata={"path": kind})


def choices_field(default: Any, choices: typing.Callable[[], list[str]]) -> Any:
    """A string field whose valid values come from a registry, looked up at validation time."""
    return dataclasses.field(default=default, metadata={"choices": choices})


def load_yaml(path: str | Path) -> dict:
    p = Path(path)
    if p.is_dir():
        raise UserError(f"recipe {path} is a directory; give a recipe YAML file")
    if not p.is_file():
        raise UserError(f"recipe not found: {path}")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise UserError(f"recipe {path} is not valid YAML{where}: {getattr(e, 'problem', e)}") from None
    if not isinstance(data, dict):
        raise UserError(f"recipe {path} must be a mapping of keys to values")
    return data


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply ``a.b.c=value`` overrides (value parsed as YAML) to a nested dict, in place."""
    for item in overrides:
        if "=" not in item:
            raise UserError(f"override {item!r} must look like key.sub=value")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            value = raw
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise UserError(f"override {key!r}: {part!r} is not a section")
            node = child
        node[parts[-1]] = value
    return data


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(map(str, typing.get_args(tp)))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is list:
        return f"list of {_type_name(typing.get_args(tp)[0])}"
    if origin is dict:
        return "mapping"
    if dataclasses.is_dataclass(tp):
        return "section"
    return {type(None): "null"}.get(tp, getattr(tp, "__name__", str(tp)))


def _convert(value: Any, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        if len(options) == 1:  # Optional[X]: report X's own error, which names the inner key
            return _convert(value, options[0], key)
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, key)
            except UserError:
                continue
        raise UserError(f"'{key}' must be {_type_name(tp)}, got {value!r}")
    if origin is Literal:
        allowed = typing.get_args(tp)
        if isinstance(value, int | float) and not isinstance(value, bool) and str(value) in allowed:
            return str(value)  # `omega: 1` in YAML is the number 1; the choice is the string "1"
        if value not in allowed:
            raise UserError(f"'{key}' is {value!r}; valid: {', '.join(map(str, allowed))}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise UserError(f"'{key}' must be {_type_name(tp)}, got {value!r}")
        (item_tp,) = typing.get_args(tp)
        return [_convert(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise UserError(f"'{key}' must be a mapping, got {value!r}")
        _, val_tp = typing.get_args(tp)
        return {k: _convert(v, val_tp, f"{key}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise UserError(f"'{key}' must be a section (mapping), got {value!r}")
        return from_dict(tp, value, prefix=f"{key}.")
    if tp is Any:
        return value
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):
        try:  # YAML 1.1 reads "1e-5" as a string; accept it as the number it obviously is
            return float(value)
        except ValueError:
            pass
    if tp in (int, float, str, bool) and (
        not isinstance(value, tp) or (tp is int and isinstance(value, bool))
    ):
        raise UserError(f"'{key}' must be {_type_name(tp)}, got {value!r}")
    return value


def _check_path(value: Any, kind: str, key: str) -> None:
    if not isinstance(value, str) or value == "" or ":" in value.split("/")[0]:
        return  # a scheme ("hf:", "procedural:", "tiny:") means not a local path
    p = Path(value).expanduser()
    looks_local = value.startswith((".", "/", "~")) or p.suffix in (".jsonl", ".json", ".parquet", ".yaml")
    if kind == "model" and not looks_local and not p.exists():
        return  # a hub id such as Qwen/Qwen2.5-0.5B-Instruct
    if not p.exists():
        raise UserError(f"'{key}': path not found: {value}")


def from_dict(cls: type[T], data: dict, prefix: str = "") -> T:
    """Build dataclass ``cls`` from ``data``; unknown/missing/mistyped keys raise UserError."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = [k for k in data if k not in fields]
    if unknown:
        raise UserError(f"unknown key '{prefix}{unknown[0]}'; valid keys: {', '.join(fields)}")
    kwargs = {}
    for name, f in fields.items():
        key = f"{prefix}{name}"
        if name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise UserError(f"missing required key '{key}'")
            continue
        value = _convert(data[name], hints[name], key)
        if "choices" in f.metadata and value is not None:
            valid = f.metadata["choices"]()
            if value not in valid:
                raise UserError(f"'{key}' is {value!r}; valid: {', '.join(valid)}")
        if "path" in f.metadata:
            for v in value if isinstance(value, list) else [value]:
                _check_path(v, f.metadata["path"], key)
        kwargs[name] = value
    return cls(**kwargs)


def to_dict(obj: Any) -> Any:
    return dataclasses.asdict(obj) if dataclasses.is_dataclass(obj) else obj


def save_yaml(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(to_dict(obj), sort_keys=False))
