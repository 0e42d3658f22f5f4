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


def train_sft(
    model,
    tokenizer,
    pairs: list[tuple[str, str]],
    cfg: SFTConfig,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
) -> list[float]:
    """Train ``model`` in place for ``cfg.steps`` steps of shuffled mini-batches; returns losses."""
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
        batch = sft_batch(tokenizer, [pairs[i] for i in idx])
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
