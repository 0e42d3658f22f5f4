"""``telos train``, ``telos check`` and ``telos recipe schema``: load a recipe, validate
everything (schema, then the trainer's semantic check), dispatch through the trainer registry."""

from __future__ import annotations

import argparse
from typing import Any

from telos.config import apply_overrides, from_dict, load_yaml
from telos.errors import UserError
from trainers.registry import TrainerSpec, trainer_registry
from trainers.schema_docs import explain, markdown


def trainer_spec(name: Any, where: str = "") -> TrainerSpec:
    registry = trainer_registry()
    if name is None:
        raise UserError(f"missing required key 'trainer'{where}; valid: {', '.join(registry.names())}")
    if not isinstance(name, str) or name not in registry:
        raise UserError(f"'trainer' is {name!r}; valid: {', '.join(registry.names())}")
    return registry.get(name)


def load_recipe(path: str, overrides: list[str] | None = None):
    """Parse, override and validate a recipe; returns (recipe dataclass, raw dict)."""
    raw = apply_overrides(load_yaml(path), overrides or [])
    spec = trainer_spec(raw.get("trainer"), f" in {path}")
    recipe = from_dict(spec.recipe, raw)
    spec.check(recipe)
    return recipe, raw


def check_command(args: argparse.Namespace) -> int:
    recipe, raw = load_recipe(args.recipe, args.overrides)
    if getattr(args, "explain", False):
        print(explain(trainer_spec(recipe.trainer), recipe))
        return 0
    train, data = getattr(recipe, "train", None), getattr(recipe, "data", None)
    steps = getattr(train, "steps", None)
    steps = f"{steps} steps" if steps else f"{getattr(train, 'epochs', '?')} epoch(s)"
    # gcbc trains a policy from scratch; planner_sft generates its data from a task suite
    model = getattr(getattr(recipe, "model", None), "name_or_path", recipe.trainer)
    data = next((v for k in ("train", "path", "suite") if (v := getattr(data, k, None))), None)
    print(
        f"ok: {args.recipe} — trainer {recipe.trainer}, model {model}, data {data}, {steps} → {recipe.run_dir}"
    )
    return 0


def train_command(args: argparse.Namespace) -> int:
    recipe, raw = load_recipe(args.recipe, args.overrides)
    summary = trainer_spec(recipe.trainer).train(recipe, raw)
    if summary:
        print(
            f"done: {recipe.run_dir}/summary.json — eval_accuracy {summary.get('eval_accuracy', float('nan')):.3f}"
        )
    return 0


def recipe_schema_command(args: argparse.Namespace) -> int:
    if args.markdown:
        print(markdown(trainer_registry()), end="")
        return 0
    if args.trainer is None:
        registry = trainer_registry()
        width = max(map(len, registry.names()))
        print("trainers (telos recipe schema TRAINER shows one's keys):")
        for name in registry.names():
            print(f"  {name:<{width}}  {registry.get(name).summary}")
        return 0
    print(explain(trainer_spec(args.trainer)))
    return 0
