"""Run setup and teardown shared by the trainers: accelerator, model, data, rewards, engine,
optimizer and schedule; the final save, evaluation, summary and plots."""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from envs.math.sources import load_rows
from envs.text.base import is_env_spec
from envs.text.pools import load_pool
from rewards.functions import REWARD_FUNCTIONS, resolve_reward_function
from rollout.backends import make_engine
from rollout.engine import Engine
from telos.checkpoint import write_json_atomically
from telos.errors import UserError
from telos.models import load_model, load_tokenizer
from telos.plots import plot_metrics
from telos.tracking import read_metrics
from trainers.common.distributed import make_accelerator, run_layout, save_final
from trainers.common.schedule import make_scheduler
from trainers.common.start_model import resolve_start_model
from trainers.rl.agent_sources import SOURCES
from trainers.rl.recipe import RLRecipe
from trainers.rl.sources import PromptSource

PLOT_GROUPS = {
    "reward": ["reward_mean"],
    "accuracy": ["accuracy", "eval_accuracy"],
    "completion_length": ["completion_length_mean"],
    "grad_norm": ["grad_norm"],
    "throughput": ["tokens_per_s"],
}


@dataclass
class RunContext:
    recipe: RLRecipe
    accelerator: object
    model: torch.nn.Module
    tokenizer: object
    engine: Engine
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    source: object  # PromptSource, or an episode source by agent.role: rows, scored groups, held-out eval
    ref_model: torch.nn.Module | None = None
    model_path: str = ""  # where the starting weights were loaded from (a ZeRO-3 reference reloads them)
    started: float = field(default_factory=time.perf_counter)


def warn_single_process_cpu_launch() -> None:
    """``accelerate launch --cpu --num_processes N`` starts ONE process (accelerate runs
    multi-CPU jobs only through MPI). Say so instead of silently training on one rank."""
    if os.environ.get("ACCELERATE_USE_CPU") != "True" or "WORLD_SIZE" in os.environ:
        return
    try:
        argv = Path(f"/proc/{os.getppid()}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return
    for flag in ("--num_processes", "--num-processes"):
        if flag in argv[:-1] and argv[argv.index(flag) + 1].isdigit() and int(argv[argv.index(flag) + 1]) > 1:
            print(
                "warning: `accelerate launch --cpu` starts a single process; for data-parallel CPU "
                "training use `accelerate launch --multi_gpu --num_processes N -m telos train ...`",
                file=sys.stderr,
            )


def setup_run(recipe: RLRecipe) -> RunContext:
    from accelerate import DistributedDataParallelKwargs
    from accelerate.utils import set_seed

    warn_single_process_cpu_launch()
    # the models' buffers (rotary tables) never change: broadcasting them in every DDP forward
    # would make each forward a collective, and ranks with different amounts of data (OREAL's
    # pairs, dynamic sampling) make different numbers of forward calls
    ddp = DistributedDataParallelKwargs(broadcast_buffers=False)
    acc = make_accelerator(recipe.train.micro_batch_size, recipe.train.max_grad_norm, [ddp])
    set_seed(recipe.train.seed)  # same init on every rank; sampling seeds differ per rank
    name = resolve_start_model(acc, recipe.model.name_or_path)
    tokenizer = load_tokenizer(name)
    model = load_model(name, recipe.model.dtype, recipe.model.lora)
    if recipe.model.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    model.train()

    episodic = is_env_spec(recipe.data.train)

    def rows_of(spec: str, limit: int | None) -> list[dict]:
        if episodic:  # a pool of games (built and cached on first use)
            return load_pool(spec)[:limit]
        return load_rows(spec, limit=limit, seed=recipe.train.seed)

    train_rows = rows_of(recipe.data.train, recipe.data.num_train)
    if not train_rows:
        raise UserError(f"data.train {recipe.data.train!r} has no rows")
    test_rows = rows_of(recipe.data.test, recipe.data.num_test) if recipe.data.test else []
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad],
        lr=recipe.train.lr,
        weight_decay=recipe.train.weight_decay,
    )
    scheduler = make_scheduler(
        optimizer, recipe.train.lr_scheduler, recipe.train.warmup_steps, recipe.train.steps
    )
    model, optimizer = acc.prepare(model, optimizer)
    e = recipe.engine
    engine = make_engine(
        e.backend,
        acc.unwrap_model(model),
        tokenizer,
        mode=e.mode,
        max_batch_size=e.max_batch_size,
        url=e.url,
        rank=acc.process_index,
        max_model_len=e.max_model_len,
        gpu_memory_utilization=e.gpu_memory_utilization,
        kv_cache_bytes=int(e.kv_cache_gb * 2**30) if e.kv_cache_gb else None,
        sleep=e.sleep,
        seed=recipe.train.seed,
    )
    if episodic:
        max_len = e.max_model_len or acc.unwrap_model(model).config.max_position_embeddings
        source = SOURCES[recipe.agent.role].build(recipe, engine, tokenizer, train_rows, test_rows, max_len)
    else:
        reward_fns = [resolve_reward_function(s.name) for s in recipe.rewards]
        correctness = next(
            (
                f
                for s, f in zip(recipe.rewards, reward_fns, strict=True)
                if s.name in REWARD_FUNCTIONS and s.name != "format"
            ),
            None,
        )
        source = PromptSource.build(recipe, engine, tokenizer, train_rows, test_rows, reward_fns, correctness)
    return RunContext(
        recipe=recipe,
        accelerator=acc,
        model=model,
        tokenizer=tokenizer,
        engine=engine,
        optimizer=optimizer,
        scheduler=scheduler,
        source=source,
        model_path=name,
    )


