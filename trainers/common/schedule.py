"""Learning-rate schedules shared by every trainer (RL, reward models, SFT, planner SFT)."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch


def warmup_cosine(warmup_steps: int, total_steps: int) -> Callable[[int], float]:
    """LR multiplier: linear warm-up, then cosine decay to 10 % of the peak."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / max(1, warmup_steps)
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return factor


def make_scheduler(optimizer, kind: str, warmup: int, total: int):
    if kind == "cosine":
        factor = warmup_cosine(warmup, total)
    elif kind == "linear":

        def factor(s: int) -> float:
            return (
                (s + 1) / max(1, warmup)
                if s < warmup
                else max(0.0, 1 - (s - warmup) / max(1, total - warmup))
            )
    else:

        def factor(s: int) -> float:
            return min(1.0, (s + 1) / max(1, warmup)) if warmup else 1.0

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
