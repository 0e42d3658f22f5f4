"""Semantic checks of the RL recipes: what the schema cannot say (rewards and data exist,
the template is known, one key bounds another, the engine's options fit together)."""

from __future__ import annotations

from envs.math.sources import load_rows
from telos.errors import UserError
from trainers.common.checks import about, check_common

CHECK_ROWS = 16  # rows of a local data file that `telos check` validates


def check_rl(recipe) -> None:
    from envs.math.prompts import TEMPLATES
    from envs.math.sources import parse_spec
    from rewards.functions import resolve_reward_function

    for i, spec in enumerate(recipe.rewards):
        with about(f"rewards[{i}].name"):
            resolve_reward_function(spec.name)
    for key in ("train", "test"):
        spec = getattr(recipe.data, key)
        if spec is not None:
            with about(f"data.{key}"):
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
