"""Controller specs → controllers: ``scripted``, ``learned:PATH`` (GCBC), ``goap:PATH`` (GOAP).

Each kind registers a factory; a kind with a path takes a trained policy directory.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from agents.types import Controller
from telos.errors import UserError
from telos.registry import Registry


@dataclass(frozen=True)
class ControllerKind:
    build: Callable[..., Controller]  # (path or None, **options) → controller
    form: str  # how the spec is written, for error messages
    recipe: str | None = None  # the recipe that trains one (kinds with a path)
    options: Callable[[], list[str]] = lambda: []  # the option names ``build`` takes


def _keyword_options(load_class: Callable[[], type]) -> Callable[[], list[str]]:
    """The keyword-only parameters of a controller class's ``__init__`` (imported when asked)."""

    def names() -> list[str]:
        params = inspect.signature(load_class().__init__).parameters.values()
        return [p.name for p in params if p.kind is p.KEYWORD_ONLY and p.name != "policy"]

    return names


def _scripted_options() -> list[str]:
    from agents.scripted import ScriptedConfig

    return [f.name for f in fields(ScriptedConfig)]


def _gcbc_class() -> type:
    from agents.gcbc import LearnedController

    return LearnedController


def _goap_class() -> type:
    from agents.goap import GOAPController

    return GOAPController


CONTROLLERS: Registry[ControllerKind] = Registry("controller")


def _scripted(_path: str | None, **options: Any) -> Controller:
    from agents.scripted import ScriptedConfig, ScriptedController

    return ScriptedController(ScriptedConfig(**options))


def _learned(path: str | None, **options: Any) -> Controller:
    return _gcbc_class()(path, **options)


def _goap(path: str | None, **options: Any) -> Controller:
    return _goap_class()(path, **options)


CONTROLLERS.register("scripted")(ControllerKind(_scripted, "scripted", options=_scripted_options))
CONTROLLERS.register("learned")(
    ControllerKind(
        _learned,
        "learned:PATH (a final/ directory of a `trainer: gcbc` run)",
        "recipes/agents/gcbc_crafter.yaml",
        _keyword_options(_gcbc_class),
    )
)
CONTROLLERS.register("goap")(
    ControllerKind(
        _goap,
        "goap:PATH (a final/ directory of a `trainer: goap` run)",
        "recipes/agents/goap_crafter.yaml",
        _keyword_options(_goap_class),
    )
)


def spec_forms() -> str:
    return ", ".join(CONTROLLERS.get(n).form for n in CONTROLLERS.names())


def make_controller(spec: str, **options: Any) -> Controller:
    name, sep, path = spec.partition(":")
    if name not in CONTROLLERS:
        raise UserError(f"controller {spec!r} is not valid; valid: {spec_forms()}")
    kind = CONTROLLERS.get(name)
    if (kind.recipe is None) != (not sep) or (sep and not path):
        raise UserError(f"controller {spec!r} is not valid; valid: {spec_forms()}")
    if kind.recipe is not None and not Path(path).is_dir():
        raise UserError(f"controller {spec!r}: no directory {path!r}; train one with {kind.recipe}")
    valid = kind.options()
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise UserError(
            f"the {name} controller has no option {', '.join(unknown)}; valid: {', '.join(valid)}"
        )
    return kind.build(path or None, **options)
