"""NFT loss against numbers worked out by hand, and its equivalence with Dr. GRPO / GRPO at R = 1.

The hand batch: one prompt, two answers (one correct, one wrong), p = 0.5 → p̂ = 0.5,
ω = 1 − p̂ = 0.5, normalizer 1 (so the numbers stay readable), 3 token columns.

    log-ratios Δ = ℓ − ℓ_old, R = e^Δ
    row 0 (correct): R = [2, 0.5, pad]       mask [1, 1, 0]; the pad's ℓ_old is −inf (garbage)
    row 1 (wrong):   R = [0.5, 1.5, 3]       mask [1, 1, 1]

    correct: L = −log R = [−ln 2, +ln 2]                          → sum 0
    wrong:   x = (1 − p̂R)/(1 − p̂) = 2 − R = [1.5, 0.5, −1]
             forward max(x, 1)       = [1.5, 1, 1]
             L = −log max(x, 1)      = [−ln 1.5, 0, 0]            → sum −0.405465
    loss = ω · Σ L = 0.5 · (−ln 1.5) = −0.2027326

    gradients ∂(ω L)/∂ℓ (dR/dℓ = R):
    correct: ∂(−Δ)/∂ℓ = −1                            → ω · −1        = −0.5, −0.5, pad 0
    wrong:   ∂(−log y)/∂ℓ = −(1/y)·∂x/∂ℓ, ∂x/∂ℓ = −p̂R/(1 − p̂) = −R  →  R / y
             R=0.5, y=1.5: 1/3 → ·ω = 1/6;   R=1.5, y=1: 1.5 → 0.75;   R=3, y=1: 3 → 1.5
"""

from __future__ import annotations

import math

import pytest
import torch

from telos.errors import UserError
from trainers.rl.advantages import ADVANTAGES
from trainers.rl.losses import LOSSES, LossBatch, PolicyLossConfig
from trainers.rl.nft import NFTBatch, NFTConfig, nft_group_filter, nft_pass_rates

RATIOS = [[2.0, 0.5, 1.0], [0.5, 1.5, 3.0]]
MASK = [[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]]


def hand_batch(ratios=RATIOS, mask=MASK, correct=(1.0, 0.0), pass_rate=(0.5, 0.5)) -> NFTBatch:
    old = torch.full((len(ratios), len(ratios[0])), -1.0)
    logps = (old + torch.log(torch.tensor(ratios))).detach().requires_grad_()
    old[0, 2] = -math.inf  # garbage on the padded position must not leak
    return NFTBatch(
        logps=logps,
        old_logps=old,
        advantages=torch.zeros(len(ratios)),
        mask=torch.tensor(mask),
        correct=torch.tensor(correct),
        pass_rate=torch.tensor(pass_rate),
    )


def nft(batch, **cfg):
    return LOSSES.get("nft")(batch, NFTConfig(**{"normalizer": 1.0, **cfg}))


def test_token_level_loss_gradient_and_metrics_by_hand():
    batch = hand_batch()
    loss, m = nft(batch)
    assert loss.item() == pytest.approx(-0.5 * math.log(1.5), abs=1e-6)  # −0.2027326
    loss.backward()
    expected = torch.tensor([[-0.5, -0.5, 0.0], [1 / 6, 0.75, 1.5]])
    torch.testing.assert_close(batch.logps.grad, expected, atol=1e-6, rtol=0)
    assert m["p_hat_mean"] == pytest.approx(0.5)
    # wrong-answer tokens clamped: x = 2 − R < 1 ⇔ R > 1, i.e. R = 1.5 and R = 3 → 2 of 3
    assert m["neg_clamped_frac"] == pytest.approx(2 / 3)
    assert m["ratio_mean"] == pytest.approx((2 + 0.5 + 0.5 + 1.5 + 3) / 5)  # pad's R ignored → 1.5


def test_default_normalizer_divides_by_1000():
    loss, _ = LOSSES.get("nft")(hand_batch(), NFTConfig())
    assert loss.item() == pytest.approx(-0.5 * math.log(1.5) / 1000, abs=1e-9)


