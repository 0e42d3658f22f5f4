"""The ReST-MCTS* / B-STaR experiment on the tiny model, three parts:

- ``search``: accuracy vs generated tokens per question for greedy, majority vote, PRM
  best-of-n, PRM beam and MCTS* (``telos eval math --search``) at several budgets, 2 seeds;
- ``rest``: held-out greedy accuracy after each of 2 ReST-MCTS* iterations vs ReST-EM
  (rejection-sampled self-training, ``trainer: bstar`` with fixed T = 0.7 and only correct
  answers kept) given about the same sampled tokens per question, 3 seeds;
- ``bstar``: B-STaR vs fixed-temperature online RFT (T = 1.0, τ = 0) over 4 iterations,
  3 seeds: accuracy, balance score, chosen (T, τ), exploration and exploitation.

    python benchmarks/rest_mcts_experiment.py                      # all parts
    python benchmarks/rest_mcts_experiment.py --parts search --questions 50

Writes benchmarks/results/rest_mcts_experiment.{json,md} and search_budget.png; each finished
run is kept in a partial file, so a killed experiment resumes where it was.
"""

from __future__ import annotations

import argparse
import math
import statistics
import subprocess
import sys
from argparse import Namespace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import REPO_ROOT, PartialRuns, machine_info, set_offline, write_json  # noqa: E402
from benchmarks.mcts_batching import ensure_value_model  # noqa: E402

RESULTS = REPO_ROOT / "benchmarks" / "results"
ARITH = "max_value=50&max_operand=9"
TEST = f"procedural:arith:test?n=200&{ARITH}"
METHODS = ("majority", "best_of_n", "prm_beam", "mcts")


def search_run(method: str, budget: int, seed: int, questions: int, value: str) -> dict:
    from eval.math_search import run_search_eval

    args = Namespace(
        model="tiny:arith", data=f"procedural:arith:test?n={questions}&{ARITH}", search=method, budget=budget,
        value=value, save_trees=None, search_option=None, temperature=None, max_tokens=48, limit=None,
        template="plain", chat=False, reward="numeric", engine="hf", seed=seed,
        out=str(REPO_ROOT / "runs" / "experiment-search" / f"{method}-{budget}-{seed}"),
    )  # fmt: skip
    m = run_search_eval(args)["metrics"]
    return {"part": "search", "method": method, "budget": budget, "seed": seed, "accuracy": m["accuracy"],
            "tokens": m["mean_tokens_per_question"], "questions": m["num_problems"], "wall_s": m["wall_s"]}  # fmt: skip


def train_run(recipe: str, name: str, overrides: list[str]) -> dict:
    cmd = [
        sys.executable,
        "-m",
        "telos",
        "train",
        recipe,
        f"output_dir=runs/experiment/{name}",
        "resume=latest",
        *overrides,
    ]
    subprocess.run(cmd, cwd=REPO_ROOT, check=True)
    import json

    return json.loads((REPO_ROOT / "runs" / "experiment" / name / "summary.json").read_text())


def interval(values: list[float]) -> tuple[float, float]:
    """mean and the 95 % half-width over seeds (t-free 1.96·sd/√n; 0 for one value)."""
    mean = statistics.mean(values)
    return mean, (1.96 * statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else 0.0)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--parts", default="search,rest,bstar")
    ap.add_argument("--questions", type=int, default=100, help="held-out questions of the search part")
    ap.add_argument("--budgets", default="64,128,256,512")
    ap.add_argument("--search-seeds", default="0,1")
    ap.add_argument("--seeds", default="0,1,2", help="training seeds of the rest and bstar parts")
    args = ap.parse_args(argv)
    set_offline()
    parts = args.parts.split(",")
    partial = RESULTS / "rest_mcts_experiment.partial.jsonl"
    done = PartialRuns(partial)
    runs, have, record = done.runs, done.have, done.record

    value = ensure_value_model()
    if "search" in parts:
        for seed in map(int, args.search_seeds.split(",")):
            if not have(part="search", method="greedy", seed=seed):
                record(search_run("greedy", 1, seed, args.questions, value))
            for budget in map(int, args.budgets.split(",")):
                for method in METHODS:
                    if not have(part="search", method=method, budget=budget, seed=seed):
                        record(search_run(method, budget, seed, args.questions, value))
                        print(runs[-1], flush=True)
    seeds = list(map(int, args.seeds.split(",")))
    if "rest" in parts:
        for seed in seeds:
            if not have(part="rest", method="rest_mcts", seed=seed):
                s = train_run(
                    "recipes/math/rest_mcts_tiny.yaml",
                    f"rest-mcts-{seed}",
                    [f"rest.seed={seed}", f"sft.seed={seed}"],
                )
                record({"part": "rest", "method": "rest_mcts", "seed": seed, "initial": s["initial_eval_accuracy"],
                        "per_iteration": s["per_iteration"]})  # fmt: skip
            tokens = statistics.mean(
                r["mean_search_tokens"]
                for r in have(part="rest", method="rest_mcts", seed=seed)["per_iteration"]
            )
            k = max(1, round(tokens / 12))  # ~12 tokens per sampled solution of the tiny model
            if not have(part="rest", method="rest_em", seed=seed):
                s = train_run(
                    "recipes/math/bstar_tiny.yaml", f"rest-em-{seed}",
                    ["reward_model=null", "bstar.adapt=false", "bstar.temperature=0.7", "bstar.threshold=0.5",
                     "bstar.continue_optimizer=false", "bstar.iterations=2", f"bstar.samples_per_query={k}",
                     f"bstar.seed={seed}", f"sft.seed={seed}", "sft.steps=60"],
                )  # fmt: skip
                record({"part": "rest", "method": "rest_em", "seed": seed, "samples_per_query": k,
                        "initial": s["initial_eval_accuracy"], "per_iteration": s["per_iteration"]})  # fmt: skip
    if "bstar" in parts:
        for seed in seeds:
            for method, extra in (
                ("bstar", []),
                ("online_rft", ["bstar.adapt=false", "bstar.temperature=1.0", "bstar.threshold=0.0"]),
            ):
                if not have(part="bstar", method=method, seed=seed):
                    s = train_run(
                        "recipes/math/bstar_tiny.yaml",
                        f"{method}-{seed}",
                        [f"bstar.seed={seed}", f"sft.seed={seed}", *extra],
                    )
                    record({"part": "bstar", "method": method, "seed": seed, "initial": s["initial_eval_accuracy"],
                            "per_iteration": s["per_iteration"]})  # fmt: skip
    result = {"benchmark": "rest_mcts_experiment", "command": "python benchmarks/rest_mcts_experiment.py " + " ".join(argv or sys.argv[1:]),
              "machine": machine_info(), "runs": runs, "tables": tables(runs)}  # fmt: skip
    write_json(RESULTS / "rest_mcts_experiment.json", result)
    (RESULTS / "rest_mcts_experiment.md").write_text(markdown(result["tables"]))
    if any(r["part"] == "search" for r in runs):
        plot_budget(runs, RESULTS / "search_budget.png")
    return result


