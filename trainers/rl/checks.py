"""Semantic checks of the RL recipes: what the schema cannot say (rewards and data exist,
the template is known, one key bounds another, the engine's options fit together)."""

from __future__ import annotations

from telos.errors import UserError
from trainers.common.checks import about, check_common, check_model_name
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
    _check_agent(recipe)


def _check_agent(recipe) -> None:
    """``agent.role`` other than actor needs games and a frozen actor; EPO needs turns."""
    from envs.text.base import is_env_spec

    a, episodic = recipe.agent, is_env_spec(recipe.data.train)
    if a.role != "actor":
        if not episodic:
            raise UserError(
                f"'agent.role' {a.role} needs env: games in data.train, got {recipe.data.train!r}"
            )
        if not a.actor:
            raise UserError(f"'agent.actor' is needed for agent.role {a.role}: the frozen actor model")
        if a.actor.startswith("openai:"):
            from trainers.common.frozen import parse_openai

            url, served = parse_openai(a.actor, "'agent.actor'")
            check_model_name(served, "agent.actor")  # its tokenizer is loaded here
        else:
            check_model_name(a.actor.removeprefix("llm:"), "agent.actor")
    elif a.actor:
        raise UserError("'agent.actor' is only read with agent.role strategist or retrospective; remove it")
    if recipe.trainer == "epo" and (not episodic or a.role == "retrospective"):
        raise UserError(
            "trainer epo weights the turns of episodes: it needs env: games in data.train and "
            f"agent.role actor or strategist (got data.train {recipe.data.train!r}, agent.role {a.role})"
        )


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
