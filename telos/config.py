"""Recipes: YAML → typed dataclasses, with dotted CLI overrides and strict validation.

Every check fails before any work with one line naming the key and what is valid, because a
typo found after twenty minutes of rollouts costs twenty minutes. The fields' types, ranges and
descriptions are declared beside them and checked by ``telos.schema``.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any, TypeVar

import yaml

from telos.errors import UserError
from telos.schema import validate

T = TypeVar("T")


class _RecipeLoader(yaml.SafeLoader):
    """YAML 1.1 reads ``1e-5`` (no dot) as a string; recipes mean the number, as YAML 1.2 does."""


_RecipeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)?(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def parse_yaml(text: str) -> Any:
    return yaml.load(text, Loader=_RecipeLoader)  # noqa: S506 (a SafeLoader subclass)


def load_yaml(path: str | Path) -> dict:
    p = Path(path)
    if p.is_dir():
        raise UserError(f"recipe {path} is a directory; give a recipe YAML file")
    if not p.is_file():
        raise UserError(f"recipe not found: {path}")
    try:
        data = parse_yaml(p.read_text())
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
            value = parse_yaml(raw) if raw != "" else ""
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


def from_dict(cls: type[T], data: dict, prefix: str = "") -> T:
    """Build recipe dataclass ``cls`` from ``data`` (see ``telos.schema``); unknown, missing,
    mistyped and out-of-range keys raise a UserError naming the key."""
    return validate(cls, data, prefix)


def to_dict(obj: Any) -> Any:
    return dataclasses.asdict(obj) if dataclasses.is_dataclass(obj) else obj


def save_yaml(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(to_dict(obj), sort_keys=False))