def test_sequence_level_by_hand():
    # One R per answer from the *mean* masked log-ratio:
    #   correct: mean(ln 2, ln 0.5) = 0 → R = 1 → L = 0; ∂L/∂ℓ_t = −1/2 per token, ·ω → −0.25
    #   wrong:   mean(ln .5, ln 1.5, ln 3) = ln(2.25)/3 → R = 2.25^(1/3) = 1.310371
    #            x = 2 − R = 0.689629 < 1 → clamped, L = 0; ∂L/∂ℓ_t = (R / 1) · (1/3) · ω = 0.218395
    batch = hand_batch()
    loss, m = nft(batch, level="sequence")
    assert loss.item() == pytest.approx(0.0, abs=1e-6)
    loss.backward()
    r = 2.25 ** (1 / 3)
    expected = torch.tensor([[-0.25, -0.25, 0.0], [r / 6] * 3])
    torch.testing.assert_close(batch.logps.grad, expected, atol=1e-6, rtol=0)
    assert m["neg_clamped_frac"] == 1.0  # the one wrong answer
    assert m["ratio_mean"] == pytest.approx((1.0 + r) / 2)


def test_neg_weight_zero_is_rft_and_omega_one():
    # neg_weight 0: only correct answers train (rejection-sampling fine-tuning); ω = 1.
    # loss = −ln 2 + ln 2 = 0; grads −1 on correct tokens, 0 on wrong ones.
    batch = hand_batch()
    loss, _ = nft(batch, neg_weight=0.0, omega="1")
    assert loss.item() == pytest.approx(0.0, abs=1e-6)
    loss.backward()
    torch.testing.assert_close(batch.logps.grad, torch.tensor([[-1.0, -1.0, 0.0], [0.0, 0.0, 0.0]]))


def test_clamp_keeps_wrong_term_finite_when_p_hat_ratio_at_least_one():
    # p = 0.99 → p̂ = 0.98 (clamped); ω = 1 − p̂ = 0.02. One wrong answer, three tokens:
    #   Δ = ln(1/0.98): p̂R = 1 exactly → x = 0 (log(0) without the clamp)
    #   Δ = 5:  R = e^5 = 148.413, x = (1 − 145.445)/0.02 = −7222 → forward 1, loss 0,
    #           ∂/∂ℓ = R·p̂/(1 − p̂)/y = 148.413·49 = 7272.2, ·ω = 145.445
    #   Δ = 50: capped at 10 (R = e^10, x ≈ −1.08e6) → loss 0 and gradient 0 (capped Δ)
    old = torch.zeros(1, 3)
    logps = torch.tensor([[-math.log(0.98), 5.0, 50.0]], requires_grad=True)
    batch = NFTBatch(
        logps=logps,
        old_logps=old,
        advantages=torch.zeros(1),
        mask=torch.ones(1, 3),
        correct=torch.tensor([0.0]),
        pass_rate=torch.tensor([0.99]),
    )
    loss, m = nft(batch)
    assert loss.item() == 0.0
    loss.backward()
    assert torch.isfinite(logps.grad).all()
    g = logps.grad[0]
    assert g[0].item() == pytest.approx(1.0, rel=1e-5)  # R·p̂/(1−p̂)·ω = (1/0.98)·0.98/0.02·0.02 = 1
    assert g[1].item() == pytest.approx(math.exp(5.0) * 0.98, rel=1e-5)  # e^5·49·0.02 = 145.445
    assert g[2].item() == 0.0
    assert m["p_hat_mean"] == pytest.approx(0.98)
    # x = 0, −7222, −1.08e6 are all < 1 → 3 of 3 clamped
    assert m["neg_clamped_frac"] == 1.0


# ---- equivalence with the GRPO family at R = 1 ---------------------------------------------
#
# Two prompts, G = 4 answers each, up to T = 5 tokens (ragged masks), R ≡ 1 (ℓ_old = ℓ).
#   group A: c = [1, 0, 0, 0] → p = 0.25;   group B: c = [1, 1, 0, 1] → p = 0.75
# NFT per-token gradient at R = 1 (y = x = 1):
#   correct ∂(−Δ)/∂ℓ = −1;  wrong −(1/1)·∂x/∂ℓ = p̂/(1 − p̂)
# Dr. GRPO per-token gradient (A = c − p, ρ = 1, unclipped): ∂(−ρA)/∂ℓ = −A
#   = −(1 − p) on correct, +p on wrong.
# ω = 1 − p̂ turns NFT's into −(1 − p̂) and +p̂: the same per token. Dr. GRPO divides the token
# sum by N_seq · L_max, NFT by the normalizer:  ∇NFT = ∇DrGRPO · (N_seq · L_max) / normalizer.
# GRPO (A = (c − p)/σ, σ the Bessel std = sqrt(G/(G−1) · p(1 − p))): ω = sqrt((1 − p̂)/p̂) gives
#   correct −sqrt((1−p)/p) vs −(1−p)/σ;   wrong sqrt(p/(1−p)) vs p/σ;
#   both ratios NFT/GRPO = σ / sqrt(p(1−p)) = sqrt(G/(G−1)) = sqrt(4/3)  (σ = 0.5 for p = ¼, ¾).

