"""Reward-model losses: Bradley–Terry, goal-conditioned contrastive loss, PRM — numbers by hand."""

from __future__ import annotations

import math

import pytest
import torch

from rewards.rm_losses import (
    bt_loss,
    contrastive_goal_loss,
    contrastive_goal_loss_batch,
    goal_vector,
    hard_step_label,
    prm_loss,
    q_values,
    sample_goal_positions,
)
from telos.errors import UserError

SIG1 = 0.7310585786300049  # σ(1);  σ(−1) = 1 − σ(1) = 0.268941
SIG_R = 0.6697615493266569  # σ(1/√2)
LOG4 = math.log(4.0)  # 1.386294
LOG43 = math.log(4.0 / 3.0)  # 0.287682


# ------------------------------------------------------------------------------------ Bradley–Terry


def test_bt_plain_value_gradient_and_metrics():
    # r⁺ − r⁻ = [1, −1]: −log σ(1) = log(1 + e⁻¹) = 0.313262, −log σ(−1) = log(1 + e) = 1.313262
    # mean = 0.813262. ∂L/∂r⁺_i = −σ(−d_i)/2 = [−0.268941/2, −0.731059/2] = [−0.134471, −0.365529]
    chosen = torch.tensor([2.0, 0.0], requires_grad=True)
    rejected = torch.tensor([1.0, 1.0], requires_grad=True)
    loss, m = bt_loss(chosen, rejected)
    assert loss.item() == pytest.approx(0.813262, abs=1e-6)
    loss.backward()
    assert chosen.grad.tolist() == pytest.approx([-0.134471, -0.365529], abs=1e-6)
    assert rejected.grad.tolist() == pytest.approx([0.134471, 0.365529], abs=1e-6)
    assert m["accuracy"] == pytest.approx(0.5)
    assert m["reward_margin"] == pytest.approx(0.0)
    assert m["chosen_reward"] == pytest.approx(1.0)
    assert m["rejected_reward"] == pytest.approx(1.0)
    assert m["loss"] == pytest.approx(0.813262, abs=1e-6)
    assert "center_penalty" not in m


def test_bt_margin():
    # d − m = [1 − 1, −1 − (−1)] = [0, 0] → loss = log 2 = 0.693147, ∂L/∂r⁺ = −σ(0)/2 = −0.25 each
    chosen = torch.tensor([2.0, 0.0], requires_grad=True)
    loss, m = bt_loss(chosen, torch.tensor([1.0, 1.0]), margin=torch.tensor([1.0, -1.0]))
    assert loss.item() == pytest.approx(math.log(2.0), abs=1e-6)
    loss.backward()
    assert chosen.grad.tolist() == pytest.approx([-0.25, -0.25], abs=1e-6)
    assert m["reward_margin"] == pytest.approx(0.0)  # metric is r⁺ − r⁻, margin not subtracted


def test_bt_centering_matches_trl_formula():
    # r⁺ + r⁻ = [3, 1] → mean of squares (9 + 1)/2 = 5; c = 0.1 → +0.5 → 0.813262 + 0.5 = 1.313262
    # centering gradient: c · 2(r⁺ + r⁻)/B = 0.1 · [3, 1] = [0.3, 0.1] on both r⁺ and r⁻
    # ∂L/∂r⁺ = [−0.134471 + 0.3, −0.365529 + 0.1] = [0.165529, −0.265529]
    # ∂L/∂r⁻ = [ 0.134471 + 0.3,  0.365529 + 0.1] = [0.434471,  0.465529]
    chosen = torch.tensor([2.0, 0.0], requires_grad=True)
    rejected = torch.tensor([1.0, 1.0], requires_grad=True)
    loss, m = bt_loss(chosen, rejected, center_coef=0.1)
    assert loss.item() == pytest.approx(1.313262, abs=1e-6)
    assert m["center_penalty"] == pytest.approx(5.0)
    loss.backward()
    assert chosen.grad.tolist() == pytest.approx([0.165529, -0.265529], abs=1e-6)
    assert rejected.grad.tolist() == pytest.approx([0.434471, 0.465529], abs=1e-6)
    # TRL RewardTrainer.compute_loss, written out: −logsigmoid(r⁺ − r⁻).mean() + c·mean((r⁺ + r⁻)²)
    c, r = chosen.detach(), rejected.detach()
    trl = -torch.nn.functional.logsigmoid(c - r).mean() + 0.1 * torch.mean((c + r) ** 2)
    assert loss.item() == pytest.approx(trl.item(), abs=1e-7)


