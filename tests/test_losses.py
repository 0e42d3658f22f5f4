"""Policy losses against numbers worked out by hand.

The tiny batch used throughout: 2 sequences × 3 tokens, the last token of sequence 1 is
padding (mask 0) and carries a garbage ratio of 3.0 that must not leak into anything.

    ratios ρ   seq 0 (A = +1): [1.0, 1.5, 0.5]
               seq 1 (A = −1): [0.5, 1.5, 3.0 (pad)]

With ε = 0.2 the clip band is [0.8, 1.2] and L_t = −min(ρA, clip(ρ)A):

    seq 0, A=+1: ρ=1.0 → −min(1.0, 1.0)   = −1.0
                 ρ=1.5 → −min(1.5, 1.2)   = −1.2   clipped high (gradient 0)
                 ρ=0.5 → −min(0.5, 0.8)   = −0.5   below band, A>0: unclipped ρ wins
    seq 1, A=−1: ρ=0.5 → −min(−0.5, −0.8) = +0.8   clipped low (gradient 0)
                 ρ=1.5 → −min(−1.5, −1.2) = +1.5   above band, A<0: unclipped ρ wins
                 pad   → 0

    seq 0: sum −2.7 over 3 tokens (mean −0.9); seq 1: sum 2.3 over 2 tokens (mean 1.15)
    all:   sum −0.4 over 5 tokens
"""

from __future__ import annotations

import math

import pytest
import torch

from telos.errors import UserError
from trainers.rl.losses import LOSSES, LossBatch, PolicyLossConfig

RATIOS = [[1.0, 1.5, 0.5], [0.5, 1.5, 3.0]]
MASK = [[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]]
ADV = [1.0, -1.0]
VARIANTS = ("grpo", "dapo", "bnpo", "dr_grpo")
# Whole-step normalisers of the tiny batch: 2 sequences, 5 trained tokens, L_max = 4
# (deliberately ≠ T = 3, so dr_grpo's constant is visible).
NORMS = {"num_sequences": 2, "num_tokens": 5.0, "max_completion_length": 4}


def make_batch(ratios=RATIOS, mask=MASK, adv=ADV, ref_delta=None, **norms: float) -> LossBatch:
    """Log-probs whose ratio to ``old_logps`` is ``ratios``; ref_logps = logps + ref_delta."""
    old = torch.full((len(ratios), len(ratios[0])), -1.0)
    logps = (old + torch.log(torch.tensor(ratios))).requires_grad_()
    ref = None if ref_delta is None else logps.detach() + torch.tensor(ref_delta)
    return LossBatch(
        logps=logps,
        old_logps=old,
        advantages=torch.tensor(adv),
        mask=torch.tensor(mask),
        ref_logps=ref,
        **norms,
    )


def run(name: str, batch: LossBatch, cfg: PolicyLossConfig | None = None):
    return LOSSES.get(name)(batch, cfg or PolicyLossConfig())


def test_registry_has_the_four_variants():
    assert set(VARIANTS) <= set(LOSSES.names())
    with pytest.raises(UserError, match="dapo"):
        LOSSES.get("ppo2")


@pytest.mark.parametrize(
    "name, expected",
    [
        ("grpo", 0.125),  # (−2.7/3 + 2.3/2) / 2 = (−0.9 + 1.15) / 2
        ("dapo", -0.08),  # −0.4 / 5 tokens
        ("bnpo", -0.08),  # (−0.4 / 5 tokens in this micro-batch) / 1 micro-batch
        ("dr_grpo", -0.05),  # −0.4 / (2 sequences × L_max 4)
    ],
)
def test_loss_value_by_hand(name, expected):
    loss, _ = run(name, make_batch(**NORMS))
    assert loss.item() == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize(
    "name, expected",
    [
        # ∂L_t/∂ℓ_t = −ρA where unclipped (dρ/dℓ = ρ), 0 where clipped or padded; then the
        # aggregation's weight:
        #   seq 0: [−1·1, 0 (clipped), −0.5·1]   seq 1: [0 (clipped), +1.5·1, 0 (pad)]
        ("grpo", [[-1 / 6, 0, -0.5 / 6], [0, 1.5 / 4, 0]]),  # ÷ (3 tokens · 2 seqs), ÷ (2 · 2)
        ("dapo", [[-0.2, 0, -0.1], [0, 0.3, 0]]),  # ÷ 5 tokens
        ("bnpo", [[-0.2, 0, -0.1], [0, 0.3, 0]]),  # ÷ 5 tokens ÷ 1 micro-batch
        ("dr_grpo", [[-0.125, 0, -0.0625], [0, 0.1875, 0]]),  # ÷ (2 seqs · 4)
    ],
)
def test_gradient_by_hand_zero_where_clipped(name, expected):
    batch = make_batch(**NORMS)
    loss, _ = run(name, batch)
    loss.backward()
    torch.testing.assert_close(batch.logps.grad, torch.tensor(expected), atol=1e-6, rtol=0)


