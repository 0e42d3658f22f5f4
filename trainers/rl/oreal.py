"""OREAL — outcome-reward RL with behaviour cloning (ALGORITHMS.md, "OREAL"): the pure math.

Rewards are ±1 (r = 2c − 1 from correctness c ∈ {0,1}); advantages are RLOO on the full group
(A_i = r_i − mean_{j≠i} r_j ≈ 2(1 − p) for a correct answer, ≈ −2p for a wrong one). Per prompt
with 0 < p < 1 one random correct and one random wrong answer are trained:

    loss = pos_weight · (1/N⁺) Σ_{correct} m_t · A · w⁺_t · (−ℓ_t)             behaviour cloning
         + neg_weight · (1/N⁻) Σ_{wrong}   m_t · (−A) · w⁻_t · exp(ℓ_t − sg ℓ_t)   REINFORCE, ratio ≡ 1
         + β · (1/N) Σ m_t · k3_t,   k3_t = exp(ℓ_ref − ℓ) − (ℓ_ref − ℓ) − 1

N⁺, N⁻, N count the trained tokens of the correct pool, the wrong pool and both, over the whole
optimizer step. w⁺/w⁻ are the token-level reward model's weights (rewards/token_rm.py,
``token_weights``), all ones when the token RM is off.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import torch
from torch import Tensor

from telos.schema import number
from trainers.rl.advantages import ADVANTAGES
from trainers.rl.losses import LossBatch, register_loss


@dataclass
class OREALConfig:
    """Hyper-parameters of the OREAL loss (defaults: InternLM/OREAL's 7B config)."""

    pos_weight: Annotated[
        float, number("positive_loss_factor: weight of the behaviour-cloning term", ge=0)
    ] = 1.0
    neg_weight: Annotated[
        float, number("negative_loss_factor: weight of the wrong-answer REINFORCE term", ge=0)
    ] = 0.5
    beta: Annotated[float, number("kl_coef of the k3 term against the reference (0: no reference)", ge=0)] = (
        0.01
    )
    freeze_policy_steps: Annotated[
        int, number("first steps train only the token RM (< train.steps)", ge=0)
    ] = 10


@dataclass
class OREALBatch(LossBatch):
    """A ``LossBatch`` plus what OREAL needs. ``advantages`` holds the RLOO advantages.

    ``correct`` is required (None only because the parent has defaulted fields).
    ``token_weights`` is w⁺ on correct rows and w⁻ on wrong rows (``torch.where(correct, w_pos,
    w_neg)``); None means all ones (no token RM). ``num_pos_tokens`` / ``num_neg_tokens`` are N⁺
    and N⁻ over the whole accumulated step (0 = "this micro-batch is the step"), like
    ``num_tokens`` is N.
    """

    correct: Tensor | None = None  # [B] 1.0 correct, 0.0 wrong
    token_weights: Tensor | None = None  # [B, T]
    num_pos_tokens: float = 0.0
    num_neg_tokens: float = 0.0


def rloo_advantages(correct: Tensor, group_size: int) -> Tensor:
    """OREAL's advantages: correctness c [N·G] → rewards r = 2c − 1 (±1) → RLOO,

        A_i = r_i − mean_{j≠i} r_j

    computed by the registered ``rloo`` estimator (NaN = unscorable stays NaN → A = 0).
    """
    rewards = 2.0 * correct.to(torch.float32) - 1.0
    return ADVANTAGES.get("rloo")(rewards, group_size)


def select_pairs(correct: Tensor, group_size: int, generator: torch.Generator | None = None) -> Tensor:
    """Indices [2K] into the flat [N·G] batch: per group with 0 < p < 1, one uniformly random
    correct answer followed by one uniformly random wrong answer (K informative groups).

    All-correct, all-wrong and unscorable-only groups contribute nothing; NaN (unscorable)
    answers are in neither pool.
    """
    if group_size < 1 or correct.dim() != 1 or correct.numel() % group_size != 0:
        raise ValueError(
            f"correct must be flat with a multiple of group_size={group_size} entries, "
            f"got shape {tuple(correct.shape)}"
        )
    grouped = correct.to(torch.float32).view(-1, group_size)
    picked: list[int] = []
    for g, row in enumerate(grouped):
        pos = torch.nonzero(row > 0.5).flatten()
        neg = torch.nonzero(row <= 0.5).flatten()  # NaN compares False: in neither pool
        if len(pos) == 0 or len(neg) == 0:
            continue
        i = pos[torch.randint(len(pos), (1,), generator=generator)].item()
        j = neg[torch.randint(len(neg), (1,), generator=generator)].item()
        picked += [g * group_size + i, g * group_size + j]
    return torch.tensor(picked, dtype=torch.long)


def reinforce_ratio(logps: Tensor) -> Tensor:
    """exp(ℓ − sg ℓ): value exactly 1, gradient ∂/∂ℓ = 1 · ∂ℓ — an on-policy importance ratio."""
    return torch.exp(logps - logps.detach())


@register_loss("oreal", config=OREALConfig)
def oreal_loss(batch: OREALBatch, cfg: OREALConfig) -> tuple[Tensor, dict[str, float]]:
    """OREAL: behaviour cloning on correct answers, reshaped REINFORCE on wrong ones, k3 KL.

        loss = pos_weight · Σ_{correct} m·A·w⁺·(−ℓ) / N⁺
             + neg_weight · Σ_{wrong} m·(−A)·w⁻·exp(ℓ − sg ℓ) / N⁻
             + β · Σ m·k3 / N

    N⁺ / N⁻ / N = ``num_pos_tokens`` / ``num_neg_tokens`` / ``num_tokens`` of the whole step (each
    falls back to this micro-batch's count when 0), so micro-batch shares add up to the step
    loss. An empty pool contributes 0. Metrics: the three terms, the pools' token counts in this
    micro-batch, mean token weight per pool, and mean k3 when β > 0.
    """
    if not isinstance(cfg, OREALConfig):
        raise TypeError(f"the oreal loss needs an OREALConfig, got {type(cfg).__name__}")
    if getattr(batch, "correct", None) is None:
        raise TypeError("the oreal loss needs an OREALBatch with `correct` per sequence")

    mask = batch.mask > 0
    m = batch.mask.to(batch.logps.dtype)
    correct = (batch.correct > 0.5)[:, None]  # NaN → False (its mask is 0 anyway)
    pos_m, neg_m = m * correct, m * ~correct
    adv = batch.advantages.unsqueeze(-1) if batch.advantages.dim() == 1 else batch.advantages
    adv = adv.to(batch.logps.dtype)
    w = torch.ones_like(m) if batch.token_weights is None else batch.token_weights.to(m.dtype).detach()
    if batch.is_weights is not None:
        w = w * batch.is_weights
    # Padding may hold −inf log-probs: 0·inf and inf − inf are NaN, so zero them before use.
    logps = torch.where(mask, batch.logps, torch.zeros_like(batch.logps))

    n_pos_local, n_neg_local = float(pos_m.sum()), float(neg_m.sum())
    n_pos = batch.num_pos_tokens if batch.num_pos_tokens > 0 else n_pos_local
    n_neg = batch.num_neg_tokens if batch.num_neg_tokens > 0 else n_neg_local
    n_all = batch.num_tokens if batch.num_tokens > 0 else float(m.sum())

    bc = (pos_m * adv * w * (-logps)).sum() / max(n_pos, 1.0)
    rf = (neg_m * (-adv) * w * reinforce_ratio(logps)).sum() / max(n_neg, 1.0)
    loss = cfg.pos_weight * bc + cfg.neg_weight * rf

    metrics = {
        "bc_loss": float(bc.detach()),
        "neg_loss": float(rf.detach()),
        "pos_tokens": n_pos_local,
        "neg_tokens": n_neg_local,
        "pos_token_weight_mean": float((w * pos_m).sum() / max(n_pos_local, 1.0)),
        "neg_token_weight_mean": float((w * neg_m).sum() / max(n_neg_local, 1.0)),
    }
    if cfg.beta != 0.0:
        if batch.ref_logps is None:
            raise ValueError("beta != 0 needs ref_logps in the OREALBatch")
        delta = torch.where(mask, batch.ref_logps - logps, torch.zeros_like(logps))
        k3 = torch.exp(delta) - delta - 1.0
        loss = loss + cfg.beta * (m * k3).sum() / max(n_all, 1.0)
        metrics["kl"] = float((m * k3).detach().sum() / max(float(m.sum()), 1.0))
    return loss, metrics
