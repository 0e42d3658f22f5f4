"""Turning sampled completions into padded tensors, and per-token log-probs of completions."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from telos.types import Completion


@dataclass
class PackedBatch:
    """``[prompt (left-padded) | completion (right-padded)]`` rows; completion columns are the
    last ``completion_mask.shape[1]`` ones, so logits are computed for those positions only."""

    input_ids: torch.Tensor  # [B, Wp + Wc]
    attention_mask: torch.Tensor  # [B, Wp + Wc]
    completion_ids: torch.Tensor  # [B, Wc]
    completion_mask: torch.Tensor  # [B, Wc] float

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def to(self, device: torch.device | str) -> PackedBatch:
        return PackedBatch(
            *(
                t.to(device)
                for t in (self.input_ids, self.attention_mask, self.completion_ids, self.completion_mask)
            )
        )

    def select(self, idx: list[int] | torch.Tensor) -> PackedBatch:
        idx = torch.as_tensor(idx, dtype=torch.long)
        return PackedBatch(
            *(
                t[idx]
                for t in (self.input_ids, self.attention_mask, self.completion_ids, self.completion_mask)
            )
        )


def pack_completions(completions: list[Completion], pad_id: int) -> PackedBatch:
    wp = max(len(c.prompt_token_ids) for c in completions)
    wc = max(1, max(len(c.token_ids) for c in completions))
    n = len(completions)
    input_ids = torch.full((n, wp + wc), pad_id, dtype=torch.long)
    attn = torch.zeros((n, wp + wc), dtype=torch.long)
    cmask = torch.zeros((n, wc))
    for i, c in enumerate(completions):
        p, t = c.prompt_token_ids, c.token_ids
        input_ids[i, wp - len(p) : wp] = torch.tensor(p, dtype=torch.long)
        attn[i, wp - len(p) : wp] = 1
        if t:
            input_ids[i, wp : wp + len(t)] = torch.tensor(t, dtype=torch.long)
            attn[i, wp : wp + len(t)] = 1
            cmask[i, : len(t)] = 1.0
    return PackedBatch(input_ids, attn, input_ids[:, wp:], cmask)


def completion_logits(model, batch: PackedBatch) -> torch.Tensor:
    """[B, Wc, V] fp32 logits that predict each completion column (only those positions are
    materialised, via ``logits_to_keep``)."""
    wc = batch.completion_ids.shape[1]
    positions = (batch.attention_mask.cumsum(-1) - 1).clamp(min=0)
    return (
        model(
            input_ids=batch.input_ids,
            attention_mask=batch.attention_mask,
            position_ids=positions,
            logits_to_keep=wc + 1,
            use_cache=False,  # a training forward: a KV cache would only cost time and memory
        )
        .logits[:, :-1]
        .float()
    )


def token_logps(logits: torch.Tensor, ids: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """log softmax(logits / T)[ids], taken as ``logit[y] − logsumexp(logits)`` so the full
    [B, T, V] log-prob tensor never exists — it dominates memory with 150k-token vocabularies."""
    if temperature != 1.0:
        logits = logits / temperature
    picked = logits.gather(-1, ids.unsqueeze(-1)).squeeze(-1)
    return picked - torch.logsumexp(logits, dim=-1)


def completion_logps(model, batch: PackedBatch) -> torch.Tensor:
    """log π(y_t | x, y_<t) for every completion column, shape [B, Wc]."""
    return token_logps(completion_logits(model, batch), batch.completion_ids)


def accumulate(
    acc, model, n_local: int, micro_batch_size: int, loss_of: Callable[[list[int], int], Tensor]
) -> int:
    """Forward/backward this rank's ``n_local`` sequences in micro-batches of
    ``micro_batch_size`` — ``loss_of(indices, num_micro_batches)`` returns each micro-batch's
    share of the loss — with gradients all-reduced once, on the last backward.

    Every rank runs the same number of micro-batches (the maximum over ranks), so DDP's
    collectives stay in step; a rank that has run out backpropagates a zero loss.
    Returns that number of micro-batches.
    """
    counts = acc.gather(torch.tensor([float(n_local)], device=acc.device))
    num_micro = max(1, math.ceil(counts.max().item() / micro_batch_size))
    for m in range(num_micro):
        idx = list(range(m * micro_batch_size, min((m + 1) * micro_batch_size, n_local)))
        sync = m == num_micro - 1
        with acc.no_sync(model) if not sync else contextlib.nullcontext():
            loss = loss_of(idx, num_micro) if idx else sum(p.sum() for p in model.parameters()) * 0.0
            acc.backward(loss)
    return num_micro
