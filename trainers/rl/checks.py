"""Semantic checks of the RL recipes: what the schema cannot say (rewards and data exist,
the template is known, one key bounds another, the engine's options fit together)."""

from __future__ import annotations

from telos.errors import UserError
from trainers.common.checks import about, check_common
from trainers.common.math_data import check_math_data


def check_rl(recipe) -> None:
    from rewards.functions import resolve_reward_function

    for i, spec in enumerate(recipe.rewards):
        with about(f"rewards[{i}].name"):
            resolve_reward_function(spec.name)
    check_math_data(recipe.data)
    check_common(recipe)
    if recipe.trainer == "oreal" and recipe.oreal.freeze_policy_steps >= recipe.train.steps:
        raise UserError(
            f"'oreal.freeze_policy_steps' is {recipe.oreal.freeze_policy_steps} but train.steps is "
            f"{recipe.train.steps}: the policy would never train; valid: 0 ≤ freeze_policy_steps < train.steps"
        )
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