def test_bt_is_stable_for_large_gaps():
    # −log σ(−200) = 200 + log(1 + e⁻²⁰⁰) = 200 (log(sigmoid) would give inf)
    loss, m = bt_loss(torch.tensor([0.0]), torch.tensor([200.0]))
    assert loss.item() == pytest.approx(200.0)
    assert m["accuracy"] == 0.0


# ------------------------------------------------------------------------- contrastive goal loss


def _hand_pair():
    # chosen states h0 = (1, 0), h1 = (0, 1), h2 = (1, 1); rejected r0 = (−1, 0), r1 = (0, 1)
    h_chosen = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    h_rejected = torch.tensor([[-1.0, 0.0], [0.0, 1.0]])
    positives = torch.tensor([[0, 0], [1, 2]])  # sources (h0, h1), goals (h0, h2)
    negatives = torch.tensor([[0, 0], [2, 1]])  # chosen (h0, h2), rejected (r0, r1)
    return h_chosen, h_rejected, positives, negatives


def test_contrastive_loss_by_hand_all_cross_pairs():
    # Official: every (source i, goal j) combination, 2 × 2 = 4 cosines:
    #   cos(h0,h0) = 1, cos(h0,h2) = 1/√2, cos(h1,h0) = 0, cos(h1,h2) = 1/√2
    #   P = (σ(1) + 2σ(1/√2) + σ(0))/4 = (0.731059 + 2·0.669762 + 0.5)/4 = 0.642645
    # negatives, every (chosen i, rejected j):
    #   cos(h0,r0) = −1, cos(h0,r1) = 0, cos(h2,r0) = −1/√2, cos(h2,r1) = 1/√2
    #   N = (σ(−1) + σ(0) + σ(−1/√2) + σ(1/√2))/4 = (0.268941 + 0.5 + 1)/4 = 0.442235
    # L = 0.5·(−log 0.642645 − log(1 − 0.442235)) = 0.5·(0.442172 + 0.583808) = 0.512990
    h_c, h_r, pos, neg = _hand_pair()
    loss, m = contrastive_goal_loss(h_c, h_r, pos, neg)
    p = (SIG1 + 2 * SIG_R + 0.5) / 4
    n = (1 - SIG1 + 1.5) / 4
    assert m["pos_sigmoid"] == pytest.approx(p, abs=1e-6)
    assert m["neg_sigmoid"] == pytest.approx(n, abs=1e-6)
    assert loss.item() == pytest.approx(0.5 * (-math.log(p) - math.log(1 - n)), abs=1e-6)
    assert loss.item() == pytest.approx(0.512990, abs=1e-6)
    # mean cosines: (1 + 1/√2 + 0 + 1/√2)/4 and (−1 + 0 − 1/√2 + 1/√2)/4 = −0.25
    assert m["pos_cos"] == pytest.approx((1 + 2 / math.sqrt(2)) / 4, abs=1e-6)
    assert m["neg_cos"] == pytest.approx(-0.25, abs=1e-6)
    # the diagonal-only reading ("16 pairs") would give P = (σ(1) + σ(1/√2))/2 = 0.700410: not this
    assert m["pos_sigmoid"] != pytest.approx((SIG1 + SIG_R) / 2, abs=1e-3)


def test_contrastive_beta_scales_and_gradient_flows():
    h_c, h_r, pos, neg = _hand_pair()
    h_c = h_c.clone().requires_grad_(True)
    loss, _ = contrastive_goal_loss(h_c, h_r, pos, neg, beta=1.0)
    assert loss.item() == pytest.approx(2 * 0.512990, abs=1e-6)
    loss.backward()
    assert h_c.grad is not None and torch.isfinite(h_c.grad).all() and h_c.grad.abs().sum() > 0


def test_contrastive_cosine_avg_by_hand():
    # goals averaged: ḡ = mean(h0, h2) = (1, 0.5), |ḡ| = √1.25
    #   cos(h0, ḡ) = 1/√1.25 = 0.894427, cos(h1, ḡ) = 0.5/√1.25 = 0.447214
    #   P = (σ(0.894427) + σ(0.447214))/2 = 0.659890
    # rejected averaged: r̄ = mean(r0, r1) = (−0.5, 0.5): cos(h0, r̄) = −1/√2, cos(h2, r̄) = 0
    #   N = (σ(−1/√2) + σ(0))/2 = (0.330238 + 0.5)/2 = 0.415119
    # L = 0.5·(−log 0.659890 − log 0.584881) = 0.476015
    h_c, h_r, pos, neg = _hand_pair()
    loss, m = contrastive_goal_loss(h_c, h_r, pos, neg, strategy="cosine_avg")
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    p = (sig(1 / math.sqrt(1.25)) + sig(0.5 / math.sqrt(1.25))) / 2
    n = (1 - SIG_R + 0.5) / 2
    assert m["pos_sigmoid"] == pytest.approx(p, abs=1e-6)
    assert m["neg_sigmoid"] == pytest.approx(n, abs=1e-6)
    assert loss.item() == pytest.approx(0.476015, abs=1e-6)


