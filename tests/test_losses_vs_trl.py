"""Our GRPO-family losses and advantages equal TRL 1.16's own code on the same inputs.

TRL's loss lives in ``GRPOTrainer._compute_loss(model, inputs)`` and its advantages inline in
``GRPOTrainer._generate_and_score_completions(inputs)``; neither is a free function. We call the
real methods on a trainer built with ``object.__new__`` (no model, no dataset, no accelerate
state), set only the attributes those methods read, and stub what lies outside the maths:

- ``_get_per_token_logps_and_entropies`` (the model forward) returns our log-prob tensor;
- ``accelerator`` is a single-process stand-in whose gather/reduce are the identity;
- ``_generate`` returns fixed token ids, ``_calculate_rewards`` returns our reward tensor,
  and the module's ``gather_object`` is the identity.

TRL's gradient-accumulation convention (what the comparison relies on): grpo/bnpo/dr_grpo divide
each micro-batch's loss by ``current_gradient_accumulation_steps``; dapo divides the token sum by
``num_items_in_batch`` (tokens of the generation batch) × accumulation steps / steps_per_generation,
which with steps_per_generation = accumulation steps is the step's token count.
"""

from __future__ import annotations

import math
from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch

trl_grpo = pytest.importorskip("trl.trainer.grpo_trainer")

from trainers.rl.advantages import group_normalized  # noqa: E402
from trainers.rl.losses import LOSSES, LossBatch, PolicyLossConfig  # noqa: E402

GRPOTrainer = trl_grpo.GRPOTrainer

B, T = 4, 6  # one optimizer step: 2 micro-batches of 2 sequences, 6 completion tokens
MICRO = [[0, 1], [2, 3]]
MAX_COMPLETION_LENGTH = 8
EPS_LOW, EPS_HIGH = 0.2, 0.28  # asymmetric, so a swapped ε_low/ε_high would show


class SingleProcessAccelerator:
    """What TRL calls on ``self.accelerator``, for one process: gather/reduce are identities."""

    num_processes = 1
    process_index = 0
    device = torch.device("cpu")
    sync_gradients = True

    def gather(self, tensor):
        return tensor

    gather_for_metrics = gather

    def reduce(self, tensor, reduction="sum"):
        return tensor


def trl_trainer(**attrs) -> GRPOTrainer:
    """A GRPOTrainer shell with plain attributes only: __init__ (model, data, accelerate) skipped."""
    trainer = object.__new__(GRPOTrainer)
    base = {
        "accelerator": SingleProcessAccelerator(),
        "model": SimpleNamespace(training=True, is_gradient_checkpointing=False),
        "_metrics": {"train": defaultdict(list), "eval": defaultdict(list)},
        "use_vllm": False,
        "vllm_importance_sampling_correction": False,
        "beta": 0.0,
    }
    for key, value in {**base, **attrs}.items():
        setattr(trainer, key, value)
    return trainer


def make_step(seed: int = 0):
    """Random log-probs for one step: ratios spread well outside the clip band, ragged padding."""
    g = torch.Generator().manual_seed(seed)
    old = -torch.rand(B, T, generator=g) * 3.0
    logps = old + torch.randn(B, T, generator=g) * 0.4  # ρ from ~0.3 to ~3
    ref = old + torch.randn(B, T, generator=g) * 0.3
    lengths = torch.tensor([6, 3, 5, 1])  # completion lengths; the rest is right padding
    mask = (torch.arange(T)[None, :] < lengths[:, None]).long()
    advantages = torch.tensor([1.3, -0.7, -1.1, 0.5])
    return logps, old, ref, mask, advantages


def trl_micro_loss(loss_type: str, beta: float, rows, logps_leaf, old, ref, mask, adv):
    """Run TRL's real ``_compute_loss`` on one micro-batch; returns (loss, its metrics)."""
    trainer = trl_trainer(
        loss_type=loss_type,
        beta=beta,
        epsilon_low=EPS_LOW,
        epsilon_high=EPS_HIGH,
        importance_sampling_level="token",
        top_entropy_quantile=1.0,
        off_policy_mask_threshold=None,
        aux_loss_enabled=False,
        _entropy_bonus_enabled=False,
        current_gradient_accumulation_steps=len(MICRO),
        max_completion_length=MAX_COMPLETION_LENGTH,
        args=SimpleNamespace(use_bias_correction_kl=False, delta=None, steps_per_generation=len(MICRO)),
    )
    micro_logps = logps_leaf[rows]

    def fake_forward(model, input_ids, attention_mask, logits_to_keep, **kwargs):
        # Stands in for the model forward: the log-probs under test, entropies unused.
        return micro_logps, torch.zeros_like(micro_logps), None

    trainer._get_per_token_logps_and_entropies = fake_forward
    inputs = {
        "prompt_ids": torch.zeros(len(rows), 2, dtype=torch.long),
        "prompt_mask": torch.ones(len(rows), 2, dtype=torch.long),
        "completion_ids": torch.zeros(len(rows), T, dtype=torch.long),
        "completion_mask": mask[rows],
        "advantages": adv[rows],
        "old_per_token_logps": old[rows],
        "num_items_in_batch": mask.sum(),  # tokens of the whole generation batch (= step)
    }
    if beta != 0.0:
        inputs["ref_per_token_logps"] = ref[rows]
    loss = trainer._compute_loss(trainer.model, inputs)
    metrics = {k: v[-1] for k, v in trainer._metrics["train"].items()}
    return loss, metrics