def tables(runs: list[dict]) -> dict:
    out: dict = {"search": [], "rest": [], "bstar": []}
    keys = sorted({(r["method"], r.get("budget", 1)) for r in runs if r["part"] == "search"})
    for method, budget in keys:
        rs = [
            r
            for r in runs
            if r["part"] == "search" and r["method"] == method and r.get("budget", 1) == budget
        ]
        acc, hw = interval([r["accuracy"] for r in rs])
        out["search"].append({"method": method, "budget": budget, "accuracy": acc, "ci95": hw,
                              "tokens": statistics.mean(r["tokens"] for r in rs), "seeds": len(rs)})  # fmt: skip
    for part in ("rest", "bstar"):
        for method in sorted({r["method"] for r in runs if r["part"] == part}):
            rs = [r for r in runs if r["part"] == part and r["method"] == method]
            iters = len(rs[0]["per_iteration"])
            row = {"method": method, "seeds": len(rs), "initial": interval([r["initial"] for r in rs])}
            for i in range(iters):
                per = [r["per_iteration"][i] for r in rs]
                row[f"iter{i + 1}"] = {
                    k: interval([p[k] for p in per if p.get(k) is not None])
                    for k in ("eval_accuracy", "balance_score", "temperature", "threshold", "pass_at_k",
                              "distinct_correct", "kept_precision", "reward_at_k", "mean_search_tokens",
                              "sample_tokens_per_question", "policy_traces", "kept", "solved_frac")
                    if any(p.get(k) is not None for p in per)
                }  # fmt: skip
            out[part].append(row)
    return out


def _fmt(pair) -> str:
    mean, hw = pair
    return f"{mean:.3f} ± {hw:.3f}"


def markdown(t: dict) -> str:
    lines = ["# ReST-MCTS* / B-STaR experiment (tiny model)", ""]
    if t["search"]:
        lines += [
            "## Accuracy vs generated tokens per question",
            "",
            "| method | budget | tokens / question | accuracy (95 % CI over seeds) |",
            "|---|---|---|---|",
        ]
        lines += [
            f"| {r['method']} | {r['budget']} | {r['tokens']:.0f} | {r['accuracy']:.3f} ± {r['ci95']:.3f} |"
            for r in t["search"]
        ]
    for part, title in (
        ("rest", "ReST-MCTS* vs ReST-EM: held-out greedy accuracy"),
        ("bstar", "B-STaR vs online RFT"),
    ):
        if not t[part]:
            continue
        lines += ["", f"## {title}", ""]
        for row in t[part]:
            lines += [
                f"**{row['method']}** ({row['seeds']} seeds), start accuracy {_fmt(row['initial'])}",
                "",
            ]
            iters = [k for k in row if k.startswith("iter")]
            metrics = list(row[iters[0]])
            lines += ["| metric | " + " | ".join(iters) + " |", "|---" * (len(iters) + 1) + "|"]
            for m in metrics:
                lines.append(
                    f"| {m} | " + " | ".join(_fmt(row[i][m]) if m in row[i] else "—" for i in iters) + " |"
                )
            lines.append("")
    return "\n".join(lines) + "\n"


def plot_budget(runs: list[dict], path: Path) -> None:
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    rows = tables(runs)["search"]
    for method in sorted({r["method"] for r in rows}):
        rs = sorted((r for r in rows if r["method"] == method), key=lambda r: r["tokens"])
        ax.errorbar([r["tokens"] for r in rs], [r["accuracy"] for r in rs], yerr=[r["ci95"] for r in rs],
                    marker="o", capsize=3, label=method)  # fmt: skip
    ax.set_xscale("log")
    ticks = [16, 32, 64, 128, 256, 512]
    ax.set_xticks(ticks, [str(t) for t in ticks])
    ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    ax.set_xlabel("generated tokens per question")
    ax.set_ylabel("held-out accuracy")
    ax.set_title("test-time search on the tiny model (95 % CI over seeds)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
