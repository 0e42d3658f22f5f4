"""GRPO, NFT and OREAL side by side: same SFT checkpoint, same sampled-token budget, same seeds.

Each algorithm runs its own tiny recipe (``recipes/math/<algo>_tiny.yaml``) from the same
starting model, with every shared setting equal (data, reward, G = 8 answers per prompt,
16 prompts per step, 48 tokens, temperature 1, lr schedule, dynamic sampling) and a cap on
*sampled completion tokens* (``train.max_generated_tokens``): a run ends at the step where its
cumulative sampled tokens reach the budget, so every algorithm pays for the same generation.
Runs interleave (seed 0: grpo, nft, oreal; seed 1: ...) so drift in machine load hits all alike.

Measured per run: greedy held-out accuracy on ``--num-test`` problems every ``--eval-every``
steps and at the end (x axis: sampled tokens so far); per-step wall time split into generation
and update; each algorithm's own signals (NFT p̂ and clamped share, OREAL token-RM loss/AUROC).

    python benchmarks/algorithms.py                          # 3 algorithms × 3 seeds, ~15 min on 2 cores
    python benchmarks/algorithms.py --seeds 0 --budget 8000  # a smoke run
    python benchmarks/algorithms.py --setting smollm2        # the real SmolLM2-135M-Instruct, ~50 min

``--setting smollm2`` runs ``recipes/math/<algo>_smollm2.yaml`` (reasoning-gym additions, chat
template, G = 8, 16 prompts, 24 tokens, lr 5e-6) from SmolLM2-135M-Instruct with a budget that
stops mid-curve (the 20-step GRPO quickstart climbs 0.205 → 0.770 over ~48k sampled tokens), so
the algorithms are compared where they can still differ. Each finished run is appended to
``<out>.partial.jsonl`` and a rerun with the same arguments skips it, so a killed run resumes.

Writes ``--out`` (JSON), and beside it a PNG (accuracy vs sampled tokens, mean ± std band over
seeds) and a Markdown table.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repo's packages importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import (  # noqa: E402
    REPO_ROOT,
    append_partial,
    format_table,
    machine_info,
    read_partial,
    resolve_model,
    set_offline,
    write_json,
)

set_offline()

ALGOS = ("grpo", "nft", "oreal")
DEFAULT_OUT = "benchmarks/results/algorithms.json"
# --setting presets: recipe family, starting model and defaults for the unset flags
SETTINGS: dict[str, dict[str, Any]] = {
    "tiny": {
        "recipe": "{algo}_tiny.yaml",
        "model": "tiny:arith",
        "budget": 100_000,
        "steps": 50,
        "eval_every": 5,
        "num_test": 200,
        "out": DEFAULT_OUT,
    },
    "smollm2": {
        "recipe": "{algo}_smollm2.yaml",
        "model": "smollm2:135m-instruct",
        "budget": 12_000,
        "steps": 20,
        "eval_every": 100,
        "num_test": 200,
        "out": "benchmarks/results/algorithms_smollm2.json",
    },
}
# Signals worth averaging per algorithm (present only in that algorithm's metrics).
OWN_SIGNALS = (
    "p_hat_mean",
    "neg_clamped_frac",
    "ratio_mean",
    "rm_loss",
    "rm_auroc",
    "pos_token_weight_mean",
    "neg_token_weight_mean",
    "clip_ratio",
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--algos", default=",".join(ALGOS), help="comma-separated (default: grpo,nft,oreal)")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default: 0,1,2)")
    p.add_argument("--setting", choices=sorted(SETTINGS), default="tiny", help="recipe family and defaults")
    p.add_argument("--budget", type=int, default=None, help="sampled completion tokens per run")
    p.add_argument("--steps", type=int, default=None, help="step horizon and lr-schedule length")
    p.add_argument("--eval-every", type=int, default=None)
    p.add_argument("--num-test", type=int, default=None)
    p.add_argument("--model", default=None, help="starting checkpoint (default: the setting's)")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    preset = SETTINGS[args.setting]
    for key in ("budget", "steps", "eval_every", "num_test", "model", "out"):
        if getattr(args, key) is None:
            setattr(args, key, preset[key])
    args.recipe = preset["recipe"]
    args.algos = [a.strip() for a in args.algos.split(",") if a.strip()]
    unknown = [a for a in args.algos if a not in ALGOS]
    if unknown:
        p.error(f"--algos: unknown {unknown[0]!r}; valid: {', '.join(ALGOS)}")
    try:
        args.seeds = [int(s) for s in args.seeds.split(",")]
    except ValueError:
        p.error(f"--seeds must be comma-separated integers, got {args.seeds!r}")
    return args


def run_one(algo: str, seed: int, model_dir: str, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    from telos.tracking import read_metrics
    from trainers.rl.loop import train_rl
    from trainers.run import load_recipe

    out_dir = workdir / f"{algo}-seed{seed}"
    overrides = [
        f"model.name_or_path={model_dir}",
        f"output_dir={out_dir}",
        f"train.seed={seed}",
        f"train.steps={args.steps}",
        f"train.max_generated_tokens={args.budget}",
        f"train.eval_every={args.eval_every}",
        "train.eval_before_training=true",
        f"train.save_every={10 * args.steps}",
        f"data.num_test={args.num_test}",
        "report_to=[]",
    ]
    recipe, raw = load_recipe(str(REPO_ROOT / "recipes/math" / args.recipe.format(algo=algo)), overrides)
    t0 = time.perf_counter()
    summary = train_rl(recipe, raw)
    wall = time.perf_counter() - t0
    rows = read_metrics(out_dir / "metrics.jsonl")
    steps = [m for m in rows if "step_time" in m]
    curve = [
        (0 if m["step"] == 0 else m["generated_tokens"], m["eval_accuracy"])
        for m in rows
        if "eval_accuracy" in m
    ]
    signals = {
        k: statistics.fmean(m[k] for m in steps if k in m) for k in OWN_SIGNALS if any(k in m for m in steps)
    }
    return {
        "algo": algo,
        "seed": seed,
        "steps": len(steps),
        "sampled_tokens": steps[-1]["generated_tokens"],
        "curve": curve,
        "initial_accuracy": summary["initial_eval_accuracy"],
        "final_accuracy": summary["eval_accuracy"],
        "step_seconds": [m["step_time"] for m in steps],
        "generation_seconds": [m["generation_time"] for m in steps],
        "signals": signals,
        "wall_seconds_incl_setup_and_evals": wall,
    }


def aggregate(runs: list[dict]) -> dict[str, dict[str, Any]]:
    out = {}
    for algo in dict.fromkeys(r["algo"] for r in runs):
        rs = [r for r in runs if r["algo"] == algo]
        finals = [r["final_accuracy"] for r in rs]
        step_s = sum(sum(r["step_seconds"]) for r in rs)
        gen_s = sum(sum(r["generation_seconds"]) for r in rs)
        steps = sum(r["steps"] for r in rs)
        tokens = sum(r["sampled_tokens"] for r in rs)
        out[algo] = {
            "seeds": [r["seed"] for r in rs],
            "final_accuracy_mean": statistics.fmean(finals),
            "final_accuracy_std": statistics.stdev(finals) if len(finals) > 1 else 0.0,
            "initial_accuracy_mean": statistics.fmean(r["initial_accuracy"] for r in rs),
            "steps_mean": steps / len(rs),
            "sampled_tokens_mean": tokens / len(rs),
            "step_seconds_mean": step_s / steps,
            "update_seconds_mean": (step_s - gen_s) / steps,
            "sampled_tokens_per_s": tokens / step_s,
            "signals": {k: statistics.fmean(r["signals"][k] for r in rs) for k in rs[0]["signals"]},
        }
    if "grpo" in out:  # time per sampled token relative to GRPO's (1.0 = as fast, >1 slower)
        base = out["grpo"]
        for a in out.values():
            a["time_per_token_vs_grpo"] = base["sampled_tokens_per_s"] / a["sampled_tokens_per_s"]
            a["update_time_vs_grpo"] = a["update_seconds_mean"] / base["update_seconds_mean"]
            a["step_time_vs_grpo"] = a["step_seconds_mean"] / base["step_seconds_mean"]
    return out


def interpolate(curve: list[tuple[float, float]], grid: list[float]) -> list[float]:
    """Piecewise-linear accuracy at each grid point (held flat past the last eval)."""
    xs, ys = [c[0] for c in curve], [c[1] for c in curve]
    out = []
    for g in grid:
        if g <= xs[0]:
            out.append(ys[0])
        elif g >= xs[-1]:
            out.append(ys[-1])
        else:
            j = next(i for i in range(1, len(xs)) if xs[i] >= g)
            t = (g - xs[j - 1]) / max(xs[j] - xs[j - 1], 1e-9)
            out.append(ys[j - 1] + t * (ys[j] - ys[j - 1]))
    return out


def plot(runs: list[dict], budget: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid = [budget * i / 40 for i in range(41)]
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for algo in dict.fromkeys(r["algo"] for r in runs):
        curves = [interpolate(r["curve"], grid) for r in runs if r["algo"] == algo]
        mean = [statistics.fmean(c[i] for c in curves) for i in range(len(grid))]
        std = [statistics.stdev(c[i] for c in curves) if len(curves) > 1 else 0.0 for i in range(len(grid))]
        (line,) = ax.plot([g / 1000 for g in grid], mean, label=f"{algo.upper()} (n={len(curves)})")
        ax.fill_between(
            [g / 1000 for g in grid],
            [m - s for m, s in zip(mean, std, strict=True)],
            [m + s for m, s in zip(mean, std, strict=True)],
            color=line.get_color(),
            alpha=0.2,
        )
    ax.set_xlabel("sampled completion tokens (thousands)")
    ax.set_ylabel("held-out greedy accuracy")
    ax.set_title("same SFT model, same sampled-token budget (mean ± std over seeds)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def markdown(agg: dict[str, dict], args: argparse.Namespace) -> str:
    lines = [
        f"Budget {args.budget:,} sampled tokens per run, seeds {','.join(map(str, args.seeds))}, "
        f"{args.num_test} held-out problems (greedy).",
        "",
        "| algorithm | final accuracy (mean ± std) | start | steps | update s/step | step s/step "
        "| time per sampled token vs GRPO |",
        "|---|---|---|---|---|---|---|",
    ]
    for algo, a in agg.items():
        lines.append(
            f"| {algo.upper()} | {a['final_accuracy_mean']:.3f} ± {a['final_accuracy_std']:.3f} "
            f"| {a['initial_accuracy_mean']:.3f} | {a['steps_mean']:.1f} | {a['update_seconds_mean']:.2f} "
            f"| {a['step_seconds_mean']:.2f} | {a.get('time_per_token_vs_grpo', float('nan')):.2f}× |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    model_dir = resolve_model(args.model)
    out = Path(args.out)
    partial = out.with_suffix(".partial.jsonl")
    key = {k: v for k, v in vars(args).items() if k not in ("out", "seeds", "algos")}
    done = {(r["algo"], r["seed"]): r for r in read_partial(partial) if r.get("settings") == key}
    runs = []
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="telos-algos-") as tmp:
        for seed in args.seeds:
            for algo in args.algos:
                if (algo, seed) in done:
                    runs.append(done[(algo, seed)])
                    print(f"{algo} seed {seed}: done in an earlier run, kept", flush=True)
                    continue
                run = run_one(algo, seed, model_dir, args, Path(tmp))
                runs.append(run)
                append_partial(partial, run | {"settings": key})
                print(
                    f"{algo} seed {seed}: {run['initial_accuracy']:.3f} → {run['final_accuracy']:.3f} "
                    f"in {run['steps']} steps, {run['sampled_tokens']:,} tokens",
                    flush=True,
                )
    agg = aggregate(runs)
    result = {
        "benchmark": "algorithms",
        "settings": {k: v for k, v in vars(args).items() if k != "out"} | {"model_dir": model_dir},
        "command": "python benchmarks/algorithms.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "algorithms": agg,
        "runs": runs,
        "wall_seconds": time.perf_counter() - start,
        "machine": machine_info(),
    }
    write_json(out, result)
    partial.unlink(missing_ok=True)  # the result file now holds every run
    plot(runs, args.budget, out.with_suffix(".png"))
    md = markdown(agg, args)
    out.with_suffix(".md").write_text(md)
    headers = ["algorithm", "final acc", "± std", "steps", "update s", "step s", "vs GRPO"]
    rows = [
        [
            k,
            a["final_accuracy_mean"],
            a["final_accuracy_std"],
            a["steps_mean"],
            a["update_seconds_mean"],
            a["step_seconds_mean"],
            a.get("time_per_token_vs_grpo", float("nan")),
        ]
        for k, a in agg.items()
    ]
    print(format_table(headers, rows))
    print(f"wrote {out}, {out.with_suffix('.png')}, {out.with_suffix('.md')}")
    return result


if __name__ == "__main__":
    main()
