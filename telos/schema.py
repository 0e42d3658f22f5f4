"""Declared recipe fields, validated by pydantic; errors rendered as one line naming the key.

A recipe section is a plain ``@dataclass`` whose fields carry their own schema in the
annotation::

    lr: Annotated[float, number("peak learning rate", gt=0)] = 1e-6
    chat: Annotated[bool, flag("wrap prompts in the tokenizer's chat template")] = False
    dtype: Annotated[Literal["float32", "bfloat16"], text("weights' dtype")] = "float32"

Why stdlib dataclasses with pydantic ``Annotated`` metadata, not pydantic models: the sections
are also the arguments of pure functions (``NFTConfig`` goes straight into the NFT loss) and
tests build them in code; plain dataclasses keep ``dataclasses.replace``/``asdict`` and cost
nothing to build, while pydantic's ``TypeAdapter`` does the conversion, type, range, unknown-key
and missing-key checks where user input enters (YAML and overrides). ``describe`` reads the
same metadata back for ``telos recipe schema`` / ``telos check --explain``.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, Union

import annotated_types
from pydantic import AfterValidator, BeforeValidator, ConfigDict, Field, TypeAdapter, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import PydanticCustomError

from telos.errors import UserError

T = TypeVar("T")

# ------------------------------------------------------------------------------ declaring fields


def number(description: str, *, ge: float | None = None, gt: float | None = None,
           le: float | None = None, lt: float | None = None) -> FieldInfo:  # fmt: skip
    """A numeric field: its range (at least one bound, so no number goes unchecked) and what it
    is. Strict: YAML's ``true`` is not the number 1, and ``1.5`` is not an int."""
    if ge is None and gt is None and le is None and lt is None:
        raise TypeError(f"numeric recipe field {description!r} needs a range (ge/gt/le/lt)")
    return Field(description=description, strict=True, ge=ge, gt=gt, le=le, lt=lt)


def flag(description: str) -> FieldInfo:
    """A boolean field. Strict: ``1`` or ``"yes"`` in a recipe is a typo, not ``true``."""
    return Field(description=description, strict=True)


def text(description: str) -> FieldInfo:
    """Any other field (strings, choices, lists, sections): what it is."""
    return Field(description=description)


def local_path(kind: str = "file") -> AfterValidator:
    """The value, when it names a local path, must exist. ``kind="model"``: a name that does not
    look local is a hub id and passes. Values with a scheme (``hf:``, ``procedural:``,
    ``tiny:``) are not paths."""

    def check(value: Any) -> Any:
        for v in value if isinstance(value, list) else [value]:
            if _missing_local_path(v, kind):
                raise PydanticCustomError("telos_path", "path not found: {value}", {"value": v})
        return value

    return AfterValidator(check)


def _missing_local_path(value: Any, kind: str) -> bool:
    if not isinstance(value, str) or value == "" or ":" in value.split("/")[0]:
        return False
    p = Path(value).expanduser()
    looks_local = value.startswith((".", "/", "~")) or p.suffix in (".jsonl", ".json", ".parquet", ".yaml")
    if kind == "model" and not looks_local:
        return False  # a hub id such as Qwen/Qwen2.5-0.5B-Instruct
    return not p.exists()


def one_of(names: Callable[[], list[str]]) -> AfterValidator:
    """A string whose valid values come from a registry, looked up when a recipe is validated
    (so registering a loss is enough to make it a valid ``loss_type``)."""

    def check(value: Any) -> Any:
        valid = names()
        if value is not None and value not in valid:
            raise PydanticCustomError("telos_choice", "{valid}", {"valid": ", ".join(valid)})
        return value

    return AfterValidator(check)


def checked_by(check: Callable[[Any], None]) -> AfterValidator:
    """Run ``check(value)``; a UserError it raises is reported against the field's key."""

    def run(value: Any) -> Any:
        try:
            check(value)
        except UserError as e:
            raise PydanticCustomError("telos_about", "{message}", {"message": str(e)}) from None
        return value

    return AfterValidator(run)


def _text_if_number(value: Any) -> Any:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return value


# ``omega: 1`` in YAML is the number 1; the choice is the string "1"
number_as_text = BeforeValidator(_text_if_number)


# ------------------------------------------------------------------------------ validating