CORRECT = [1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 1.0]
G, N_SEQ, L_MAX, T = 4, 8, 6, 5  # L_max ≠ T so the constant is visible


def _logps_and_mask():
    gen = torch.Generator().manual_seed(0)
    logps = -torch.rand(N_SEQ, T, generator=gen) * 3.0
    lengths = torch.tensor([5, 3, 4, 1, 2, 5, 5, 3])
    mask = (torch.arange(T)[None, :] < lengths[:, None]).float()
    return logps, mask


def _grad_nft(cfg: NFTConfig) -> torch.Tensor:
    logps, mask = _logps_and_mask()
    logps.requires_grad_()
    correct = torch.tensor(CORRECT)
    batch = NFTBatch(
        logps=logps,
        old_logps=logps.detach(),
        advantages=torch.zeros(N_SEQ),
        mask=mask,
        correct=correct,
        pass_rate=nft_pass_rates(correct, G),
    )
    LOSSES.get("nft")(batch, cfg)[0].backward()
    return logps.grad


def _grad_grpo_family(loss_name: str, advantages: torch.Tensor) -> torch.Tensor:
    logps, mask = _logps_and_mask()
    logps.requires_grad_()
    batch = LossBatch(
        logps=logps,
        old_logps=logps.detach(),
        advantages=advantages,
        mask=mask,
        num_sequences=N_SEQ,
        max_completion_length=L_MAX,
    )
    LOSSES.get(loss_name)(batch, PolicyLossConfig())[0].backward()
    return logps.grad


def test_ratio_one_gradient_equals_dr_grpo():
    adv = ADVANTAGES.get("grpo")(torch.tensor(CORRECT), G, scale="none")  # c − p
    dr = _grad_grpo_family("dr_grpo", adv)
    ours = _grad_nft(NFTConfig(omega="1-p"))
    torch.testing.assert_close(ours, dr * (N_SEQ * L_MAX) / 1000.0, atol=1e-7, rtol=1e-5)
    assert dr.abs().sum() > 0


def test_ratio_one_gradient_equals_grpo_with_std_advantages():
    adv = ADVANTAGES.get("grpo")(torch.tensor(CORRECT), G, scale="group", eps=0.0)
    assert adv[:4].tolist() == pytest.approx([1.5, -0.5, -0.5, -0.5])  # (c − ¼)/0.5
    grpo = _grad_grpo_family("dr_grpo", adv)  # token-sum aggregation, as NFT's token level
    ours = _grad_nft(NFTConfig(omega="sqrt"))
    scale = math.sqrt(G / (G - 1)) * (N_SEQ * L_MAX) / 1000.0
    torch.testing.assert_close(ours, grpo * scale, atol=1e-7, rtol=1e-5)


def test_sequence_level_ratio_one_gradient_equals_grpo_aggregation():
    # Sequence level: ∂(ω L_i)/∂ℓ_t = ω · (∓1 or p̂/(1−p̂)) / |y_i|, the `grpo` loss gives
    # −A / (|y_i| · N_seq): the same per token up to N_seq / normalizer.
    adv = ADVANTAGES.get("grpo")(torch.tensor(CORRECT), G, scale="none")
    grpo = _grad_grpo_family("grpo", adv)
    ours = _grad_nft(NFTConfig(level="sequence"))
    torch.testing.assert_close(ours, grpo * N_SEQ / 1000.0, atol=1e-7, rtol=1e-5)


