"""The recipe schema as people read it: a terminal table (``telos recipe schema TRAINER``,
``telos check --explain``) and the Markdown reference in ``recipes/README.md``, both generated
from the trainer registry and the fields' declarations, so neither can drift from the code."""

from __future__ import annotations

import dataclasses
from typing import Any

from telos.registry import Registry
from telos.schema import FieldDoc, describe
from trainers.registry import TrainerSpec


def explain(spec: TrainerSpec, recipe: Any = None) -> str:
    """The trainer's recipe keys: type, default, valid range, meaning; with a ``recipe``, a
    value that differs from the default is shown beside it."""
    rows = _rows(spec)
    values = _flat(dataclasses.asdict(recipe)) if recipe is not None else {}
    lines = [f"trainer: {spec.name} — {spec.summary}", ""]
    width = max(len(f.key) for f in rows)
    for f in rows:
        here = values.get(f.key, f.default)
        value = f"  = {_show(here)}" if recipe is not None and here != f.default and "[]" not in f.key else ""
        valid = f"; valid {f.range}" if f.range else ""  # a choice's values are in its type
        lines.append(f"{f.key:<{width}}  {f.type} (default {_show(f.default)}){valid}{value}")
        if f.description:
            lines.append(f"{'':<{width}}    {f.description}")
    return "\n".join(lines)


def markdown(registry: Registry[TrainerSpec]) -> str:
    """Every trainer's recipe keys as Markdown tables (``make recipe-docs`` writes recipes/README.md)."""
    out = [
        "# Recipe reference",
        "",
        "Generated from the recipe schema by `make recipe-docs` (`telos recipe schema --markdown`); "
        "do not edit by hand. `telos recipe schema TRAINER` prints the same in a terminal, and "
        "`telos check --explain RECIPE` shows a recipe's values beside the defaults.",
        "",
        "| trainer | what it trains |",
        "|---|---|",
        *(f"| [`{n}`](#trainer-{n}) | {registry.get(n).summary} |" for n in registry.names()),
    ]
    for name in registry.names():
        spec = registry.get(name)
        out += ["", f"## trainer: {name}", "", spec.summary, "", "| key | type | default | valid | meaning |"]
        out.append("|---|---|---|---|---|")
        for f in _rows(spec):
            cells = (f"`{f.key}`", f.type, f"`{_show(f.default)}`", f.range, f.description)
            out.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(out) + "\n"


def _rows(spec: TrainerSpec) -> list[FieldDoc]:
    return [f for f in describe(spec.recipe) if f.key != "trainer"]


def _show(value: Any) -> str:
    if value is dataclasses.MISSING:
        return "required"
    if isinstance(value, bool) or value is None:
        return {None: "null", True: "true", False: "false"}[value]
    return repr(value) if isinstance(value, str) else str(value)


def _flat(d: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        out[f"{prefix}{k}"] = v
    return out
