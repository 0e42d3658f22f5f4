"""Turning sampled completions into padded tensors, and per-token log-probs of completions.

GRPO trains G answers per prompt, so a training forward over ``[prompt | completion]`` rows
computes every prompt G times. ``completion_logits`` runs each distinct prompt once, keeps its
KV cache, repeats the cache per answer and runs only the completion tokens on top of it: the
same log-probs and gradients (the cache stays in the autograd graph) for
P·Wp + B·Wc instead of B·(Wp + Wc) token positions.
"""

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
    # [B] equal ids ⇔ identical prompt tokens (rows may share the prompt's forward); None: never share
    prompt_group: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def _tensors(self) -> tuple[torch.Tensor | None, ...]:
        return (
            self.input_ids,
            self.attention_mask,
            self.completion_ids,
            self.completion_mask,
            self.prompt_group,
        )

    def to(self, device: torch.device | str) -> PackedBatch:
        return PackedBatch(*(None if t is None else t.to(device) for t in self._tensors()))

    def select(self, idx: list[int] | torch.Tensor) -> PackedBatch:
        idx = torch.as_tensor(idx, dtype=torch.long, device=self.input_ids.device)
        return PackedBatch(*(None if t is None else t[idx] for t in self._tensors()))


def prompt_groups(prompts: list[list[int]]) -> torch.Tensor:
    """[B] a group id per row: rows with identical prompt token ids get the same id."""
    ids: dict[tuple[int, ...], int] = {}
    return torch.tensor([ids.setdefault(tuple(p), len(ids)) for p in prompts], dtype=torch.long)


def pack_completions(completions: list[Completion], pad_id: int, share_prompts: bool = True) -> PackedBatch:
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
            cmask[i, : len(t)] = 1.0 if c.loss_mask is None else torch.tensor(c.loss_mask, dtype=torch.float)
    groups = prompt_groups([c.prompt_token_ids for c in completions]) if share_prompts else None
    return PackedBatch(input_ids, attn, input_ids[:, wp:], cmask, groups)


def _shares_cache(model) -> bool:
    """Gradient checkpointing turns the KV cache off inside transformers, which would silently
    drop the prompt from the completion pass."""
    inner = getattr(model, "module", model)  # DDP
    return not getattr(inner, "is_gradient_checkpointing", False)


def _ranks_in_lockstep() -> bool:
    """Under DDP every forward call broadcasts buffers, and under ZeRO-3 gathers parameters:
    all ranks must make the same number of calls, so no choice may depend on local data."""
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def completion_logits(model, batch: PackedBatch) -> torch.Tensor:
    """[B, Wc, V] fp32 logits that predict each completion column (only those positions are
    materialised). Rows that share a prompt run it once (module docstring)."""
    if batch.prompt_group is not None and _shares_cache(model):
        groups, inverse = torch.unique(batch.prompt_group, return_inverse=True)
        lockstep = _ranks_in_lockstep()
        if len(groups) < len(batch) or lockstep:
            return _shared_prompt_logits(model, batch, inverse, len(groups), lockstep)
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


