"""OREAL: RLOO advantages, pair selection and the loss, against numbers worked out by hand.

The hand batch (one pair, 3 token columns, β = 0.01, pos_weight 1, neg_weight 0.5):

    row 0 correct, A = +1.5: ℓ = [−1, −2, pad −inf]   mask [1, 1, 0]   w⁺ = [1, 0.5, 9 (pad)]
    row 1 wrong,   A = −0.5: ℓ = [−1, −1, −3]         mask [1, 1, 1]   w⁻ = [0.2, 1, 0]
    ℓ_ref − ℓ = δ: row 0 [ln 2, 0, 99 (pad)], row 1 [0, −ln 2, 0]
    N⁺ = 2, N⁻ = 3, N = 5 trained tokens

    BC   = Σ A·w⁺·(−ℓ) / N⁺ = 1.5·(1·1 + 0.5·2) / 2            = 1.5
    NEG  = Σ (−A)·w⁻·exp(ℓ − sg ℓ) / N⁻ = 0.5·(0.2 + 1 + 0) / 3  = 0.2
    k3(δ) = e^δ − δ − 1: k3(ln 2) = 0.306853, k3(−ln 2) = 0.193147, Σ = 0.5
    KL   = 0.01 · 0.5 / 5                                       = 0.001
    loss = 1·1.5 + 0.5·0.2 + 0.001                              = 1.601

    ∂/∂ℓ: BC  −A·w⁺/N⁺:            row 0 [−1.5·1/2, −1.5·0.5/2] = [−0.75, −0.375]
          NEG 0.5·(−A)·w⁻/N⁻:       row 1 [0.5·0.5·0.2/3, 0.5·0.5·1/3, 0] = [0.016667, 0.083333, 0]
          KL  β·(1 − e^δ)/N:        row 0 t0: 0.01·(1 − 2)/5 = −0.002; row 1 t1: 0.01·(1 − ½)/5 = +0.001
"""

from __future__ import annotations

import math

import pytest
import torch

from trainers.rl.losses import LOSSES, PolicyLossConfig
from trainers.rl.oreal import OREALBatch, OREALConfig, reinforce_ratio, rloo_advantages, select_pairs

LN2 = math.log(2.0)


def hand_batch(**overrides) -> OREALBatch:
    logps = torch.tensor([[-1.0, -2.0, -math.inf], [-1.0, -1.0, -3.0]], requires_grad=True)
    delta = torch.tensor([[LN2, 0.0, 99.0], [0.0, -LN2, 0.0]])
    fields = dict(
        logps=logps,
        old_logps=logps.detach(),
        advantages=torch.tensor([1.5, -0.5]),
        mask=torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]]),
        ref_logps=torch.nan_to_num(logps.detach(), neginf=-1.0) + delta,
        correct=torch.tensor([1.0, 0.0]),
        token_weights=torch.tensor([[1.0, 0.5, 9.0], [0.2, 1.0, 0.0]]),
    )
    return OREALBatch(**{**fields, **overrides})


def oreal(batch, **cfg):
    return LOSSES.get("oreal")(batch, OREALConfig(**cfg))


def test_rloo_advantages_on_plus_minus_one_rewards():
    # G = 4, c = [1,0,0,0] → r = [1,−1,−1,−1]: correct 1 − (−1) = 2; wrong −1 − (1−1−1)/3 = −2/3
    # c = [1,1,1,0] → r = [1,1,1,−1]: correct 1 − (1+1−1)/3 = 2/3; wrong −1 − 1 = −2
    adv = rloo_advantages(torch.tensor([1.0, 0, 0, 0, 1, 1, 1, 0]), 4)
    expected = torch.tensor([2.0, -2 / 3, -2 / 3, -2 / 3, 2 / 3, 2 / 3, 2 / 3, -2.0])
    torch.testing.assert_close(adv, expected)