@pytest.mark.parametrize("beta", [0.0, 0.04])
@pytest.mark.parametrize("loss_type", ["grpo", "dapo", "bnpo", "dr_grpo"])
def test_loss_and_gradient_match_trl(loss_type, beta):
    logps, old, ref, mask, adv = make_step()
    ours_leaf = logps.clone().requires_grad_()
    trl_leaf = logps.clone().requires_grad_()
    cfg = PolicyLossConfig(epsilon=EPS_LOW, epsilon_high=EPS_HIGH, beta=beta)

    clipped_somewhere = False
    for rows in MICRO:
        trl_loss, trl_metrics = trl_micro_loss(loss_type, beta, rows, trl_leaf, old, ref, mask, adv)
        batch = LossBatch(
            logps=ours_leaf[rows],
            old_logps=old[rows],
            advantages=adv[rows],
            mask=mask[rows].float(),
            ref_logps=ref[rows] if beta != 0.0 else None,
            num_sequences=B,
            num_tokens=float(mask.sum()),
            num_micro_batches=len(MICRO),
            max_completion_length=MAX_COMPLETION_LENGTH,
        )
        our_loss, our_metrics = LOSSES.get(loss_type)(batch, cfg)
        torch.testing.assert_close(our_loss, trl_loss)
        our_loss.backward()
        trl_loss.backward()
        for key in ("clip_ratio/low_mean", "clip_ratio/high_mean", "clip_ratio/region_mean"):
            assert our_metrics[key] == pytest.approx(trl_metrics[key], abs=1e-6), key
        if beta != 0.0:
            assert our_metrics["kl"] == pytest.approx(trl_metrics["kl"], rel=1e-5)
        clipped_somewhere |= trl_metrics["clip_ratio/region_mean"] > 0

    assert clipped_somewhere, "test data should exercise the clip"
    torch.testing.assert_close(ours_leaf.grad, trl_leaf.grad)
    assert ours_leaf.grad.abs().sum() > 0


# --- advantages -----------------------------------------------------------------------------

G = 4


def trl_advantages(rewards: torch.Tensor, scale: str, monkeypatch) -> torch.Tensor:
    """Run TRL's real ``_generate_and_score_completions`` with generation and rewards stubbed."""
    n = rewards.numel()
    monkeypatch.setattr(trl_grpo, "gather_object", lambda obj: obj)
    trainer = trl_trainer(
        environment_factories=None,
        environments=None,
        tools=None,
        _tokenizer=SimpleNamespace(pad_token_id=0),
        pad_to_multiple_of=None,
        mask_truncated_completions=False,
        num_iterations=1,
        num_generations=G,
        multi_objective_aggregation="sum_then_normalize",
        reward_weights=torch.ones(1),
        reward_func_names=["reward"],
        scale_rewards=scale,
        _logs={
            "prompt": [],
            "completion": [],
            "rewards": defaultdict(list),
            "advantages": [],
            "extra": defaultdict(list),
        },
        _pending_extra_logs={},
        _pending_metrics={},
        log_multimodal=False,
        args=SimpleNamespace(
            per_device_train_batch_size=n,
            steps_per_generation=1,
            gradient_accumulation_steps=1,
            gradient_checkpointing_kwargs=None,
        ),
    )
    # (prompt ids, completion ids, tool mask, completions, sampler logps, extra, images, tool images)
    trainer._generate = lambda prompts: ([[1, 2]] * n, [[3, 4]] * n, None, ["c"] * n, None, {}, None, [])
    # One reward function; NaN = it returned None ("cannot score").
    trainer._calculate_rewards = lambda *args: rewards.unsqueeze(1)
    out = trainer._generate_and_score_completions([{"prompt": "q"} for _ in range(n)])
    return out["advantages"]


REWARD_CASES = {
    "binary": [1.0, 0, 0, 0, 1, 1, 1, 1, 0, 1, 0, 1],
    "graded": [0.2, 0.9, 0.4, 0.4, -1.0, 0.5, 2.0, 0.0, 0.3, 0.3, 0.3, 0.3],
    "unscorable": [1.0, math.nan, 0, 0, math.nan, math.nan, math.nan, 1, 0.5, 0.1, 0.9, 0.2],
}


@pytest.mark.parametrize("case", REWARD_CASES)
@pytest.mark.parametrize("scale", ["group", "batch", "none"])
def test_group_normalized_matches_trl(case, scale, monkeypatch):
    rewards = torch.tensor(REWARD_CASES[case])
    expected = trl_advantages(rewards, scale, monkeypatch)
    torch.testing.assert_close(group_normalized(rewards, G, scale=scale), expected)