def test_metrics_by_hand():
    _, m = run("dapo", make_batch(**NORMS))
    # low: seq1 t0 (ρ=0.5<0.8, A<0) → 1/5; high: seq0 t1 (ρ=1.5>1.2, A>0) → 1/5.
    # seq0 t2 (ρ=0.5, A>0) and seq1 t1 (ρ=1.5, A<0) are outside the band but not clipped.
    assert m["clip_ratio/low_mean"] == pytest.approx(0.2)
    assert m["clip_ratio/high_mean"] == pytest.approx(0.2)
    assert m["clip_ratio/region_mean"] == pytest.approx(0.4)
    # (1.0 + 1.5 + 0.5 + 0.5 + 1.5) / 5; the padded 3.0 is ignored.
    assert m["ratio_mean"] == pytest.approx(1.0)
    assert "kl" not in m  # beta = 0
    assert all(isinstance(v, float) for v in m.values())


def test_epsilon_high_widens_only_the_upper_band():
    # Band [0.8, 1.6]: seq0 t1 (ρ=1.5, A>0) is no longer clipped → −1.5 instead of −1.2;
    # the low side (seq1 t0 → +0.8) is unchanged.  Sum −1.0−1.5−0.5+0.8+1.5 = −0.7; ÷ 5.
    loss, m = run("dapo", make_batch(**NORMS), PolicyLossConfig(epsilon=0.2, epsilon_high=0.6))
    assert loss.item() == pytest.approx(-0.14, abs=1e-6)
    assert m["clip_ratio/high_mean"] == 0.0
    assert m["clip_ratio/low_mean"] == pytest.approx(0.2)


def test_kl_term_by_hand():
    ln2 = math.log(2.0)
    # ref − logp: seq0 [ln2, 0, 0], seq1 [−ln2, 0, pad (garbage 99, ignored)].
    # k3(δ) = e^δ − δ − 1:  k3(ln2) = 2 − ln2 − 1 = 0.30685,  k3(−ln2) = 0.5 + ln2 − 1 = 0.19315,
    # k3(0) = 0; Σ k3 = 0.5.   dapo = (−0.4 + 0.1 · 0.5) / 5 = −0.07;  mean k3 = 0.5 / 5 = 0.1.
    batch = make_batch(ref_delta=[[ln2, 0.0, 0.0], [-ln2, 0.0, 99.0]], **NORMS)
    loss, m = run("dapo", batch, PolicyLossConfig(beta=0.1))
    assert loss.item() == pytest.approx(-0.07, abs=1e-6)
    assert m["kl"] == pytest.approx(0.1, abs=1e-6)
    loss.backward()
    # ∂k3/∂ℓ = 1 − e^δ.  seq0 t0: PG −0.2 plus 0.1·(1 − 2)/5 = −0.02 → −0.22.
    # seq1 t0: PG 0 (clipped) plus 0.1·(1 − 0.5)/5 = +0.01.
    assert batch.logps.grad[0, 0].item() == pytest.approx(-0.22, abs=1e-6)
    assert batch.logps.grad[1, 0].item() == pytest.approx(0.01, abs=1e-6)
    assert batch.logps.grad[1, 2].item() == 0.0


def test_beta_without_ref_logps_is_an_error():
    with pytest.raises(ValueError, match="ref_logps"):
        run("dapo", make_batch(**NORMS), PolicyLossConfig(beta=0.1))


def _split(batch: LossBatch, rows: list[int], **norms: float) -> LossBatch:
    return LossBatch(
        logps=batch.logps[rows],
        old_logps=batch.old_logps[rows],
        advantages=batch.advantages[rows],
        mask=batch.mask[rows],
        **norms,
    )


