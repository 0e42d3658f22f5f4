"""``telos train`` and ``telos check``: load a recipe, validate everything, dispatch."""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

from envs.math.sources import load_rows
from telos.checkpoint import resolve_resume
from telos.config import apply_overrides, from_dict, load_yaml
from telos.errors import UserError
from telos.tracking import normalize_report_to
from trainers.common.tiny import TINY_TASKS
from trainers.rl.recipe import RECIPES

CHECK_ROWS = 16  # rows of a local data file that `telos check` validates


def _trainers() -> dict[str, Callable]:
    from trainers.agents.gcbc import train_gcbc
    from trainers.agents.planner_sft import train_planner_sft
    from trainers.rl.loop import train_rl
    from trainers.rm.train import train_rm

    return {
        "grpo": train_rl,
        "nft": train_rl,
        "oreal": train_rl,
        "rm": train_rm,
        "gcbc": train_gcbc,
        "planner_sft": train_planner_sft,
    }


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


@contextlib.contextmanager
def _about(key: str) -> Iterator[None]:
    """Prefix a UserError raised inside with the recipe key it concerns."""
    try:
        yield
    except UserError as e:
        raise UserError(f"'{key}': {e}") from None


def _check_semantics(recipe) -> None:
    """Checks a type system cannot express, still made before any work starts."""
    if recipe.trainer == "planner_sft":
        from trainers.agents.planner_sft_recipe import check_planner_sft

        return check_planner_sft(recipe)
    if recipe.trainer == "gcbc":
        from trainers.agents.gcbc_recipe import check_gcbc

        return check_gcbc(recipe)
    if recipe.trainer == "rm":
        return _check_rm(recipe)
    from envs.math.prompts import TEMPLATES
    from envs.math.sources import parse_spec
    from rewards.functions import resolve_reward_function

    for i, spec in enumerate(recipe.rewards):
        with _about(f"rewards[{i}].name"):
            resolve_reward_function(spec.name)
    for key in ("train", "test"):
        spec = getattr(recipe.data, key)
        if spec is not None:
            with _about(f"data.{key}"):
                parsed = parse_spec(spec)
                if spec.startswith("procedural:"):
                    _check_procedural(spec)
                elif parsed.scheme == "file":
                    # a malformed row must fail here, not after the model is built
                    load_rows(spec, limit=CHECK_ROWS)
    t = recipe.data.template
    if t not in TEMPLATES and "{prompt}" not in t:
        raise UserError(
            f"'data.template' is {t!r}; valid: {', '.join(TEMPLATES)} or a string containing {{prompt}}"
        )
    _check_common(recipe)
    non_negative = {
        "train.eval_every": recipe.train.eval_every,
        "train.warmup_steps": recipe.train.warmup_steps,
        "train.max_generated_tokens": recipe.train.max_generated_tokens,
        "data.num_test": recipe.data.num_test,
        "sampling.top_k": recipe.sampling.top_k,
    }
    _at_least(non_negative, 0)
    if not 0.0 < recipe.sampling.top_p <= 1.0:
        raise UserError(f"'sampling.top_p' must be in (0, 1], got {recipe.sampling.top_p}")
    positive = {
        "train.keep_last": recipe.train.keep_last,
        "train.steps": recipe.train.steps,
        "train.prompts_per_step": recipe.train.prompts_per_step,
        "train.micro_batch_size": recipe.train.micro_batch_size,
        "train.save_every": recipe.train.save_every,
        "sampling.num_generations": recipe.sampling.num_generations,
        "sampling.max_tokens": recipe.sampling.max_tokens,
        **_algorithm_counts(recipe),
    }
    _at_least(positive, 1)
    if recipe.sampling.num_generations < 2:
        raise UserError("'sampling.num_generations' must be ≥ 2: group advantages need at least two answers")
    if recipe.trainer == "oreal":
        _check_oreal(recipe)
    if recipe.sampling.temperature < 0:
        raise UserError(f"'sampling.temperature' must be ≥ 0, got {recipe.sampling.temperature}")
    _check_engine(recipe.engine)


def _check_engine(e) -> None:
    if e.backend == "hf" and e.mode != "colocated":
        raise UserError(
            "'engine.mode' server needs 'engine.backend: vllm'; the hf engine is the trainer's own model"
        )
    if e.mode == "server" and not (e.url or "").startswith(("http://", "https://")):
        raise UserError(
            f"'engine.url' must be the rollout server's http(s)://host:port for mode server, got {e.url!r}"
        )
    if e.backend == "vllm" and e.mode == "colocated":
        from rollout.vllm import require_vllm

        require_vllm()
    if e.correction_cap <= 0:
        raise UserError(f"'engine.correction_cap' must be > 0, got {e.correction_cap}")


