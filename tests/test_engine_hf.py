"""The hf engine: grouping, determinism, stop strings, finish reasons, and log-probs that
equal the trainer's own forward pass (the importance ratio depends on it)."""

from __future__ import annotations

import pytest
import torch

from envs.math.procedural import generate
from rollout.backends import make_engine
from rollout.hf import process_logits
from telos.models import TinyModelConfig, build_tiny_model, build_tokenizer
from telos.types import SamplingParams
from trainers.common.batching import completion_logps, pack_completions


@pytest.fixture(scope="module")
def engine():
    rows = generate("arith", "train", 300, max_value=30)
    tok = build_tokenizer([r["prompt"] + "\n" + r["solution"] for r in rows], 300)
    model = build_tiny_model(
        TinyModelConfig(hidden_size=32, num_layers=2, num_heads=2, num_kv_heads=1, intermediate_size=64), tok
    )
    return make_engine("hf", model, tok, max_batch_size=16)


PROMPTS = ["Tom has 3 apples. How many apples does Tom have now?\n", "Ana has 12 pens.\n", "Hi\n"]


def test_groups_and_lengths(engine):
    out = engine.generate(PROMPTS, SamplingParams(n=4, max_tokens=10, seed=0))
    assert len(out) == 12
    assert [c.prompt_index for c in out] == [0] * 4 + [1] * 4 + [2] * 4
    for c in out:
        assert len(c.token_ids) == len(c.logprobs) <= 10
        assert c.finish_reason in ("stop", "length")
        assert (c.finish_reason == "length") == (
            len(c.token_ids) == 10 and c.token_ids[-1] != engine.tokenizer.eos_token_id
        )
        assert all(lp <= 0 for lp in c.logprobs)


def test_seeded_sampling_is_reproducible_and_greedy_is_deterministic(engine):
    a = engine.generate(PROMPTS, SamplingParams(n=2, max_tokens=8, seed=7))
    b = engine.generate(PROMPTS, SamplingParams(n=2, max_tokens=8, seed=7))
    assert [c.token_ids for c in a] == [c.token_ids for c in b]
    g1 = engine.generate(PROMPTS, SamplingParams(temperature=0.0, max_tokens=8))
    g2 = engine.generate(PROMPTS, SamplingParams(temperature=1.0, top_k=1, max_tokens=8, seed=3))
    assert [c.token_ids for c in g1] == [c.token_ids for c in g2]


def test_batching_does_not_change_greedy_output(engine):
    """Left padding + position ids: a prompt decodes the same alone or in a padded batch."""
    together = engine.generate(PROMPTS, SamplingParams(temperature=0.0, max_tokens=8))
    alone = [engine.generate([p], SamplingParams(temperature=0.0, max_tokens=8))[0] for p in PROMPTS]
    assert [c.token_ids for c in together] == [c.token_ids for c in alone]


def test_logprobs_match_training_forward(engine):
    out = engine.generate(PROMPTS, SamplingParams(n=3, max_tokens=12, seed=1))
    packed = pack_completions(out, engine.tokenizer.pad_token_id)
    with torch.no_grad():
        lp = completion_logps(engine.model, packed)
    sampled = torch.zeros_like(lp)
    for i, c in enumerate(out):
        sampled[i, : len(c.logprobs)] = torch.tensor(c.logprobs)
    diff = ((lp - sampled) * packed.completion_mask).abs().max().item()
    assert diff < 1e-4


def test_stop_string_ends_text_before_it(engine):
    # find a string the model will produce, then ask the engine to stop there
    free = engine.generate(["Tom has 3 apples.\n"], SamplingParams(temperature=0.0, max_tokens=12))[0]
    text = free.text
    assert len(text) >= 4
    stop = text[2:4]
    out = engine.generate(
        ["Tom has 3 apples.\n"], SamplingParams(temperature=0.0, max_tokens=12, stop=[stop])
    )[0]
    assert out.finish_reason == "stop"
    assert stop not in out.text and text.startswith(out.text)
    assert len(out.token_ids) <= len(free.token_ids)


def test_process_logits_top_p_and_top_k():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    kept = process_logits(logits, SamplingParams(top_p=0.7)).isfinite()
    assert kept.tolist() == [[True, True, False, False]]  # 0.5 < 0.7 ≤ 0.5 + 0.3
    kept = process_logits(logits, SamplingParams(top_k=3)).isfinite()
    assert kept.tolist() == [[True, True, True, False]]
    scaled = process_logits(logits, SamplingParams(temperature=2.0))
    assert torch.allclose(scaled, logits / 2)


def test_shared_prompt_forward_equals_full_rows(engine):
    """Each prompt's forward runs once and its KV cache is copied per answer: the log-probs and
    the gradients equal those of the plain ``[prompt | completion]`` rows, also on a sub-batch
    that splits groups."""
    import dataclasses

    out = engine.generate(PROMPTS, SamplingParams(n=4, max_tokens=12, seed=2))
    shared = pack_completions(out, engine.tokenizer.pad_token_id)
    assert shared.prompt_group.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    for batch in (shared, shared.select([1, 2, 5, 9, 10, 11])):
        full = dataclasses.replace(batch, prompt_group=None)
        grads = []
        for b in (full, batch):
            engine.model.zero_grad()
            lp = completion_logps(engine.model, b)
            (lp * b.completion_mask).sum().backward()
            grads.append((lp.detach(), [p.grad.clone() for p in engine.model.parameters()]))
        (lp_full, g_full), (lp_shared, g_shared) = grads
        assert ((lp_full - lp_shared) * batch.completion_mask).abs().max() < 1e-5
        for a, b in zip(g_full, g_shared, strict=True):
            assert (a - b).norm() <= 1e-4 * a.norm() + 1e-8
    engine.model.zero_grad()