def test_contrastive_batch_logs_the_batch_mean():
    # pair 2: h⁺ = (1,0), (1,0), (0,1); h⁻ = (1,0), (0,1); positives (0,1),(0,1): all 4 cosines 1
    # → P₂ = σ(1); negatives (0,0),(0,0): cos(h⁺0, h⁻0) = 1 → N₂ = σ(1)
    # Official batch: means over b, i, j BEFORE the log:
    #   P = (0.642645 + 0.731059)/2 = 0.686852, N = (0.442235 + 0.731059)/2 = 0.586647
    #   L = 0.5·(−log 0.686852 − log 0.413353) = 0.629545
    # (the mean of per-pair losses would be (0.512990 + 0.813262)/2 = 0.663126)
    h_c1, h_r1, pos1, neg1 = _hand_pair()
    h_c2 = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    h_r2 = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    pos2 = torch.tensor([[0, 1], [0, 1]])
    neg2 = torch.tensor([[0, 0], [0, 0]])
    loss, m = contrastive_goal_loss_batch(
        torch.stack([h_c1, h_c2]),
        torch.stack([h_r1, h_r2]),
        torch.stack([pos1, pos2]),
        torch.stack([neg1, neg2]),
    )
    assert loss.item() == pytest.approx(0.629545, abs=1e-6)
    loss2, _ = contrastive_goal_loss(h_c2, h_r2, pos2, neg2)
    assert loss2.item() == pytest.approx(0.5 * (-math.log(SIG1) - math.log(1 - SIG1)), abs=1e-6)  # 0.813262
    assert loss.item() != pytest.approx((0.512990 + loss2.item()) / 2, abs=1e-3)


def test_contrastive_unknown_strategy():
    h_c, h_r, pos, neg = _hand_pair()
    with pytest.raises(UserError, match="cosine, cosine_avg"):
        contrastive_goal_loss(h_c, h_r, pos, neg, strategy="dot")


# ------------------------------------------------------------------------------ position sampling


def test_sampling_properties_over_many_seeds():
    rng = torch.Generator().manual_seed(0)
    for seed in range(400):
        c_len, r_len = (int(v) for v in torch.randint(1, 30, (2,), generator=rng))
        c_start, r_start = (int(v) for v in torch.randint(0, 50, (2,), generator=rng))
        g = torch.Generator().manual_seed(seed)
        pos, neg = sample_goal_positions(c_len, r_len, 16, g, chosen_start=c_start, rejected_start=r_start)
        assert pos.shape == (16, 2) and neg.shape == (16, 2) and pos.dtype == torch.int64
        assert (pos[:, 0] <= pos[:, 1]).all(), "goal before source"
        assert ((pos >= c_start) & (pos < c_start + c_len)).all(), "positive outside the chosen span"
        assert ((neg[:, 0] >= c_start) & (neg[:, 0] < c_start + c_len)).all()
        assert ((neg[:, 1] >= r_start) & (neg[:, 1] < r_start + r_len)).all(), "negative outside rejected"


def test_sampling_is_deterministic_given_the_generator():
    a = sample_goal_positions(20, 13, 16, torch.Generator().manual_seed(7), chosen_start=5, rejected_start=3)
    b = sample_goal_positions(20, 13, 16, torch.Generator().manual_seed(7), chosen_start=5, rejected_start=3)
    c = sample_goal_positions(20, 13, 16, torch.Generator().manual_seed(8), chosen_start=5, rejected_start=3)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not (torch.equal(a[0], c[0]) and torch.equal(a[1], c[1]))