def _at_least(values: dict[str, float], minimum: float) -> None:
    """Each recipe key's value must be ≥ ``minimum``; the first that is not is the error."""
    for key, value in values.items():
        if value < minimum:
            raise UserError(f"'{key}' must be ≥ {minimum}, got {value}")


def _check_common(recipe) -> None:
    """Model, tracker and resume checks every trainer shares."""
    _check_model(recipe.model.name_or_path)
    with _about("report_to"):
        normalize_report_to(recipe.report_to)
    with _about("resume"):
        resolve_resume(recipe.resume, Path(recipe.run_dir))


def _check_rm(recipe) -> None:
    from envs.math.sources import parse_spec

    for key in ("train", "test"):
        spec = getattr(recipe.data, key)
        if spec is not None:
            with _about(f"data.{key}"):
                if parse_spec(spec).scheme in ("procedural", "reasoning-gym"):
                    raise UserError(
                        f"{spec!r} holds math problems, not preference pairs or step labels; valid: a "
                        ".jsonl/.json/.parquet file or hf:REPO (make one with `telos data preferences`)"
                    )
    _check_common(recipe)
    t, rm = recipe.train, recipe.rm
    positive = {
        "train.batch_size": t.batch_size,
        "train.micro_batch_size": t.micro_batch_size,
        "train.epochs": t.epochs,
        "train.save_every": t.save_every,
        "train.keep_last": t.keep_last,
        "rm.position_pairs": rm.position_pairs,
    }
    _at_least(positive, 1)
    non_negative = {
        "train.steps": t.steps,
        "train.warmup_steps": t.warmup_steps,
        "train.eval_every": t.eval_every,
        "rm.center_coef": rm.center_coef,
        "rm.contrastive_weight": rm.contrastive_weight,
        "rm.goal_examples": rm.goal_examples,
    }
    _at_least(non_negative, 0)
    if recipe.data.max_length is not None and recipe.data.max_length < 2:
        raise UserError(f"'data.max_length' must be ≥ 2 or null, got {recipe.data.max_length}")


def _algorithm_counts(recipe) -> dict[str, int]:
    """The algorithm section's settings that must be ≥ 1."""
    section = getattr(recipe, recipe.trainer)
    names = ("num_iterations", "mini_batches")
    return {f"{recipe.trainer}.{n}": getattr(section, n) for n in names if hasattr(section, n)}


def _check_oreal(recipe) -> None:
    o = recipe.oreal
    if o.freeze_policy_steps >= recipe.train.steps:
        raise UserError(
            f"'oreal.freeze_policy_steps' is {o.freeze_policy_steps} but train.steps is {recipe.train.steps}: "
            "the policy would never train; valid: 0 ≤ freeze_policy_steps < train.steps"
        )
    non_negative = {
        "oreal.rm_lr": o.rm_lr,
        "oreal.beta": o.beta,
        "oreal.neg_weight": o.neg_weight,
        "oreal.freeze_policy_steps": o.freeze_policy_steps,
    }
    _at_least(non_negative, 0)


def _check_model(name: str) -> None:
    if name.startswith("tiny:"):
        task = name.split(":", 1)[1]
        if task not in TINY_TASKS:
            raise UserError(
                f"'model.name_or_path' {name!r}: tiny models exist for: {', '.join('tiny:' + t for t in TINY_TASKS)}"
            )


def _check_procedural(spec: str) -> None:
    """Generate one row with the spec's settings: catches unknown generators and options
    (and bad values such as n=abc) before any model is loaded."""
    from envs.math.procedural import PROCEDURAL_TASKS
    from envs.math.sources import parse_spec

    parsed = parse_spec(spec)
    PROCEDURAL_TASKS.get(parsed.name)
    params = dict(parsed.params)
    n = params.pop("n", "1")
    if not str(n).isdigit():
        raise UserError(f"n must be a non-negative integer, got {n!r}")
    load_rows(f"procedural:{parsed.name}:{parsed.split or 'train'}" + _query({**params, "n": 1}))


def _query(params: dict) -> str:
    return "?" + "&".join(f"{k}={v}" for k, v in params.items()) if params else ""


def check_command(args: argparse.Namespace) -> int:
    recipe, _ = load_recipe(args.recipe, args.overrides)
    steps = f"{recipe.train.steps} steps" if recipe.train.steps else f"{recipe.train.epochs} epoch(s)"
    model = getattr(recipe.model, "name_or_path", recipe.trainer)  # gcbc: a policy built from scratch
    data = (
        getattr(recipe.data, "train", None)
        or getattr(recipe.data, "path", None)
        or getattr(recipe.data, "suite", None)  # planner_sft: generated from a task suite
    )
    print(
        f"ok: {args.recipe} — trainer {recipe.trainer}, model {model}, data {data}, {steps} → {recipe.run_dir}"
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
