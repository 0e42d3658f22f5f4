"""MCTS* nodes expanded per second: telos's batched search against the official design.

The same search (rollout/search/mcts.py, same settings, same trees' worth of rounds) runs
twice per round of the benchmark: ``batched`` — every round one engine call expands the leaf
of every live tree, one value-model call scores every new child — and ``per-child`` — one
``generate`` call per child and one value call per child, as THUDM/ReST-MCTS does. Reports
nodes created per second (and engine calls), over several alternating repeats.

    python benchmarks/mcts_batching.py                 # tiny model, 64 questions, 3 repeats
    python benchmarks/mcts_batching.py --questions 32 --repeats 2

Writes benchmarks/results/mcts_batching.{json,md}. Needs the tiny value model
(``telos train recipes/rm/value_tiny.yaml``; trained first when missing).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import REPO_ROOT, machine_info, set_offline, write_json  # noqa: E402


def ensure_value_model() -> str:
    out = REPO_ROOT / "runs" / "value-tiny" / "final"
    if not (out / "config.json").is_file():
        subprocess.run(
            [sys.executable, "-m", "telos", "train", "recipes/rm/value_tiny.yaml"], cwd=REPO_ROOT, check=True
        )
    return str(out)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--questions", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=str(REPO_ROOT / "benchmarks" / "results" / "mcts_batching"))
    args = ap.parse_args(argv)
    set_offline()
    import torch

    from envs.math.procedural import generate
    from envs.math.prompts import format_prompt
    from rewards.reward_model import ProcessRM
    from rollout.backends import make_engine
    from rollout.search.mcts import MCTSConfig, run_mcts
    from rollout.search.steps import StepProposer
    from telos.models import load_model, load_tokenizer
    from trainers.common.tiny import TINY_ARITH, resolve_tiny

    value = ProcessRM.from_pretrained(ensure_value_model())
    policy_dir = resolve_tiny("tiny:arith")
    tokenizer = load_tokenizer(policy_dir)
    engine = make_engine("hf", load_model(policy_dir, "float32").eval(), tokenizer)
    rows = generate("arith", "test", args.questions, seed=0, **TINY_ARITH)
    prompts = [format_prompt(r) for r in rows]
    # exploration high enough that trees keep growing for every round (not exhausted early)
    cfg = MCTSConfig(rounds=args.rounds, temperature=1.0, max_step_tokens=16, max_steps=6)
    runs: list[dict] = []
    for repeat in range(args.repeats):
        for mode in ("batched", "per-child"):
            proposer = StepProposer(
                engine, tokenizer.eos_token_id, max_step_tokens=16, max_steps=6, batched=mode == "batched"
            )
            t0 = time.perf_counter()
            trees, counters = run_mcts(prompts, proposer, value.values, cfg, mode="data", seed=repeat)
            seconds = time.perf_counter() - t0
            runs.append(
                {
                    "mode": mode,
                    "repeat": repeat,
                    "seconds": seconds,
                    "nodes": counters.expanded,
                    "nodes_per_s": counters.expanded / seconds,
                    "engine_calls": counters.proposal_calls,
                    "value_calls": counters.value_calls,
                    "tokens": sum(t.tokens for t in trees),
                }
            )
            print(f"{mode:9s} repeat {repeat}: {counters.expanded} nodes in {seconds:.1f} s "
                  f"= {counters.expanded / seconds:.0f} nodes/s, {counters.proposal_calls} engine calls", flush=True)  # fmt: skip
    summary = {}
    for mode in ("batched", "per-child"):
        rates = [r["nodes_per_s"] for r in runs if r["mode"] == mode]
        summary[mode] = {
            "nodes_per_s_median": statistics.median(rates),
            "nodes_per_s_min": min(rates),
            "nodes_per_s_max": max(rates),
            "engine_calls_per_run": statistics.mean(r["engine_calls"] for r in runs if r["mode"] == mode),
        }
    speedup = summary["batched"]["nodes_per_s_median"] / summary["per-child"]["nodes_per_s_median"]
    result = {
        "benchmark": "mcts_batching",
        "command": "python benchmarks/mcts_batching.py "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "settings": {
            "questions": args.questions,
            "rounds": args.rounds,
            "repeats": args.repeats,
            "mcts": cfg.__dict__,
        },
        "machine": machine_info(),
        "threads": torch.get_num_threads(),
        "runs": runs,
        "summary": summary,
        "speedup_batched_over_per_child": speedup,
    }
    out = Path(args.out)
    write_json(out.with_suffix(".json"), result)
    b, p = summary["batched"], summary["per-child"]
    md = [
        "# MCTS* nodes expanded per second: batched vs one generate per child",
        "",
        f"`{result['command'].strip()}` — tiny:arith policy, tiny value model, {args.questions} questions, "
        f"{args.rounds} rounds, {args.repeats} alternating repeats (median, min–max).",
        "",
        "| search | nodes / s | engine calls per run |",
        "|---|---|---|",
        f"| batched (telos) | {b['nodes_per_s_median']:.0f} ({b['nodes_per_s_min']:.0f}–{b['nodes_per_s_max']:.0f}) | {b['engine_calls_per_run']:.0f} |",
        f"| one generate per child (official design) | {p['nodes_per_s_median']:.0f} ({p['nodes_per_s_min']:.0f}–{p['nodes_per_s_max']:.0f}) | {p['engine_calls_per_run']:.0f} |",
        "",
        f"Speed-up: **{speedup:.1f}×**.",
        "",
    ]
    out.with_suffix(".md").write_text("\n".join(md))
    print(f"speed-up {speedup:.1f}x → {out}.json / .md")
    return result


if __name__ == "__main__":
    main()
