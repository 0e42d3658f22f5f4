"""The supervised fine-tuning loop the SFT trainers share (``trainer: sft``, ``planner_sft``).

Length-pooled batches that are a pure function of the step (so a resumed run draws exactly the
batches the killed one would have), AdamW with warmup + cosine, gradient clipping, checkpoints
every ``save_every`` steps and at the end, a tracker with a progress bar, and one held-out
evaluation logged with the last step.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import torch

from telos.checkpoint import load_checkpoint, save_checkpoint
from telos.config import save_yaml
from telos.tracking import Tracker
from trainers.common.sampler import PromptSampler
from trainers.common.schedule import warmup_cosine
from trainers.common.sft import sft_batch

LENGTH_POOL = 8  # batches drawn together and split by length: less padding, ~2x faster steps


class SFTTrainSettings(Protocol):
    steps: int
    batch_size: int
    lr: float
    warmup_steps: int
    weight_decay: float
    max_grad_norm: float
    seed: int
    save_every: int
    keep_last: int


def batch_indices(step: int, lengths: list[int], batch_size: int, seed: int) -> list[int]:
    """The examples of ``step`` (1-based): ``LENGTH_POOL`` batches of a seeded epoch order are
    drawn together, sorted by length and split. A pure function of ``step``, so a resumed run
    draws exactly the batches the killed run would have."""
    group, k = divmod(step - 1, LENGTH_POOL)
    pool = PromptSampler(len(lengths), seed, group * batch_size * LENGTH_POOL).take(batch_size * LENGTH_POOL)
    return sorted(pool, key=lambda i: lengths[i])[k * batch_size : (k + 1) * batch_size]


def run_sft_loop(
    model,
    tokenizer,
    pairs: list[tuple[str, str]],
    lengths: list[int],
    t: SFTTrainSettings,
    run_dir: Path,
    resume_from: Path | None,
    *,
    config: dict,
    report_to: list[str],
    progress_keys: list[str],
    description: str,
    final_eval: Callable[[], tuple[Any, dict[str, float]]],
) -> tuple[Any | None, float]:
    """Train ``model`` in place on ``pairs`` (loss on completion tokens) up to ``t.steps``.

    ``final_eval`` runs in eval mode after the last step and returns (result, metrics to log);
    returns (that result — None when the run resumed from its final checkpoint —, train seconds).
    """
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device).train()
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=t.lr, weight_decay=t.weight_decay
    )
    horizon = getattr(t, "schedule_steps", None) or t.steps
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(t.warmup_steps, horizon))
    state = {"step": 0}
    if resume_from is not None:
        state = load_checkpoint(resume_from, model=model, optimizer=optimizer, scheduler=scheduler)
    save_yaml(config, run_dir / "config.yaml")
    tracker = Tracker(
        run_dir,
        total_steps=t.steps,
        start_step=state["step"],
        report_to=report_to,
        config=config,
        progress_keys=progress_keys,
        description=description,
    )
    started = time.perf_counter()
    result = None
    for step in range(state["step"] + 1, t.steps + 1):
        batch = sft_batch(tokenizer, [pairs[i] for i in batch_indices(step, lengths, t.batch_size, t.seed)])
        loss = model(**{k: v.to(device) for k, v in batch.items()}).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), t.max_grad_norm))
        optimizer.step()
        scheduler.step()
        metrics = {"loss": float(loss.detach()), "grad_norm": grad_norm, "lr": scheduler.get_last_lr()[0]}
        if step == t.steps:
            model.eval()
            result, eval_metrics = final_eval()
            metrics |= eval_metrics
        tracker.log(step, metrics)
        if step % t.save_every == 0 or step == t.steps:
            save_checkpoint(
                run_dir,
                step,
                model=model,
                optimizer=optimizer,
                scheduler=scheduler,
                trainer_state={"step": step},
                tokenizer=tokenizer,
                keep_last=t.keep_last,
            )
    tracker.close()
    model.eval()
    return result, time.perf_counter() - started