def test_sampling_formula_and_coverage():
    # The official draw: u = sort(rand(2, S)), then rand(S), rand(S); with percentile 0 a uniform u
    # maps to k = ⌊(1 − u)·n + 1⌋ tokens from the end, position = start + n − k.
    g = torch.Generator().manual_seed(3)
    u = torch.rand(2, 16, generator=g).sort(dim=0).values
    u_c, u_r = torch.rand(16, generator=g), torch.rand(16, generator=g)
    pos, neg = sample_goal_positions(
        10, 6, 16, torch.Generator().manual_seed(3), chosen_start=4, rejected_start=1
    )
    k = lambda v, n: ((1 - v) * n + 1).floor().long()  # noqa: E731
    assert torch.equal(pos[:, 0], 4 + 10 - k(u[0], 10))
    assert torch.equal(pos[:, 1], 4 + 10 - k(u[1], 10))
    assert torch.equal(neg[:, 0], 4 + 10 - k(u_c, 10))
    assert torch.equal(neg[:, 1], 1 + 6 - k(u_r, 6))
    # e.g. u = 0.25, n = 4 → k = ⌊3 + 1⌋ = 4 → the first position; u = 0.9 → k = ⌊0.4 + 1⌋ = 1 → the last
    assert k(torch.tensor([0.25, 0.9]), 4).tolist() == [4, 1]
    # a length-1 span can only give its one position; a length-5 span is fully covered
    pos1, neg1 = sample_goal_positions(
        1, 1, 16, torch.Generator().manual_seed(0), chosen_start=9, rejected_start=2
    )
    assert (pos1 == 9).all() and (neg1[:, 0] == 9).all() and (neg1[:, 1] == 2).all()
    pos5, _ = sample_goal_positions(5, 5, 200, torch.Generator().manual_seed(0))
    assert set(pos5.flatten().tolist()) == {0, 1, 2, 3, 4}


def test_sampling_num_negatives_and_bad_args():
    pos, neg = sample_goal_positions(8, 8, 4, torch.Generator().manual_seed(0), num_negatives=6)
    assert pos.shape == (4, 2) and neg.shape == (6, 2)
    with pytest.raises(ValueError):
        sample_goal_positions(0, 3)
    with pytest.raises(ValueError):
        sample_goal_positions(3, 3, num_pairs=0)


# -------------------------------------------------------------------------- goal vector, Q-values


def test_goal_vector_is_the_plain_mean():
    # mean of (1,2), (3,4), (5,0) = (3, 2); no normalisation (the mean of unit vectors would differ)
    g = goal_vector(torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 0.0]], dtype=torch.bfloat16))
    assert g.dtype == torch.float32
    assert g.tolist() == pytest.approx([3.0, 2.0])


def test_q_values_by_hand():
    # g = (3, 2): cos((3,2), g) = 1, cos((−6,−4), g) = −1, cos((2,−3), g) = 0, cos((0,1), g) = 2/√13
    hidden = torch.tensor(
        [[[3.0, 2.0], [-6.0, -4.0], [2.0, -3.0]], [[0.0, 1.0], [3.0, 2.0], [3.0, 2.0]]]
    )  # [B=2, T=3, H=2]
    q = q_values(hidden, torch.tensor([3.0, 2.0]))
    assert q.shape == (2, 3)
    assert q[0].tolist() == pytest.approx([1.0, -1.0, 0.0], abs=1e-6)
    assert q[1].tolist() == pytest.approx([2 / math.sqrt(13), 1.0, 1.0], abs=1e-6)
    assert q_values(hidden[0], torch.tensor([3.0, 2.0])).shape == (3,)


# -------------------------------------------------------------------------------------------- PRM

NAN = float("nan")


def _prm_two_class():
    # [B=2, T=2] positions; (0, 1) is unlabelled and holds NaN logits and a −100 label
    #   (0,0): z = (0, ln 3) → p₁ = 3/4, y = 0.75
    #   (1,0): z = (ln 3, 0) → p₁ = 1/4, y = 0
    #   (1,1): z = (0, ln 3) → p₁ = 3/4, y = 0
    l3 = math.log(3.0)
    logits = torch.tensor([[[0.0, l3], [NAN, NAN]], [[l3, 0.0], [0.0, l3]]], requires_grad=True)
    labels = torch.tensor([[0.75, -100.0], [0.0, 0.0]])
    mask = torch.tensor([[1, 0], [1, 1]])
    return logits, labels, mask


def test_prm_soft_ce_by_hand():
    # (0,0): −(0.25·log ¼ + 0.75·log ¾) = 0.25·1.386294 + 0.75·0.287682 = 0.562335
    # (1,0): −log(1 − ¼) = log 4/3 = 0.287682
    # (1,1): −log ¼ = 1.386294
    # mean over 3 labelled = (0.562335 + 0.287682 + 1.386294)/3 = 0.745437
    # accuracy: (0,0) 3/4 > .5 vs .75 > .5 ✓, (1,0) ✓, (1,1) 3/4 vs 0 ✗ → 2/3
    logits, labels, mask = _prm_two_class()
    loss, m = prm_loss(logits, labels, mask, kind="soft_ce")
    assert loss.item() == pytest.approx((0.25 * LOG4 + 0.75 * LOG43 + LOG43 + LOG4) / 3, abs=1e-6)
    assert loss.item() == pytest.approx(0.745437, abs=1e-6)
    assert m["step_accuracy"] == pytest.approx(2 / 3)
    assert m["num_steps"] == 3.0
    loss.backward()
    assert torch.isfinite(logits.grad).all() and (logits.grad[0, 1] == 0).all()  # masked: no gradient


