"""The trainer registry: each trainer package declares itself once, here's where they land.

A trainer is a name, a recipe dataclass (its schema), a semantic check (what a type system
cannot say: files exist, registries know a name, one key bounds another) and an entry point.
``telos train`` / ``telos check`` / ``telos recipe schema`` and the recipe docs read this table;
a new trainer is a package under ``trainers/`` whose ``__init__`` calls ``register_trainer``.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from telos.registry import Registry


@dataclass(frozen=True)
class TrainerSpec:
    name: str
    recipe: type  # the recipe dataclass, validated by telos.schema
    check: Callable[[Any], None]  # semantic checks, run by `telos check` before any work
    entry_point: str  # "module:function(recipe, raw) -> summary dict"; imported when a run starts
    summary: str  # one line for `telos recipe schema` and the docs

    def train(self, recipe: Any, raw: dict) -> dict | None:
        module, function = self.entry_point.split(":")
        return getattr(importlib.import_module(module), function)(recipe, raw)


_TRAINERS: Registry[TrainerSpec] = Registry("trainer")


def register_trainer(
    name: str, *, recipe: type, check: Callable[[Any], None], entry_point: str, summary: str
) -> TrainerSpec:
    spec = TrainerSpec(name, recipe, check, entry_point, summary)
    _TRAINERS.register(name)(spec)
    return spec


def trainer_registry() -> Registry[TrainerSpec]:
    """Every trainer, after importing each package under ``trainers/`` (they register on import)."""
    import trainers

    for info in pkgutil.iter_modules(trainers.__path__):
        if info.ispkg:
            importlib.import_module(f"trainers.{info.name}")
    return _TRAINERS
