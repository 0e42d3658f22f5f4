"""Sampler/trainer mismatch correction (trainers/rl/correction.py) against numbers worked out by
hand: the importance weight of every mode, mask and NaN handling, the logged metrics, the
sampler log-prob tensor, and the weight's place in the policy loss (trainers/rl/losses.py).

The batch used for the weights: 2 sequences × 3 tokens, cap C given per test.

    row 0: ℓ_old [-1.0, -2.0, -0.5], ℓ_sampler [-1.5, -1.0, -3.0], mask [1, 1, 0]
           d = ℓ_old − ℓ_sampler = [0.5, -1.0, (2.5, masked)]
    row 1: ℓ_old [-0.2, -0.3, -0.4], ℓ_sampler [-0.7, -0.8, -0.4], mask [1, 1, 1]
           d = [0.5, 0.5, 0.0]

    exp(0.5) = 1.6487212707, exp(-1.0) = 0.3678794412, exp(0) = 1
    sequence sums: row 0 0.5 − 1.0 = −0.5 → exp(−0.5) = 0.6065306597
                   (with the masked 2.5 it would be 2.0 → exp(2) = 7.389, over any cap used here)
                   row 1 0.5 + 0.5 + 0 = 1.0 → exp(1) = 2.7182818285
"""

from __future__ import annotations

import math

import pytest
import torch

from telos.types import Completion
from trainers.rl.correction import importance_weights, mismatch_metrics, sampler_logps_tensor
from trainers.rl.losses import LOSSES, LossBatch, PolicyLossConfig

OLD = [[-1.0, -2.0, -0.5], [-0.2, -0.3, -0.4]]
SAMPLER = [[-1.5, -1.0, -3.0], [-0.7, -0.8, -0.4]]
MASK = [[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]]
E05, EM1, EM05, E1 = 1.6487212707, 0.3678794412, 0.6065306597, 2.7182818285


def weights(mode, cap, old=OLD, sampler=SAMPLER, mask=MASK):
    return importance_weights(torch.tensor(old), torch.tensor(sampler), torch.tensor(mask), mode, cap)


def close(actual, expected):
    torch.testing.assert_close(actual, torch.tensor(expected), rtol=0, atol=1e-6)


def test_token_truncate():
    # cap 1.5: exp(0.5) = 1.6487 → 1.5; exp(−1) = 0.3679 stays; masked token has d = 0 → 1
    close(weights("token_truncate", 1.5), [[1.5, EM1, 1.0], [1.5, 1.5, 1.0]])
    # cap 2.0 touches nothing
    close(weights("token_truncate", 2.0), [[E05, EM1, 1.0], [E05, E05, 1.0]])


def test_token_mask():
    # cap 1.5: exp(0.5) = 1.6487 > 1.5 → 0; the rest as is
    close(weights("token_mask", 1.5), [[0.0, EM1, 1.0], [0.0, 0.0, 1.0]])
    close(weights("token_mask", 2.0), [[E05, EM1, 1.0], [E05, E05, 1.0]])


def test_sequence_truncate():
    # cap 2: row 0 exp(−0.5) = 0.6065 on every token; row 1 exp(1) = 2.718 → 2.0
    close(weights("sequence_truncate", 2.0), [[EM05] * 3, [2.0] * 3])
    close(weights("sequence_truncate", 3.0), [[EM05] * 3, [E1] * 3])


def test_sequence_mask():
    # cap 2: row 1 exp(1) = 2.718 > 2 → the whole sequence 0
    close(weights("sequence_mask", 2.0), [[EM05] * 3, [0.0] * 3])
    close(weights("sequence_mask", 3.0), [[EM05] * 3, [E1] * 3])


def test_none_is_all_ones():
    close(weights("none", 1.5), [[1.0] * 3, [1.0] * 3])


