"""GiGPO's pure math against numbers computed by hand (trainers/rl/gigpo.py)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pytest
import torch

from trainers.rl.gigpo import discounted_returns, episode_token_advantages, step_group_advantages


def test_discounted_returns_by_hand():
    # R2 = 1; R1 = 0 + 0.5·1 = 0.5; R0 = 2 + 0.5·0.5 = 2.25
    assert discounted_returns([2.0, 0.0, 1.0], 0.5) == pytest.approx([2.25, 0.5, 1.0])
    assert discounted_returns([], 0.9) == []


def test_step_groups_by_hand():
    # states: a, a, b, a, c — group a holds returns 1, 2, 6 (mean 3, Bessel std √7)
    returns = [1.0, 2.0, 5.0, 6.0, 9.0]
    keys = ["a", "a", "b", "a", "c"]
    std = math.sqrt(((1 - 3) ** 2 + (2 - 3) ** 2 + (6 - 3) ** 2) / 2)
    got = step_group_advantages(returns, keys, "mean_std_norm")
    want = [(1 - 3) / std, (2 - 3) / std, 0.0, (6 - 3) / std, 0.0]  # b and c: seen once → 0
    assert got.tolist() == pytest.approx(want, abs=1e-5)
    assert step_group_advantages(returns, keys, "mean_norm").tolist() == pytest.approx([-2, -1, 0, 3, 0])
    with pytest.raises(ValueError, match="mean_norm"):
        step_group_advantages(returns, keys, "z-score")


@dataclass
class _Turn:
    start: int
    end: int
    reward: float
    state_key: str


@dataclass
class _Episode:
    token_ids: list[int]
    turns: list[_Turn] = field(default_factory=list)
    max_score: float = 2.0


def test_token_advantages_by_hand():
    """Two episodes of one group (γ = 0.5, max score 2, so per-turn rewards are halved).

    A: turns in states s0, s1 with raw rewards 0, 2 → normalised 0, 1 → returns 0.5, 1
    B: turns in states s0, s2, s1 with rewards 0, 0, 2 → returns 0.25, 0.5, 1
    step group (g, s0) = {A0: 0.5, B0: 0.25}: mean 0.375, std 0.25/√2 → ±1/√2
    (g, s1) = {A1: 1, B2: 1} → 0; (g, s2) seen once → 0.
    With episode advantages +1 (A), −1 (B) and w = 2, A's turn-0 tokens get 1 + 2/√2."""
    a = _Episode(list(range(7)), [_Turn(0, 2, 0.0, "s0"), _Turn(4, 6, 2.0, "s1")])
    b = _Episode(list(range(9)), [_Turn(0, 1, 0.0, "s0"), _Turn(3, 4, 0.0, "s2"), _Turn(6, 8, 2.0, "s1")])
    adv, stats = episode_token_advantages([a, b], torch.tensor([1.0, -1.0]), 2, weight=2.0, gamma=0.5)
    r = 1 / math.sqrt(2)
    assert adv.shape == (2, 9)
    assert adv[0].tolist() == pytest.approx([1 + 2 * r] * 2 + [1.0] * 7, abs=1e-5)
    assert adv[1].tolist() == pytest.approx([-1 - 2 * r] + [-1.0] * 8, abs=1e-5)
    assert stats["step_groups_mean_size"] == pytest.approx(5 / 3)
    # w = 0 is the episode-level advantage alone
    plain, _ = episode_token_advantages([a, b], torch.tensor([1.0, -1.0]), 2, weight=0.0, gamma=0.5)
    assert plain[:, 0].tolist() == [1.0, -1.0] and bool((plain[0] == 1).all())


def test_states_of_other_groups_never_mix():
    """The same state text in two different groups (games) forms two step groups."""
    eps = [_Episode([0, 1], [_Turn(0, 1, r, "s")]) for r in (0.0, 2.0, 0.0, 0.0)]
    adv, _ = episode_token_advantages(eps, torch.zeros(4), 2, weight=1.0, gamma=1.0)
    assert adv[0, 0] < 0 < adv[1, 0]
    assert adv[2, 0] == 0 and adv[3, 0] == 0  # group 2's returns agree
