"""A lean decoder for Llama/Qwen2-shaped models: the transformers forward rewritten as ~20 tensor
ops per layer over a preallocated KV cache, reading the trainer's own parameters.

Why: generation of small models on a CPU is bound by per-step overhead, not FLOPs — a
transformers forward spends milliseconds per decode step in Python (mask building, cache
objects, output classes, hooks), ~15 ms for the 4-layer tiny model against ~2 ms of math. Here
a decode step is the math: RMSNorm, fused q/k/v, rotary, one SDPA call over the static cache,
o-proj, fused gate/up, SiLU, down-proj. The weights are the live ``nn.Parameter`` objects of the
model (q/k/v and gate/up are concatenated once per weight version), so no sync is needed.

``LeanDecoder.supports(model)`` is the capability check: plain (non-PEFT, not ZeRO-3-sharded)
``LlamaForCausalLM`` / ``Qwen2ForCausalLM`` with default rotary embeddings, no sliding window;
anything else uses the transformers loop in ``rollout/hf.py``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

SUPPORTED = {"llama", "qwen2"}


def _rms_norm(x: Tensor, weight: Tensor, eps: float) -> Tensor:
    """w · x / sqrt(mean(x²) + eps), computed in fp32 like transformers' RMSNorm."""
    h = x.float()
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return weight * h.to(x.dtype)


