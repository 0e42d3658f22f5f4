"""Policy losses: small registered pure functions, one formula each.

Notation (see ALGORITHMS.md, "GRPO family"): ℓ_t current log-prob of completion token t, ℓ_old
the log-prob under the policy that sampled, ℓ_ref the frozen reference, m_t the trained-token
mask, A_i the sequence advantage (same for every token of y_i), ρ_t = exp(ℓ_t − ℓ_old,t).

Every loss shares one per-token objective

    L_t = −min(ρ_t A_i, clip(ρ_t, 1 − ε_low, 1 + ε_high) A_i) + β · k3_t
    k3_t = exp(ℓ_ref,t − ℓ_t) − (ℓ_ref,t − ℓ_t) − 1

and differs only in how L is aggregated. Each loss returns the *micro-batch's share* of the
optimizer step's loss, so that summing the returned values over the gradient-accumulation
micro-batches of one step gives the full-step loss and the RL loop can call ``backward`` on each
without knowing which loss it runs.

The loop calls ``LOSSES.get(name)(batch, cfg) -> (loss, metrics)``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from telos.registry import Registry


@dataclass
class PolicyLossConfig:
    """Clip band and KL weight of the clipped policy-gradient objective."""

    epsilon: float = 0.2  # ε_low
    epsilon_high: float | None = None  # None → same as epsilon (DAPO's "clip-higher" sets it larger)
    beta: float = 0.0  # k3 KL coefficient; ref_logps is None when beta == 0

    def clip_band(self) -> tuple[float, float]:
        """(1 − ε_low, 1 + ε_high): the interval ρ is clipped to."""
        high = self.epsilon if self.epsilon_high is None else self.epsilon_high
        return 1.0 - self.epsilon, 1.0 + high


@dataclass
class LossBatch:
    """One micro-batch of completions plus the normalisers of the whole optimizer step.

    The normalisers count the *whole* accumulated batch on this rank (all micro-batches of one
    optimizer step). A value of 0 means "not given": the loss then treats this micro-batch as the
    whole step (B sequences, its own token count, T tokens per sequence).
    """

    logps: Tensor  # [B, T] current policy log-probs of completion tokens (requires grad)
    old_logps: Tensor  # [B, T] log-probs of the policy that sampled (detached)
    advantages: Tensor  # [B]  (a [B, T] per-token advantage is accepted too)
    mask: Tensor  # [B, T] float, 1 on trained completion tokens
    ref_logps: Tensor | None = None
    num_sequences: float = (
        0  # a per-rank average under DDP, so not always whole  # sequences in the accumulated batch
    )
    num_tokens: float = 0.0  # trained tokens in the accumulated batch
    num_micro_batches: int = 1
    max_completion_length: int = 0
    # [B, T] sampler-mismatch weights w_t (trainers/rl/correction.py), constants; None = all 1
    is_weights: Tensor | None = None


LossFn = Callable[[LossBatch, PolicyLossConfig], tuple[Tensor, dict[str, float]]]
LOSSES: Registry[LossFn] = Registry("loss")
LOSS_CONFIGS: dict[str, type] = {}  # loss name → the config type it takes


def register_loss(name: str, config: type | None = None) -> Callable[[LossFn], LossFn]:
    """Decorator: make a loss selectable by name (the RL loop looks it up by name). ``config``
    is the config type the loss takes (default ``PolicyLossConfig``, the GRPO family's)."""
    LOSS_CONFIGS[name] = config or PolicyLossConfig
    return LOSSES.register(name)


def policy_loss_names() -> list[str]:
    """The registered losses driven by a ``PolicyLossConfig`` — what ``grpo.loss_type`` offers."""
    return [n for n in LOSSES.names() if LOSS_CONFIGS.get(n) is PolicyLossConfig]


@dataclass
class _PerToken:
    loss: Tensor  # [B, T] L_t, exactly 0 on untrained tokens
    ratio: Tensor  # [B, T] ρ_t
    advantages: Tensor  # [B, 1] or [B, T], broadcastable to [B, T]
    kl: Tensor | None  # [B, T] k3_t, or None when β = 0


def _per_token(batch: LossBatch, cfg: PolicyLossConfig) -> _PerToken:
    """L_t = −min(ρA, clip(ρ, 1−ε_low, 1+ε_high)A) + β·k3, shared by every aggregation."""
    mask = batch.mask > 0
    adv = batch.advantages.unsqueeze(-1) if batch.advantages.dim() == 1 else batch.advantages
    adv = adv.to(batch.logps.dtype)
    # Padding positions may hold garbage log-probs (−inf from a masked softmax, stale values):
    # `0 * inf` would be NaN in the forward pass and in the backward pass of exp(), so the
    # log-ratio is zeroed *before* exp(). `where` sends zero gradient to the unselected branch.
    log_ratio = torch.where(mask, batch.logps - batch.old_logps, torch.zeros_like(batch.logps))
    ratio = torch.exp(log_ratio)
    lo, hi = cfg.clip_band()
    clipped = torch.clamp(ratio, lo, hi)
    loss = -torch.minimum(ratio * adv, clipped * adv)
    if batch.is_weights is not None:  # before the KL term, which needs no correction
        loss = loss * batch.is_weights

    kl = None
    if cfg.beta != 0.0:
        if batch.ref_logps is None:
            raise ValueError("beta != 0 needs ref_logps in the LossBatch")
        delta = torch.where(mask, batch.ref_logps - batch.logps, torch.zeros_like(batch.logps))
        kl = torch.exp(delta) - delta - 1.0  # k3: unbiased, always ≥ 0
        loss = loss + cfg.beta * kl

    # Multiply (not only select) by the mask so fractional token weights keep working.
    loss = loss * batch.mask
    return _PerToken(loss=loss, ratio=ratio, advantages=adv, kl=kl)


@torch.no_grad()
def _metrics(pt: _PerToken, batch: LossBatch, cfg: PolicyLossConfig) -> dict[str, float]:
    """Clip fractions (TRL's definitions), mean ratio and mean k3 over the trained tokens."""
    mask = (batch.mask > 0).to(pt.ratio.dtype)
    count = mask.sum().clamp(min=1.0)  # an empty micro-batch reports 0, not NaN

    def masked_mean(x: Tensor) -> float:
        return float((x.to(mask.dtype) * mask).sum() / count)

    # Only clips that change the gradient count: below the band with A<0, above it with A>0.
    lo, hi = cfg.clip_band()
    low = (pt.ratio < lo) & (pt.advantages < 0)
    high = (pt.ratio > hi) & (pt.advantages > 0)
    out = {
        "clip_ratio/low_mean": masked_mean(low),
        "clip_ratio/high_mean": masked_mean(high),
        "clip_ratio/region_mean": masked_mean(low | high),
        "ratio_mean": masked_mean(pt.ratio),
    }
    if pt.kl is not None:
        out["kl"] = masked_mean(pt.kl)
    return out


def _num_sequences(batch: LossBatch) -> float:
    return batch.num_sequences if batch.num_sequences > 0 else batch.logps.shape[0]


@register_loss("grpo")
def grpo_loss(batch: LossBatch, cfg: PolicyLossConfig) -> tuple[Tensor, dict[str, float]]:
    """GRPO: mean over each sequence's tokens, then mean over the step's sequences.

        loss = Σ_i [ Σ_t m_it L_it / Σ_t m_it ] / N_seq

    N_seq = ``num_sequences`` of the whole step, so the micro-batch shares sum to the step mean.
    Long answers get less weight per token (the length bias Dr. GRPO removes). A sequence with no
    trained tokens contributes 0.
    """
    pt = _per_token(batch, cfg)
    seq_tokens = batch.mask.sum(-1).clamp(min=1.0)
    loss = (pt.loss.sum(-1) / seq_tokens).sum() / _num_sequences(batch)
    return loss, _metrics(pt, batch, cfg)


@register_loss("dapo")
def dapo_loss(batch: LossBatch, cfg: PolicyLossConfig) -> tuple[Tensor, dict[str, float]]:
    """DAPO (token-level, TRL's default): every trained token of the step weighs the same.

        loss = Σ_{i,t} m_it L_it / N_tok

    N_tok = ``num_tokens``, the trained tokens of the whole accumulated step on this rank.
    """
    pt = _per_token(batch, cfg)
    num_tokens = batch.num_tokens if batch.num_tokens > 0 else float(batch.mask.sum())
    loss = pt.loss.sum() / max(num_tokens, 1.0)
    return loss, _metrics(pt, batch, cfg)


@register_loss("bnpo")
def bnpo_loss(batch: LossBatch, cfg: PolicyLossConfig) -> tuple[Tensor, dict[str, float]]:
    """BNPO: token mean within each micro-batch, then mean over the step's micro-batches.

        loss = [ Σ_{i,t} m_it L_it / Σ_{i,t} m_it ] / K,   K = ``num_micro_batches``

    Equals ``dapo`` when every micro-batch has the same number of trained tokens; otherwise a
    token's weight depends on which micro-batch it landed in (that is what BNPO means).
    """
    pt = _per_token(batch, cfg)
    micro_tokens = batch.mask.sum().clamp(min=1.0)
    loss = pt.loss.sum() / micro_tokens / max(batch.num_micro_batches, 1)
    return loss, _metrics(pt, batch, cfg)


@register_loss("dr_grpo")
def dr_grpo_loss(batch: LossBatch, cfg: PolicyLossConfig) -> tuple[Tensor, dict[str, float]]:
    """Dr. GRPO: token sum divided by a constant, so no length- or batch-dependent weighting.

        loss = Σ_{i,t} m_it L_it / (N_seq · L_max)

    N_seq = ``num_sequences`` of the step, L_max = ``max_completion_length`` (generation limit).
    Pair it with unscaled advantages (``scale: none``).
    """
    pt = _per_token(batch, cfg)
    max_len = batch.max_completion_length if batch.max_completion_length > 0 else batch.logps.shape[1]
    loss = pt.loss.sum() / max(_num_sequences(batch) * max_len, 1)
    return loss, _metrics(pt, batch, cfg)