def test_micro_batch_shares_sum_to_the_full_loss():
    full = hand_batch()
    full_loss, _ = nft(full)
    full_loss.backward()
    whole = hand_batch()
    total = sum(
        nft(
            NFTBatch(
                logps=whole.logps[[i]],
                old_logps=whole.old_logps[[i]],
                advantages=whole.advantages[[i]],
                mask=whole.mask[[i]],
                correct=whole.correct[[i]],
                pass_rate=whole.pass_rate[[i]],
            )
        )[0]
        for i in (0, 1)
    )
    total.backward()
    assert total.item() == pytest.approx(full_loss.item(), abs=1e-7)
    torch.testing.assert_close(whole.logps.grad, full.logps.grad)


def test_group_filter_drops_all_correct_all_wrong_and_unscorable():
    nan = float("nan")
    correct = torch.tensor([1, 1, 0, 0, 1, 0, nan, nan, 1, nan, 0, nan])
    keep, p = nft_group_filter(correct, 2)
    assert keep.tolist() == [False, False, True, False, False, False]
    assert p[:3].tolist() == [1.0, 0.0, 0.5]
    assert math.isnan(p[3].item())
    assert p[4:].tolist() == [1.0, 0.0]  # NaN left out of the mean
    assert nft_pass_rates(torch.tensor([1.0, 0.0, 0.0, 0.0]), 2).tolist() == [0.5, 0.5, 0.0, 0.0]
    with pytest.raises(ValueError, match="group_size"):
        nft_group_filter(torch.ones(5), 2)


def test_config_and_type_errors():
    with pytest.raises(UserError, match="omega"):
        NFTConfig(omega="2")
    with pytest.raises(UserError, match="level"):
        NFTConfig(level="step")
    with pytest.raises(UserError, match="p_clamp"):
        NFTConfig(p_clamp=0.5)
    with pytest.raises(UserError, match="p_clamp"):
        NFTConfig(p_clamp=(0.5, 1.0))
    assert NFTConfig(p_clamp=[0.05, 0.95]).p_clamp == (0.05, 0.95)  # a YAML list
    with pytest.raises(TypeError, match="NFTConfig"):
        LOSSES.get("nft")(hand_batch(), PolicyLossConfig())
    plain = LossBatch(
        logps=torch.zeros(1, 2), old_logps=torch.zeros(1, 2), advantages=torch.zeros(1), mask=torch.ones(1, 2)
    )
    with pytest.raises(TypeError, match="pass_rate"):
        LOSSES.get("nft")(plain, NFTConfig())


def test_empty_mask_gives_zero_loss_and_gradient():
    for level in ("token", "sequence"):
        batch = hand_batch(mask=[[0.0] * 3, [0.0] * 3])
        batch.old_logps = torch.full((2, 3), -math.inf)
        loss, m = nft(batch, level=level)
        assert loss.item() == 0.0
        loss.backward()
        assert torch.equal(batch.logps.grad, torch.zeros(2, 3))
        assert all(math.isfinite(v) for v in m.values())


@pytest.mark.parametrize("dynamic_sampling", [True, False])
def test_loop_trains_only_mixed_groups_in_every_mode(dynamic_sampling):
    """Groups (G = 2): all correct, mixed, all wrong. Kept, the all-correct group would get
    p̂ = 0.98, ω = 0.02 and a per-token gradient of −0.02 (the all-wrong one +0.02): NFT drops
    both, with or without dynamic sampling; only the mixed group (p = 0.5) is trained."""
    from telos.config import from_dict
    from telos.types import Completion
    from trainers.rl.algorithms import make_algorithm
    from trainers.rl.recipe import RECIPES
    from trainers.rl.rollout_batch import ScoredGroups

    recipe = from_dict(
        RECIPES["nft"],
        {
            "trainer": "nft",
            "model": {"name_or_path": "tiny:arith"},
            "data": {"train": "procedural:arith"},
            "nft": {"dynamic_sampling": dynamic_sampling},
        },
    )
    comps = [Completion(i // 2, [1], [2 + i], str(i), [-0.1], "stop") for i in range(6)]
    correct = [1.0, 1.0, 1.0, 0.0, 0.0, 0.0]
    tb = make_algorithm(recipe).train_batch(ScoredGroups(comps, correct, correct, [7, 8, 9]), 2, 1, 0)
    assert [c.text for c in tb.completions] == ["2", "3"]
    assert tb.per_sequence["pass_rate"].tolist() == [0.5, 0.5]
    assert tb.per_sequence["correct"].tolist() == [1.0, 0.0]
