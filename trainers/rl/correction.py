"""Sampler/trainer mismatch correction: a truncated importance weight on each trained token.

A rollout engine (vLLM, a remote server) computes the sampled tokens' log-probs with its own
kernels, so ℓ_sampler,t differs slightly from the trainer's ℓ_old,t for the same weights. The
policy gradient is then off-policy by the ratio r = π_old / π_sampler, and the loss multiplies
each token's objective by a bounded version of it (as TRL's ``vllm_importance_sampling_*``):

    token_truncate:     w_t = min(exp(ℓ_old,t − ℓ_sampler,t), C)
    token_mask:         w_t = exp(ℓ_old,t − ℓ_sampler,t)  if it is ≤ C, else 0
    sequence_truncate:  w_t = min(exp(Σ_s m_s (ℓ_old,s − ℓ_sampler,s)), C)     (same for every t of y)
    sequence_mask:      w_t = exp(Σ_s m_s (ℓ_old,s − ℓ_sampler,s))  if it is ≤ C, else 0

C = ``cap``; m the trained-token mask. Weights are constants (no gradient).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from telos.types import Completion

CORRECTION_MODES = ("none", "token_truncate", "token_mask", "sequence_truncate", "sequence_mask")


def importance_weights(
    old_logps: Tensor, sampler_logps: Tensor, mask: Tensor, mode: str, cap: float
) -> Tensor:
    """[B, T] weights w_t of the module docstring (1 everywhere for ``mode == "none"``).

    A sampler log-prob that is NaN (an engine that did not report it) counts as no mismatch.
    """
    if mode not in CORRECTION_MODES:
        raise ValueError(f"unknown correction mode {mode!r}; valid: {', '.join(CORRECTION_MODES)}")
    if mode == "none":
        return torch.ones_like(old_logps)
    diff = torch.nan_to_num((old_logps.detach() - sampler_logps) * mask, nan=0.0)
    if mode.startswith("sequence"):
        diff = diff.sum(-1, keepdim=True).expand_as(old_logps)
    ratio = torch.exp(diff)
    if mode.endswith("truncate"):
        return ratio.clamp(max=cap)
    return ratio.masked_fill(ratio > cap, 0.0)


def mismatch_metrics(
    old_logps: Tensor, sampler_logps: Tensor, mask: Tensor, weights: Tensor, cap: float
) -> dict[str, float]:
    """Logged beside the loss: how far the sampler is from the trainer, and what the weight did.

    ``sampler_kl`` is the k3 estimate of KL(π_sampler ‖ π_old) on the sampled tokens; ``is_weight_*``
    summarise w over the trained tokens; ``is_capped_frac`` is the share of tokens the cap touched
    (truncated or masked).
    """
    m = mask > 0
    if not bool(m.any()):
        return {}
    delta = (old_logps.detach() - sampler_logps)[m]
    delta = torch.nan_to_num(delta, nan=0.0)
    w = weights[m]
    return {
        "sampler_kl": float((torch.exp(delta) - delta - 1.0).mean()),
        "sampler_logp_abs_diff": float(delta.abs().mean()),
        "is_weight_mean": float(w.mean()),
        "is_weight_min": float(w.min()),
        # truncation leaves exactly C, masking exactly 0
        "is_capped_frac": float(((w >= cap) | (w == 0)).float().mean()) if math.isfinite(cap) else 0.0,
    }


def sampler_logps_tensor(completions: list[Completion], width: int) -> Tensor:
    """[B, width] the engines' per-token log-probs, aligned with the packed completion columns;
    NaN where a completion is shorter or its engine gave none."""
    out = torch.full((len(completions), width), float("nan"))
    for i, c in enumerate(completions):
        if c.logprobs:
            n = min(width, len(c.logprobs))
            out[i, :n] = torch.tensor(c.logprobs[:n], dtype=torch.float32)
    return out