@functools.cache
def _adapter(cls: type) -> TypeAdapter:
    _forbid_unknown_keys(cls)
    return TypeAdapter(cls)


def _forbid_unknown_keys(tp: Any) -> None:
    """Every section, however deep, rejects keys it does not declare: a typo is an error, not a
    silently ignored setting. (Set here, once, so the section classes stay plain dataclasses.)"""
    if typing.get_origin(tp) is not None:
        for arg in typing.get_args(tp):
            _forbid_unknown_keys(arg)
        return
    if isinstance(tp, type) and dataclasses.is_dataclass(tp) and "__pydantic_config__" not in vars(tp):
        tp.__pydantic_config__ = ConfigDict(extra="forbid")
        for hint in typing.get_type_hints(tp, include_extras=True).values():
            _forbid_unknown_keys(hint)


def validate(cls: type[T], data: dict, prefix: str = "") -> T:
    """Build dataclass ``cls`` from ``data``: unknown, missing, mistyped or out-of-range keys
    raise one ``UserError`` naming the first such key (``prefix`` is prepended to keys)."""
    if not isinstance(data, dict):
        raise UserError(f"'{prefix.rstrip('.') or 'recipe'}' must be a section (mapping), got {data!r}")
    try:
        return _adapter(cls).validate_python(data)
    except ValidationError as e:
        raise UserError(_first_message(cls, e.errors(), prefix)) from None


_ORDER = {"unexpected_keyword_argument": 0, "missing": 1}


def _first_message(cls: type, errors: list[dict], prefix: str) -> str:
    # the order a reader fixes things in: a typo'd key explains a "missing" one
    err = min(errors, key=lambda e: _ORDER.get(e["type"], 2))
    where = _locate(cls, err["loc"])
    key = prefix + where.key
    kind, value = err["type"], err.get("input")
    if kind == "unexpected_keyword_argument":
        valid = ", ".join(f.name for f in dataclasses.fields(where.parent) if f.init)
        return f"unknown key '{key}'; valid keys: {valid}"
    if kind == "missing":
        return f"missing required key '{key}'"
    if kind == "telos_choice":
        return f"'{key}' is {value!r}; valid: {err['ctx']['valid']}"
    if kind in ("telos_path", "telos_about"):
        return f"'{key}': {err['msg']}"
    if kind == "literal_error":
        choices = typing.get_args(_bare(where.type))
        return f"'{key}' is {value!r}; valid: {', '.join(map(str, choices))}"
    if kind in ("dataclass_type", "dataclass_args_type", "dict_type", "model_type"):
        return f"'{key}' must be a section (mapping), got {value!r}"
    bounds = _bounds(where.field)
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal") and bounds:
        return f"'{key}' must be {range_text(bounds)}, got {value!r}{_about(where.field)}"
    if kind.endswith(("_type", "_parsing", "_from_float")) or kind.startswith("too_"):
        return f"'{key}' must be {type_name(where.type)}, got {value!r}{_about(where.field)}"
    return f"'{key}': {err['msg']} (got {value!r})"


@dataclasses.dataclass
class _Location:
    key: str  # dotted recipe key: "train.lr", "rewards[0].weight"
    type: Any  # the declared type at the key (None when the key is unknown)
    parent: Any  # the dataclass holding the last named field
    field: FieldInfo | None  # its schema, when declared


def _locate(cls: type, loc: tuple) -> _Location:
    key, tp, parent, info = "", cls, cls, None
    for item in loc:
        bare = _bare(tp)
        if dataclasses.is_dataclass(bare) and isinstance(item, str):
            hints = typing.get_type_hints(bare, include_extras=True)
            key += ("." if key else "") + item
            parent, tp = bare, hints.get(item)
            info = _field_info(tp)
        elif isinstance(item, int) and typing.get_origin(bare) in (list, tuple):
            key += f"[{item}]"
            args = typing.get_args(bare)
            tp = args[item] if typing.get_origin(bare) is tuple and len(args) > item else args[0]
        elif typing.get_origin(bare) is dict and isinstance(item, str):
            key += f".{item}"
            tp = typing.get_args(bare)[1]
        # anything else is a union member's tag (e.g. "int"), not part of the key
    return _Location(key, tp, parent, info)


def _field_info(tp: Any) -> FieldInfo | None:
    if typing.get_origin(tp) is Annotated:
        infos = [m for m in tp.__metadata__ if isinstance(m, FieldInfo)]
        return infos[0] if infos else None
    return None