def test_select_pairs_one_correct_one_wrong_per_informative_prompt():
    nan = float("nan")
    # groups: mixed, all correct, all wrong, mixed with an unscorable answer (index 13)
    correct = torch.tensor([1, 0, 0, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, nan, 1, 0])
    seen = set()
    for seed in range(20):
        idx = select_pairs(correct, 4, torch.Generator().manual_seed(seed))
        assert idx.dtype == torch.long and len(idx) == 4  # 2 informative groups × (1 + 1)
        pos, neg = idx[0::2], idx[1::2]
        assert (correct[pos] == 1).all() and (correct[neg] == 0).all()
        assert (pos // 4).tolist() == [0, 3] and (neg // 4).tolist() == [0, 3]
        assert 13 not in idx.tolist()
        seen.update(idx.tolist())
    assert {0, 3, 1, 2} <= seen  # both correct and both wrong answers of group 0 get picked
    a = select_pairs(correct, 4, torch.Generator().manual_seed(7))
    b = select_pairs(correct, 4, torch.Generator().manual_seed(7))
    assert torch.equal(a, b)
    assert len(select_pairs(torch.tensor([1.0, 1.0, 0.0, 0.0]), 2)) == 0


def test_reinforce_ratio_is_one_with_gradient_of_logp():
    theta = torch.tensor([0.5, -2.0], requires_grad=True)
    logps = -(theta**2)  # ∂ℓ/∂θ = −2θ = [−1, 4]
    r = reinforce_ratio(logps)
    assert r.tolist() == [1.0, 1.0]
    r.sum().backward()
    torch.testing.assert_close(theta.grad, torch.tensor([-1.0, 4.0]))


def test_loss_gradient_and_metrics_by_hand():
    batch = hand_batch()
    loss, m = oreal(batch)
    assert loss.item() == pytest.approx(1.601, abs=1e-6)
    loss.backward()
    expected = torch.tensor([[-0.752, -0.375, 0.0], [0.5 * 0.5 * 0.2 / 3, 0.5 * 0.5 / 3 + 0.001, 0.0]])
    torch.testing.assert_close(batch.logps.grad, expected, atol=1e-6, rtol=0)
    assert m["bc_loss"] == pytest.approx(1.5)
    assert m["neg_loss"] == pytest.approx(0.2)
    assert m["pos_tokens"] == 2.0 and m["neg_tokens"] == 3.0
    assert m["pos_token_weight_mean"] == pytest.approx(0.75)  # (1 + 0.5)/2; pad's 9 ignored
    assert m["neg_token_weight_mean"] == pytest.approx(0.4)  # (0.2 + 1 + 0)/3
    assert m["kl"] == pytest.approx(0.1)  # 0.5 / 5


def test_step_normalisers_are_used_and_micro_batches_add_up():
    # A step twice as large (N⁺ = 4, N⁻ = 6, N = 10) halves every term: 1.601 / 2 = 0.8005.
    norms = dict(num_pos_tokens=4.0, num_neg_tokens=6.0, num_tokens=10.0)
    assert oreal(hand_batch(**norms))[0].item() == pytest.approx(0.8005, abs=1e-6)

    # One row per micro-batch with the whole step's normalisers (2, 3, 5): shares sum to 1.601.
    norms = dict(num_pos_tokens=2.0, num_neg_tokens=3.0, num_tokens=5.0)
    full = hand_batch()
    full_loss, _ = oreal(full)
    full_loss.backward()
    whole = hand_batch()
    total = 0.0
    for i in (0, 1):
        part = OREALBatch(
            logps=whole.logps[[i]],
            old_logps=whole.old_logps[[i]],
            advantages=whole.advantages[[i]],
            mask=whole.mask[[i]],
            ref_logps=whole.ref_logps[[i]],
            correct=whole.correct[[i]],
            token_weights=whole.token_weights[[i]],
            **norms,
        )
        total = total + oreal(part)[0]
    total.backward()
    assert total.item() == pytest.approx(1.601, abs=1e-6)
    torch.testing.assert_close(whole.logps.grad, full.logps.grad)


def test_without_token_rm_weights_are_ones_and_beta_zero_has_no_kl():
    # w ≡ 1: BC = 1.5·(1 + 2)/2 = 2.25; NEG = 0.5·3/3 = 0.5; loss = 2.25 + 0.5·0.5 = 2.5
    loss, m = oreal(hand_batch(token_weights=None, ref_logps=None), beta=0.0)
    assert loss.item() == pytest.approx(2.5, abs=1e-6)
    assert "kl" not in m


def test_errors():
    with pytest.raises(ValueError, match="ref_logps"):
        oreal(hand_batch(ref_logps=None))
    with pytest.raises(TypeError, match="OREALConfig"):
        LOSSES.get("oreal")(hand_batch(), PolicyLossConfig())
    with pytest.raises(TypeError, match="correct"):
        oreal(hand_batch(correct=None))


def test_empty_pools_are_finite():
    batch = hand_batch(mask=torch.zeros(2, 3))
    loss, m = oreal(batch)
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(batch.logps.grad, torch.zeros(2, 3))
    assert all(math.isfinite(v) for v in m.values())
