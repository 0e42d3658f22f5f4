"""The policy-gradient RL loop shared by GRPO, NFT and OREAL: rollout → rewards → the
algorithm's selection and tensors → registered loss → optimizer steps.

The loop never knows which algorithm it runs: what differs lives in ``trainers.rl.algorithms``.
Read it top to bottom: ``train_rl`` is the whole recipe.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from telos.checkpoint import resolve_resume, save_checkpoint
from telos.config import save_yaml, to_dict
from telos.models import load_model
from telos.tracking import Tracker
from telos.types import SamplingParams
from trainers.common.batching import (
    accumulate,
    chunked_logps,
    completion_logits,
    pack_completions,
    token_logps,
)
from trainers.common.distributed import load_resume, optimizer_step, reference_model, save_kwargs
from trainers.common.sampler import PromptSampler
from trainers.rl.algorithms import Algorithm, TrainBatch, make_algorithm
from trainers.rl.correction import importance_weights, mismatch_metrics, sampler_logps_tensor
from trainers.rl.recipe import RLRecipe
from trainers.rl.rollout_batch import (
    ScoredGroups,
    drop_groups,
    rollout_stats,
    sum_over_ranks,
)
from trainers.rl.setup import RunContext, finish_run, setup_run

PROGRESS_KEYS = ["reward_mean", "accuracy", "eval_accuracy", "tokens_per_s"]


@dataclass
class RolloutBatch:
    train: TrainBatch
    stats: dict[str, float]
    generated_tokens: int


def collect_rollout(ctx: RunContext, algo: Algorithm, sampler: PromptSampler, step: int) -> RolloutBatch:
    """Sample this rank's prompts, generate G answers each, score; with dynamic sampling keep
    drawing prompts until the batch holds ``prompts_per_step`` groups that carry signal (by the
    algorithm's own test), then let the algorithm choose what to train on."""
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
    flat_groups, source_stats = 0, {}
    for round_ in range(1 + (algo.max_resample_rounds if algo.dynamic_sampling else 0)):
        # every rank draws the same global slice so the data cursor stays identical across ranks
        global_idx = sampler.take(per_rank * acc.num_processes)
        idx = global_idx[acc.process_index * per_rank : (acc.process_index + 1) * per_rank]
        params.seed = None if params.seed is None else params.seed + round_ * 7919
        groups = ctx.source.groups(idx, params)
        source_stats = source_stats or groups.stats  # the source's own metrics, of the first round
        all_groups.extend(groups)
        flat = algo.flat_groups(groups, G)
        flat_groups += int(flat.sum())
        if not algo.dynamic_sampling:
            kept = groups
            break
        kept.extend(drop_groups(groups, flat, G))
        need_more = torch.tensor([float(len(kept.row_indices) < per_rank)], device=acc.device)
        if acc.gather(need_more).sum().item() == 0:
            break
    if algo.dynamic_sampling and len(kept.row_indices) > per_rank:
        kept.truncate(per_rank, G)

    train = algo.train_batch(kept, G, step, acc.process_index)
    lengths = torch.tensor([len(c.token_ids) for c in all_groups.completions], dtype=torch.float)
    stats = {
        **rollout_stats(all_groups, flat_groups, sum_over_ranks(acc)),  # over all ranks
        "completion_length_mean": lengths.mean().item(),
        "completion_length_max": lengths.max().item(),
        "clipped_ratio": sum(c.finish_reason == "length" for c in all_groups.completions) / len(lengths),
        "groups_kept": len(kept.row_indices),
        "resample_rounds": round_,
        **source_stats,  # episodes: success, score, turns (this rank's)
        **train.stats,
    }
    return RolloutBatch(train, stats, int(lengths.sum()))


def _mini_batches(n_local: int, parts: int, seed: int) -> list[list[int]]:
    """Split this rank's sequences into ``parts`` near-equal shuffled mini-batches (one
    optimizer step each); a single part keeps the rollout order."""
    if parts <= 1:
        return [list(range(n_local))]
    order = torch.randperm(n_local, generator=torch.Generator().manual_seed(seed)).tolist()
    return [order[i::parts] for i in range(parts)]


def policy_update(ctx: RunContext, algo: Algorithm, batch: RolloutBatch, step: int) -> dict[str, float]:
    """The algorithm's pre-step work, then μ passes × ``mini_batches`` optimizer steps over the
    rollout batch, each micro-batched. Normalisers count the whole optimizer step over all
    ranks, divided by the world size (DDP averages gradients, so the result equals normalising
    by the global total, as TRL does)."""
    r, acc, model = ctx.recipe, ctx.accelerator, ctx.model
    tb = batch.train
    n_local = len(tb.completions)
    tb.to(acc.device)  # rollouts and rewards are built on the CPU; the model may be on a GPU
    packed = pack_completions(tb.completions, ctx.tokenizer.pad_token_id).to(acc.device) if n_local else None
    if packed is not None:
        packed.completion_mask *= tb.valid[:, None].float()
    metrics: dict[str, list[float]] = {k: [v] for k, v in algo.before_update(ctx, packed, tb, step).items()}
    if algo.policy_frozen(step):
        with warnings.catch_warnings():  # the schedule advances while the optimizer rests, on purpose
            warnings.filterwarnings(
                "ignore", message="Detected call of `lr_scheduler.step", category=UserWarning
            )
            ctx.scheduler.step()
        return {
            **{k: v[0] for k, v in metrics.items()},
            "policy_frozen": 1.0,
            "lr": ctx.scheduler.get_last_lr()[0],
        }

    mb, world = r.train.micro_batch_size, acc.num_processes
    # Every policy log-prob (loss, old, reference, and the sampler/trainer mismatch correction)
    # is of softmax(logits / T), T the sampling temperature: the distribution the engine sampled
    # from, as in TRL, verl and the official NFT code (T = 0, greedy, counts as 1).
    correction, temp = r.engine.correction_mode(), r.sampling.temperature or 1.0
    sampler_logps = is_logps = None
    if packed is not None and correction != "none":
        sampler_logps = sampler_logps_tensor(tb.completions, packed.completion_ids.shape[1]).to(acc.device)
    old_logps = ref_logps = None
    with torch.no_grad():  # every rank calls these, also one without rows (ZeRO-3 lockstep)
        if algo.num_iterations > 1 or algo.mini_batches > 1:
            old_logps = chunked_logps(acc, model, packed, mb, temp)
            is_logps = old_logps if sampler_logps is not None else None
        if algo.beta > 0:
            ref_logps = chunked_logps(acc, ctx.ref_model, packed, mb, temp)

    step_losses: list[float] = []
    grad_norm = 0.0
    for it in range(algo.num_iterations):
        for part in _mini_batches(n_local, algo.mini_batches, r.train.seed * 7_919 + step * 31 + it):
            mask = packed.completion_mask if packed is not None else torch.zeros(0, 1, device=acc.device)
            pools = algo.step_pools(tb, mask, part)
            local = [float(len(part)), float(mask[part].sum()) if part else 0.0, *pools.values()]
            totals = acc.gather(torch.tensor(local, device=acc.device).view(1, -1)).sum(0).cpu() / world
            norm = {"num_sequences": max(1.0, totals[0].item()), "num_tokens": max(1.0, totals[1].item())}
            pools = {k: max(1.0, totals[2 + i].item()) for i, k in enumerate(pools)}
            losses: list[float] = []

            def loss_of(idx: list[int], num_micro: int, part=part, pools=pools, norm=norm, losses=losses):
                rows = [part[i] for i in idx]
                sub = packed.select(rows)
                logits = completion_logits(model, sub)
                logps = token_logps(logits, sub.completion_ids, temp)
                weights = None
                if sampler_logps is not None:  # on-policy: this forward *is* the sampling policy's
                    trainer = is_logps[rows] if is_logps is not None else logps.detach()
                    weights = importance_weights(
                        trainer, sampler_logps[rows], sub.completion_mask, correction, r.engine.correction_cap
                    )
                    for k, v in mismatch_metrics(
                        trainer, sampler_logps[rows], sub.completion_mask, weights, r.engine.correction_cap
                    ).items():
                        metrics.setdefault(k, []).append(v)
                del logits
                common = dict(
                    logps=logps,
                    old_logps=old_logps[rows] if old_logps is not None else logps.detach(),
                    mask=sub.completion_mask,
                    ref_logps=ref_logps[rows] if ref_logps is not None else None,
                    num_micro_batches=num_micro,
                    max_completion_length=r.sampling.max_tokens,
                    is_weights=weights,
                    **norm,
                )
                loss, m_stats = algo.loss_fn(algo.loss_batch(common, tb, rows, pools), algo.loss_cfg)
                for k, v in m_stats.items():
                    metrics.setdefault(k, []).append(v)
                losses.append(loss.item())
                return loss

            accumulate(acc, model, len(part), mb, loss_of)
            step_losses.append(sum(losses))  # micro-batch shares add up to the step loss
            grad_norm = optimizer_step(acc, model, ctx.optimizer, r.train.max_grad_norm)
            if not math.isfinite(grad_norm):  # NaN guard: the step was skipped, the weights kept
                metrics.setdefault("skipped_nonfinite_steps", []).append(1.0)
    ctx.scheduler.step()
    out = {k: sum(v) / len(v) for k, v in metrics.items()}
    out["loss"] = sum(step_losses) / max(1, len(step_losses))
    out["grad_norm"] = grad_norm
    out["lr"] = ctx.scheduler.get_last_lr()[0]
    return out


def train_rl(recipe: RLRecipe, raw_config: dict | None = None, return_context: bool = False):
    """Run a GRPO, NFT or OREAL recipe end to end; returns the summary written to summary.json
    (and the run context — model, accelerator, engine — with ``return_context``)."""
    ctx = setup_run(recipe)
    r, acc = recipe, ctx.accelerator
    algo = make_algorithm(recipe)
    algo.attach(ctx)
    run_dir = Path(r.run_dir)
    resume_from = resolve_resume(r.resume, run_dir)
    state = {"step": 0, "cursor": 0, "generated_tokens": 0}
    if algo.beta > 0:  # the reference is the starting model, so copy it before a resume loads weights
        ctx.ref_model = reference_model(
            acc, ctx.model, lambda: load_model(ctx.model_path, r.model.dtype, r.model.lora)
        )
    if resume_from is not None:
        state = load_resume(acc, ctx.model, ctx.optimizer, ctx.scheduler, resume_from)
        algo.load_state(resume_from)
        ctx.engine.sync_weights(acc.unwrap_model(ctx.model))
    if acc.is_main_process:
        save_yaml(raw_config if raw_config is not None else to_dict(recipe), run_dir / "config.yaml")

    sampler = PromptSampler(len(ctx.source.rows), r.train.seed, cursor=state["cursor"])
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
        initial = ctx.source.evaluate()
        state["initial_eval_accuracy"], state["initial_eval"] = initial["eval_accuracy"], initial
        tracker.log(0, initial)
    start = time.perf_counter()
    for step in range(state["step"] + 1, r.train.steps + 1):
        if 0 < r.train.max_generated_tokens <= generated:  # resumed after the budget was spent
            break
        t0 = time.perf_counter()
        batch = collect_rollout(ctx, algo, sampler, step)
        t_gen = time.perf_counter() - t0
        update = policy_update(ctx, algo, batch, step)
        ctx.engine.sync_weights(acc.unwrap_model(ctx.model))
        if ctx.engine.shared_across_ranks:  # no rank samples before rank 0's push has landed
            acc.wait_for_everyone()
        dt = time.perf_counter() - t0
        tokens = acc.gather(torch.tensor([float(batch.generated_tokens)], device=acc.device)).sum().item()
        generated += tokens
        metrics = {
            **batch.stats,
            **update,
            **ctx.engine.sync_metrics(),
            "generation_time": t_gen,
            "step_time": dt,
            "tokens_per_s": tokens / dt,
        }
        metrics["generated_tokens"] = generated
        # a sampled-token budget ends the run at the step that reaches it (same on every rank)
        last = step == r.train.steps or 0 < r.train.max_generated_tokens <= generated
        if last or (r.train.eval_every and step % r.train.eval_every == 0):
            evaluation = ctx.source.evaluate()
            metrics.update(evaluation)
            state["final_eval_accuracy"], state["final_eval"] = evaluation["eval_accuracy"], evaluation
        tracker.log(step, metrics)
        if step % r.train.save_every == 0 or last:
            save_checkpoint(
                run_dir,
                step,
                **save_kwargs(acc, ctx.model, ctx.optimizer),  # model, optimizer (ZeRO: gathered, shards)
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
                extra_writers=algo.checkpoint_writers(),
            )
        if last:
            break
    tracker.close()
    summary = finish_run(
        ctx,
        train_seconds=time.perf_counter() - start,
        initial_eval=state.get("initial_eval"),
        final_eval=state.get("final_eval"),
        plot_groups=algo.plot_groups,
    )
    return (summary, ctx) if return_context else summary
