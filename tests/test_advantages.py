"""Advantage estimators against numbers worked out by hand (groups of G = 4)."""

from __future__ import annotations

import math

import pytest
import torch

from telos.errors import UserError
from trainers.rl.advantages import ADVANTAGES, group_normalized, rloo, zero_std_groups

NAN = math.nan
# Group 0: one correct answer out of four; group 1: all correct (no signal).
REWARDS = torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0])


def close(actual: torch.Tensor, expected: list[float]) -> None:
    torch.testing.assert_close(actual, torch.tensor(expected), atol=1e-6, rtol=0)


def test_registry():
    assert {"grpo", "rloo"} <= set(ADVANTAGES.names())
    assert ADVANTAGES.get("grpo") is group_normalized
    assert ADVANTAGES.get("rloo") is rloo


def test_group_scale_by_hand():
    # Group 0: mean 0.25, centred [0.75, −0.25, −0.25, −0.25];
    #   sample var (N−1) = (0.75² + 3·0.25²) / 3 = (0.5625 + 0.1875) / 3 = 0.25 → σ = 0.5
    #   eps = 0: A = [1.5, −0.5, −0.5, −0.5]
    # Group 1: centred 0, σ = 0 → 0/0, reported as 0 (no signal), never NaN.
    close(group_normalized(REWARDS, 4, eps=0.0), [1.5, -0.5, -0.5, -0.5, 0, 0, 0, 0])


def test_group_scale_default_eps_is_1e_4():
    # 0.75 / (0.5 + 1e-4) = 1.49970006;  −0.25 / 0.5001 = −0.49990002;  group 1: 0 / 1e-4 = 0.
    close(
        group_normalized(REWARDS, 4),
        [1.49970006, -0.49990002, -0.49990002, -0.49990002, 0, 0, 0, 0],
    )


def test_batch_scale_by_hand():
    # Rewards [1,0,0,0 | 0,0,0,0]: group-centred [0.75, −0.25, −0.25, −0.25 | 0, 0, 0, 0].
    # Batch: mean 1/8, Σ(r − 1/8)² = (7/8)² + 7·(1/8)² = 56/64 = 7/8; var = (7/8)/7 = 1/8;
    # σ = 1/(2√2) = 0.35355339.  A = 0.75·2√2 = 2.12132034, −0.25·2√2 = −0.70710678.
    rewards = torch.tensor([1.0, 0, 0, 0, 0, 0, 0, 0])
    close(
        group_normalized(rewards, 4, scale="batch", eps=0.0),
        [2.12132034, -0.70710678, -0.70710678, -0.70710678, 0, 0, 0, 0],
    )


def test_no_scale_is_just_centred():
    close(group_normalized(REWARDS, 4, scale="none"), [0.75, -0.25, -0.25, -0.25, 0, 0, 0, 0])


def test_unknown_scale_lists_choices():
    with pytest.raises(UserError, match="group, batch, none"):
        group_normalized(REWARDS, 4, scale="std")


def test_bad_length_is_a_bug():
    with pytest.raises(ValueError, match="group_size"):
        group_normalized(torch.zeros(6), 4)


def test_integer_rewards_accepted():
    close(group_normalized(torch.tensor([1, 0, 0, 0]), 4, scale="none"), [0.75, -0.25, -0.25, -0.25])


def test_rloo_by_hand():
    # Group 0: 1 − mean(0,0,0) = 1;  0 − mean(1,0,0) = −1/3 (×3).  Group 1: 1 − 1 = 0.
    close(rloo(REWARDS, 4), [1.0, -1 / 3, -1 / 3, -1 / 3, 0, 0, 0, 0])
    # Extra options the loop passes to every estimator are ignored.
    close(rloo(REWARDS, 4, scale="group", eps=1e-4), [1.0, -1 / 3, -1 / 3, -1 / 3, 0, 0, 0, 0])


def test_unscorable_rewards_are_excluded_and_get_zero():
    rewards = torch.tensor([1.0, NAN, 0.0, 0.0])
    # Scorable [1, 0, 0]: mean 1/3, centred [2/3, −1/3, −1/3];
    # sample var = (4/9 + 1/9 + 1/9) / 2 = 1/3 → σ = 1/√3;  A = [2/√3, 0, −1/√3, −1/√3].
    close(group_normalized(rewards, 4, eps=0.0), [1.15470054, 0.0, -0.57735027, -0.57735027])
    # RLOO: 1 − mean(0, 0) = 1;  0 − mean(1, 0) = −0.5;  the NaN answer gets 0.
    close(rloo(rewards, 4), [1.0, 0.0, -0.5, -0.5])
    # A group with a single scorable answer has no baseline: 0 everywhere.
    close(rloo(torch.tensor([1.0, NAN, NAN, NAN]), 4), [0.0, 0.0, 0.0, 0.0])
    close(group_normalized(torch.tensor([1.0, NAN, NAN, NAN]), 4), [0.0, 0.0, 0.0, 0.0])


def test_zero_std_groups():
    rewards = torch.tensor(
        [1.0, 0, 0, 0]  # varied → keep
        + [1.0, 1, 1, 1]  # all equal → drop
        + [0.5, 0.5 + 1e-8, NAN, 0.5]  # equal within atol, unscorable ignored → drop
        + [NAN, NAN, NAN, NAN]  # nothing scorable → drop
    )
    assert zero_std_groups(rewards, 4).tolist() == [False, True, True, True]
    assert zero_std_groups(torch.tensor([0.0, 0.1]), 2, atol=0.2).tolist() == [True]
