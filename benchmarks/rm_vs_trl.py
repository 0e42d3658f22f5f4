"""Reward-model side by side: telos's Bradley–Terry trainer vs TRL's ``RewardTrainer`` (trl 1.16).

Both sides train the same starting model (sequence classification, one label, the new score head
initialised under the same seed) on the same pairs, tokenized once by telos (prompt + response +
EOS, over-long pairs dropped) and handed to TRL as ``chosen_ids`` / ``rejected_ids`` in telos's
``PromptSampler`` with sequential sampling; same batch size, steps, constant lr, clipping and torch
AdamW, fp32 on CPU. Runs alternate (telos, TRL, TRL, telos, ...), each fresh, seed ``seed + repeat``.

Measured per side: tokens/s (non-pad tokens of chosen + rejected over the summed optimizer-step
wall time: telos ``step_time`` from ``metrics.jsonl``; TRL ``on_step_begin`` → ``on_step_end`` plus
the batch fetch + collation the Trainer does before it, which telos's step includes); MFU (6·N·tokens
over a matmul peak measured in the same run); final train loss / accuracy; step 1's loss, which
must agree on both sides to float precision (same weights, same batch).

    python benchmarks/rm_vs_trl.py                      # tiny:arith, 30 steps × batch 32 × 2 repeats
    python benchmarks/rm_vs_trl.py --steps 3 --repeats 1 --data scratch/rm/pairs_train.jsonl
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
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

set_offline()

RECIPE = "recipes/rm/bt_tiny.yaml"
SIDES = ("telos", "trl")
HEADLINE = ("tokens_per_s", "final_loss", "final_accuracy", "mfu")  # top-level <side>_<key> fields
DATA_SPEC = "procedural:arith?n=400&max_value=50&max_operand=9"  # what a missing --data is made from


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=30, help="optimizer steps per run (each side)")
    p.add_argument("--batch-size", type=int, default=32, help="pairs per optimizer step")
    p.add_argument("--repeats", type=int, default=2, help="alternations: runs per side")
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--model", default="tiny:arith", help="model directory (default: tiny:arith, built once)")
    p.add_argument("--data", default="runs/rm-data/pairs_train.jsonl", help="pairs .jsonl (made if missing)")
    p.add_argument("--out", default="benchmarks/results/rm_vs_trl.json", help="JSON result path")
    p.add_argument("--seed", type=int, default=0, help="seed of repeat 0; repeat r uses seed + r")
    p.add_argument("--final-window", type=int, default=0, help="steps averaged for final loss (0: last 1/4)")
    p.add_argument("--recipe", default=RECIPE, help="RM recipe whose other settings both sides use")
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (default: torch's choice)")
    args = p.parse_args(argv)
    if min(args.steps, args.repeats, args.batch_size) < 1:
        p.error("--steps, --repeats and --batch-size must be ≥ 1")
    return args


def ensure_data(path: Path, model_dir: str) -> None:
    """Sample preference pairs with the tiny policy once (``telos data preferences``)."""
    if path.is_file():
        return
    print(f"{path} missing: generating preference pairs with {model_dir}", flush=True)
    cmd = [sys.executable, "-m", "telos", "data", "preferences", "--model", model_dir, "--data", DATA_SPEC]
    cmd += ["--samples", "8", "--pairs-per-prompt", "2", "--max-tokens", "48", "--out", str(path)]
    subprocess.run(cmd, check=True, cwd=REPO_ROOT)


def overrides(args: argparse.Namespace, model_dir: str, data: Path, seed: int, out_dir: str) -> list[str]:
    """The benchmark's changes to the recipe: model, data, batch = one micro-batch, constant lr
    without warm-up, no held-out eval, one checkpoint at the end."""
    return [
        f"model.name_or_path={model_dir}",
        f"data.train={data}",
        f"output_dir={out_dir}",
        f"train.steps={args.steps}",
        f"train.batch_size={args.batch_size}",
        f"train.micro_batch_size={args.batch_size}",
        f"train.lr={args.lr}",
        f"train.save_every={args.steps}",
        f"train.seed={seed}",
        *["data.test=null", "name=bench-telos", "train.lr_scheduler=constant", "train.warmup_steps=0"],
        *["train.keep_last=1", "report_to=[]"],
    ]


def check_parity(r) -> None:
    extras = bool(r.model.lora or r.model.gradient_checkpointing)
    problems = {
        f"rm.kind={r.rm.kind} (TRL's RewardTrainer is Bradley–Terry)": r.rm.kind != "bt",
        f"model.dtype={r.model.dtype} (fp32 on CPU)": r.model.dtype != "float32",
        "model.lora / gradient_checkpointing (plain full fine-tuning)": extras,
    }
    if bad := [k for k, v in problems.items() if v]:
        raise SystemExit("error: settings TRL cannot mirror: " + "; ".join(bad))


# ------------------------------------------------------------------------------ the two sides


def run_telos(recipe_path: str, overrides: list[str], steps: int) -> dict[str, Any]:
    from telos.tracking import read_metrics
    from trainers.rm.train import train_rm
    from trainers.run import load_recipe

    recipe, raw = load_recipe(recipe_path, overrides)
    t0 = time.perf_counter()
    train_rm(recipe, raw)
    wall = time.perf_counter() - t0
    rows = [m for m in read_metrics(Path(recipe.run_dir) / "metrics.jsonl") if "step_time" in m]
    if len(rows) != steps:
        raise RuntimeError(f"telos logged {len(rows)} steps, expected {steps}")
    return {
        "step_seconds": [float(m["step_time"]) for m in rows],
        "logged_tokens": [round(m["tokens_per_s"] * m["step_time"]) for m in rows],
        "loss": [float(m["loss"]) for m in rows],
        "accuracy": [float(m["accuracy"]) for m in rows],
        "wall_seconds_incl_setup": wall,
    }


def trl_kwargs(r, args: argparse.Namespace, seed: int) -> dict[str, Any]:
    """RewardConfig settings mirroring the telos run (reported in the JSON as they are)."""
    # fmt: off
    return dict(
        per_device_train_batch_size=args.batch_size, gradient_accumulation_steps=1, max_steps=args.steps,
        train_sampling_strategy="sequential",  # the dataset is already in telos's order: no shuffling
        max_length=None,  # telos dropped over-long pairs when it tokenized them
        pad_to_multiple_of=None, center_rewards_coefficient=r.rm.center_coef or None,
        disable_dropout=False,  # TRL's default is True; telos trains with the model's own dropout
        learning_rate=args.lr, lr_scheduler_type="constant", warmup_steps=0,
        weight_decay=r.train.weight_decay, max_grad_norm=r.train.max_grad_norm,
        optim="adamw_torch",  # telos: torch.optim.AdamW (this torch's Trainer default is the fused one)
        bf16=False, fp16=False, use_cpu=True, gradient_checkpointing=False, seed=seed,
        logging_steps=1, save_strategy="no", eval_strategy="no", report_to="none",
        include_num_input_tokens_seen="no", dataloader_num_workers=0,
    )
    # fmt: on


def run_trl(r, args, seed: int, model_dir: str, rows: list[dict], workdir: Path) -> dict[str, Any]:
    from accelerate.utils import set_seed
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import RewardConfig, RewardTrainer

    from rewards.reward_model import load_head_model
    from telos.models import load_tokenizer

    class Recorder(TrainerCallback):
        def __init__(self) -> None:
            self.step_seconds, self.logs, self._t0 = [], [], 0.0

        def on_step_begin(self, args, state, control, **kwargs):
            self._t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            self.step_seconds.append(time.perf_counter() - self._t0)

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs and "accuracy" in logs:
                self.logs.append(dict(logs))

    class TimedRewardTrainer(RewardTrainer):
        """Also times the batch fetch + collation, which telos counts inside its step."""

        def get_batch_samples(self, *a, **kw):
            t0 = time.perf_counter()
            out = super().get_batch_samples(*a, **kw)
            fetch_seconds.append(time.perf_counter() - t0)
            return out

    t0, fetch_seconds, recorder = time.perf_counter(), [], Recorder()
    tokenizer = load_tokenizer(model_dir)
    set_seed(seed)  # as train_rm does right before loading: the new score head gets the same init
    # AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=1, dtype=fp32), quietly
    model = load_head_model(model_dir, "bt", num_labels=1, dtype="float32")
    model.config.pad_token_id = tokenizer.pad_token_id  # TRL then re-sets it: pad, else EOS (as telos)
    trainer = TimedRewardTrainer(
        model=model,
        args=RewardConfig(output_dir=str(workdir / f"trl-seed{seed}"), **trl_kwargs(r, args, seed)),
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        callbacks=[recorder],
    )
    trainer.train()
    wall, n, logs = time.perf_counter() - t0, args.steps, recorder.logs
    if len(logs) != n or len(recorder.step_seconds) != n or len(fetch_seconds) < n:
        raise RuntimeError(f"TRL logged {len(logs)} / timed {len(recorder.step_seconds)} steps, expected {n}")
    seen = [int(lg["num_tokens"]) for lg in logs]  # cumulative attention_mask.sum()
    del trainer, model
    gc.collect()
    return {
        "step_seconds": [s + f for s, f in zip(recorder.step_seconds, fetch_seconds, strict=False)],
        "fetch_seconds": fetch_seconds[:n],
        "logged_tokens": [c - p for c, p in zip(seen, [0, *seen[:-1]], strict=True)],
        "loss": [float(lg["loss"]) for lg in logs],
        "accuracy": [float(lg["accuracy"]) for lg in logs],
        "wall_seconds_incl_setup": wall,
    }


# ------------------------------------------------------------------------------ aggregation


def stats(runs: list[dict], num_params: int, peak: float, window: int) -> dict[str, Any]:
    """Throughput, MFU and final loss/accuracy over one or more runs of one side."""
    secs = [s for r in runs for s in r["step_seconds"]]
    toks = [t for r in runs for t in r["tokens"]]
    later = [(t, s) for r in runs for t, s in list(zip(r["tokens"], r["step_seconds"], strict=True))[1:]]
    flops = training_flops(num_params, 0, sum(toks))  # 6·N·tokens
    return {
        "tokens_per_s": sum(toks) / sum(secs),
        # steady state: without each run's first step (one-time lazy initialisation)
        "tokens_per_s_excl_first_step": sum(t for t, _ in later) / sum(s for _, s in later)
        if later
        else sum(toks) / sum(secs),
        # robust to a transient load spike on a shared machine: the median step's throughput
        "tokens_per_s_median_step": statistics.median(t / s for t, s in zip(toks, secs, strict=True)),
        "seconds_per_step": statistics.fmean(secs),
        "final_loss": statistics.fmean(x for r in runs for x in r["loss"][-window:]),
        "final_accuracy": statistics.fmean(x for r in runs for x in r["accuracy"][-window:]),
        "train_seconds": sum(secs),
        "tokens": sum(toks),
        "flops": flops,
        "mfu": mfu(flops, sum(secs), peak),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    t_start = time.perf_counter()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from rewards.reward_model import load_head_model
    from telos.models import count_parameters, load_tokenizer
    from trainers.common.sampler import PromptSampler
    from trainers.rm.train import load_rm_data
    from trainers.run import load_recipe

    recipe_path = str(Path(args.recipe) if Path(args.recipe).is_absolute() else REPO_ROOT / args.recipe)
    model_dir = resolve_model(args.model)
    data = Path(args.data).resolve()
    ensure_data(data, model_dir)
    r, _ = load_recipe(recipe_path, overrides(args, model_dir, data, args.seed, tempfile.gettempdir()))
    check_parity(r)
    pairs = load_rm_data(r, load_tokenizer(model_dir))  # exactly what train_rm trains on
    window = min(args.final_window or max(1, args.steps // 4), args.steps)
    num_params = count_parameters(load_head_model(model_dir, "bt", num_labels=1))
    machine = machine_info()  # load average at the start; the end's is added below
    peaks = [measure_matmul_peak(seconds=1.0)]

    per_repeat: list[dict[str, Any]] = []
    workdir = Path(tempfile.mkdtemp(prefix="telos-bench-rm-"))
    try:
        for rep in range(args.repeats):
            seed, B = args.seed + rep, args.batch_size
            batch = [pairs.train[i] for i in PromptSampler(len(pairs.train), seed).take(args.steps * B)]
            rows = [{"chosen_ids": p.chosen_ids, "rejected_ids": p.rejected_ids} for p in batch]
            if r.rm.use_margin and any(p.margin for p in batch):  # TRL subtracts a `margin` column too
                for row, p in zip(rows, batch, strict=True):
                    row["margin"] = p.margin
            tokens = [sum(len(p.chosen_ids) + len(p.rejected_ids) for p in batch[k * B : (k + 1) * B]) for k in range(args.steps)]  # fmt: skip
            sides = ["telos", "trl"] if rep % 2 == 0 else ["trl", "telos"]
            entry: dict[str, Any] = {"repeat": rep, "seed": seed, "order": sides}
            for side in sides:
                print(f"\n=== repeat {rep + 1}/{args.repeats}: {side} (seed {seed}) ===", flush=True)
                if side == "telos":
                    out_dir = str(workdir / f"telos-seed{seed}")
                    run = run_telos(recipe_path, overrides(args, model_dir, data, seed, out_dir), args.steps)
                else:
                    run = run_trl(r, args, seed, model_dir, rows, workdir)
                if run["logged_tokens"] != tokens:  # both count attention-mask tokens themselves
                    raise RuntimeError(f"{side} counted {run['logged_tokens']} tokens, batches {tokens}")
                run["tokens"] = tokens
                run["load_avg_1m_after"] = round(os.getloadavg()[0], 2)
                peaks.append(measure_matmul_peak(seconds=1.0))  # load moves it: re-measure after every run
                entry[side] = run
            per_repeat.append(entry)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    peak = max(p["flops_per_s"] for p in peaks)  # a busy moment can only lower a measurement

    for e in per_repeat:
        for side in SIDES:
            run = e[side]
            extra = {k: run.pop(k) for k in ("wall_seconds_incl_setup", "load_avg_1m_after")}
            e[side] = {**stats([run], num_params, peak, window), **extra, "per_step": run}
    side = {s: stats([e[s]["per_step"] for e in per_repeat], num_params, peak, window) for s in SIDES}
    for s in side:
        side[s]["tokens_per_s_per_repeat"] = summarize([e[s]["tokens_per_s"] for e in per_repeat])
    telos, trl = side["telos"], side["trl"]
    step1 = [abs(e["telos"]["per_step"]["loss"][0] - e["trl"]["per_step"]["loss"][0]) for e in per_repeat]
    result = {
        "benchmark": "rm_vs_trl",
        **{f"{s}_{k}": side[s][k] for k in HEADLINE for s in SIDES},
        "ratio": telos["tokens_per_s"] / trl["tokens_per_s"],
        "ratio_excl_first_step": telos["tokens_per_s_excl_first_step"] / trl["tokens_per_s_excl_first_step"],
        "ratio_median_step": telos["tokens_per_s_median_step"] / trl["tokens_per_s_median_step"],
        "steps": args.steps,
        "batch_size": args.batch_size,
        "repeats": args.repeats,
        "final_window_steps": window,
        "first_step_loss_max_abs_diff": max(step1),
        "peak_flops_per_s": peak,
        "peak_matmul": {"measurements": peaks, "used": "max"},
        "num_params": num_params,
        "flops_formula": "6*N*tokens per step; tokens = non-pad tokens of chosen + rejected",
        "telos": telos,
        "trl": trl,
        "per_repeat": per_repeat,
        "settings": {
            "recipe": recipe_path,
            "model": model_dir,
            "data": str(data),
            "train_pairs": len(pairs.train),
            "dropped_over_max_length": pairs.dropped,
            "max_length": r.data.max_length,
            "lr": args.lr,
            "trl": trl_kwargs(r, args, args.seed),
            "timing": "sum of optimizer-step wall times incl. batch collation (telos metrics step_time; "
            "TRL get_batch_samples + on_step_begin→on_step_end)",
            "alternation": "telos first on even repeats, TRL first on odd repeats; fresh run each time",
        },
        "machine": {**machine, "load_avg_1m_at_end": round(os.getloadavg()[0], 2)},
        "total_wall_seconds": time.perf_counter() - t_start,
    }
    out = write_json(args.out if Path(args.out).is_absolute() else Path.cwd() / args.out, result)
    print_summary(result, out)
    return result


def print_summary(result: dict[str, Any], out: Path) -> None:
    rows = []
    for name in SIDES:
        s, rep = result[name], result[name]["tokens_per_s_per_repeat"]
        rows.append([
            name, s["tokens_per_s"], s["tokens_per_s_excl_first_step"], s["tokens_per_s_median_step"],
            f"{rep['min']:.4g}–{rep['max']:.4g}", s["seconds_per_step"], s["final_loss"], s["final_accuracy"],
            f"{100 * s['mfu']:.3f}%",
        ])  # fmt: skip
    headers = ["system", "tokens/s", "excl. 1st step", "median step", "per repeat", "s/step"]
    print("\n" + format_table([*headers, "final loss", "final acc", "MFU"], rows))
    print(
        f"\nratio telos/TRL: {result['ratio']:.2f}× (excluding each run's first step: "
        f"{result['ratio_excl_first_step']:.2f}×, median step: {result['ratio_median_step']:.2f}×); "
        f"{result['steps']} steps × batch {result['batch_size']} × {result['repeats']} repeats per side; "
        f"step-1 loss |telos − TRL| ≤ {result['first_step_loss_max_abs_diff']:.2g}; "
        f"peak {result['peak_flops_per_s'] / 1e9:.1f} GFLOP/s fp32; {result['num_params'] / 1e6:.2f}M params"
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
