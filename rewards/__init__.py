"""Verifiers and reward functions (TRL signature), plus their registry."""

from rewards.functions import (
    REWARD_FUNCTIONS,
    RewardFunction,
    accuracy_reward,
    format_reward,
    gsm8k_reward,
    numeric_reward,
    reasoning_gym_reward,
    resolve_reward_function,
    score_completions,
)
from rewards.verifiers import verify_gsm8k, verify_math, verify_numeric

__all__ = [
    "REWARD_FUNCTIONS",
    "RewardFunction",
    "accuracy_reward",
    "format_reward",
    "gsm8k_reward",
    "numeric_reward",
    "reasoning_gym_reward",
    "resolve_reward_function",
    "score_completions",
    "verify_gsm8k",
    "verify_math",
    "verify_numeric",
]
