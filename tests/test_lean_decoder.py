"""The hf engine's lean decoder (rollout/lean.py) against the transformers forward it replaces:
same greedy and seeded samples, same log-probs, for Qwen2 (q/k/v biases) and Llama (grouped-
query attention, no biases); PEFT models and unsupported shapes fall back; inverse-CDF sampling
draws from the right distribution and never picks a zero-probability token."""

from __future__ import annotations

import pytest
import torch

from envs.math.procedural import generate
from rollout.backends import make_engine
from rollout.hf import sample_categorical
from rollout.lean import LeanDecoder
from telos.models import TinyModelConfig, build_tiny_model, build_tokenizer
from telos.types import SamplingParams

PROMPTS = ["Tom has 3 apples. How many apples does Tom have now?\n", "Ana has 12 pens.\n", "Hi\n"]


@pytest.fixture(scope="module")
def tok():
    rows = generate("arith", "train", 300, max_value=30)
    return build_tokenizer([r["prompt"] + "\n" + r["solution"] for r in rows], 300)


@pytest.mark.parametrize("arch,kv_heads", [("qwen2", 2), ("llama", 1)])
def test_lean_equals_transformers(tok, arch, kv_heads):
    cfg = TinyModelConfig(arch=arch, hidden_size=64, num_layers=2, num_heads=2, num_kv_heads=kv_heads)
    model = build_tiny_model(cfg, tok, seed=1)
    with torch.no_grad():  # larger weights: sharper distributions, so a wrong op shows in the ids
        for p in model.parameters():
            p.mul_(3.0)
    lean, plain = make_engine("hf", model, tok), make_engine("hf", model, tok, lean=False)
    assert lean.lean and not plain.lean
    for params in (
        SamplingParams(temperature=0.0, max_tokens=16),
        SamplingParams(n=3, max_tokens=16, seed=5),
    ):
        a, b = lean.generate(PROMPTS, params), plain.generate(PROMPTS, params)
        assert [c.token_ids for c in a] == [c.token_ids for c in b]
        for x, y in zip(a, b, strict=True):
            assert max((abs(u - v) for u, v in zip(x.logprobs, y.logprobs, strict=True)), default=0) < 1e-4


def test_lean_follows_weight_updates(tok):
    """The fused q/k/v and gate/up copies are rebuilt when the optimizer changes a weight."""
    model = build_tiny_model(TinyModelConfig(hidden_size=64, num_layers=2, num_heads=2, num_kv_heads=1), tok)
    lean, plain = make_engine("hf", model, tok), make_engine("hf", model, tok, lean=False)
    greedy = SamplingParams(temperature=0.0, max_tokens=12)
    lean.generate(PROMPTS, greedy)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.k_proj.weight.add_(torch.randn_like(layer.self_attn.k_proj.weight))
            layer.mlp.up_proj.weight.mul_(-2.0)
    assert [c.token_ids for c in lean.generate(PROMPTS, greedy)] == [
        c.token_ids for c in plain.generate(PROMPTS, greedy)
    ]


def test_unsupported_models_fall_back(tok):
    from peft import LoraConfig, get_peft_model

    model = build_tiny_model(TinyModelConfig(hidden_size=64, num_layers=1, num_heads=2, num_kv_heads=1), tok)
    assert LeanDecoder.supports(model)
    peft_model = get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj"]))
    assert not LeanDecoder.supports(peft_model)
    assert not make_engine("hf", peft_model, tok).lean


def test_sample_categorical_distribution():
    probs = torch.tensor([[0.0, 0.5, 0.0, 0.3, 0.2]]).repeat(20_000, 1)
    draws = sample_categorical(probs, torch.Generator().manual_seed(0))
    freq = torch.bincount(draws, minlength=5).float() / len(draws)
    assert freq[0] == 0 and freq[2] == 0  # zero mass is never drawn
    assert torch.allclose(freq, probs[0], atol=0.015)  # ±3.5σ at n = 20k
