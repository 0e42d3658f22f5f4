"""NFT — Negative-aware Fine-Tuning (ALGORITHMS.md, "NFT"): the loss and the group filter.

Notation: c_i ∈ {0,1} correctness of answer y_i, p the pass rate of its prompt's group,
p̂ = clamp(p, 0.02, 0.98), Δ_t = ℓ_t − ℓ_old,t, R_t = exp(min(Δ_t, 10)) the likelihood ratio of
the trained policy to the one that sampled, m_t the trained-token mask, sg = stop-gradient.

NFT treats the sampling policy as a mixture of a positive and a negative policy and expresses the
negative one through the trained policy: π⁻/π_old = (1 − p̂R)/(1 − p̂). Maximum likelihood on
correct answers under π_θ and on wrong answers under π⁻ gives, per token,

    correct:  L_t = −log R_t
    wrong:    L_t = −log clampST((1 − p̂R_t)/(1 − p̂), min=1)

clampST(x, m) has the forward value max(x, m) and the gradient of x. Each prompt is weighted by
ω(q) ∈ {1 − p̂ (Dr. GRPO), sqrt((1 − p̂)/p̂) (GRPO), 1}; no KL term and no PPO clip.

At R = 1 (one optimizer step per rollout) the gradients are exactly those of the GRPO family:
∂L/∂ℓ = −1 for a correct token and p̂/(1 − p̂) for a wrong one, so ω = 1 − p̂ gives −(1 − p̂) and
+p̂, the Dr. GRPO per-token gradients −A with A = c − p (tests/test_nft.py checks both forms).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

import torch
from torch import Tensor

from telos.errors import UserError
from telos.schema import number, number_as_text, text
from trainers.rl.losses import LossBatch, register_loss

OMEGAS = ("1-p", "sqrt", "1")
LEVELS = ("token", "sequence")


@dataclass
class NFTConfig:
    """Hyper-parameters of the NFT loss (defaults: the official NVlabs/NFT recipe)."""

    omega: Annotated[
        Literal["1-p", "sqrt", "1"], text("prompt weight ω(q): 1−p̂, sqrt((1−p̂)/p̂) or 1"), number_as_text
    ] = "1-p"
    neg_weight: Annotated[
        float, number("scales the wrong-answer term; 0 gives rejection-sampling FT (RFT)", ge=0)
    ] = 1.0
    normalizer: Annotated[float, number("constant divisor of the summed loss (official: 1000)", gt=0)] = (
        1000.0
    )
    level: Annotated[
        Literal["token", "sequence"], text("one likelihood ratio per token, or per sequence")
    ] = "token"
    p_clamp: Annotated[
        tuple[float, float], text("p̂ = clamp(p, lo, hi): two numbers [lo, hi], 0 < lo <= hi < 1")
    ] = (0.02, 0.98)
    # official: ``clamp(max=10.0)`` on the log-ratio, so R ≤ e^10; the gradient through a capped Δ is 0
    ratio_cap: Annotated[float, number("cap on the log-ratio before exp", gt=0)] = 10.0

    def __post_init__(self) -> None:
        # a recipe is checked by its schema; these also guard a config built in code
        if self.omega not in OMEGAS:
            raise UserError(f"nft omega {self.omega!r} is not valid; valid: {', '.join(OMEGAS)}")
        if self.level not in LEVELS:
            raise UserError(f"nft level {self.level!r} is not valid; valid: {', '.join(LEVELS)}")
        try:  # a list (from code) becomes the tuple the loss expects
            lo, hi = (float(v) for v in self.p_clamp)
        except (TypeError, ValueError):
            raise UserError(f"nft p_clamp must be two numbers [lo, hi], got {self.p_clamp!r}") from None
        self.p_clamp = (lo, hi)
        if not 0.0 < lo <= hi < 1.0:
            raise UserError(f"nft p_clamp must satisfy 0 < lo <= hi < 1, got {self.p_clamp}")


@dataclass
class NFTBatch(LossBatch):
    """A ``LossBatch`` plus what NFT needs per sequence. ``advantages`` is ignored by NFT.

    ``correct`` and ``pass_rate`` are required (they default to None only because the parent
    dataclass has defaulted fields). An unscorable answer may carry NaN correctness; its mask
    must then be 0, as the RL loop already does for unscorable answers.
    """

    correct: Tensor | None = None  # [B] 1.0 correct, 0.0 wrong
    pass_rate: Tensor | None = None  # [B] p of the sequence's group (unclamped; the loss clamps)


def nft_omega(p_hat: Tensor, omega: str) -> Tensor:
    """ω(q): 1 − p̂ ("1-p"), sqrt((1 − p̂)/p̂) ("sqrt") or 1 ("1"), same shape as p̂."""
    if omega == "1-p":
        return 1.0 - p_hat
    if omega == "sqrt":
        return torch.sqrt((1.0 - p_hat) / p_hat)
    if omega == "1":
        return torch.ones_like(p_hat)
    raise UserError(f"nft omega {omega!r} is not valid; valid: {', '.join(OMEGAS)}")


def clamp_min_st(x: Tensor, min_value: float) -> Tensor:
    """Straight-through clamp: forward max(x, min_value), gradient of x (x + sg(max(x, m) − x)).

    Written as ``sg(max(x, m)) + (x − sg(x))`` so the forward value is *exactly* max(x, m):
    ``x + sg(max(x, m) − x)`` rounds in float32 when |x| is large (x ≈ −4·10⁴ at R = e^10 gives
    an error of ~4·10⁻³ in a value that must be ≥ m for the log that follows).
    """
    return torch.clamp(x, min=min_value).detach() + (x - x.detach())


def nft_per_sequence_terms(
    log_ratio: Tensor, correct: Tensor, p_hat: Tensor, neg_weight: float
) -> tuple[Tensor, Tensor]:
    """The NFT objective for log-ratios ``log_ratio`` (already capped) of any shape [B, ...].

        correct:  L = −log R = −log_ratio
        wrong:    L = −neg_weight · log clampST((1 − p̂R)/(1 − p̂), min=1)

    ``correct`` (bool) and ``p_hat`` broadcast against ``log_ratio``. Returns (L, clamped) where
    ``clamped`` marks wrong-answer entries whose forward value was raised to 1 (p̂R > 1, so
    x < 1 and possibly ≤ 0): their loss is 0 in the forward pass and the gradient is
    −(1/1)·∂x/∂ℓ = p̂R/(1 − p̂), finite because the clamped forward value ≥ 1 is what the
    log sees.
    """
    ratio = torch.exp(log_ratio)
    x = (1.0 - p_hat * ratio) / (1.0 - p_hat)
    neg = -torch.log(clamp_min_st(x, 1.0)) * neg_weight
    pos = -log_ratio  # = −log exp(Δ), exact and without the exp
    return torch.where(correct, pos, neg), (~correct) & (x < 1.0)


@register_loss("nft", config=NFTConfig)
def nft_loss(batch: NFTBatch, cfg: NFTConfig) -> tuple[Tensor, dict[str, float]]:
    """NFT (Negative-aware Fine-Tuning), token or sequence level.

        token:     loss = Σ_{i,t} m_it · ω_i · L_it / normalizer,   R_it = exp(min(Δ_it, cap))
        sequence:  loss = Σ_i ω_i · L_i / normalizer,   R_i = exp(min(Σ_t m_it Δ_it / Σ_t m_it, cap))

    with L = −log R on correct answers, −neg_weight · log clampST((1 − p̂R)/(1 − p̂), 1) on wrong
    ones, p̂ = clamp(p, p_clamp), ω = 1 − p̂ | sqrt((1 − p̂)/p̂) | 1.  The divisor is a constant, so
    the micro-batch losses of one optimizer step simply add up to the step's loss.

    The sequence level uses the *mean* log-ratio over the answer's tokens (the official code sums
    them) and counts each answer once: at R = 1 its gradient is that of the ``grpo`` aggregation
    (token mean per sequence), as the token level's is that of ``dr_grpo`` (token sum).
    Metrics: ``p_hat_mean`` (over sequences with trained tokens), ``neg_clamped_frac`` (share of
    trained wrong-answer tokens — sequences at sequence level — whose forward value was clamped),
    ``ratio_mean`` (mean R over trained tokens or sequences).
    """
    if not isinstance(cfg, NFTConfig):
        raise TypeError(f"the nft loss needs an NFTConfig, got {type(cfg).__name__}")
    if getattr(batch, "correct", None) is None or getattr(batch, "pass_rate", None) is None:
        raise TypeError("the nft loss needs an NFTBatch with `correct` and `pass_rate` per sequence")

    mask = batch.mask > 0
    weights = batch.mask.to(batch.logps.dtype)
    lo, hi = cfg.p_clamp
    p_hat = batch.pass_rate.to(batch.logps.dtype).nan_to_num(0.5).clamp(lo, hi)  # [B]
    correct = batch.correct > 0.5  # NaN (unscorable) → False; its mask is 0 anyway
    omega = nft_omega(p_hat, cfg.omega)
    # Padding may hold garbage (−inf old log-probs): zero the log-ratio *before* exp, and use
    # `where` so the unselected branch gets zero gradient (same guard as trainers/rl/losses.py).
    delta = torch.where(mask, batch.logps - batch.old_logps, torch.zeros_like(batch.logps))

    if cfg.level == "token":
        log_ratio = torch.clamp(delta, max=cfg.ratio_cap)
        per_tok, clamped = nft_per_sequence_terms(log_ratio, correct[:, None], p_hat[:, None], cfg.neg_weight)
        if batch.is_weights is not None:
            per_tok = per_tok * batch.is_weights
        loss = (per_tok * omega[:, None] * weights).sum() / cfg.normalizer
        counted, neg_units = mask, mask & ~correct[:, None]
    else:
        tokens = weights.sum(-1)
        has_tokens = tokens > 0
        log_ratio = torch.clamp((delta * weights).sum(-1) / tokens.clamp(min=1e-8), max=cfg.ratio_cap)
        per_seq, clamped = nft_per_sequence_terms(log_ratio, correct, p_hat, cfg.neg_weight)
        per_seq = torch.where(has_tokens, per_seq, torch.zeros_like(per_seq))
        if batch.is_weights is not None:  # the sequence's mean token weight
            per_seq = per_seq * (batch.is_weights * weights).sum(-1) / tokens.clamp(min=1e-8)
        loss = (per_seq * omega).sum() / cfg.normalizer
        counted, neg_units = has_tokens, has_tokens & ~correct

    with torch.no_grad():
        seqs = mask.any(-1)
        ratio = torch.exp(log_ratio)
        metrics = {
            "p_hat_mean": float(p_hat[seqs].mean()) if seqs.any() else 0.0,
            "neg_clamped_frac": float((clamped & neg_units).sum() / neg_units.sum().clamp(min=1)),
            "ratio_mean": float((ratio * counted).sum() / counted.sum().clamp(min=1)),
        }
    return loss, metrics


def nft_group_filter(correct: Tensor, group_size: int) -> tuple[Tensor, Tensor]:
    """Groups with signal and their pass rates: correct [N·G] → (keep [N] bool, p [N]).

        p_g = mean of the group's scorable correctness values (NaN = unscorable, left out)
        keep_g = 0 < p_g < 1

    All-correct and all-wrong groups are dropped (NFT's p̂ clamp would otherwise give them a
    spurious signal); a group with no scorable answer has p = NaN and is dropped too.
    """
    if group_size < 1 or correct.dim() != 1 or correct.numel() % group_size != 0:
        raise ValueError(
            f"correct must be flat with a multiple of group_size={group_size} entries, "
            f"got shape {tuple(correct.shape)}"
        )
    grouped = correct.to(torch.float32).view(-1, group_size)
    p = torch.nanmean(grouped, dim=1)
    keep = (p > 0.0) & (p < 1.0)  # NaN compares False → dropped
    return keep, p


def nft_pass_rates(correct: Tensor, group_size: int) -> Tensor:
    """Each answer's group pass rate p, repeated over the group: correct [N·G] → [N·G].

    What an ``NFTBatch.pass_rate`` holds (the loss clamps it to p̂ itself).
    """
    _, p = nft_group_filter(correct, group_size)
    return p.repeat_interleave(group_size)


__all__ = [
    "NFTBatch",
    "NFTConfig",
    "clamp_min_st",
    "nft_group_filter",
    "nft_loss",
    "nft_omega",
    "nft_pass_rates",
    "nft_per_sequence_terms",
]