def _rotate(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """x·cos + rotate_half(x)·sin, rotate_half(x) = [−x₂, x₁]."""
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


class LeanDecoder:
    """Prefill + one-token steps over a static KV cache for a batch of left-padded prompts."""

    @staticmethod
    def supports(model) -> bool:
        cfg = getattr(model, "config", None)
        if cfg is None or hasattr(model, "peft_config") or getattr(cfg, "model_type", None) not in SUPPORTED:
            return False
        if any(hasattr(p, "ds_id") for p in model.parameters()):  # ZeRO-3 shards: only its hooks gather them
            return False
        rope = getattr(cfg, "rope_scaling", None) or {}
        rope_type = (
            rope.get("rope_type", rope.get("type", "default")) if isinstance(rope, dict) else "default"
        )
        inner = getattr(model, "model", None)
        return (
            rope_type == "default"
            and not getattr(cfg, "use_sliding_window", False)
            and inner is not None
            and hasattr(inner, "rotary_emb")
            and getattr(cfg, "hidden_act", "silu") == "silu"
            and not getattr(cfg, "mlp_bias", False)
        )

    def __init__(self, model) -> None:
        cfg = model.config
        self.model = model
        self.n_heads = cfg.num_attention_heads
        self.n_kv = getattr(cfg, "num_key_value_heads", None) or self.n_heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // self.n_heads
        self.eps = cfg.rms_norm_eps
        rotary = model.model.rotary_emb
        self.inv_freq, self.rope_scale = rotary.inv_freq, float(getattr(rotary, "attention_scaling", 1.0))
        self._fused_version: tuple | None = None

    def _fused(self) -> list[tuple[Tensor, Tensor | None, Tensor, Tensor]]:
        """Per layer: q/k/v weight and bias concatenated, and gate/up concatenated; rebuilt when
        any parameter changed in place (the optimizer bumps each tensor's version counter)."""
        layers = self.model.model.layers
        version = tuple(p._version for p in self.model.parameters())
        if self._fused_version != version:
            fused = []
            for layer in layers:
                a, m = layer.self_attn, layer.mlp
                qkv_w = torch.cat([a.q_proj.weight, a.k_proj.weight, a.v_proj.weight]).detach()
                biases = [a.q_proj.bias, a.k_proj.bias, a.v_proj.bias]
                qkv_b = torch.cat(biases).detach() if all(b is not None for b in biases) else None
                gate_up = torch.cat([m.gate_proj.weight, m.up_proj.weight]).detach()
                fused.append((qkv_w, qkv_b, gate_up, m.down_proj.weight.detach()))
            self._fused_cache, self._fused_version = fused, version
        return self._fused_cache

    def _rope(self, positions: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        freqs = positions[..., None].float() * self.inv_freq.float()
        emb = torch.cat((freqs, freqs), dim=-1)
        cos, sin = emb.cos() * self.rope_scale, emb.sin() * self.rope_scale
        return cos[:, None].to(dtype), sin[:, None].to(dtype)  # [B, 1, T, d]

    @torch.no_grad()
    def prefill(self, input_ids: Tensor, mask: Tensor) -> tuple[Tensor, list[Tensor], list[Tensor], Tensor]:
        """Run left-padded prompts ([P, W], mask 1 on real tokens) through the model without
        touching the decoder's cache: (next-token logits [P, V], per-layer keys and values
        [P, kv, W, d], each row's last position [P])."""
        w = input_ids.shape[1]
        self.weights = self._fused()
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        # causal within the prompt, padding columns never attended to (a fully padded query row
        # attends to itself so SDPA never sees an all-masked row)
        causal = torch.ones(w, w, dtype=torch.bool, device=input_ids.device).tril()
        attend = causal[None] & mask.bool()[:, None, :]
        attend |= torch.eye(w, dtype=torch.bool, device=input_ids.device)[None]
        logits, ks, vs = self._forward(input_ids, positions, attend[:, None], cache_len=0, prefill=True)
        return logits[:, -1], ks, vs, positions[:, -1]

    def start(self, input_ids: Tensor, mask: Tensor, max_new: int, repeat: Tensor | None = None) -> Tensor:
        """Prefill left-padded prompts ([P, W], mask 1 on real tokens); ``repeat`` ([B] prompt
        index per row) copies each prompt's cache to its rows. Returns [B, V] next-token logits."""
        p, w = input_ids.shape
        dtype = self.model.model.embed_tokens.weight.dtype
        device = input_ids.device
        rows = p if repeat is None else len(repeat)
        logits, ks, vs, last_positions = self.prefill(input_ids, mask)
        shape = (rows, self.n_kv, w + max_new, self.head_dim)
        self.k = [torch.zeros(shape, dtype=dtype, device=device) for _ in self.model.model.layers]
        self.v = [torch.zeros(shape, dtype=dtype, device=device) for _ in self.model.model.layers]
        self.length = w
        index = slice(None) if repeat is None else repeat
        for layer, (k, v) in enumerate(zip(ks, vs, strict=True)):
            self.k[layer][:, :, :w] = k[index]
            self.v[layer][:, :, :w] = v[index]
        self.key_mask = torch.zeros(rows, w + max_new, dtype=torch.bool, device=device)
        self.key_mask[:, :w] = mask.bool()[index]
        self.positions = last_positions[index]
        return logits[index]

    def select(self, rows: Tensor) -> None:
        """Keep only these rows (finished ones leave the batch)."""
        self.k = [k[rows] for k in self.k]
        self.v = [v[rows] for v in self.v]
        self.key_mask, self.positions = self.key_mask[rows], self.positions[rows]

    @torch.no_grad()
    def step(self, tokens: Tensor) -> Tensor:
        """Append one token per row; [B, V] logits for the next."""
        t = self.length
        self.key_mask[:, t] = True
        self.positions = self.positions + 1
        attend = self.key_mask[:, None, None, : t + 1]
        logits, _, _ = self._forward(
            tokens[:, None], self.positions[:, None], attend, cache_len=t, prefill=False
        )
        self.length = t + 1
        return logits[:, -1]

    def _forward(self, ids: Tensor, positions: Tensor, attend: Tensor, cache_len: int, prefill: bool):
        m = self.model.model
        h = F.embedding(ids, m.embed_tokens.weight)
        cos, sin = self._rope(positions, h.dtype)
        b, t = ids.shape
        hq, hk, d = self.n_heads, self.n_kv, self.head_dim
        ks, vs = [], []
        for i, (layer, (qkv_w, qkv_b, gate_up, down)) in enumerate(zip(m.layers, self.weights, strict=True)):
            x = _rms_norm(h, layer.input_layernorm.weight, self.eps)
            qkv = F.linear(x, qkv_w, qkv_b)
            q, k, v = qkv.split([hq * d, hk * d, hk * d], dim=-1)
            q = _rotate(q.view(b, t, hq, d).transpose(1, 2), cos, sin)
            k = _rotate(k.view(b, t, hk, d).transpose(1, 2), cos, sin)
            v = v.view(b, t, hk, d).transpose(1, 2)
            if prefill:
                ks.append(k)
                vs.append(v)
                keys, values = k, v
            else:
                self.k[i][:, :, cache_len : cache_len + t] = k
                self.v[i][:, :, cache_len : cache_len + t] = v
                keys, values = self.k[i][:, :, : cache_len + t], self.v[i][:, :, : cache_len + t]
            # grouped-query attention without copying the cache per query head
            attn = F.scaled_dot_product_attention(q, keys, values, attn_mask=attend, enable_gqa=hk != hq)
            o_proj = layer.self_attn.o_proj
            h = h + F.linear(attn.transpose(1, 2).reshape(b, t, hq * d), o_proj.weight, o_proj.bias)
            x = _rms_norm(h, layer.post_attention_layernorm.weight, self.eps)
            gate, up = F.linear(x, gate_up).chunk(2, dim=-1)
            h = h + F.linear(F.silu(gate) * up, down)
        h = _rms_norm(h[:, -1:], m.norm.weight, self.eps)
        return F.linear(h, self.model.lm_head.weight).float(), ks, vs