def test_prm_hard_ce_by_hand():
    # y = 0.75 rounds to 1: (0,0) becomes −log ¾ = 0.287682; the others are already hard
    # (0.287682 + 0.287682 + 1.386294)/3 = 0.653886
    logits, labels, mask = _prm_two_class()
    loss, m = prm_loss(logits, labels, mask, kind="hard_ce")
    assert loss.item() == pytest.approx((2 * LOG43 + LOG4) / 3, abs=1e-6)
    assert loss.item() == pytest.approx(0.653886, abs=1e-6)
    assert m["step_accuracy"] == pytest.approx(2 / 3)


def test_prm_hard_label_is_math_shepherds_any_completion_reaches():
    # one step, 1 of 4 completions from it reaches the answer: soft y = 0.25, hard label 1
    # (Math-Shepherd, the label eval/rm_data.py writes). z = (ln 3, 0) → p₁ = 1/4.
    #   hard_ce: −log p₁ = ln 4 = 1.386294 (thresholding at 0.5 gave −log ¾ = 0.287682)
    #   step accuracy: 1[p₁ > .5] = 0 vs label 1 → 0.0 (was 1.0); mse uses the same label
    logits = torch.tensor([[[math.log(3.0), 0.0]]])
    labels, mask = torch.tensor([[0.25]]), torch.tensor([[1]])
    loss, m = prm_loss(logits, labels, mask, kind="hard_ce")
    assert loss.item() == pytest.approx(LOG4, abs=1e-6)
    assert m["step_accuracy"] == 0.0
    _, m_soft = prm_loss(logits, labels, mask, kind="soft_ce")
    assert m_soft["step_accuracy"] == 0.0
    from eval.rm_metrics import step_accuracy

    assert step_accuracy([0.7, 0.2], [0.25, 0.0]) == 1.0  # telos eval rm: the same definition
    assert hard_step_label(0.25) and not hard_step_label(0.0)


def test_prm_mse_by_hand():
    # one logit per position: σ(0) = .5, σ(ln 3) = .75, σ(−ln 3) = .25; (0,1) masked (NaN)
    # (.5 − .25)² = .0625, (.75 − 1)² = .0625, (.25 − 1)² = .5625 → mean = .6875/3 = 0.229167
    # accuracy against the hard label 1[y > 0]: .5 > .5 is False vs 1[.25 > 0] ✗, .75 vs 1 ✓,
    # .25 vs 1 ✗ → 1/3
    l3 = math.log(3.0)
    logits = torch.tensor([[0.0, NAN], [l3, -l3]])
    labels = torch.tensor([[0.25, 0.0], [1.0, 1.0]])
    mask = torch.tensor([[True, False], [True, True]])
    loss, m = prm_loss(logits, labels, mask, kind="mse")
    assert loss.item() == pytest.approx(0.6875 / 3, abs=1e-6)
    assert m["step_accuracy"] == pytest.approx(1 / 3)


def test_prm_mask_changes_the_mean():
    # masking (1,1) out of the soft-CE example leaves (0.562335 + 0.287682)/2 = 0.425008, accuracy 1
    logits, labels, _ = _prm_two_class()
    loss, m = prm_loss(logits, labels, torch.tensor([[1.0, 0.0], [1.0, 0.0]]))
    assert loss.item() == pytest.approx((0.25 * LOG4 + 0.75 * LOG43 + LOG43) / 2, abs=1e-6)
    assert m["step_accuracy"] == 1.0 and m["num_steps"] == 2.0
    # nothing labelled: loss 0, no NaN
    loss0, m0 = prm_loss(logits, labels, torch.zeros(2, 2))
    assert loss0.item() == 0.0 and m0["num_steps"] == 0.0


def test_prm_unknown_kind_and_shapes():
    logits, labels, mask = _prm_two_class()
    with pytest.raises(UserError, match="soft_ce, hard_ce, mse"):
        prm_loss(logits, labels, mask, kind="bce")
    with pytest.raises(ValueError):
        prm_loss(logits[..., :1], labels, mask, kind="soft_ce")
    with pytest.raises(ValueError):
        prm_loss(logits, labels, mask, kind="mse")
