"""Reward functions with TRL's signature, their registry, and weighted scoring.

A reward function is ``f(prompts, completions, **columns) -> list[float | None]``: each column
of the data batch (``answer``, ``solution``, ...) arrives as a list aligned with ``completions``,
so a function written for TRL's GRPOTrainer works here unchanged. ``None`` means "cannot score
this sample"; it is never replaced by 0.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import math
import os
import re
import sys
from collections.abc import Callable, Sequence
from typing import Any

from envs.math.answers import extract_answer
from rewards.verifiers import verify_gsm8k, verify_math, verify_numeric
from telos.errors import UserError
from telos.registry import Registry

__all__ = [
    "REWARD_FUNCTIONS",
    "RewardFunction",
    "accuracy_reward",
    "format_reward",
    "gsm8k_reward",
    "numeric_reward",
    "reasoning_gym_reward",
    "resolve_reward_function",
    "reward_inputs",
    "score_completions",
]

RewardFunction = Callable[..., list[float | None]]
REWARD_FUNCTIONS: Registry[RewardFunction] = Registry("reward function")

# The last non-empty line is "#### X" with X non-empty.
_FINAL_HASH_LINE_RE = re.compile(r"####[ \t]*\S[^\n]*")


def _text(completion: Any) -> str:
    # TRL passes conversational completions as [{"role": "assistant", "content": ...}].
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list) and completion and isinstance(completion[-1], dict):
        return str(completion[-1].get("content", ""))
    return "" if completion is None else str(completion)


def _answers(name: str, completions: Sequence[Any], columns: dict[str, Any]) -> list[Any]:
    answers = columns.get("answer")
    if answers is None:
        raise UserError(
            f"reward function {name!r} needs an 'answer' column; got columns: "
            f"{', '.join(sorted(columns)) or '(none)'}"
        )
    if len(answers) != len(completions):
        raise UserError(
            f"reward function {name!r}: {len(answers)} answers for {len(completions)} completions"
        )
    return list(answers)


def _to_reward(ok: bool | None) -> float | None:
    return None if ok is None else float(ok)


@REWARD_FUNCTIONS.register("accuracy")
def accuracy_reward(prompts: list[Any], completions: list[Any], **columns: Any) -> list[float | None]:
    """1.0 if the final answer is mathematically equal to ``answer`` (math_verify), else 0.0;
    None when the gold answer cannot be parsed."""
    answers = _answers("accuracy", completions, columns)
    return [_to_reward(verify_math(_text(c), str(a))) for c, a in zip(completions, answers, strict=True)]


@REWARD_FUNCTIONS.register("gsm8k")
def gsm8k_reward(prompts: list[Any], completions: list[Any], **columns: Any) -> list[float | None]:
    """1.0 if the number after the last ``####`` equals ``answer``, else 0.0; None when the gold
    answer is not a number."""
    answers = _answers("gsm8k", completions, columns)
    return [_to_reward(verify_gsm8k(_text(c), str(a))) for c, a in zip(completions, answers, strict=True)]


@REWARD_FUNCTIONS.register("numeric")
def numeric_reward(prompts: list[Any], completions: list[Any], **columns: Any) -> list[float | None]:
    """1.0 if the extracted final answer (``####``, ``\\boxed{}`` or "The answer is") is
    numerically equal to ``answer``, else 0.0; None when the gold answer is not a number."""
    answers = _answers("numeric", completions, columns)
    return [
        _to_reward(verify_numeric(extract_answer(_text(c)), str(a)))
        for c, a in zip(completions, answers, strict=True)
    ]


@REWARD_FUNCTIONS.register("format")
def format_reward(prompts: list[Any], completions: list[Any], **columns: Any) -> list[float | None]:
    """1.0 if the completion's last non-empty line is a well-formed ``#### X``, else 0.0."""
    out: list[float | None] = []
    for c in completions:
        lines = [ln.strip() for ln in _text(c).splitlines() if ln.strip()]
        out.append(float(bool(lines) and _FINAL_HASH_LINE_RE.fullmatch(lines[-1]) is not None))
    return out


@functools.cache
def _rg_scorer(task: str) -> Callable[[str | None, dict[str, Any]], float]:
    try:
        import reasoning_gym
    except ImportError:
        raise UserError("reasoning-gym is not installed: pip install reasoning-gym") from None
    try:
        return reasoning_gym.get_score_answer_fn(task)
    except (ValueError, KeyError) as e:
        raise UserError(f"reasoning-gym has no scorer for task {task!r}: {e}") from None


@REWARD_FUNCTIONS.register("reasoning-gym")
def reasoning_gym_reward(prompts: list[Any], completions: list[Any], **columns: Any) -> list[float | None]:
    """reasoning-gym's own scorer for the task in each row's ``metadata["source_dataset"]``,
    applied to the extracted final answer (scores in [0, 1]; some tasks give partial credit).
    For rows loaded with a ``reasoning-gym:TASK`` spec, whose answers are often not math."""
    answers = _answers("reasoning-gym", completions, columns)
    metas = columns.get("metadata")
    if metas is None:
        raise UserError("reward function 'reasoning-gym' needs the 'metadata' column of reasoning-gym rows")
    if len(metas) != len(completions):
        raise UserError(
            f"reward function 'reasoning-gym': {len(metas)} metadata for {len(completions)} completions"
        )
    out: list[float | None] = []
    for c, a, meta in zip(completions, answers, metas, strict=True):
        task = meta.get("source_dataset") if isinstance(meta, dict) else None
        if task is None:
            out.append(None)  # not a reasoning-gym row: cannot score it
            continue
        score = _rg_scorer(task)
        try:
            value = float(score(extract_answer(_text(c)), {"answer": a, "metadata": meta}))
        except Exception:  # task scorers can choke on garbage answers; that answer is wrong
            value = 0.0
        out.append(value)
    return out


def _import_function(spec: str) -> RewardFunction:
    module_name, _, attr = spec.rpartition(":")
    if not module_name or not attr:
        raise UserError(f"bad reward function {spec!r}: expected 'module.sub:function'")
    try:
        if module_name.endswith(".py"):
            # A file path: lets users point a recipe at my_rewards.py without packaging it.
            if not os.path.isfile(module_name):
                raise UserError(f"reward function file not found: {module_name}")
            mod_id = f"telos_user_rewards_{abs(hash(os.path.abspath(module_name)))}"
            file_spec = importlib.util.spec_from_file_location(mod_id, module_name)
            assert file_spec is not None and file_spec.loader is not None
            module = importlib.util.module_from_spec(file_spec)
            sys.modules[mod_id] = module
            file_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(module_name)
    except UserError:
        raise
    except Exception as e:  # ImportError, or anything the user's module raises on import
        raise UserError(f"cannot import reward function {spec!r}: {type(e).__name__}: {e}") from None
    fn = getattr(module, attr, None)
    if fn is None:
        raise UserError(f"reward function {spec!r}: module {module_name!r} has no {attr!r}")
    if not callable(fn):
        raise UserError(f"reward function {spec!r} is not callable")
    return fn


def resolve_reward_function(name_or_path: str) -> RewardFunction:
    """A registered reward function by name, or a user's ``"module.sub:function"`` (a
    ``"path/to/file.py:function"`` works too)."""
    if ":" in name_or_path:
        return _import_function(name_or_path)
    if name_or_path in REWARD_FUNCTIONS:
        return REWARD_FUNCTIONS.get(name_or_path)
    raise UserError(
        f"unknown reward function {name_or_path!r}; valid: "
        f"{', '.join(REWARD_FUNCTIONS.names())} (or 'module.sub:function')"
    )


def _fn_name(fn: Callable[..., Any]) -> str:
    name = getattr(fn, "__name__", None)
    if name is None and hasattr(fn, "func"):  # functools.partial
        name = getattr(fn.func, "__name__", None)
    return name or type(fn).__name__


def _coerce(value: Any, name: str, i: int) -> float | None:
    if value is None:
        return None
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise UserError(
            f"reward function {name!r} returned {value!r} for sample {i}; expected a number or None"
        ) from None
    # TRL writes "cannot score" as NaN; here it is None so it is excluded, not averaged in.
    return None if math.isnan(v) else v


def reward_inputs(
    row_prompts: Sequence[Any], prompt_texts: Sequence[str], texts: Sequence[str]
) -> tuple[list[Any], list[Any]]:
    """``(prompts, completions)`` for reward functions, in the shapes TRL's GRPOTrainer (1.16)
    hands them. A row in TRL's standard format (string prompt) gives the prompt text the policy
    saw and the completion text; a conversational row (a list of messages) gives its messages
    and ``[{"role": "assistant", "content": text}]``.
    """
    prompts: list[Any] = []
    completions: list[Any] = []
    for row_prompt, prompt_text, text in zip(row_prompts, prompt_texts, texts, strict=True):
        conversational = isinstance(row_prompt, list)
        prompts.append(list(row_prompt) if conversational else prompt_text)
        completions.append([{"role": "assistant", "content": text}] if conversational else text)
    return prompts, completions


def score_completions(
    fns: list[RewardFunction],
    weights: list[float],
    prompts: list[Any],
    completions: list[Any],
    columns: dict[str, list[Any]],
) -> tuple[list[float | None], dict[str, list[float | None]]]:
    """Score completions with several reward functions.

    Returns ``(totals, per_function)``: ``totals[i] = sum_k weights[k] * r_k[i]``, or None if any
    function returned None for sample i (the caller excludes and counts it); ``per_function``
    maps each function's ``__name__`` to its raw values (a repeated name gets ``_2``, ``_3``).
    """
    if len(fns) != len(weights):
        raise UserError(f"{len(fns)} reward functions but {len(weights)} reward weights")
    n = len(completions)
    if len(prompts) != n:
        raise UserError(f"{len(prompts)} prompts for {n} completions")
    for key, col in columns.items():
        if len(col) != n:
            raise UserError(f"column {key!r} has {len(col)} values for {n} completions")

    per_function: dict[str, list[float | None]] = {}
    totals: list[float | None] = [0.0] * n
    for fn, weight in zip(fns, weights, strict=True):
        name = _fn_name(fn)
        raw = fn(prompts=prompts, completions=completions, **columns)
        try:
            length = len(raw)
        except TypeError:
            raise UserError(f"reward function {name!r} returned {type(raw).__name__}, not a list") from None
        if length != n:
            raise UserError(f"reward function {name!r} returned {length} values for {n} samples")
        values = [_coerce(v, name, i) for i, v in enumerate(raw)]
        key, k = name, 2
        while key in per_function:
            key, k = f"{name}_{k}", k + 1
        per_function[key] = values
        for i, v in enumerate(values):
            t = totals[i]
            totals[i] = None if t is None or v is None else t + weight * v
    return totals, per_function
