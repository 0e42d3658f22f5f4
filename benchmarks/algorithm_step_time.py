"""Per-step cost of NFT and OREAL relative to GRPO on the same settings, at any model size.

``benchmarks/algorithms.py`` compares learning curves on the tiny model; this script isolates
the step time. Each algorithm runs its tiny recipe's own section with every shared setting
forced equal (prompts, G, completion length, micro-batch, lr, no dynamic sampling, no eval) on
the same model, with a 0/1 "verifier" that marks about half the answers correct at random
(a hash of the text), so every algorithm has mixed groups to train on whatever the model says.
The first ``--warmup`` steps are not timed. Reported per algorithm: mean step time, its
generation and update parts, and the ratios to GRPO.

    python benchmarks/algorithm_step_time.py                       # tiny:arith, CPU
    python benchmarks/algorithm_step_time.py --random-model 896,24,14,2,4864 --dtype bfloat16 \
        --max-tokens 256 --steps 6                                  # Qwen2.5-0.5B shape, GPU
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import REPO_ROOT, format_table, machine_info, resolve_model, set_offline, write_json  # noqa: E402

set_offline()

ALGOS = ("grpo", "nft", "oreal")
COIN_REWARD = '''
import zlib


def coin(prompts, completions, **columns):
    """1.0 for about half of all texts, fixed per text: a stand-in verifier for timing."""
    return [float(zlib.crc32(c.encode()) % 2) for c in completions]
'''


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="tiny:arith")
    p.add_argument(
        "--random-model",
        default=None,
        metavar="H,L,HEADS,KV,FF",
        help="instead of --model: a randomly initialised Qwen2 of this shape (tiny tokenizer)",
    )
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--steps", type=int, default=8, help="timed steps per algorithm")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--prompts", type=int, default=16)
    p.add_argument("--generations", type=int, default=8)
    p.add_argument("--max-tokens", type=int, default=48)
    p.add_argument("--micro-batch", type=int, default=128)
    p.add_argument("--nft-mini-batches", type=int, default=1, help="1 = same optimizer steps as GRPO")
    p.add_argument("--out", default="benchmarks/results/algorithm_step_time.json")
    return p.parse_args(argv)


def build_random_model(shape: str, out: Path, dtype: str) -> str:
    """A random Qwen2 with the given (hidden, layers, heads, kv heads, ffn) and the tiny
    arithmetic tokenizer (vocab 384), saved to ``out``."""
    import torch

    from envs.math.procedural import generate
    from envs.math.prompts import format_prompt
    from telos.models import TinyModelConfig, build_tiny_model, build_tokenizer

    h, layers, heads, kv, ff = (int(v) for v in shape.split(","))
    rows = generate("arith", "train", 3000, seed=0)
    tokenizer = build_tokenizer([format_prompt(r) + r["solution"] for r in rows], 384)
    cfg = TinyModelConfig(
        hidden_size=h, num_layers=layers, num_heads=heads, num_kv_heads=kv, intermediate_size=ff
    )
    model = build_tiny_model(cfg, tokenizer).to(getattr(torch, dtype))
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return str(out)


def run(algo: str, model_dir: str, reward: str, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    from telos.models import count_parameters
    from telos.tracking import read_metrics
    from trainers.rl.loop import train_rl
    from trainers.run import load_recipe

    out_dir = workdir / algo
    section = {"grpo": "grpo", "nft": "nft", "oreal": "oreal"}[algo]
    overrides = [
        f"model.name_or_path={model_dir}",
        f"model.dtype={args.dtype}",
        f"output_dir={out_dir}",
        f"rewards=[{{name: '{reward}', weight: 1.0}}]",
        f"sampling.num_generations={args.generations}",
        f"sampling.max_tokens={args.max_tokens}",
        f"train.prompts_per_step={args.prompts}",
        f"train.micro_batch_size={args.micro_batch}",
        f"train.steps={args.steps + args.warmup}",
        f"train.save_every={10 * (args.steps + args.warmup)}",
        "train.eval_every=0",
        "train.lr_scheduler=constant",
        "train.warmup_steps=0",
        "data.test=null",
        f"{section}.dynamic_sampling=false",
        "report_to=[]",
    ]
    if algo == "oreal":
        overrides.append("oreal.freeze_policy_steps=0")
    if algo == "nft":
        overrides.append(f"nft.mini_batches={args.nft_mini_batches}")
    recipe, raw = load_recipe(str(REPO_ROOT / f"recipes/math/{algo}_tiny.yaml"), overrides)
    summary, ctx = train_rl(recipe, raw, return_context=True)
    rows = [m for m in read_metrics(out_dir / "metrics.jsonl") if "step_time" in m][args.warmup :]
    step = [m["step_time"] for m in rows]
    gen = [m["generation_time"] for m in rows]
    return {
        "algo": algo,
        "parameters": count_parameters(ctx.accelerator.unwrap_model(ctx.model)),
        "steps_timed": len(rows),
        "step_seconds_mean": statistics.fmean(step),
        "generation_seconds_mean": statistics.fmean(gen),
        "update_seconds_mean": statistics.fmean(s - g for s, g in zip(step, gen, strict=True)),
        "generated_tokens_per_step": statistics.fmean(
            b["generated_tokens"] - a["generated_tokens"] for a, b in zip(rows, rows[1:], strict=False)
        )
        if len(rows) > 1
        else float("nan"),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    import torch

    args = parse_args(argv)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="telos-steptime-") as tmp:
        tmp = Path(tmp)
        reward_file = tmp / "coin_reward.py"
        reward_file.write_text(COIN_REWARD)
        if args.random_model:
            model_dir = build_random_model(args.random_model, tmp / "model", args.dtype)
        else:
            model_dir = resolve_model(args.model)
        results = {a: run(a, model_dir, f"{reward_file}:coin", args, tmp) for a in ALGOS}
    base = results["grpo"]
    for r in results.values():
        r["step_time_vs_grpo"] = r["step_seconds_mean"] / base["step_seconds_mean"]
        r["update_time_vs_grpo"] = r["update_seconds_mean"] / base["update_seconds_mean"]
    out = Path(args.out)
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    write_json(
        out,
        {
            "benchmark": "algorithm_step_time",
            "settings": {k: v for k, v in vars(args).items() if k != "out"} | {"device": device},
            "results": results,
            "wall_seconds": time.perf_counter() - start,
            "machine": machine_info(),
        },
    )
    headers = ["algorithm", "params", "step s", "gen s", "update s", "step ×GRPO", "update ×GRPO"]
    print(
        format_table(
            headers,
            [
                [
                    a,
                    r["parameters"],
                    r["step_seconds_mean"],
                    r["generation_seconds_mean"],
                    r["update_seconds_mean"],
                    r["step_time_vs_grpo"],
                    r["update_time_vs_grpo"],
                ]
                for a, r in results.items()
            ],
        )
    )
    print(f"device: {device}; wrote {out}")
    return results


if __name__ == "__main__":
    main()
