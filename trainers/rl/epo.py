"""EPO's reward-weighted fine-tuning (Liu et al. 2025; official: LLaMA-Factory's patched SFT
loss on process-rewarded strategist turns): pure functions for the process returns and the
per-token weights, the ``reward_weighted`` loss, and the algorithm the RL loop runs for
``trainer: epo``.

Process reward per turn (official, with GPT-4o naming the critical turns): 1.0 on a critical
turn, the episode score on the last turn, 0 elsewhere. A text world scores its sub-goals, so
here a turn is critical when it gained score, and is worth that gain (normalised by the game's
maximum score) instead of 1.0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated

import torch
from torch import Tensor

from telos.schema import number
from trainers.rl.losses import LossBatch, register_loss


def process_rewards(gains: Sequence[float], final_score: float) -> list[float]:
    """r_t = g_t if g_t > 0 (a critical turn), else the episode's final score on the last turn,
    else 0. ``gains`` and ``final_score`` are normalised by the game's maximum score."""
    last = len(gains) - 1
    return [g if g > 0 else (final_score if t == last else 0.0) for t, g in enumerate(gains)]


def process_returns(rewards: Sequence[float], gamma: float) -> list[float]:
    """R_t = r_t + γ R_{t+1} (backwards), then R_t / max_t |R_t| (all zero stays zero)."""
    out, running = [0.0] * len(rewards), 0.0
    for t in range(len(rewards) - 1, -1, -1):
        running = rewards[t] + gamma * running
        out[t] = running
    peak = max((abs(r) for r in out), default=0.0)
    return [r / peak for r in out] if peak > 0 else out


def segment_weights(episodes: Sequence, gamma: float) -> tuple[Tensor, Tensor]:
    """([B, W] per-token weights, [B] segment counts) over each episode's ``token_ids``: every
    token of turn j's span gets R_j / len_j (zero outside the spans)."""
    width = max(1, max((len(ep.token_ids) for ep in episodes), default=1))
    weights = torch.zeros(len(episodes), width)
    segments = torch.zeros(len(episodes))
    for b, ep in enumerate(episodes):
        scale = ep.max_score or 1.0
        gains = [t.reward / scale for t in ep.turns]
        returns = process_returns(process_rewards(gains, ep.normalized_score), gamma)
        for turn, ret in zip(ep.turns, returns, strict=True):
            if turn.end > turn.start:
                weights[b, turn.start : turn.end] = ret / (turn.end - turn.start)
                segments[b] += 1
    return weights, segments


@dataclass
class EPOConfig:
    gamma: Annotated[
        float, number("discount of the per-turn process rewards (official 0.99)", ge=0, le=1)
    ] = 0.99


@dataclass
class RewardWeightedBatch(LossBatch):
    segments: Tensor | None = None  # [B] turn segments per sequence


@register_loss("reward_weighted", config=EPOConfig)
def reward_weighted_loss(batch: RewardWeightedBatch, cfg: EPOConfig) -> tuple[Tensor, dict[str, float]]:
    """EPO: reward-weighted log-likelihood, length-normalised per turn, averaged over turns:

        loss_i = −Σ_j Σ_{t∈j} (R_j / |j|) ℓ_t / S_i,   loss = Σ_i loss_i / N_seq

    (``advantages`` holds R_j / |j| per token, ``segments`` S_i). No ratio, clip or KL, as in
    the official trainer; it sums over the batch, here the step's sequences are averaged so the
    learning rate does not depend on the batch size.
    """
    weights = batch.advantages.to(batch.logps.dtype) * batch.mask
    logps = torch.where(batch.mask > 0, batch.logps, torch.zeros_like(batch.logps))
    per_seq = -(weights * logps).sum(-1) / batch.segments.clamp(min=1.0)
    n = batch.num_sequences if batch.num_sequences > 0 else batch.logps.shape[0]
    loss = per_seq.sum() / n
    with torch.no_grad():
        trained = (weights != 0).float().sum().clamp(min=1.0)
        metrics = {
            "weighted_nll": float(-(weights * logps).sum() / trained),
            "weight_mean": float(weights.sum() / trained),
        }
    return loss, metrics
