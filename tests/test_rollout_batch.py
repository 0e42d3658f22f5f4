"""Dynamic sampling, unscorable rewards and the resumable prompt sampler."""

from __future__ import annotations

import math

import pytest
import torch

from envs.math.procedural import generate
from rollout.backends import make_engine
from telos.config import from_dict
from telos.models import TinyModelConfig, build_tiny_model, build_tokenizer
from telos.types import Completion, SamplingParams
from trainers.common.sampler import PromptSampler
from trainers.rl.algorithms import make_algorithm
from trainers.rl.recipe import RECIPES
from trainers.rl.rollout_batch import (
    ScoredGroups,
    generate_scored_groups,
    keep_informative_groups,
    rewards_tensor,
)


def _completion(i: int) -> Completion:
    return Completion(i, [1], [2], "x", [-0.1], "stop")


def test_keep_informative_groups_drops_flat_groups():
    groups = ScoredGroups(
        completions=[_completion(i // 2) for i in range(6)],
        rewards=[1.0, 1.0, 0.0, 1.0, 0.0, 0.0],
        correct=[1.0, 1.0, 0.0, 1.0, 0.0, 0.0],
        row_indices=[10, 11, 12],
    )
    kept, n_flat = keep_informative_groups(groups, group_size=2)
    assert n_flat == 2
    assert kept.row_indices == [11]
    assert kept.rewards == [0.0, 1.0]


def test_unscorable_samples_stay_nan_and_are_masked():
    r, valid = rewards_tensor([1.0, None, 0.0, 0.0, None, None], group_size=3)
    assert valid.tolist() == [True, False, True, True, False, False]
    assert r[valid].tolist() == [1.0, 0.0, 0.0]
    assert torch.isnan(r[~valid]).all()


def _recipe(trainer: str, **section):
    return from_dict(
        RECIPES[trainer],
        {
            "trainer": trainer,
            "model": {"name_or_path": "tiny:arith"},
            "data": {"train": "procedural:arith"},
            trainer: section,
        },
    )


@pytest.mark.parametrize(
    "advantage, expected",
    [
        # group 0 = [1, None, 0, 0]: scored mean 1/3, Bessel std over the 3 scored = sqrt(1/3);
        # A₀ = (2/3)/sqrt(1/3) = 1.1547 (filled with the mean it was 1.414: n = 4, σ = sqrt(2/9)).
        ("grpo", [2 / 3 / math.sqrt(1 / 3), 0.0, -1 / 3 / math.sqrt(1 / 3), -1 / 3 / math.sqrt(1 / 3)]),
        # RLOO, n = 3 scored: A₀ = 1 − mean(0, 0) = 1.0, A₂ = 0 − mean(1, 0) = −0.5 (was 0.889).
        ("rloo", [1.0, 0.0, -0.5, -0.5]),
    ],
)
def test_loop_advantages_with_unscorable_answer_equal_trl(advantage, expected):
    """The loop's advantages (rewards_tensor → the recipe's estimator) on a group with an
    unscorable answer equal TRL's formula (NaN reward, nanmean/nanstd, 1e-4) and the
    unscorable answer is masked out of the loss (no gradient)."""
    from trl.trainer.utils import nanstd

    groups = ScoredGroups([_completion(0)] * 4, [1.0, None, 0.0, 0.0], [1.0, None, 0.0, 0.0], [0])
    tb = make_algorithm(_recipe("grpo", advantage=advantage)).train_batch(groups, 4, step=1, rank=0)
    torch.testing.assert_close(tb.advantages, torch.tensor(expected), atol=1e-3, rtol=0)
    assert tb.valid.tolist() == [True, False, True, True]
    if advantage == "grpo":  # TRL 1.16 GRPOTrainer, scale_rewards="group", the same lines
        r = torch.tensor([1.0, math.nan, 0.0, 0.0])
        trl = torch.nan_to_num((r - torch.nanmean(r)) / (nanstd(r.view(1, 4), dim=1) + 1e-4), nan=0.0)
        torch.testing.assert_close(tb.advantages, trl, atol=1e-6, rtol=0)
        assert abs(tb.advantages[0].item() - 1.155) < 1e-3


def test_prompt_sampler_resumes_exactly():
    a = PromptSampler(7, seed=3)
    first = a.take(10)
    rest = a.take(12)
    b = PromptSampler(7, seed=3, cursor=10)
    assert b.take(12) == rest
    assert sorted(first[:7]) == list(range(7))  # each epoch is a permutation


def test_dynamic_sampling_refills_with_informative_groups():
    """A real tiny engine; a reward that gives every answer the same score on even rows
    (no signal) and a length-dependent score on odd rows. Only odd rows survive."""
    rows = generate("arith", "train", 40, max_value=30)
    for i, r in enumerate(rows):
        r["row_id"] = i
    tok = build_tokenizer([r["prompt"] + "\n" + r["solution"] for r in rows], 300)
    model = build_tiny_model(
        TinyModelConfig(hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1, intermediate_size=64), tok
    )
    engine = make_engine("hf", model, tok)

    def reward(prompts, completions, row_id, **_):
        return [
            0.0 if rid % 2 == 0 else float(len(c) % 2) for c, rid in zip(completions, row_id, strict=True)
        ]

    idx = list(range(8))
    groups = generate_scored_groups(
        engine,
        rows,
        idx,
        [rows[i]["prompt"] + "\n" for i in idx],
        SamplingParams(n=4, max_tokens=8, seed=0),
        [reward],
        [1.0],
        None,
    )
    kept, n_flat = keep_informative_groups(groups, 4)
    assert n_flat >= 4  # every even row is flat
    assert all(i % 2 == 1 for i in kept.row_indices)
    assert len(kept.completions) == 4 * len(kept.row_indices)
