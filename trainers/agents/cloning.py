"""The behaviour-cloning loop every cloned Crafter controller shares (GCBC, GOAP).

A trainer supplies the policy and ``forward(rows) -> (logits, actions)`` for rows of its data,
or ``(logits, actions, aux)`` where ``aux`` names auxiliary losses added to the cloning loss
(and logged, e.g. GOAP's reflex-mode cross-entropy); this module owns the rest: seeded, resumable batch order, AdamW with clipping, held-out action
accuracy, checkpoints and the tracker (progress bar, metrics.jsonl).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from agents.encoding import ACTIONS, GOALS
from telos.checkpoint import load_checkpoint, resolve_resume, save_checkpoint
from telos.config import save_yaml, to_dict
from telos.errors import UserError
from telos.tracking import Tracker
from trainers.common.sampler import PromptSampler

Forward = Callable[[np.ndarray], tuple[torch.Tensor, ...]]
EVAL_BATCH = 4096


def cloning_loss(logits: torch.Tensor, actions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the taken actions, averaged over the labelled steps only:
    ``Σ_i m_i · (−log softmax(logits_i)[a_i]) / max(1, Σ_i m_i)`` (0 when nothing is labelled)."""
    m = mask.to(logits.dtype)
    ce = F.cross_entropy(logits, actions.long(), reduction="none")
    return (ce * m).sum() / m.sum().clamp(min=1.0)


def split_episodes(episode: np.ndarray, val_fraction: float, seed: int) -> np.ndarray:
    """Boolean [T]: steps of held-out episodes. Whole episodes, since neighbouring steps are
    near-duplicates and a step split would measure memorisation."""
    ids = np.unique(episode)
    if len(ids) < 2:
        raise UserError(f"play data has {len(ids)} episode; a train/val split by episode needs ≥ 2")
    n_val = min(len(ids) - 1, max(1, round(len(ids) * val_fraction)))
    val_ids = np.random.default_rng(seed).choice(ids, size=n_val, replace=False)
    return np.isin(episode, val_ids)


