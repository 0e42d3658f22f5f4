"""Supervised fine-tuning on (prompt, completion) pairs; loss on completion tokens only.

Used to warm a policy before RL (the quickstart), by B-STaR / ReST-MCTS* self-training, and
by ``trainer: sft`` recipes.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

import torch

from trainers.common.schedule import warmup_cosine


@dataclass
class SFTConfig:
    lr: float = 3e-3
    steps: int = 300
    batch_size: int = 32
    warmup_steps: int = 20
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    seed: int = 0


def sft_batch(tokenizer, pairs: list[tuple[str, str]]) -> dict[str, torch.Tensor]:
    """Right-padded ``input_ids``/``attention_mask`` and ``labels`` that are -100 except on
    completion tokens and the closing EOS (the model must learn when to stop)."""
    seqs, label_seqs = [], []
    for prompt, completion in pairs:
        p = tokenizer(prompt, add_special_tokens=True)["input_ids"]
        c = tokenizer(completion, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        seqs.append(p + c)
        label_seqs.append([-100] * len(p) + c)
    width = max(map(len, seqs))
    ids = torch.full((len(seqs), width), tokenizer.pad_token_id, dtype=torch.long)
    labels = torch.full((len(seqs), width), -100, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, (s, lab) in enumerate(zip(seqs, label_seqs, strict=True)):
        ids[i, : len(s)] = torch.tensor(s)
        labels[i, : len(s)] = torch.tensor(lab)
        mask[i, : len(s)] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def masked_batch(pad_id: int, examples: list[tuple[list[int], list[int]]]) -> dict[str, torch.Tensor]:
    """Right-padded rows of token ids with ``labels`` = the id where its mask is 1, else -100:
    a multi-turn episode trains its action tokens, not the environment's."""
    width = max(len(ids) for ids, _ in examples)
    ids_t = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), -100, dtype=torch.long)
    attn = torch.zeros((len(examples), width), dtype=torch.long)
    for i, (ids, trained) in enumerate(examples):
        row = torch.tensor(ids, dtype=torch.long)
        ids_t[i, : len(ids)] = row
        labels[i, : len(ids)] = torch.where(torch.tensor(trained, dtype=torch.bool), row, -100)
        attn[i, : len(ids)] = 1
    return {"input_ids": ids_t, "attention_mask": attn, "labels": labels}


def train_sft(
    model,
    tokenizer,
    pairs: list,
    cfg: SFTConfig,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
    collate: Callable[[list], dict[str, torch.Tensor]] | None = None,
) -> list[float]:
    """Train ``model`` in place for ``cfg.steps`` steps of shuffled mini-batches; returns losses.
    ``pairs`` are (prompt, completion) texts, or whatever ``collate`` turns into a batch."""
    collate = collate or (lambda items: sft_batch(tokenizer, items))
    rng = random.Random(cfg.seed)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(cfg.warmup_steps, cfg.steps))
    order: list[int] = []
    losses = []
    for step in range(cfg.steps):
        if len(order) < cfg.batch_size:
            order += rng.sample(range(len(pairs)), len(pairs))
        idx, order = order[: cfg.batch_size], order[cfg.batch_size :]
        batch = collate([pairs[i] for i in idx])
        loss = model(**batch).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
        opt.step()
        sched.step()
        losses.append(loss.item())
        if on_step is not None:
            on_step(
                step + 1, {"loss": losses[-1], "grad_norm": float(grad_norm), "lr": sched.get_last_lr()[0]}
            )
    model.eval()
    return losses
