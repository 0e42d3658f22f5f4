"""The online token RM's resume path never unpickles code from a run directory."""

from __future__ import annotations

import pickle
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from transformers import AutoModelForCausalLM, Qwen2Config

from telos.errors import UserError
from trainers.rl.token_rm_online import OPTIMIZER_FILE, OnlineTokenRM


class _Payload:
    """A pickle that, when fully unpickled, creates a file (stands in for arbitrary code)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _online_rm() -> OnlineTokenRM:
    from accelerate import Accelerator

    cfg = Qwen2Config(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64,
    )  # fmt: skip
    policy = AutoModelForCausalLM.from_config(cfg)
    ctx = SimpleNamespace(
        accelerator=Accelerator(cpu=True),
        model=policy,
        recipe=SimpleNamespace(train=SimpleNamespace(micro_batch_size=4, max_grad_norm=1.0)),
    )
    return OnlineTokenRM(ctx, SimpleNamespace(rm_lr=1e-3, rm_weight_decay=0.0))


def test_resume_loads_optimizer_state_without_running_pickled_code(tmp_path):
    rm = _online_rm()
    # one real step so the AdamW state holds tensors and step counts
    for p in rm.model.parameters():
        p.grad = torch.ones_like(p)
    rm.optimizer.step()
    rm.save(tmp_path)
    before = rm.optimizer.state_dict()["state"]
    rm.load(tmp_path)  # a genuine optimizer state loads with weights_only=True
    after = rm.optimizer.state_dict()["state"]
    assert sorted(before) == sorted(after)
    assert all(torch.equal(before[k]["exp_avg"], after[k]["exp_avg"]) for k in before)

    marker = tmp_path / "pwned"
    with open(tmp_path / OPTIMIZER_FILE, "wb") as f:
        pickle.dump({"state": {}, "param_groups": [], "x": _Payload(marker)}, f)
    with pytest.raises(UserError, match="not a plain optimizer state"):
        rm.load(tmp_path)
    assert not marker.exists()