@torch.no_grad()
def evaluate(policy: nn.Module, forward: Forward, rows: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean loss over ``rows`` and the argmax action predicted for each."""
    if len(rows) == 0:
        return float("nan"), np.zeros(0, dtype=np.int64)
    policy.eval()
    total, preds = 0.0, []
    for s in range(0, len(rows), EVAL_BATCH):
        logits, actions = forward(rows[s : s + EVAL_BATCH])[:2]
        total += float(F.cross_entropy(logits, actions.long(), reduction="sum"))
        preds.append(logits.argmax(-1).numpy())
    policy.train()
    return total / len(rows), np.concatenate(preds)


def per_goal_accuracy(goals: np.ndarray, correct: np.ndarray) -> dict[str, dict]:
    """{goal name: {steps, accuracy}} over the goals present, in GOALS order."""
    out = {}
    for g in range(len(GOALS)):
        sel = goals == g
        if sel.any():
            out[" ".join(GOALS[g])] = {"steps": int(sel.sum()), "accuracy": float(correct[sel].mean())}
    return out


def majority_correct(actions: np.ndarray, goals: np.ndarray, train_rows: np.ndarray, val_rows: np.ndarray):
    """Per val step: does the train set's most frequent action for its goal match? A baseline
    that ignores the state: the policy must beat it to have learned anything from the view."""
    common = np.zeros(len(GOALS), dtype=np.int64)
    for g in range(len(GOALS)):
        acts = actions[train_rows][goals[train_rows] == g]
        if len(acts):
            common[g] = np.bincount(acts.astype(np.int64), minlength=len(ACTIONS)).argmax()
    return common[goals[val_rows]] == actions[val_rows]


def clone(
    recipe: Any,
    raw_config: dict | None,
    policy: nn.Module,
    forward: Forward,
    train_rows: np.ndarray,
    val_rows: np.ndarray,
    val_actions: np.ndarray,
    *,
    description: str,
    periodic: Callable[[int], dict] | None = None,
    periodic_every: int = 0,
) -> float:
    """Train ``policy`` on ``train_rows`` by ``recipe.train`` (steps, batch_size, lr,
    weight_decay, max_grad_norm, save_every, keep_last, eval_every); resumes from
    ``recipe.resume``. ``periodic(step)`` adds metrics (e.g. rollouts) every ``periodic_every``
    steps and at the end. Returns the seconds trained."""
    r, t = recipe, recipe.train
    optimizer = torch.optim.AdamW(policy.parameters(), lr=t.lr, weight_decay=t.weight_decay)
    run_dir = Path(r.run_dir)
    state = {"step": 0, "cursor": 0}
    resume_from = resolve_resume(r.resume, run_dir)
    if resume_from is not None:
        state = load_checkpoint(resume_from, model=policy, optimizer=optimizer, scheduler=None)
    save_yaml(raw_config if raw_config is not None else to_dict(r), run_dir / "config.yaml")
    order = PromptSampler(len(train_rows), r.seed, state["cursor"])  # seeded epochs, resumable
    tracker = Tracker(
        run_dir,
        total_steps=t.steps,
        start_step=state["step"],
        report_to=r.report_to,
        config=to_dict(r),
        progress_keys=["loss", "accuracy", "val_accuracy"],
        description=description,
    )
    policy.train()
    start = time.perf_counter()
    for step in range(state["step"] + 1, t.steps + 1):
        t0 = time.perf_counter()
        logits, actions, *rest = forward(train_rows[order.take(t.batch_size)])
        aux: dict[str, torch.Tensor] = rest[0] if rest else {}
        loss = cloning_loss(logits, actions, torch.ones(len(actions), dtype=torch.bool))
        loss = loss + sum(aux.values(), torch.zeros(()))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = float(torch.nn.utils.clip_grad_norm_(policy.parameters(), t.max_grad_norm))
        optimizer.step()
        out = {
            "loss": float(loss.detach()),
            "accuracy": float((logits.detach().argmax(-1) == actions).float().mean()),
            "grad_norm": grad_norm,
            **{k: float(v.detach()) for k, v in aux.items()},
            "epoch": order.cursor / len(train_rows),
            "samples_per_s": len(actions) / (time.perf_counter() - t0),
        }
        if step == t.steps or (t.eval_every and step % t.eval_every == 0):
            val_loss, preds = evaluate(policy, forward, val_rows)
            out["val_loss"] = val_loss
            out["val_accuracy"] = float((preds == val_actions).mean()) if len(preds) else float("nan")
        if periodic is not None and (step == t.steps or (periodic_every and step % periodic_every == 0)):
            policy.eval()
            out.update(periodic(step))
            policy.train()
        tracker.log(step, out)
        if step % t.save_every == 0 or step == t.steps:
            save_checkpoint(
                run_dir,
                step,
                model=policy,
                optimizer=optimizer,
                scheduler=None,
                trainer_state={"step": step, "cursor": order.cursor},
                keep_last=t.keep_last,
            )
    tracker.close()
    return time.perf_counter() - start


PLOT_GROUPS = {"loss": ["loss", "val_loss"], "accuracy": ["accuracy", "val_accuracy"]}


def write_results(run_dir: Path, summary: dict, report: str, metrics: list[dict]) -> None:
    """summary.json, report.md, the loss/accuracy plots and the per-goal accuracy bar chart."""
    from telos.plots import bar_chart, plot_metrics

    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    (run_dir / "report.md").write_text(report)
    plot_metrics(metrics, run_dir / "plots", PLOT_GROUPS)
    if summary["val_per_goal"]:
        acc = {k: v["accuracy"] for k, v in summary["val_per_goal"].items()}
        bar_chart(acc, run_dir / "plots" / "val_accuracy_per_goal.png", "val action accuracy", "accuracy")