def _bare(tp: Any) -> Any:
    """The type without ``Annotated`` and without ``| None``."""
    while True:
        if typing.get_origin(tp) is Annotated:
            tp = typing.get_args(tp)[0]
            continue
        if typing.get_origin(tp) in (Union, types.UnionType):
            options = [a for a in typing.get_args(tp) if a is not type(None)]
            if len(options) == 1:
                tp = options[0]
                continue
        return tp


def _about(info: FieldInfo | None) -> str:
    return f" ({info.description})" if info is not None and info.description else ""


# ------------------------------------------------------------------------------ describing


def _bounds(info: FieldInfo | None) -> dict[str, float]:
    out: dict[str, float] = {}
    for m in info.metadata if info is not None else ():
        for name in ("ge", "gt", "le", "lt"):
            if isinstance(m, getattr(annotated_types, name.capitalize())):
                out[name] = getattr(m, name)
    return out


def range_text(bounds: dict[str, float]) -> str:
    """``{"ge": 1}`` → ``≥ 1``; ``{"gt": 0, "le": 1}`` → ``in (0, 1]``."""
    low = ("[", bounds["ge"]) if "ge" in bounds else ("(", bounds["gt"]) if "gt" in bounds else None
    high = ("]", bounds["le"]) if "le" in bounds else (")", bounds["lt"]) if "lt" in bounds else None
    if low and high:
        return f"in {low[0]}{low[1]:g}, {high[1]:g}{high[0]}"
    if low:
        return f"{'≥' if low[0] == '[' else '>'} {low[1]:g}"
    return f"{'≤' if high[0] == ']' else '<'} {high[1]:g}"


def type_name(tp: Any) -> str:
    """How a type reads in an error or in the schema: ``int or null``, ``list of str``."""
    if typing.get_origin(tp) is Annotated:
        return type_name(typing.get_args(tp)[0])
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(map(str, typing.get_args(tp)))
    if origin in (Union, types.UnionType):
        return " or ".join(type_name(a) for a in typing.get_args(tp))
    if origin is list:
        return f"list of {type_name(typing.get_args(tp)[0])}"
    if origin is tuple:
        args = typing.get_args(tp)
        return f"list of {len(args)} {type_name(args[0])}" if len(set(args)) == 1 else "list"
    if origin is dict:
        return "mapping"
    if dataclasses.is_dataclass(tp):
        return "section"
    return {type(None): "null"}.get(tp, getattr(tp, "__name__", str(tp)))


@dataclasses.dataclass
class FieldDoc:
    """One recipe key as ``telos recipe schema`` shows it."""

    key: str
    type: str
    default: Any
    bounds: dict[str, float]
    description: str
    numeric: type | None  # int or float for numeric fields (the range test walks these)
    required: bool = False

    @property
    def range(self) -> str:
        return range_text(self.bounds) if self.bounds else ""


def describe(cls: type, prefix: str = "", defaults: dict | None = None) -> list[FieldDoc]:
    """Every key of dataclass ``cls``, sections expanded (a list of sections as ``key[]``).
    ``defaults``: values that replace the class's own defaults (a section's default instance)."""
    hints = typing.get_type_hints(cls, include_extras=True)
    out: list[FieldDoc] = []
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        tp, info = hints[f.name], _field_info(hints[f.name])
        key = f"{prefix}{f.name}"
        bare = _bare(tp)
        item = typing.get_args(bare)[0] if typing.get_origin(bare) is list else None
        default = (defaults or {}).get(f.name, _default(f))
        if dataclasses.is_dataclass(bare):
            if bare is not tp and default is None:  # an optional section, off by default
                out.append(FieldDoc(key, "section or null", None, {}, info.description if info else "", None))
            out += describe(bare, f"{key}.", default if isinstance(default, dict) else None)
            continue
        if item is not None and dataclasses.is_dataclass(_bare(item)):
            out += describe(_bare(item), f"{key}[].")
            continue
        numeric = bare if bare in (int, float) else None
        out.append(
            FieldDoc(
                key, type_name(tp), default, _bounds(info), info.description if info else "", numeric,
                required=default is dataclasses.MISSING,
            )
        )  # fmt: skip
    return out


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
        return dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value
    return dataclasses.MISSING
