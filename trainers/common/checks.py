"""Semantic recipe checks every trainer shares (ranges and types are the schema's job)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from telos.checkpoint import resolve_resume
from telos.errors import UserError
from telos.models import check_model_path
from telos.tracking import normalize_report_to
from trainers.common.start_model import FROM_RECIPE, recipe_final_dir
from trainers.common.tiny import TINY_TASKS


@contextlib.contextmanager
def about(key: str) -> Iterator[None]:
    """Prefix a UserError raised inside with the recipe key it concerns."""
    try:
        yield
    except UserError as e:
        raise UserError(f"'{key}': {e}") from None


def check_run_options(recipe) -> None:
    """``report_to`` names installed trackers; ``resume`` names a checkpoint that exists."""
    with about("report_to"):
        normalize_report_to(recipe.report_to)
    with about("resume"):
        resolve_resume(recipe.resume, Path(recipe.run_dir))


def check_model_name(name: str, key: str = "model.name_or_path") -> None:
    """A tiny task that exists, a packaged model whose package is installed, a directory that
    holds a model; hub ids pass (only the hub can say)."""
    if name.startswith(FROM_RECIPE):
        with about(key):
            recipe_final_dir(name)  # its run may not exist yet: `telos train` says so
        return
    if not name.startswith("tiny:"):
        with about(key):
            check_model_path(name)
        return
    task = name.split(":", 1)[1]
    if task not in TINY_TASKS:
        raise UserError(
            f"'{key}' {name!r}: tiny models exist for: {', '.join('tiny:' + t for t in TINY_TASKS)}"
        )


def check_common(recipe) -> None:
    """Model, tracker and resume checks of every trainer that fine-tunes a causal LM."""
    check_model_name(recipe.model.name_or_path)
    check_run_options(recipe)
