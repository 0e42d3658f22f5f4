"""Weight export for the engines (rollout/weights.py): buckets (size bound, order, coverage),
the safetensors byte round trip, the exported names and values of a plain and of a PEFT LoRA
model (merged on the fly, base weights untouched), and the sync timer's metrics."""

from __future__ import annotations

import copy

import pytest
import torch

from envs.math.procedural import generate
from rollout.weights import SyncTimer, bucket_from_bytes, bucket_to_bytes, buckets, exported_weights
from telos.models import TinyModelConfig, build_tiny_model, build_tokenizer


@pytest.fixture(scope="module")
def tok():
    rows = generate("arith", "train", 200, max_value=30)
    return build_tokenizer([r["prompt"] + "\n" + r["solution"] for r in rows], 300)


def tiny(tok):
    cfg = TinyModelConfig(hidden_size=32, num_layers=2, num_heads=2, num_kv_heads=1, intermediate_size=64)
    return build_tiny_model(cfg, tok)


def named(sizes, dtype=torch.float32):
    return [(f"t{i}", torch.full((n,), float(i), dtype=dtype)) for i, n in enumerate(sizes)]


def nbytes(t):
    return t.numel() * t.element_size()


@pytest.mark.parametrize("max_bytes", [1, 16, 40, 100, 10_000])
def test_buckets_bound_order_and_coverage(max_bytes):
    tensors = named([3, 1, 10, 2, 2, 30, 1, 4])  # float32: 12, 4, 40, 8, 8, 120, 4, 16 bytes
    out = list(buckets(tensors, max_bytes))
    assert all(out)
    for b in out:
        size = sum(nbytes(t) for _, t in b)
        assert size <= max_bytes or len(b) == 1  # an oversized tensor goes alone
    flat = [pair for b in out for pair in b]
    assert [n for n, _ in flat] == [n for n, _ in tensors]  # order kept, each exactly once
    assert all(a is b for (_, a), (_, b) in zip(flat, tensors, strict=True))


def test_buckets_by_hand():
    # 12, 4, 40, 8, 8 bytes with max 16: [12, 4] | [40] alone | [8, 8]
    out = list(buckets(named([3, 1, 10, 2, 2]), 16))
    assert [[n for n, _ in b] for b in out] == [["t0", "t1"], ["t2"], ["t3", "t4"]]
    assert list(buckets([], 16)) == []


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_bytes_round_trip(dtype):
    g = torch.Generator().manual_seed(0)
    bucket = [
        ("model.layers.0.self_attn.q_proj.weight", torch.randn(4, 6, generator=g).to(dtype)),
        ("model.norm.weight", torch.randn(6, generator=g).to(dtype)),
        ("lm_head.weight", torch.randn(8, 6, generator=g).to(dtype).t()),  # non-contiguous
    ]
    back = dict(bucket_from_bytes(bucket_to_bytes(bucket)))
    assert sorted(back) == sorted(n for n, _ in bucket)
    for name, t in bucket:
        assert back[name].dtype == dtype
        assert torch.equal(back[name], t)


def test_tied_weights_round_trip(tok):
    """A tied lm_head shares the embedding's memory, which safetensors refuses unless copied."""
    out = exported_weights(tiny(tok))
    names = dict(out)
    assert names["lm_head.weight"].data_ptr() == names["model.embed_tokens.weight"].data_ptr()
    back = dict(bucket_from_bytes(bucket_to_bytes(out)))
    assert torch.equal(back["lm_head.weight"], back["model.embed_tokens.weight"])
    assert list(back) == [n for n, _ in out] or sorted(back) == sorted(names)


def test_plain_model_exports_its_state_dict(tok):
    model = tiny(tok)
    out = exported_weights(model)
    sd = model.state_dict()
    assert [n for n, _ in out] == list(sd)  # tied lm_head included: vLLM's CPU build loads it
    for name, t in out:
        assert torch.equal(t, sd[name])
        assert not t.requires_grad


def test_lora_model_exports_merged_base_names(tok):
    from peft import LoraConfig, get_peft_model

    plain_names = list(tiny(tok).state_dict())
    model = get_peft_model(tiny(tok), LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_()  # B = 0 at init would make ΔW = 0 and the test vacuous
    before = {k: v.clone() for k, v in model.state_dict().items()}

    out = exported_weights(model)
    names = [n for n, _ in out]
    assert names == plain_names
    assert not any("lora_" in n or ".base_layer" in n for n in names)

    merged = copy.deepcopy(model).merge_and_unload().state_dict()
    assert list(merged) == plain_names
    exported = dict(out)
    adapted = [n for n in names if "q_proj.weight" in n or "v_proj.weight" in n]
    assert len(adapted) == 4  # 2 layers × (q, v)
    for name in names:
        torch.testing.assert_close(exported[name], merged[name], rtol=1e-5, atol=1e-6)
    # the delta really was added: adapted weights differ from the unmerged base
    base_sd = model.get_base_model().state_dict()
    for name in adapted:
        base = base_sd[name.replace(".weight", ".base_layer.weight")]
        assert not torch.allclose(exported[name], base)

    after = model.state_dict()
    assert list(after) == list(before)
    assert all(torch.equal(after[k], before[k]) for k in before)  # export merged nothing in place


def test_sync_timer_metrics():
    timer = SyncTimer()
    assert timer.metrics() == {}
    with timer.time("gather"):
        pass
    with timer.time("send"):
        pass
    with timer.time("send"):  # a phase timed twice accumulates
        pass
    timer.bytes = 3 * 2**20
    m = timer.metrics()
    assert set(m) == {"sync/gather_s", "sync/send_s", "sync/total_s", "sync/megabytes"}
    assert m["sync/gather_s"] >= 0 and m["sync/send_s"] >= 0
    assert m["sync/total_s"] == pytest.approx(m["sync/gather_s"] + m["sync/send_s"])
    assert m["sync/megabytes"] == 3.0
    timer.reset()
    assert timer.metrics() == {} and timer.bytes == 0
