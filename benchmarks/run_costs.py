"""Step time, throughput and MFU of a finished RL run, from its own ``metrics.jsonl``.

    python benchmarks/run_costs.py runs/quickstart-smollm2 --out benchmarks/results/quickstart_smollm2.json

RUN is a ``telos quickstart`` output (its ``summary.json`` is copied in) or a ``telos train``
run directory. FLOPs are the dense estimate of ``benchmarks.common.training_flops``: 2·N per
generated token, 6·N per trained token, where trained tokens are each kept group's prompt once
(the trainer runs a shared prompt once per group) plus its answers. MFU is against a float32
``torch.mm`` peak measured on this machine when the script runs (run it on the same, idle
machine as the run).
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from common import bootstrap_repo_path, machine_info, measure_matmul_peak, mfu, training_flops, write_json


def run_costs(run: Path) -> dict:
    import yaml

    from envs.math.prompts import format_prompt
    from envs.math.sources import load_rows
    from telos.models import count_parameters, load_model, load_tokenizer
    from telos.tracking import read_metrics

    config = yaml.safe_load((run / "config.yaml").read_text())
    rows = [r for r in read_metrics(run) if "step_time" in r]
    model_dir = run / "final"
    tokenizer = load_tokenizer(str(model_dir))
    params = count_parameters(load_model(str(model_dir)))
    data, group = config["data"], config["sampling"]["num_generations"]
    sample = load_rows(data["train"], limit=64)
    prompt_tokens = statistics.mean(
        len(tokenizer(format_prompt(r, data["template"], tokenizer=tokenizer, chat=data["chat"])).input_ids)
        for r in sample
    )
    steps, previous = [], 0.0
    for r in rows:
        generated = r["generated_tokens"] - previous
        previous = r["generated_tokens"]
        trained = r["groups_kept"] * (prompt_tokens + group * r["completion_length_mean"])
        steps.append(
            {
                "step": r["step"],
                "step_time": r["step_time"],
                "generation_time": r["generation_time"],
                "train_time": r["step_time"] - r["generation_time"],
                "generated_tokens": generated,
                "trained_tokens": trained,
                "flops": training_flops(params, generated, trained),
            }
        )
    peak = measure_matmul_peak(seconds=2.0)
    total_flops = sum(s["flops"] for s in steps)
    total_time = sum(s["step_time"] for s in steps)
    return {
        "run": str(run),
        "parameters": params,
        "mean_prompt_tokens": prompt_tokens,
        "steps": len(steps),
        "step_time_mean_s": statistics.mean(s["step_time"] for s in steps),
        "step_time_range_s": [min(s["step_time"] for s in steps), max(s["step_time"] for s in steps)],
        "generation_share": sum(s["generation_time"] for s in steps) / total_time,
        "generated_tokens_per_s": sum(s["generated_tokens"] for s in steps)
        / sum(s["generation_time"] for s in steps),
        "achieved_gflops_per_s": total_flops / total_time / 1e9,
        "matmul_peak_gflops_per_s": peak["flops_per_s"] / 1e9,
        "mfu": mfu(total_flops, total_time, peak["flops_per_s"]),
        "per_step": steps,
    }


def main() -> None:
    bootstrap_repo_path()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="quickstart output or run directory")
    parser.add_argument("--out", type=Path, required=True, help="result JSON")
    args = parser.parse_args()
    summary_file = args.run / "summary.json"
    run = args.run
    summary = json.loads(summary_file.read_text()) if summary_file.is_file() else {}
    if "algo" in summary and (run / summary["algo"]).is_dir():
        run = run / summary["algo"]  # a quickstart: the RL run is in its algo subdirectory
    result = {"summary": summary, "costs": run_costs(run), "machine": machine_info()}
    write_json(args.out, result)
    c = result["costs"]
    print(
        f"{c['steps']} steps, {c['step_time_mean_s']:.1f} s/step (generation {c['generation_share']:.0%}), "
        f"{c['generated_tokens_per_s']:.0f} generated tokens/s, {c['achieved_gflops_per_s']:.1f} GFLOP/s "
        f"of a {c['matmul_peak_gflops_per_s']:.0f} GFLOP/s matmul peak: MFU {c['mfu']:.1%} → {args.out}"
    )


if __name__ == "__main__":
    main()