def test_masked_tokens_do_not_count_in_sequence_sum():
    # all ones mask: row 0 sums 0.5 − 1.0 + 2.5 = 2.0 → exp(2) = 7.389 → capped to 3 / masked to 0
    ones = [[1.0] * 3, [1.0] * 3]
    close(weights("sequence_truncate", 3.0, mask=ones)[0], [3.0] * 3)
    close(weights("sequence_mask", 3.0, mask=ones)[0], [0.0] * 3)
    # with the real mask the 2.5 is ignored: exp(−0.5)
    close(weights("sequence_truncate", 3.0)[0], [EM05] * 3)


def test_garbage_at_padding_does_not_leak():
    # padding may hold ℓ_old = −inf and a NaN sampler log-prob; (−inf)·0 and NaN·0 become d = 0
    old = [[-1.0, float("-inf"), float("-inf")]]
    sampler = [[-1.5, float("nan"), -2.0]]
    mask = [[1.0, 0.0, 0.0]]
    for mode in ("token_truncate", "token_mask"):
        close(weights(mode, 2.0, old, sampler, mask), [[E05, 1.0, 1.0]])
    for mode in ("sequence_truncate", "sequence_mask"):
        close(weights(mode, 2.0, old, sampler, mask), [[E05] * 3])


def test_nan_sampler_logp_counts_as_no_mismatch():
    # d = [NaN → 0, −1.0 + 1.5 = 0.5]
    old, sampler, mask = [[-1.0, -1.0]], [[float("nan"), -1.5]], [[1.0, 1.0]]
    close(weights("token_truncate", 10.0, old, sampler, mask), [[1.0, E05]])
    close(weights("token_mask", 10.0, old, sampler, mask), [[1.0, E05]])
    # sequence sum 0 + 0.5 = 0.5
    close(weights("sequence_truncate", 10.0, old, sampler, mask), [[E05, E05]])
    close(weights("sequence_mask", 10.0, old, sampler, mask), [[E05, E05]])
    # all NaN: every weight 1
    close(weights("sequence_mask", 1.0, old, [[float("nan")] * 2], mask), [[1.0, 1.0]])


def test_unknown_mode_raises():
    with pytest.raises(ValueError, match="unknown correction mode"):
        weights("token_clip", 2.0)


@pytest.mark.parametrize(
    "mode", ["none", "token_truncate", "token_mask", "sequence_truncate", "sequence_mask"]
)
def test_weights_carry_no_gradient(mode):
    old = torch.tensor(OLD, requires_grad=True)
    w = importance_weights(old, torch.tensor(SAMPLER), torch.tensor(MASK), mode, 2.0)
    assert not w.requires_grad
    assert w.grad_fn is None


def test_mismatch_metrics_by_hand():
    # row 0 only; trained tokens: d = [0.5, −1.0] (the masked 2.5 ignored)
    old, sampler, mask = torch.tensor([OLD[0]]), torch.tensor([SAMPLER[0]]), torch.tensor([MASK[0]])
    w = importance_weights(old, sampler, mask, "token_truncate", 1.5)  # [1.5, 0.3679, 1]
    m = mismatch_metrics(old, sampler, mask, w, 1.5)
    # k3 = exp(d) − d − 1: exp(0.5) − 1.5 = 0.1487212707; exp(−1) + 1 − 1 = 0.3678794412
    assert m["sampler_kl"] == pytest.approx((0.1487212707 + 0.3678794412) / 2, abs=1e-6)
    assert m["sampler_logp_abs_diff"] == pytest.approx((0.5 + 1.0) / 2, abs=1e-6)
    assert m["is_weight_mean"] == pytest.approx((1.5 + EM1) / 2, abs=1e-6)
    assert m["is_weight_min"] == pytest.approx(EM1, abs=1e-6)
    assert m["is_capped_frac"] == pytest.approx(0.5)  # 1.5 ≥ C, 0.3679 not
    # token_mask: [0, 0.3679] over trained tokens → 0 counts as capped
    wm = importance_weights(old, sampler, mask, "token_mask", 1.5)
    assert mismatch_metrics(old, sampler, mask, wm, 1.5)["is_capped_frac"] == pytest.approx(0.5)
    # no cap: nothing capped
    wi = importance_weights(old, sampler, mask, "token_truncate", math.inf)
    assert mismatch_metrics(old, sampler, mask, wi, math.inf)["is_capped_frac"] == 0.0