@pytest.mark.parametrize("name", ["grpo", "dapo", "dr_grpo"])
def test_micro_batch_shares_sum_to_the_full_loss(name):
    # One sequence per micro-batch, uneven token counts (3 and 2): the shares must still add
    # up to the one-batch loss, and so must the gradients.
    full = make_batch(**NORMS)
    full_loss, _ = run(name, full)
    full_loss.backward()

    whole = make_batch(**NORMS)
    parts = [_split(whole, [i], **NORMS, num_micro_batches=2) for i in (0, 1)]
    total = sum(run(name, p)[0] for p in parts)
    total.backward()
    assert total.item() == pytest.approx(full_loss.item(), abs=1e-6)
    torch.testing.assert_close(whole.logps.grad, full.logps.grad)


def test_bnpo_normalises_per_micro_batch():
    # Uneven split: bnpo = mean over micro-batches of each one's token mean
    #   = (−2.7/3 + 2.3/2) / 2 = 0.125  — not the one-batch −0.08 (that is BNPO by definition).
    whole = make_batch(**NORMS)
    parts = [_split(whole, [i], **NORMS, num_micro_batches=2) for i in (0, 1)]
    assert sum(run("bnpo", p)[0].item() for p in parts) == pytest.approx(0.125, abs=1e-6)

    # Even split (no padding, 3 tokens each): shares sum to the one-batch loss.
    # Unpadded, seq1 t2 has ρ=3.0, A=−1 → −min(−3, −1.2) = 3.0, so seq1 sums to 5.3;
    # (−2.7 + 5.3) / 6 = 0.43333 = ((−2.7/3) + (5.3/3)) / 2.
    full_mask = [[1.0] * 3, [1.0] * 3]
    full_loss, _ = run("bnpo", make_batch(mask=full_mask))
    whole = make_batch(mask=full_mask)
    parts = [_split(whole, [i], num_micro_batches=2) for i in (0, 1)]
    total = sum(run("bnpo", p)[0] for p in parts)
    assert full_loss.item() == pytest.approx(2.6 / 6, abs=1e-6)
    assert total.item() == pytest.approx(2.6 / 6, abs=1e-6)


def test_gradient_nonzero_at_ratio_one_although_loss_is_zero():
    # μ = 1 (one optimizer step per generation): ρ ≡ 1.  With zero-mean advantages the dapo
    # loss is −(1·3 − 1·3)/6 = 0, yet ∂L/∂ℓ = −A/6 per token: [−1/6]*3 and [+1/6]*3.
    batch = make_batch(ratios=[[1.0] * 3, [1.0] * 3], mask=[[1.0] * 3, [1.0] * 3])
    loss, _ = run("dapo", batch)
    assert loss.item() == pytest.approx(0.0, abs=1e-7)
    expected = torch.tensor([[-1 / 6] * 3, [1 / 6] * 3])
    loss.backward()
    torch.testing.assert_close(batch.logps.grad, expected)


@pytest.mark.parametrize("name", VARIANTS)
def test_empty_micro_batch_is_finite(name):
    # No trained tokens, and padding holds garbage that would poison a naive `L * mask`:
    # old log-probs of −inf (ratio +inf) and reference log-probs of +inf.
    logps = torch.full((2, 3), -1.0, requires_grad=True)
    batch = LossBatch(
        logps=logps,
        old_logps=torch.full((2, 3), -math.inf),
        advantages=torch.tensor([1.0, -1.0]),
        mask=torch.zeros(2, 3),
        ref_logps=torch.full((2, 3), math.inf),
        **NORMS,
        num_micro_batches=2,
    )
    loss, m = run(name, batch, PolicyLossConfig(beta=0.1))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(logps.grad, torch.zeros(2, 3))
    assert all(math.isfinite(v) for v in m.values())


def test_missing_normalisers_mean_single_micro_batch():
    # No step normalisers given: the micro-batch is the whole step (2 seqs, 5 tokens, T = 3).
    batch = make_batch()
    assert run("grpo", batch)[0].item() == pytest.approx(0.125, abs=1e-6)
    assert run("dapo", batch)[0].item() == pytest.approx(-0.08, abs=1e-6)
    assert run("dr_grpo", batch)[0].item() == pytest.approx(-0.4 / 6, abs=1e-6)  # ÷ (2 · 3)


def test_per_token_advantages_broadcast_like_per_sequence():
    seq = make_batch(**NORMS)
    tok = make_batch(adv=[[1.0] * 3, [-1.0] * 3], **NORMS)
    assert run("grpo", tok)[0].item() == pytest.approx(run("grpo", seq)[0].item())
