"""Reward-model training (``trainer: rm``): Bradley–Terry, goal-conditioned contrastive, process.

One loop for the three kinds: batches of pairs (or stepwise rows) in a seeded order, micro-
batched forward/backward through accelerate, atomic checkpoints and resume, progress, plots.
The output ``final/`` is a plain transformers checkpoint (``AutoModelForSequenceClassification``
for bt/gcrm, ``AutoModelForTokenClassification`` for prm); a gcrm run also writes its goal vector.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch

from envs.math.sources import load_rows
from rewards.preferences import PairExample, StepExample, tokenize_pairs, tokenize_steps
from rewards.reward_model import (
    HeadedLM,
    freeze_lower_layers,
    last_token_values,
    load_head_model,
    pad_right,
    save_goal_vector,
)
from rewards.rm_losses import (
    bt_loss,
    contrastive_goal_loss_batch,
    goal_vector,
    prm_loss,
    sample_goal_positions,
)
from telos.checkpoint import resolve_resume, save_checkpoint, write_json_atomically
from telos.config import save_yaml, to_dict
from telos.errors import UserError
from telos.models import load_tokenizer
from telos.plots import plot_metrics
from telos.tracking import Tracker, read_metrics
from trainers.common.batching import accumulate
from trainers.common.distributed import (
    load_resume,
    make_accelerator,
    optimizer_step,
    run_layout,
    save_final,
    save_kwargs,
)
from trainers.common.recipe_data import resolve_recipe_data
from trainers.common.sampler import PromptSampler
from trainers.common.schedule import make_scheduler
from trainers.common.start_model import resolve_start_model
from trainers.rm.recipe import RMRecipe

PLOT_GROUPS = {
    "loss": ["loss", "bt_loss", "contrastive_loss"],
    "accuracy": ["accuracy", "eval_accuracy"],
    "margin": ["margin"],
    "throughput": ["tokens_per_s"],
}


@dataclass
class RMData:
    train: list
    test: list
    dropped: int


def load_rm_data(recipe: RMRecipe, tokenizer) -> RMData:
    d, kind = recipe.data, recipe.rm.kind

    def tokenized(spec: str, limit: int | None) -> tuple[list, int]:
        # a tiny-data: spec is built on first use (locked: ranks wait for one build and share it)
        rows = load_rows(resolve_recipe_data(spec), limit=limit, seed=recipe.train.seed, raw=True)
        if kind == "prm":
            return tokenize_steps(rows, tokenizer, recipe.rm.step_separator, d.max_length, source=spec)
        return tokenize_pairs(rows, tokenizer, d.max_length, source=spec)

    train, dropped = tokenized(d.train, d.num_train)
    if not train:
        raise UserError(f"data.train {d.train!r} has no usable rows (dropped {dropped} over max_length)")
    test, _ = tokenized(d.test, d.num_test) if d.test else ([], 0)
    return RMData(train, test, dropped)


def _forward_pairs(net, pairs: list[PairExample], pad_id: int, device):
    """Rewards of chosen and rejected responses and their hidden states, one forward."""
    ids, mask = pad_right([p.chosen_ids for p in pairs] + [p.rejected_ids for p in pairs], pad_id, device)
    head, hidden = net(ids, mask)
    rewards = last_token_values(head, mask)
    n = len(pairs)
    return rewards[:n], rewards[n:], hidden[:n], hidden[n:]


def pair_loss(
    recipe: RMRecipe, net, pairs: list[PairExample], pad_id: int, device, generator: torch.Generator
) -> tuple[torch.Tensor, dict[str, float], int]:
    """BT (+ the contrastive goal loss for gcrm) on a micro-batch of pairs, mean over pairs."""
    rm = recipe.rm
    r_c, r_r, h_c, h_r = _forward_pairs(net, pairs, pad_id, device)
    margin = torch.tensor([p.margin for p in pairs], device=device) if rm.use_margin else None
    loss, metrics = bt_loss(r_c, r_r, margin=margin, center_coef=rm.center_coef)
    if rm.kind == "gcrm":
        sampled = [
            sample_goal_positions(
                len(p.chosen_ids) - p.chosen_start,
                len(p.rejected_ids) - p.rejected_start,
                num_pairs=rm.position_pairs,
                generator=generator,
                chosen_start=p.chosen_start,
                rejected_start=p.rejected_start,
            )
            for p in pairs
        ]
        positives = torch.stack([pos for pos, _ in sampled])
        negatives = torch.stack([neg for _, neg in sampled])
        # the official code adds the contrastive loss to BT with its 0.5 weight inside (β)
        c_loss, c_metrics = contrastive_goal_loss_batch(
            h_c, h_r, positives, negatives, beta=rm.contrastive_weight, strategy=rm.contrastive_strategy
        )
        metrics = {**metrics, **c_metrics, "bt_loss": float(loss.detach())}
        loss = loss + c_loss
    tokens = sum(len(p.chosen_ids) + len(p.rejected_ids) for p in pairs)
    return loss, metrics, tokens


def step_loss(
    recipe: RMRecipe, net, rows: list[StepExample], pad_id: int, device
) -> tuple[torch.Tensor, dict, int]:
    ids, mask = pad_right([r.input_ids for r in rows], pad_id, device)
    head, _ = net(ids, mask)
    labels = torch.zeros(mask.shape, device=device)
    label_mask = torch.zeros(mask.shape, device=device)
    for i, r in enumerate(rows):
        labels[i, r.label_positions] = torch.tensor(r.labels, device=device)
        label_mask[i, r.label_positions] = 1.0
    logits = head if recipe.rm.prm_loss != "mse" else head[..., 0]
    loss, metrics = prm_loss(logits, labels, label_mask, kind=recipe.rm.prm_loss)
    metrics["accuracy"] = metrics["step_accuracy"]  # one name across kinds for logs and evaluation
    return loss, metrics, int(mask.sum())


def _batch_loss(recipe, net, items, pad_id, device, generator):
    if recipe.rm.kind == "prm":
        return step_loss(recipe, net, items, pad_id, device)
    return pair_loss(recipe, net, items, pad_id, device, generator)


@torch.no_grad()
def evaluate_rm(recipe: RMRecipe, net, items: list, pad_id: int, device) -> float:
    """Pairwise accuracy (bt, gcrm) or step accuracy (prm) on held-out examples."""
    if not items:
        return float("nan")
    net.eval()
    right = total = 0.0
    for s in range(0, len(items), recipe.train.micro_batch_size):
        chunk = items[s : s + recipe.train.micro_batch_size]
        if recipe.rm.kind == "prm":
            _, metrics, _ = step_loss(recipe, net, chunk, pad_id, device)
            weight = sum(len(r.labels) for r in chunk)
            right += metrics["accuracy"] * weight
        else:  # only the rewards: the contrastive term plays no part in pairwise accuracy
            r_c, r_r, _, _ = _forward_pairs(net, chunk, pad_id, device)
            weight = len(chunk)
            right += float((r_c > r_r).float().sum())
        total += weight
    net.train()
    return right / total


def train_rm(recipe: RMRecipe, raw_config: dict | None = None) -> dict:
    from accelerate.utils import set_seed

    acc = make_accelerator(recipe.train.micro_batch_size, recipe.train.max_grad_norm)
    set_seed(recipe.train.seed)
    r, rm = recipe, recipe.rm
    name = resolve_start_model(acc, r.model.name_or_path)
    tokenizer = load_tokenizer(name)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    data = load_rm_data(r, tokenizer)
    num_labels = 1 if rm.kind != "prm" or rm.prm_loss == "mse" else 2
    model = load_head_model(name, rm.kind, num_labels, r.model.dtype, r.model.lora)
    model.config.pad_token_id = pad_id
    if rm.kind == "prm":
        model.config.telos_step_separator = rm.step_separator
    if r.model.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    net = HeadedLM(model).train()
    if rm.train_layers is not None:
        freeze_lower_layers(net.trunk, rm.train_layers)

    world = acc.num_processes
    per_rank = max(1, r.train.batch_size // world)
    steps = r.train.steps or max(1, r.train.epochs * len(data.train) // (per_rank * world))
    optimizer = torch.optim.AdamW(
        [p for p in net.parameters() if p.requires_grad], lr=r.train.lr, weight_decay=r.train.weight_decay
    )
    scheduler = make_scheduler(optimizer, r.train.lr_scheduler, r.train.warmup_steps, steps)
    net, optimizer = acc.prepare(net, optimizer)
    hf_model = acc.unwrap_model(net).model  # the transformers model under HeadedLM (attribute "model")

    run_dir = Path(r.run_dir)
    state = {"step": 0, "cursor": 0}
    resume_from = resolve_resume(r.resume, run_dir)
    if resume_from is not None:
        state = load_resume(acc, net, optimizer, scheduler, resume_from, submodule="model")
    if acc.is_main_process:
        save_yaml(raw_config if raw_config is not None else to_dict(r), run_dir / "config.yaml")
    order = PromptSampler(len(data.train), r.train.seed, state["cursor"])  # seeded epochs, resumable
    tracker = Tracker(
        run_dir,
        total_steps=steps,
        start_step=state["step"],
        report_to=r.report_to,
        config=to_dict(r),
        enabled=acc.is_main_process,
        progress_keys=["loss", "accuracy", "eval_accuracy", "tokens_per_s"],
        description=f"rm/{rm.kind} {r.name}",
    )
    start = time.perf_counter()
    eval_acc = float("nan")
    for step in range(state["step"] + 1, steps + 1):
        t0 = time.perf_counter()
        batch = order.take(per_rank * world)[
            acc.process_index * per_rank : (acc.process_index + 1) * per_rank
        ]
        items = [data.train[i] for i in batch]
        gen = torch.Generator().manual_seed(r.train.seed * 1_000_003 + step * 101 + acc.process_index)
        metrics: dict[str, list[float]] = {}
        tokens = [0]

        def loss_of(idx: list[int], _num_micro: int, items=items, gen=gen, metrics=metrics, tokens=tokens):
            loss, m, n_tok = _batch_loss(r, net, [items[i] for i in idx], pad_id, acc.device, gen)
            for k, v in m.items():
                metrics.setdefault(k, []).append(v)
            metrics.setdefault("loss", []).append(float(loss.detach()))
            tokens[0] += n_tok
            return loss * len(idx) / len(items)  # mean over the step's examples

        accumulate(acc, net, len(items), r.train.micro_batch_size, loss_of)
        grad_norm = optimizer_step(acc, net, optimizer, r.train.max_grad_norm)  # skips a non-finite step
        scheduler.step()
        dt = time.perf_counter() - t0
        all_tokens = acc.gather(torch.tensor([float(tokens[0])], device=acc.device)).sum().item()
        out = {k: sum(v) / len(v) for k, v in metrics.items()}
        out.update(
            grad_norm=grad_norm, lr=scheduler.get_last_lr()[0], step_time=dt, tokens_per_s=all_tokens / dt
        )
        out["epoch"] = order.cursor / len(data.train)
        if step == steps or (r.train.eval_every and step % r.train.eval_every == 0):
            out["eval_accuracy"] = eval_acc = evaluate_rm(r, net, data.test, pad_id, acc.device)
        tracker.log(step, out)
        if step % r.train.save_every == 0 or step == steps:
            save_checkpoint(
                run_dir,
                step,
                **save_kwargs(acc, net, optimizer, submodule="model"),
                scheduler=scheduler,
                trainer_state={"step": step, "cursor": order.cursor},
                tokenizer=tokenizer,
                rank=acc.process_index,
                world_size=world,
                barrier=acc.wait_for_everyone,
                keep_last=r.train.keep_last,
            )
    tracker.close()
    return _finish(
        r, acc, net, hf_model, tokenizer, data, pad_id, eval_acc, time.perf_counter() - start, steps
    )


@torch.no_grad()
def compute_goal_vector(net, pairs: list[PairExample], pad_id: int, device, batch_size: int) -> torch.Tensor:
    """g from the last-token hidden state of preferred (chosen) training responses."""
    net.eval()
    last: list[torch.Tensor] = []
    for s in range(0, len(pairs), batch_size):
        chunk = pairs[s : s + batch_size]
        ids, mask = pad_right([p.chosen_ids for p in chunk], pad_id, device)
        _, hidden = net(ids, mask)
        idx = mask.sum(-1) - 1
        last.append(hidden[torch.arange(len(chunk), device=hidden.device), idx].float().cpu())
    return goal_vector(torch.cat(last))


def _finish(
    r: RMRecipe, acc, net, hf_model, tokenizer, data: RMData, pad_id, eval_acc, seconds, steps
) -> dict:
    run_dir = Path(r.run_dir)
    summary: dict = {}
    goal_meta = None
    if r.rm.kind == "gcrm":
        examples = data.train[: r.rm.goal_examples] if r.rm.goal_examples else data.train
        goal = compute_goal_vector(
            acc.unwrap_model(net), examples, pad_id, acc.device, r.train.micro_batch_size
        )
        goal_meta = {
            "checkpoint": str(run_dir / "final"),
            "layer": "final hidden state of the trunk (the value head's input, after the final norm)",
            "pooling": "last token (EOS) of each preferred response, averaged",
            "num_examples": len(examples),
            "source": r.data.train,
            "hidden_size": int(goal.numel()),
        }
    final = run_dir / "final"
    # a LoRA run's final/ is merged, so it loads as a plain AutoModelFor*Classification
    # (checkpoints keep the adapter only, which is what resume needs); every rank: ZeRO-3 gathers
    also = None if goal_meta is None else (lambda d: save_goal_vector(d, goal, goal_meta))
    save_final(acc, net, final, tokenizer, submodule="model", merge_adapters=True, also=also)
    if acc.is_main_process:
        metrics = read_metrics(run_dir / "metrics.jsonl")
        last = metrics[-1] if metrics else {}
        summary = {
            "name": r.name,
            "trainer": "rm",
            "kind": r.rm.kind,
            "steps": steps,
            "train_examples": len(data.train),
            "dropped_over_max_length": data.dropped,
            "test_examples": len(data.test),
            "eval_accuracy": eval_acc,
            "final_train_accuracy": last.get("accuracy"),
            "train_seconds": seconds,
            **run_layout(acc),  # distributed_type, zero_stage, world_size: what really ran
            "model_dir": str(final),
        }
        write_json_atomically(run_dir / "summary.json", summary)
        plot_metrics(metrics, run_dir / "plots", PLOT_GROUPS)
    acc.wait_for_everyone()
    return summary
