"""``scripted`` or ``learned:PATH`` → a controller."""

from __future__ import annotations

from typing import Any

from agents.types import Controller
from telos.errors import UserError

SPEC_FORMS = "scripted, learned:PATH (a final/ directory of a `trainer: gcbc` run)"


def make_controller(spec: str, **options: Any) -> Controller:
    kind, _, rest = spec.partition(":")
    if spec == "scripted":
        from agents.scripted import ScriptedConfig, ScriptedController

        return ScriptedController(ScriptedConfig(**options))
    if kind == "learned" and rest:
        from pathlib import Path

        from agents.gcbc import LearnedController

        if not Path(rest).is_dir():
            raise UserError(
                f"controller {spec!r}: no directory {rest!r}; train one with recipes/agents/gcbc_crafter.yaml"
            )
        return LearnedController(rest, **options)
    raise UserError(f"controller {spec!r} is not valid; valid: {SPEC_FORMS}")