def test_mismatch_metrics_nan_and_empty():
    old, sampler, mask = torch.tensor([[-1.0, -1.0]]), torch.tensor([[float("nan"), -1.5]]), torch.ones(1, 2)
    w = importance_weights(old, sampler, mask, "token_truncate", 10.0)
    m = mismatch_metrics(old, sampler, mask, w, 10.0)
    # d = [0, 0.5]: k3 = [0, 0.1487212707]
    assert m["sampler_kl"] == pytest.approx(0.1487212707 / 2, abs=1e-6)
    assert m["sampler_logp_abs_diff"] == pytest.approx(0.25, abs=1e-6)
    assert mismatch_metrics(old, sampler, torch.zeros(1, 2), w, 10.0) == {}


def completion(logprobs):
    n = len(logprobs)
    return Completion(
        prompt_index=0,
        prompt_token_ids=[1, 2],
        token_ids=list(range(3, 3 + n)),
        text="x" * n,
        logprobs=logprobs,
        finish_reason="length",
    )


def test_sampler_logps_tensor_pads_with_nan_and_truncates():
    nan = float("nan")
    out = sampler_logps_tensor(
        [completion([-0.1, -0.2]), completion([-0.1, -0.2, -0.3, -0.4]), completion([])], 3
    )
    assert out.shape == (3, 3) and out.dtype == torch.float32
    expected = torch.tensor([[-0.1, -0.2, nan], [-0.1, -0.2, -0.3], [nan, nan, nan]])
    torch.testing.assert_close(out, expected, equal_nan=True)


# Loss: B = 1, T = 2, A = +1, ε = 0.2 (band [0.8, 1.2]), dapo = Σ m L / N_tok with N_tok = 2.
#   ℓ = [−0.9, −1.2], ℓ_old = [−1.0, −1.0] → ρ = [exp(0.1), exp(−0.2)] = [1.1051709181, 0.8187307531]
#   both inside the band, so PG_t = −ρ_t A: sum −1.9239016712
#   ℓ_ref = [−0.4, −1.2]: δ = ℓ_ref − ℓ = [0.5, 0.0] → k3 = [0.1487212707, 0]
def loss_batch(is_weights=None, beta=False):
    return LossBatch(
        logps=torch.tensor([[-0.9, -1.2]], requires_grad=True),
        old_logps=torch.tensor([[-1.0, -1.0]]),
        advantages=torch.tensor([1.0]),
        mask=torch.ones(1, 2),
        ref_logps=torch.tensor([[-0.4, -1.2]]) if beta else None,
        is_weights=is_weights,
    )


def test_is_weights_double_the_loss_without_kl():
    dapo = LOSSES.get("dapo")
    cfg = PolicyLossConfig()
    plain, _ = dapo(loss_batch(), cfg)
    doubled, _ = dapo(loss_batch(torch.full((1, 2), 2.0)), cfg)
    assert plain.item() == pytest.approx(-1.9239016712 / 2, abs=1e-6)
    assert doubled.item() == 2 * plain.item()  # exact: scaling by 2 is exact in floating point
    ones, _ = dapo(loss_batch(torch.ones(1, 2)), cfg)
    assert ones.item() == plain.item()


def test_is_weights_do_not_touch_kl_term():
    dapo = LOSSES.get("dapo")
    cfg = PolicyLossConfig(beta=0.1)
    plain, _ = dapo(loss_batch(beta=True), cfg)
    doubled, _ = dapo(loss_batch(torch.full((1, 2), 2.0), beta=True), cfg)
    pg, kl = -1.9239016712, 0.1 * 0.1487212707
    assert plain.item() == pytest.approx((pg + kl) / 2, abs=1e-6)  # −0.9545147721
    assert doubled.item() == pytest.approx((2 * pg + kl) / 2, abs=1e-6)  # −1.9164656077
    assert doubled.item() != pytest.approx(2 * plain.item(), abs=1e-4)  # KL not doubled