def length_buckets(lengths: torch.Tensor, min_rows: int = 16, min_saving: float = 0.25) -> list[torch.Tensor]:
    """Row indices split into a short and a long half (by completion length) when padding each
    half to its own longest saves at least ``min_saving`` of the padded positions; else one bucket."""
    b = len(lengths)
    order = torch.argsort(lengths, stable=True)
    if b < min_rows:
        return [order]
    short, long = order[: b // 2], order[b // 2 :]
    full = b * lengths.max().clamp(min=1)
    split = len(short) * lengths[short].max().clamp(min=1) + len(long) * lengths[long].max().clamp(min=1)
    return [short, long] if split <= (1 - min_saving) * full else [order]


def _shared_prompt_logits(
    model, batch: PackedBatch, inverse: torch.Tensor, num_prompts: int, lockstep: bool = False
) -> torch.Tensor:
    """Two model calls (prompts, then completions) — or three when splitting answers by length
    pays, which ``lockstep`` (several ranks) rules out: then always exactly two."""
    from transformers import DynamicCache

    b, wc = batch.completion_ids.shape
    wp = batch.input_ids.shape[1] - wc
    device = inverse.device
    rows = torch.arange(b, device=device)
    first_row = torch.full((num_prompts,), b, device=device).scatter_reduce(0, inverse, rows, "amin")
    p_ids, p_mask = batch.input_ids[first_row, :wp], batch.attention_mask[first_row, :wp]
    prompt_cache = DynamicCache()
    last = model(
        input_ids=p_ids,
        attention_mask=p_mask,
        position_ids=(p_mask.cumsum(-1) - 1).clamp(min=0),
        past_key_values=prompt_cache,
        use_cache=True,
        logits_to_keep=1,  # the prompt's last position predicts the first completion token
    ).logits[:, -1:]
    logits = torch.cat([last[inverse].float(), last.new_zeros(b, wc - 1, last.shape[-1]).float()], dim=1)
    c_mask = batch.attention_mask[:, wp:]
    # short and long answers in separate passes, each padded to its own longest
    buckets = [rows] if lockstep else length_buckets(c_mask.sum(-1))
    for idx in buckets:
        width = max(1, int(c_mask[idx].sum(-1).max()))
        if width < 2 and not lockstep:
            continue  # one-token answers: the prompt pass already predicted it
        width = max(width, 2)  # in lockstep the call happens anyway (its extra column is unused)
        cache = DynamicCache()
        for layer, prompt_layer in enumerate(prompt_cache.layers):  # one copy per answer, in the graph
            cache.update(prompt_layer.keys[inverse[idx]], prompt_layer.values[inverse[idx]], layer)
        out = model(
            input_ids=batch.completion_ids[idx, : width - 1],
            attention_mask=torch.cat([p_mask[inverse[idx]], c_mask[idx, : width - 1]], dim=1),
            position_ids=p_mask.sum(-1)[inverse[idx]][:, None] + torch.arange(width - 1, device=device)[None],
            past_key_values=cache,
            use_cache=True,
        ).logits
        keep = min(width, wc) - 1  # lockstep may have run a column the batch does not have
        if keep > 0:
            cols = torch.arange(1, keep + 1, device=device)[None]
            logits = logits.index_put((idx[:, None], cols), out[:, :keep].float())
        elif lockstep:  # keep the call in the graph: every rank's backward must visit the same modules
            logits = logits + out.float().sum() * 0.0
    return logits


def token_logps(logits: torch.Tensor, ids: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """log softmax(logits / T)[ids], taken as ``logit[y] − logsumexp(logits)`` so the full
    [B, T, V] log-prob tensor never exists — it dominates memory with 150k-token vocabularies."""
    if temperature != 1.0:
        logits = logits / temperature
    picked = logits.gather(-1, ids.unsqueeze(-1)).squeeze(-1)
    return picked - torch.logsumexp(logits, dim=-1)


def completion_logps(model, batch: PackedBatch, temperature: float = 1.0) -> torch.Tensor:
    """log π(y_t | x, y_<t) for every completion column, shape [B, Wc], π = softmax(logits / T)."""
    return token_logps(completion_logits(model, batch), batch.completion_ids, temperature)


def idle_forward(model, device) -> Tensor:
    """A loss of exactly 0 through the same model calls ``completion_logits`` makes for a
    one-row batch (one prompt and one completion token): what a rank with no data for a
    micro-batch or a log-prob chunk runs while the others run theirs. Under ZeRO-3 every model
    call gathers parameters (a collective) and under ZeRO-2 gradients are reduced in the order
    backward produces them, so every rank must make the same calls."""
    placeholder = pack_completions([Completion(0, [0], [0], "", [], "length")], pad_id=0).to(device)
    return completion_logits(model, placeholder).sum() * 0.0


def _calls_gather_parameters(model) -> bool:
    """A ZeRO-3 engine: each forward all-gathers the partitioned parameters."""
    from trainers.common.distributed import is_deepspeed

    return is_deepspeed(model) and model.zero_optimization_stage() == 3


def chunked_logps(acc, model, batch: PackedBatch | None, chunk_size: int, temperature: float = 1.0):
    """``completion_logps`` of ``batch`` (None: this rank has no rows) in chunks of
    ``chunk_size`` rows, so only one chunk's [rows, Wc, V] logits exist at a time; ``None`` for
    no rows. Every rank must call it: under ZeRO-3 a rank with fewer chunks than another runs
    ``idle_forward`` until the numbers of model calls match (else the others wait forever)."""
    n = 0 if batch is None else len(batch)
    starts = range(0, n, chunk_size)
    calls = len(starts)
    if _calls_gather_parameters(model):  # agree on the count first: the gather is a collective too
        calls = int(acc.gather(torch.tensor([float(calls)], device=acc.device)).max().item())
    out = []
    for i in range(calls):
        if i < len(starts):
            rows = list(range(starts[i], min(starts[i] + chunk_size, n)))
            out.append(completion_logps(model, batch.select(rows), temperature))
        else:
            idle_forward(model, acc.device)
    return torch.cat(out) if out else None


def accumulate(
    acc, model, n_local: int, micro_batch_size: int, loss_of: Callable[[list[int], int], Tensor]
) -> int:
    """Forward/backward this rank's ``n_local`` sequences in micro-batches of
    ``micro_batch_size`` — ``loss_of(indices, num_micro_batches)`` returns each micro-batch's
    share of the loss — with gradients all-reduced once, on the last backward.

    Every rank runs the same number of micro-batches (the maximum over ranks); a rank that has
    run out backpropagates a zero loss. Such a loss never passes through DDP's forward, which
    is what arms DDP's gradient all-reduce, so when any rank is empty every rank skips DDP's
    reduction and averages the gradients itself in one flat all-reduce.
    Under DeepSpeed (where ``no_sync`` does nothing) the last backward is marked as the
    engine's accumulation boundary instead, and an empty micro-batch runs ``idle_forward``
    (ZeRO needs the same model calls and graph on every rank).
    Returns that number of micro-batches.
    """
    from torch.nn.parallel import DistributedDataParallel

    from trainers.common.distributed import backward, is_deepspeed

    counts = acc.gather(torch.tensor([float(n_local)], device=acc.device))
    num_micro = max(1, math.ceil(counts.max().item() / micro_batch_size))
    deepspeed = is_deepspeed(model)
    manual = isinstance(model, DistributedDataParallel) and counts.min().item() == 0
    for m in range(num_micro):
        idx = list(range(m * micro_batch_size, min((m + 1) * micro_batch_size, n_local)))
        last = m == num_micro - 1
        if deepspeed:
            backward(acc, model, loss_of(idx, num_micro) if idx else idle_forward(model, acc.device), last)
            continue
        sync = last and not manual
        with acc.no_sync(model) if not sync else contextlib.nullcontext():
            loss = loss_of(idx, num_micro) if idx else sum(p.sum() for p in model.parameters()) * 0.0
            acc.backward(loss)
    if manual:
        _average_gradients(model, acc.num_processes)
    return num_micro


def _average_gradients(model, world_size: int) -> None:
    import torch.distributed as dist

    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    flat = torch.cat([p.grad.reshape(-1) for p in params])
    dist.all_reduce(flat)
    flat /= world_size
    offset = 0
    for p in params:
        p.grad.copy_(flat[offset : offset + p.numel()].view_as(p.grad))
        offset += p.numel()
