"""The RL loop's policy log-probs are those of softmax(logits / T), T the sampling temperature
(TRL, verl and the official NFT code): the loss, the old and the reference log-probs alike.

A real tiny model and reference, one ``policy_update`` at T = 0.7 with lr 0; the k3 KL the loss
reports is checked against k3 computed here from a plain full-sequence forward of each model,
and the PPO ratio (new / old, two passes) must stay exactly 1.
"""

from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest
import torch
from accelerate import Accelerator

from telos.config import from_dict
from telos.models import TinyModelConfig, build_tiny_model, build_tokenizer
from telos.types import Completion
from trainers.rl.algorithms import make_algorithm
from trainers.rl.loop import RolloutBatch, policy_update
from trainers.rl.recipe import RECIPES
from trainers.rl.rollout_batch import ScoredGroups

T = 0.7
PROMPTS = [[5, 6, 7], [8, 9, 10]]  # equal lengths: the check below needs no padding
ANSWERS = [[11, 12, 13, 14], [15, 16, 17, 18], [19, 20, 21, 22], [23, 24, 25, 26]]


def _k3(model, ref, temperature: float) -> float:
    """Mean k3 = exp(ℓ_ref − ℓ) − (ℓ_ref − ℓ) − 1 over every answer token, ℓ = log softmax(z / T)."""
    ids = torch.tensor([PROMPTS[i // 2] + a for i, a in enumerate(ANSWERS)])
    wp = len(PROMPTS[0])

    def logps(m):
        z = m(input_ids=ids).logits[:, wp - 1 : -1].float() / temperature
        return torch.log_softmax(z, -1).gather(-1, ids[:, wp:, None]).squeeze(-1)

    with torch.no_grad():
        d = logps(ref) - logps(model)
    return float((torch.exp(d) - d - 1.0).mean())


@pytest.fixture(scope="module")
def models():
    tok = build_tokenizer(["1 + 2 = 3", "4 + 5 = 9", "7 - 3 = 4"], 64)
    torch.manual_seed(0)
    cfg = TinyModelConfig(hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1, intermediate_size=64)
    model = build_tiny_model(cfg, tok).float()
    ref = copy.deepcopy(model).eval().requires_grad_(False)
    with torch.no_grad():  # a reference that differs, so the KL is not 0
        for p in ref.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    return tok, model, ref


def test_loss_old_and_ref_logps_are_tempered(models):
    tok, model, ref = models
    recipe = from_dict(
        RECIPES["grpo"],
        {
            "trainer": "grpo",
            "model": {"name_or_path": "tiny:arith"},
            "data": {"train": "procedural:arith"},
            "sampling": {"temperature": T, "num_generations": 2, "max_tokens": 4},
            "grpo": {"beta": 0.04, "num_iterations": 2},
            "train": {"micro_batch_size": 4},
        },
    )
    acc = Accelerator(cpu=True)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)  # the weights stay as they are
    ctx = SimpleNamespace(
        recipe=recipe,
        accelerator=acc,
        model=model,
        tokenizer=tok,
        optimizer=optimizer,
        scheduler=torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0),
        ref_model=ref,
    )
    algo = make_algorithm(recipe)
    comps = [Completion(i // 2, PROMPTS[i // 2], a, "x", [-1.0] * 4, "stop") for i, a in enumerate(ANSWERS)]
    rewards = [1.0, 0.0, 0.0, 1.0]
    tb = algo.train_batch(ScoredGroups(comps, rewards, rewards, [0, 1]), 2, step=1, rank=0)
    out = policy_update(ctx, algo, RolloutBatch(tb, {}, 0), step=1)

    expected, untempered = _k3(model, ref, T), _k3(model, ref, 1.0)
    assert abs(expected - untempered) > 1e-3  # T matters here, so the check below can fail
    assert out["kl"] == pytest.approx(expected, rel=1e-4)
    assert out["ratio_mean"] == pytest.approx(1.0, abs=1e-6)  # old log-probs at the same T
