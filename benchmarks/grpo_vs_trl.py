"""GRPO side by side: telos's RL loop vs TRL's ``GRPOTrainer`` (trl 1.16), one process.

Both systems train the same starting model on the same prompts, in the same order, with the
same reward function and GRPO settings (read from ``recipes/math/grpo_tiny.yaml``): G = 8
answers per prompt, 16 prompts per step, 48 completion tokens, temperature 1, μ = 1, β = 0,
DAPO loss, group-scaled advantages, constant lr, no dynamic sampling. Runs alternate
(telos, TRL, TRL, telos, ...), each a fresh run from the starting model with ``--steps``
optimizer steps and seed ``seed + repeat``, so drift in machine load hits both sides alike.

Measured per side:
- completion tokens generated per second of training time: the sum over optimizer steps of
  the step's wall time (generation + scoring + update; model load, setup, logging, checkpoints
  and the final save excluded). telos: ``step_time`` from its ``metrics.jsonl``; TRL: a
  ``TrainerCallback`` timing ``on_step_begin`` → ``on_step_end``;
- mean reward over the last steps (telos ``reward_mean``, TRL's logged ``reward``);
- an MFU estimate: 2·N·(generated tokens) + 6·N·(prompt + completion tokens) per step, over a
  matmul peak measured in the same run (``torch.mm`` of 1024×1024 fp32, ~1 s).

The telos side runs on ``--engine`` (hf: the trainer's own weights through the lean decoder;
vllm: the colocated vLLM engine with weight sync); ``--trl-vllm`` puts TRL on its own vLLM
colocate mode (if that fails to start, the error is recorded and TRL's default is used).
``--setting smollm2`` runs the real SmolLM2-135M-Instruct on ``recipes/math/grpo_smollm2.yaml``
(4 prompts × 8 answers × 24 tokens, 4 steps, verifier reward; the chat template is rendered to
text once and both sides get that text). ``--setting 120m`` switches to a random-weight ~113M-parameter Qwen2 (benchmarks/models.py) with
4 prompts × 8 answers × 32 tokens per step, 4 steps, 1 repeat, and a dense reward
(benchmarks/rewards.py: the share of digits; the verifier gives a random model 0 everywhere,
so every advantage would be 0).

    python benchmarks/grpo_vs_trl.py                      # default: tiny:arith, built once
    python benchmarks/grpo_vs_trl.py --setting 120m --engine vllm
    python benchmarks/grpo_vs_trl.py --steps 3 --repeats 1 --model DIR
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repo's packages importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import (  # noqa: E402
    REPO_ROOT,
    format_table,
    machine_info,
    measure_matmul_peak,
    mfu,
    resolve_model,
    set_offline,
    summarize,
    training_flops,
    write_json,
)
from benchmarks.grpo_settings import Settings  # noqa: E402
from benchmarks.trl_grpo import run_trl, trl_config  # noqa: E402

set_offline()

RECIPE = "recipes/math/grpo_tiny.yaml"
DEFAULT_MODEL = "tiny:arith"
# Measured on the 2-core development machine (tiny:arith cached): the default run (25 steps ×
# 2 repeats × both systems, ~1 s per step per side, ~20 s setup per run) took 1m46s with the
# machine otherwise quiet and 5m07s while another job competed for the cores: ≤ 10 minutes.
DEFAULT_STEPS = 25
DEFAULT_REPEATS = 2
DEFAULT_OUT = "benchmarks/results/grpo_vs_trl.json"
# --setting presets: model, steps, repeats and recipe overrides applied to both sides
SETTINGS = {
    "tiny": {"model": DEFAULT_MODEL, "steps": DEFAULT_STEPS, "repeats": DEFAULT_REPEATS, "overrides": []},
    # real weights: SmolLM2-135M-Instruct on its GRPO recipe (reasoning-gym additions, chat
    # template rendered to text for both sides, verifier reward), a smaller batch per step
    "smollm2": {
        "model": "smollm2:135m-instruct",
        "recipe": "recipes/math/grpo_smollm2.yaml",
        "steps": 4,
        "repeats": 1,
        "overrides": ["train.prompts_per_step=4", "train.micro_batch_size=32"],
    },
    "120m": {
        "model": "random:120m",
        "steps": 4,
        "repeats": 1,
        "overrides": [
            "train.prompts_per_step=4",
            "sampling.max_tokens=32",
            "train.micro_batch_size=32",
            # a random model never earns the verifier's reward: a dense one keeps the update real
            "rewards=[{name: 'benchmarks.rewards:digit_fraction'}]",
        ],
    },
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--setting", choices=sorted(SETTINGS), default="tiny", help="preset (model, batch, steps)")
    p.add_argument("--steps", type=int, default=None, help="optimizer steps per run (each side)")
    p.add_argument("--repeats", type=int, default=None, help="alternations: runs per side")
    p.add_argument("--model", default=None, help="model directory, tiny:arith or random:<size>")
    p.add_argument("--engine", choices=["hf", "vllm"], default="hf", help="telos's rollout engine")
    p.add_argument("--trl-vllm", action="store_true", help="TRL on its vLLM colocate mode")
    p.add_argument("--out", default=None, help="JSON result path (default: per setting and engine)")
    p.add_argument("--seed", type=int, default=0, help="seed of repeat 0; repeat r uses seed + r")
    p.add_argument(
        "--final-window",
        type=int,
        default=0,
        help="steps averaged for the final reward (default: the last quarter, at least 1)",
    )
    p.add_argument(
        "--recipe", default=None, help="GRPO recipe whose settings both sides use (default: the setting's)"
    )
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (default: torch's choice)")
    args = p.parse_args(argv)
    preset = SETTINGS[args.setting]
    args.steps = args.steps or preset["steps"]
    args.repeats = args.repeats or preset["repeats"]
    args.model = args.model or preset["model"]
    args.recipe = args.recipe or preset.get("recipe", RECIPE)
    args.overrides = preset["overrides"]
    if args.out is None:
        suffix = "" if args.setting == "tiny" and args.engine == "hf" else f"_{args.setting}_{args.engine}"
        args.out = DEFAULT_OUT.replace(".json", f"{suffix}.json")
    if args.steps < 1 or args.repeats < 1:
        p.error("--steps and --repeats must be ≥ 1")
    return args


# ------------------------------------------------------------------------------ shared setup


def telos_overrides(
    model_dir: str, steps: int, seed: int, out_dir: str, engine: str = "hf", extra: list[str] | None = None
) -> list[str]:
    """What the benchmark changes in the recipe: no dynamic sampling (TRL has none), a constant
    lr without warm-up (on both sides), one micro-batch per step (TRL: per_device_train_batch_size = G·P),
    no held-out eval, and checkpoints only at the end."""
    return [
        f"model.name_or_path={model_dir}",
        f"output_dir={out_dir}",
        "name=bench-telos",
        "grpo.dynamic_sampling=false",
        f"train.steps={steps}",
        f"train.seed={seed}",
        "train.lr_scheduler=constant",
        "train.warmup_steps=0",
        f"train.save_every={steps}",
        "train.keep_last=1",
        "train.eval_every=0",
        "data.test=null",
        "report_to=[]",
        f"engine.backend={engine}",
        *(extra or []),
    ]


def load_settings(recipe_path: str, model_dir: str, extra: list[str]) -> Settings:
    from trainers.run import load_recipe

    recipe, _ = load_recipe(recipe_path, telos_overrides(model_dir, 1, 0, tempfile.gettempdir(), extra=extra))
    r = recipe
    if len(r.rewards) != 1:
        raise SystemExit(
            f"error: the benchmark compares one reward function; {recipe_path} has {len(r.rewards)}"
        )
    return Settings(
        recipe=recipe_path,
        model=model_dir,
        data_train=r.data.train,
        num_train=r.data.num_train,
        template=r.data.template,
        reward=r.rewards[0].name,
        num_generations=r.sampling.num_generations,
        prompts_per_step=r.train.prompts_per_step,
        max_completion_tokens=r.sampling.max_tokens,
        temperature=r.sampling.temperature,
        top_p=r.sampling.top_p,
        top_k=r.sampling.top_k,
        num_iterations=r.grpo.num_iterations,
        beta=r.grpo.beta,
        epsilon=r.grpo.epsilon,
        epsilon_high=r.grpo.epsilon_high,
        loss_type=r.grpo.loss_type,
        scale_rewards=r.grpo.scale_rewards,
        advantage=r.grpo.advantage,
        dynamic_sampling=r.grpo.dynamic_sampling,
        lr=r.train.lr,
        lr_scheduler=r.train.lr_scheduler,
        warmup_steps=r.train.warmup_steps,
        weight_decay=r.train.weight_decay,
        max_grad_norm=r.train.max_grad_norm,
        micro_batch_size=r.train.micro_batch_size,
        dtype=r.model.dtype,
        chat=r.data.chat,
    )


def check_parity(s: Settings) -> None:
    """Settings the TRL side cannot mirror would make the comparison meaningless: refuse."""
    problems = []
    if s.lr_scheduler != "constant":
        problems.append(f"train.lr_scheduler={s.lr_scheduler} (benchmark maps only 'constant')")
    if s.advantage != "grpo":
        problems.append(f"grpo.advantage={s.advantage} (TRL computes GRPO advantages)")
    if s.micro_batch_size < s.completions_per_step:
        problems.append(
            f"train.micro_batch_size={s.micro_batch_size} < G·P={s.completions_per_step} "
            "(TRL runs the step as one batch)"
        )
    if s.dtype != "float32":
        problems.append(f"model.dtype={s.dtype} (CPU benchmark runs fp32)")
    if problems:
        raise SystemExit("error: settings TRL cannot mirror: " + "; ".join(problems))


def prompt_order(num_rows: int, seed: int, count: int) -> list[int]:
    """The row indices telos's PromptSampler draws, in order. TRL gets its dataset in this order
    with shuffling off, so step k sees the same 16 prompts on both sides."""
    from trainers.common.sampler import PromptSampler

    return PromptSampler(num_rows, seed).take(count)


# ------------------------------------------------------------------------------ telos


def run_telos(
    s: Settings, seed: int, steps: int, prompt_tokens: list[int], workdir: Path, args: argparse.Namespace
) -> dict[str, Any]:
    from telos.tracking import read_metrics
    from trainers.rl.loop import train_rl
    from trainers.run import load_recipe

    out_dir = workdir / f"telos-seed{seed}"
    overrides = telos_overrides(s.model, steps, seed, str(out_dir), args.engine, args.overrides)
    recipe, raw = load_recipe(s.recipe, overrides)
    t0 = time.perf_counter()
    train_rl(recipe, raw)
    wall = time.perf_counter() - t0
    rows = [m for m in read_metrics(out_dir / "metrics.jsonl") if "step_time" in m]
    if len(rows) != steps:
        raise RuntimeError(f"telos logged {len(rows)} steps, expected {steps}")
    cumulative = [int(m["generated_tokens"]) for m in rows]
    generated = [c - p for c, p in zip(cumulative, [0, *cumulative[:-1]], strict=True)]
    return {
        "step_seconds": [float(m["step_time"]) for m in rows],
        "generated_tokens": generated,
        "prompt_tokens": prompt_tokens,
        "reward_mean": [float(m["reward_mean"]) for m in rows],
        "completion_length_mean": [float(m["completion_length_mean"]) for m in rows],
        "generation_seconds": [float(m["generation_time"]) for m in rows],
        "wall_seconds_incl_setup": wall,
    }


# ------------------------------------------------------------------------------ aggregation


def run_stats(run: dict, num_params: int, peak: float, window: int) -> dict[str, Any]:
    secs, gen, prm = run["step_seconds"], run["generated_tokens"], run["prompt_tokens"]
    total_s, total_gen = sum(secs), sum(gen)
    flops = sum(training_flops(num_params, g, p + g) for g, p in zip(gen, prm, strict=True))
    later = secs[1:] or secs  # the first step of a run pays one-time costs (lazy init, caches)
    return {
        "train_seconds": total_s,
        "generated_tokens": total_gen,
        "prompt_tokens": sum(prm),
        "tokens_per_s": total_gen / total_s,
        "tokens_per_s_excl_first_step": (sum(gen[1:]) or total_gen) / sum(later),
        "seconds_per_step": total_s / len(secs),
        "final_reward_mean": sum(run["reward_mean"][-window:]) / len(run["reward_mean"][-window:]),
        "flops": flops,
        "mfu": mfu(flops, total_s, peak),
        "wall_seconds_incl_setup": run["wall_seconds_incl_setup"],
        "load_avg_1m_after": run.get("load_avg_1m_after"),
        "per_step": {k: v for k, v in run.items() if isinstance(v, list)},
        "vllm_error": run.get("vllm_error"),
    }


def side_summary(runs: list[dict], peak: float, completions_per_step: int) -> dict[str, Any]:
    total_s = sum(r["train_seconds"] for r in runs)
    total_gen = sum(r["generated_tokens"] for r in runs)
    flops = sum(r["flops"] for r in runs)
    later_gen = sum(sum(r["per_step"]["generated_tokens"][1:]) for r in runs)
    later_s = sum(sum(r["per_step"]["step_seconds"][1:]) for r in runs)
    return {
        "tokens_per_s": total_gen / total_s,
        # steady state: without each run's first step (one-time lazy initialisation)
        "tokens_per_s_excl_first_step": later_gen / later_s if later_s > 0 else total_gen / total_s,
        # robust to a transient load spike on a shared machine: the median step's throughput
        "tokens_per_s_median_step": statistics.median(
            g / t
            for r in runs
            for g, t in zip(r["per_step"]["generated_tokens"], r["per_step"]["step_seconds"], strict=True)
        ),
        "tokens_per_s_per_repeat": summarize([r["tokens_per_s"] for r in runs]),
        "final_reward_mean": sum(r["final_reward_mean"] for r in runs) / len(runs),
        "train_seconds": total_s,
        "generated_tokens": total_gen,
        "flops": flops,
        "mfu": mfu(flops, total_s, peak),
        "mean_completion_length": sum(r["generated_tokens"] for r in runs)
        / sum(len(r["per_step"]["generated_tokens"]) for r in runs)
        / completions_per_step,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    t_start = time.perf_counter()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from envs.math.prompts import format_prompt
    from envs.math.sources import load_rows
    from telos.models import count_parameters, load_model, load_tokenizer

    recipe_path = str(Path(args.recipe) if Path(args.recipe).is_absolute() else REPO_ROOT / args.recipe)
    model_dir = resolve_model(args.model)
    s = load_settings(recipe_path, model_dir, args.overrides)
    check_parity(s)
    window = args.final_window or max(1, args.steps // 4)
    window = min(window, args.steps)
    num_params = count_parameters(load_model(model_dir, s.dtype))
    tokenizer = load_tokenizer(model_dir)
    machine = machine_info()  # load average at the start; the end's is added below
    peaks = [measure_matmul_peak(seconds=1.0)]

    per_repeat: list[dict[str, Any]] = []
    workdir = Path(tempfile.mkdtemp(prefix="telos-bench-"))
    try:
        for rep in range(args.repeats):
            seed = args.seed + rep
            rows = load_rows(s.data_train, limit=s.num_train, seed=seed)
            order = prompt_order(len(rows), seed, args.steps * s.prompts_per_step)
            P, G = s.prompts_per_step, s.num_generations
            lengths = [
                len(ids)
                for ids in tokenizer([format_prompt(rows[i], s.template) for i in order])["input_ids"]
            ]
            telos_prompt_tokens = [G * sum(lengths[k * P : (k + 1) * P]) for k in range(args.steps)]
            sides = ["telos", "trl"] if rep % 2 == 0 else ["trl", "telos"]
            entry: dict[str, Any] = {"repeat": rep, "seed": seed, "order": sides}
            for side in sides:
                print(f"\n=== repeat {rep + 1}/{args.repeats}: {side} (seed {seed}) ===", flush=True)
                torch.manual_seed(seed)
                if side == "telos":
                    run = run_telos(s, seed, args.steps, telos_prompt_tokens, workdir, args)
                else:
                    run = run_trl(s, seed, args.steps, rows, order, workdir, use_vllm=args.trl_vllm)
                # load on a shared machine moves the numbers: record it, and re-measure the peak
                run["load_avg_1m_after"] = round(os.getloadavg()[0], 2)
                peaks.append(measure_matmul_peak(seconds=1.0))
                entry[side] = run
            per_repeat.append(entry)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    # the peak is the best of the measurements (start, after every run): a busy moment on a
    # shared machine can only lower a measurement, never raise it
    peak = max(p["flops_per_s"] for p in peaks)

    for entry in per_repeat:
        for side in ("telos", "trl"):
            entry[side] = run_stats(entry[side], num_params, peak, window)
    telos = side_summary([e["telos"] for e in per_repeat], peak, s.completions_per_step)
    trl = side_summary([e["trl"] for e in per_repeat], peak, s.completions_per_step)
    result = {
        "benchmark": "grpo_vs_trl",
        "setting": args.setting,
        "telos_engine": args.engine,
        "trl_generation": "vllm colocate"
        if args.trl_vllm and not trl_vllm_errors(per_repeat)
        else "transformers generate",
        "trl_vllm_errors": trl_vllm_errors(per_repeat),
        "telos_tokens_per_s": telos["tokens_per_s"],
        "trl_tokens_per_s": trl["tokens_per_s"],
        "ratio": telos["tokens_per_s"] / trl["tokens_per_s"],
        "ratio_excl_first_step": telos["tokens_per_s_excl_first_step"] / trl["tokens_per_s_excl_first_step"],
        "ratio_median_step": telos["tokens_per_s_median_step"] / trl["tokens_per_s_median_step"],
        "steps": args.steps,
        "repeats": args.repeats,
        "telos_final_reward_mean": telos["final_reward_mean"],
        "trl_final_reward_mean": trl["final_reward_mean"],
        "final_reward_window_steps": window,
        "telos_mfu": telos["mfu"],
        "trl_mfu": trl["mfu"],
        "peak_flops_per_s": peak,
        "peak_matmul": {"measurements": peaks, "used": "max"},
        "num_params": num_params,
        "flops_formula": "2*N*generated_tokens + 6*N*(prompt_tokens + generated_tokens), per step",
        "telos": telos,
        "trl": trl,
        "per_repeat": per_repeat,
        "settings": {
            **asdict(s),
            "completions_per_step": s.completions_per_step,
            "trl": {
                k: v
                for k, v in trl_config(s, args.steps, args.seed, "<tmp>", use_vllm=args.trl_vllm)
                .to_dict()
                .items()
                if k in TRL_REPORTED_FIELDS
            },
            "timing": "sum of per-optimizer-step wall time: generation + scoring + update "
            "(telos metrics step_time; TRL on_step_begin→on_step_end)",
            "alternation": "telos first on even repeats, TRL first on odd repeats; fresh run each time",
        },
        "machine": {**machine, "load_avg_1m_at_end": round(os.getloadavg()[0], 2)},
        "total_wall_seconds": time.perf_counter() - t_start,
    }
    out = write_json(args.out if Path(args.out).is_absolute() else Path.cwd() / args.out, result)
    print_summary(result, out)
    return result


def trl_vllm_errors(per_repeat: list[dict]) -> list[str]:
    return [e["trl"]["vllm_error"] for e in per_repeat if e["trl"].get("vllm_error")]


TRL_REPORTED_FIELDS = (
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "steps_per_generation",
    "generation_batch_size",
    "num_generations",
    "max_completion_length",
    "temperature",
    "top_p",
    "top_k",
    "use_vllm",
    "vllm_mode",
    "beta",
    "num_iterations",
    "epsilon",
    "epsilon_high",
    "loss_type",
    "scale_rewards",
    "learning_rate",
    "lr_scheduler_type",
    "warmup_steps",
    "weight_decay",
    "max_grad_norm",
    "optim",
    "bf16",
    "fp16",
    "use_cpu",
    "gradient_checkpointing",
    "shuffle_dataset",
    "mask_truncated_completions",
)


def print_summary(result: dict[str, Any], out: Path) -> None:
    rows = []
    for name in ("telos", "trl"):
        side = result[name]
        rep = side["tokens_per_s_per_repeat"]
        rows.append(
            [
                name,
                side["tokens_per_s"],
                side["tokens_per_s_excl_first_step"],
                side["tokens_per_s_median_step"],
                f"{rep['min']:.4g}–{rep['max']:.4g}",
                side["train_seconds"] / (result["steps"] * result["repeats"]),
                side["final_reward_mean"],
                side["mean_completion_length"],
                f"{100 * side['mfu']:.3f}%",
            ]
        )
    print()
    print(
        format_table(
            [
                "system",
                "tokens/s",
                "excl. 1st step",
                "median step",
                "per repeat",
                "s/step",
                "final reward",
                "mean len",
                "MFU",
            ],
            rows,
        )
    )
    print(
        f"\nratio telos/TRL: {result['ratio']:.2f}× "
        f"(excluding each run's first step: {result['ratio_excl_first_step']:.2f}×, "
        f"median step: {result['ratio_median_step']:.2f}×); "
        f"{result['steps']} steps × {result['repeats']} repeats per side; "
        f"peak {result['peak_flops_per_s'] / 1e9:.1f} GFLOP/s fp32; {result['num_params'] / 1e6:.2f}M params"
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
