"""The policy-gradient RL loop: rollout → rewards → advantages → registered loss → step.

The loop never knows which algorithm it runs: the loss comes from ``LOSSES`` and the
advantage from ``ADVANTAGES``. Read it top to bottom: ``train_rl`` is the whole recipe.
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from telos.checkpoint import load_checkpoint, resolve_resume, save_checkpoint
from telos.config import save_yaml, to_dict
from telos.tracking import Tracker
from telos.types import SamplingParams
from trainers.advantages import ADVANTAGES, zero_std_groups
from trainers.batching import completion_logps, pack_completions
from trainers.losses import LOSSES, LossBatch, PolicyLossConfig
from trainers.recipe import RLRecipe
from trainers.rollout_batch import (
    PromptSampler,
    ScoredGroups,
    generate_scored_groups,
    keep_informative_groups,
    rewards_tensor,
)
from trainers.setup import RunContext, evaluate_greedy, finish_run, setup_run

PROGRESS_KEYS = ["reward_mean", "accuracy", "eval_accuracy", "tokens_per_s"]


@dataclass
class RolloutBatch:
    groups: ScoredGroups
    advantages: torch.Tensor
    valid: torch.Tensor
    stats: dict[str, float]
    generated_tokens: int


def collect_rollout(ctx: RunContext, sampler: PromptSampler, step: int) -> RolloutBatch:
    """Sample this rank's prompts, generate G answers each, score; with dynamic sampling keep
    drawing prompts until the batch holds ``prompts_per_step`` groups with reward variance."""
    r, acc = ctx.recipe, ctx.accelerator
    G = r.sampling.num_generations
    per_rank = max(1, r.train.prompts_per_step // acc.num_processes)
    params = SamplingParams(
        n=G,
        temperature=r.sampling.temperature,
        top_p=r.sampling.top_p,
        top_k=r.sampling.top_k,
        max_tokens=r.sampling.max_tokens,
        stop=r.sampling.stop,
        seed=r.train.seed * 1_000_003 + step * 101 + acc.process_index,
    )
    all_groups, kept = ScoredGroups(), ScoredGroups()
    flat_groups = 0
    for round_ in range(1 + (r.grpo.max_resample_rounds if r.grpo.dynamic_sampling else 0)):
        # every rank draws the same global slice so the data cursor stays identical across ranks
        global_idx = sampler.take(per_rank * acc.num_processes)
        idx = global_idx[acc.process_index * per_rank : (acc.process_index + 1) * per_rank]
        prompts = [ctx.train_prompts[i] for i in idx]
        params.seed = None if params.seed is None else params.seed + round_ * 7919
        groups = generate_scored_groups(
            ctx.engine,
            ctx.train_rows,
            idx,
            prompts,
            params,
            ctx.reward_fns,
            ctx.reward_weights,
            ctx.correctness_fn,
        )
        all_groups.extend(groups)
        if not r.grpo.dynamic_sampling:
            kept = groups
            break
        informative, n_flat = keep_informative_groups(groups, G)
        flat_groups += n_flat
        kept.extend(informative)
        need_more = torch.tensor([float(len(kept.row_indices) < per_rank)])
        if acc.gather(need_more).sum().item() == 0:
            break
    if r.grpo.dynamic_sampling and len(kept.row_indices) > per_rank:
        kept.completions, kept.rewards = kept.completions[: per_rank * G], kept.rewards[: per_rank * G]
        kept.correct, kept.row_indices = kept.correct[: per_rank * G], kept.row_indices[:per_rank]

    rewards, valid = (
        rewards_tensor(kept.rewards, G)
        if kept.rewards
        else (torch.zeros(0), torch.zeros(0, dtype=torch.bool))
    )
    advantages = (
        ADVANTAGES.get(r.grpo.advantage)(rewards, G, scale=r.grpo.scale_rewards) if len(rewards) else rewards
    )
    all_r, all_valid = rewards_tensor(all_groups.rewards, G)
    correct = [c for c in all_groups.correct if c is not None]
    lengths = torch.tensor([len(c.token_ids) for c in all_groups.completions], dtype=torch.float)
    n_groups = len(all_groups.row_indices)
    stats = {
        "reward_mean": all_r[all_valid].mean().item() if all_valid.any() else float("nan"),
        "reward_std": all_r[all_valid].std().item() if all_valid.sum() > 1 else 0.0,
        "accuracy": sum(c > 0 for c in correct) / max(1, len(correct)),
        "num_unscorable": int((~all_valid).sum()),
        "frac_zero_std_groups": (flat_groups / n_groups)
        if r.grpo.dynamic_sampling
        else _flat_share(all_r, G),
        "completion_length_mean": lengths.mean().item(),
        "completion_length_max": lengths.max().item(),
        "clipped_ratio": sum(c.finish_reason == "length" for c in all_groups.completions) / len(lengths),
        "groups_kept": len(kept.row_indices),
        "resample_rounds": round_,
    }
    return RolloutBatch(kept, advantages, valid, stats, int(lengths.sum()))


def _flat_share(rewards: torch.Tensor, group_size: int) -> float:
    return zero_std_groups(rewards, group_size).float().mean().item()


def policy_update(ctx: RunContext, batch: RolloutBatch) -> dict[str, float]:
    """μ passes of micro-batched loss/backward over the rollout batch, one optimizer step each.
    Every rank runs the same number of micro-batches (DDP all-reduces on each last backward)."""
    r, acc, model = ctx.recipe, ctx.accelerator, ctx.model
    loss_fn = LOSSES.get(r.grpo.loss_type)
    loss_cfg = PolicyLossConfig(epsilon=r.grpo.epsilon, epsilon_high=r.grpo.epsilon_high, beta=r.grpo.beta)
    comps = batch.groups.completions
    n_local = len(comps)
    counts = acc.gather(torch.tensor([float(n_local)]))
    mb = r.train.micro_batch_size
    num_micro = max(1, math.ceil(counts.max().item() / mb))
    packed = pack_completions(comps, ctx.tokenizer.pad_token_id) if comps else None
    if packed is not None:
        packed.completion_mask *= batch.valid[:, None].float()
    tokens_local = float(packed.completion_mask.sum()) if packed is not None else 0.0
    # normalisers are global totals divided by the world size: DDP averages gradients, so the
    # result equals normalising by the global total, as TRL does
    totals = acc.gather(torch.tensor([float(n_local), tokens_local]).view(1, 2)).sum(0)
    world = acc.num_processes
    norm_seqs, norm_tokens = max(1.0, totals[0].item() / world), max(1.0, totals[1].item() / world)

    old_logps = ref_logps = None
    if packed is not None and (r.grpo.num_iterations > 1 or r.grpo.beta > 0):
        with torch.no_grad():
            chunks = [packed.select(list(range(s, min(s + mb, n_local)))) for s in range(0, n_local, mb)]
            if r.grpo.num_iterations > 1:
                old_logps = torch.cat([completion_logps(model, c) for c in chunks])
            if r.grpo.beta > 0:
                ref_logps = torch.cat([completion_logps(ctx.ref_model, c) for c in chunks])

    metrics: dict[str, list[float]] = {}
    for _ in range(r.grpo.num_iterations):
        for m in range(num_micro):
            idx = list(range(m * mb, min((m + 1) * mb, n_local)))
            sync = m == num_micro - 1
            ctx_mgr = acc.no_sync(model) if not sync else contextlib.nullcontext()
            with ctx_mgr:
                if idx:
                    sub = packed.select(idx)
                    logps = completion_logps(model, sub)
                    lb = LossBatch(
                        logps=logps,
                        old_logps=old_logps[idx] if old_logps is not None else logps.detach(),
                        advantages=batch.advantages[idx],
                        mask=sub.completion_mask,
                        ref_logps=ref_logps[idx] if ref_logps is not None else None,
                        num_sequences=norm_seqs,
                        num_tokens=norm_tokens,
                        num_micro_batches=num_micro,
                        max_completion_length=r.sampling.max_tokens,
                    )
                    loss, m_stats = loss_fn(lb, loss_cfg)
                    for k, v in m_stats.items():
                        metrics.setdefault(k, []).append(v)
                    metrics.setdefault("loss", []).append(loss.item())
                else:  # this rank ran out of sequences: a zero loss keeps the all-reduce in step
                    loss = sum(p.sum() for p in model.parameters()) * 0.0
                acc.backward(loss)
        grad_norm = acc.clip_grad_norm_(model.parameters(), r.train.max_grad_norm)
        grad_norm = float(grad_norm)
        if math.isfinite(grad_norm):
            ctx.optimizer.step()
        else:  # NaN guard: skip the step, keep the weights, say so in the metrics
            metrics.setdefault("skipped_nonfinite_steps", []).append(1.0)
        ctx.optimizer.zero_grad(set_to_none=True)
    ctx.scheduler.step()
    out = {k: sum(v) / len(v) for k, v in metrics.items()}
    out["loss"] = sum(metrics.get("loss", [0.0]))  # micro-batch shares add up to the step loss
    out["grad_norm"] = grad_norm
    out["lr"] = ctx.scheduler.get_last_lr()[0]
    return out


def train_rl(recipe: RLRecipe, raw_config: dict | None = None, return_context: bool = False):
    """Run a GRPO-family recipe end to end; returns the summary written to summary.json
    (and the run context — model, accelerator, engine — with ``return_context``)."""
    ctx = setup_run(recipe)
    r, acc = recipe, ctx.accelerator
    run_dir = Path(r.run_dir)
    resume_from = resolve_resume(r.resume, run_dir)
    state = {"step": 0, "cursor": 0, "generated_tokens": 0}
    if resume_from is not None:
        state = load_checkpoint(
            resume_from,
            model=acc.unwrap_model(ctx.model),
            optimizer=ctx.optimizer,
            scheduler=ctx.scheduler,
            rank=acc.process_index,
        )
        ctx.engine.sync_weights(acc.unwrap_model(ctx.model))
    if acc.is_main_process:
        save_yaml(raw_config if raw_config is not None else to_dict(recipe), run_dir / "config.yaml")
    if r.grpo.beta > 0:
        ctx.ref_model = copy.deepcopy(acc.unwrap_model(ctx.model)).eval().requires_grad_(False)

    sampler = PromptSampler(len(ctx.train_rows), r.train.seed, cursor=state["cursor"])
    tracker = Tracker(
        run_dir,
        total_steps=r.train.steps,
        start_step=state["step"],
        report_to=r.report_to,
        config=to_dict(recipe),
        enabled=acc.is_main_process,
        progress_keys=PROGRESS_KEYS,
        description=f"{r.trainer} {r.name}",
    )
    generated = state.get("generated_tokens", 0)
    if r.train.eval_before_training and state["step"] == 0:
        state["initial_eval_accuracy"] = evaluate_greedy(ctx)
        tracker.log(0, {"eval_accuracy": state["initial_eval_accuracy"]})
    start = time.perf_counter()
    for step in range(state["step"] + 1, r.train.steps + 1):
        t0 = time.perf_counter()
        batch = collect_rollout(ctx, sampler, step)
        t_gen = time.perf_counter() - t0
        update = policy_update(ctx, batch)
        ctx.engine.sync_weights(acc.unwrap_model(ctx.model))
        dt = time.perf_counter() - t0
        tokens = acc.gather(torch.tensor([float(batch.generated_tokens)])).sum().item()
        generated += tokens
        metrics = {
            **batch.stats,
            **update,
            "generation_time": t_gen,
            "step_time": dt,
            "tokens_per_s": tokens / dt,
        }
        metrics["generated_tokens"] = generated
        if step == r.train.steps or (r.train.eval_every and step % r.train.eval_every == 0):
            metrics["eval_accuracy"] = state["final_eval_accuracy"] = evaluate_greedy(ctx)
        tracker.log(step, metrics)
        if step % r.train.save_every == 0 or step == r.train.steps:
            save_checkpoint(
                run_dir,
                step,
                model=acc.unwrap_model(ctx.model),
                optimizer=ctx.optimizer,
                scheduler=ctx.scheduler,
                trainer_state={
                    **state,
                    "step": step,
                    "cursor": sampler.cursor,
                    "generated_tokens": generated,
                },
                tokenizer=ctx.tokenizer,
                rank=acc.process_index,
                world_size=acc.num_processes,
                barrier=acc.wait_for_everyone,
                keep_last=r.train.keep_last,
            )
    tracker.close()
    summary = finish_run(
        ctx,
        train_seconds=time.perf_counter() - start,
        initial_eval=state.get("initial_eval_accuracy"),
        final_eval=state.get("final_eval_accuracy"),
    )
    return (summary, ctx) if return_context else summary
