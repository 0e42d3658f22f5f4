"""``telos train`` and ``telos check``: load a recipe, validate everything, dispatch."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from telos.config import apply_overrides, from_dict, load_yaml
from telos.errors import UserError
from trainers.recipe import RECIPES


def _trainers() -> dict[str, Callable]:
    from trainers.rl import train_rl

    return {"grpo": train_rl}


def load_recipe(path: str, overrides: list[str] | None = None):
    """Parse, override and validate a recipe; returns (recipe dataclass, raw dict)."""
    raw = apply_overrides(load_yaml(path), overrides or [])
    trainer = raw.get("trainer")
    if trainer is None:
        raise UserError(f"missing required key 'trainer' in {path}; valid: {', '.join(RECIPES)}")
    if trainer not in RECIPES:
        raise UserError(f"'trainer' is {trainer!r}; valid: {', '.join(RECIPES)}")
    recipe = from_dict(RECIPES[trainer], raw)
    _check_semantics(recipe)
    return recipe, raw


def _check_semantics(recipe) -> None:
    """Checks a type system cannot express, still made before any work starts."""
    from envs.math.prompts import TEMPLATES
    from envs.math.sources import parse_spec
    from rewards.functions import resolve_reward_function

    for i, spec in enumerate(recipe.rewards):
        try:
            resolve_reward_function(spec.name)
        except UserError as e:
            raise UserError(f"'rewards[{i}].name': {e}") from None
    for key in ("train", "test"):
        spec = getattr(recipe.data, key)
        if spec is not None:
            try:
                parse_spec(spec)
            except UserError as e:
                raise UserError(f"'data.{key}': {e}") from None
    t = recipe.data.template
    if t not in TEMPLATES and "{prompt}" not in t:
        raise UserError(
            f"'data.template' is {t!r}; valid: {', '.join(TEMPLATES)} or a string containing {{prompt}}"
        )
    positive = {
        "train.steps": recipe.train.steps,
        "train.prompts_per_step": recipe.train.prompts_per_step,
        "train.micro_batch_size": recipe.train.micro_batch_size,
        "train.save_every": recipe.train.save_every,
        "sampling.num_generations": recipe.sampling.num_generations,
        "sampling.max_tokens": recipe.sampling.max_tokens,
        "grpo.num_iterations": recipe.grpo.num_iterations,
    }
    for key, value in positive.items():
        if value < 1:
            raise UserError(f"'{key}' must be ≥ 1, got {value}")
    if recipe.sampling.num_generations < 2:
        raise UserError("'sampling.num_generations' must be ≥ 2: group advantages need at least two answers")
    if recipe.sampling.temperature < 0:
        raise UserError(f"'sampling.temperature' must be ≥ 0, got {recipe.sampling.temperature}")
    if recipe.engine.backend != "hf":
        raise UserError(
            f"'engine.backend' {recipe.engine.backend!r} is not available in this build; valid: hf"
        )


def check_command(args: argparse.Namespace) -> int:
    recipe, _ = load_recipe(args.recipe, args.overrides)
    print(
        f"ok: {args.recipe} — trainer {recipe.trainer}, model {recipe.model.name_or_path}, "
        f"data {recipe.data.train}, {recipe.train.steps} steps → {recipe.run_dir}"
    )
    return 0


def train_command(args: argparse.Namespace) -> int:
    recipe, raw = load_recipe(args.recipe, args.overrides)
    summary = _trainers()[recipe.trainer](recipe, raw)
    if summary:
        print(
            f"done: {recipe.run_dir}/summary.json — eval_accuracy {summary.get('eval_accuracy', float('nan')):.3f}"
        )
    return 0