def evaluate_greedy(ctx: RunContext) -> float:
    """The held-out greedy score: pass@1 on math rows, success rate on games."""
    return ctx.source.evaluate()["eval_accuracy"]


def finish_run(
    ctx: RunContext,
    train_seconds: float,
    initial_eval: dict[str, float] | None = None,
    final_eval: dict[str, float] | None = None,
    plot_groups: dict[str, list[str]] | None = None,
) -> dict:
    """Save ``final/``, write summary.json and plots (main process); evaluates only if the
    loop did not already evaluate the final weights. ``initial_eval`` / ``final_eval``: what
    the source's ``evaluate`` returned (eval_accuracy, and eval_score for games)."""
    acc = ctx.accelerator
    run_dir = Path(ctx.recipe.run_dir)
    final_eval = final_eval if final_eval is not None else ctx.source.evaluate()
    initial_eval = initial_eval or {}
    summary = {}
    save_final(acc, ctx.model, run_dir / "final", ctx.tokenizer)  # every rank: ZeRO-3 gathers
    if acc.is_main_process:
        metrics = read_metrics(run_dir / "metrics.jsonl")
        last = metrics[-1] if metrics else {}
        summary = {
            "name": ctx.recipe.name,
            "trainer": ctx.recipe.trainer,
            "steps": last.get("step", 0),
            "initial_eval_accuracy": initial_eval.get("eval_accuracy"),
            "eval_accuracy": final_eval["eval_accuracy"],
            **{f"initial_{k}": v for k, v in initial_eval.items() if k != "eval_accuracy"},
            **{k: v for k, v in final_eval.items() if k != "eval_accuracy"},
            "num_test": len(ctx.source.test_rows),
            "final_reward_mean": last.get("reward_mean"),
            "generated_tokens": last.get("generated_tokens"),
            "train_seconds": train_seconds,
            **run_layout(acc),  # distributed_type, zero_stage, world_size: what really ran
        }
        write_json_atomically(run_dir / "summary.json", summary)
        plot_metrics(metrics, run_dir / "plots", {**PLOT_GROUPS, **(plot_groups or {})})
    acc.wait_for_everyone()
    return summary
