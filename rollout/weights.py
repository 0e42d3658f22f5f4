"""The trainer's weights as an engine loads them: Hugging Face names, LoRA merged, in buckets.

Engines take ``(name, tensor)`` pairs under the base model's Hugging Face names (what vLLM's
``load_weights`` expects). A PEFT model is exported as base + ΔW per adapted layer, computed
on the fly, so the trainer's weights are never merged and unmerged in place (which would let
rounding drift into the base weights over many steps).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

NamedTensor = tuple[str, torch.Tensor]


def exported_weights(model) -> list[NamedTensor]:
    """The model's full weights under base-model names (views where possible, no copies). Tied
    weights appear under each name: vLLM's CPU build keeps its own copy of a tied ``lm_head``.
    Under DeepSpeed ZeRO-3 each rank holds a shard: the full weights are gathered (and copied)
    first."""
    params = list(model.parameters())
    if any(hasattr(p, "ds_id") for p in params):
        import deepspeed

        with deepspeed.zero.GatheredParameters(params, modifier_rank=None):
            return [(n, t.clone()) for n, t in _exported(model)]
    return _exported(model)


def _exported(model) -> list[NamedTensor]:
    base, deltas = model, {}
    if hasattr(model, "get_base_model") and hasattr(model, "peft_config"):
        base = model.get_base_model()
        for name, module in base.named_modules():
            if hasattr(module, "get_delta_weight") and hasattr(module, "base_layer"):
                active = [a for a in module.active_adapters if a in getattr(module, "lora_A", {})]
                if active:
                    deltas[f"{name}.base_layer.weight"] = sum(module.get_delta_weight(a) for a in active)
    out = []
    for name, tensor in base.state_dict().items():
        if "lora_" in name:
            continue
        t = tensor.detach()
        if name in deltas:
            t = t + deltas[name].to(t.dtype)
        out.append((name.replace(".base_layer.", "."), t))
    return out


def buckets(named: Iterable[NamedTensor], max_bytes: int) -> Iterator[list[NamedTensor]]:
    """Consecutive groups of at most ``max_bytes`` (a tensor larger than that goes alone), so a
    push is a few large transfers rather than one per parameter."""
    bucket: list[NamedTensor] = []
    size = 0
    for name, t in named:
        nbytes = t.numel() * t.element_size()
        if bucket and size + nbytes > max_bytes:
            yield bucket
            bucket, size = [], 0
        bucket.append((name, t))
        size += nbytes
    if bucket:
        yield bucket


def bucket_to_bytes(bucket: list[NamedTensor]) -> bytes:
    """A bucket as one safetensors blob (no pickle crosses the wire)."""
    from safetensors.torch import save

    out, seen = {}, set()
    for name, t in bucket:
        t = t.contiguous().cpu()
        if t.data_ptr() in seen:  # safetensors refuses tensors sharing memory (tied weights)
            t = t.clone()
        seen.add(t.data_ptr())
        out[name] = t
    return save(out)


def bucket_from_bytes(blob: bytes) -> list[NamedTensor]:
    from safetensors.torch import load

    return list(load(blob).items())


@dataclass
class SyncTimer:
    """Seconds spent per phase of the last weight push, logged as ``sync/<phase>_s``."""

    phases: dict[str, float] = field(default_factory=dict)
    bytes: int = 0

    def reset(self) -> None:
        self.phases, self.bytes = {}, 0

    @contextmanager
    def time(self, phase: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.phases[phase] = self.phases.get(phase, 0.0) + time.perf_counter() - t0

    def metrics(self) -> dict[str, float]:
        if not self.phases:
            return {}
        out = {f"sync/{k}_s": v for k, v in self.phases.items()}
        out["sync/total_s"] = sum(self.phases.values())
        out["sync/megabytes"] = self.bytes / 2**20
        return out
