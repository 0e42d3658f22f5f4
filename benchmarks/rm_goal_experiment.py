"""BT RM vs goal-conditioned RM trained on the same pairs (tiny models, CPU, minutes).

1. Data (made once, offline): the tiny SFT policy answers 1,000 training problems 8 times;
   the verifier grades them; correct-vs-wrong pairs per prompt (``telos data preferences``).
   Held out: 200 test problems × 8 graded samples.
2. Per seed, a BT RM (``recipes/rm/bt_tiny.yaml``) and a GC-RM (``gcrm_tiny.yaml``: BT + the
   paper's contrastive loss) from the same SFT checkpoint, same pairs, same order and settings.
3. On the held-out samples: AUROC of each RM's reward for correctness (GC-RM also its Q-values),
   and the goal-filtered majority vote. τ = 0 is the paper's threshold; because a small model's
   hidden states share a large common direction (every cos(h_t, g) is high), τ is also
   calibrated on half of the questions (the largest τ, over a grid of Q quantiles, whose vote
   accuracy stays within 1 point of unfiltered there) and reported on the other half.

    python benchmarks/rm_goal_experiment.py --seeds 0,1,2
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import REPO_ROOT, machine_info, resolve_model, set_offline, write_json  # noqa: E402

set_offline()

TRAIN_SPEC = "procedural:arith?n=1000&max_value=50&max_operand=9"
TEST_SPEC = "procedural:arith:test?n=200&max_value=50&max_operand=9"


def make_data(model_dir: str, data_dir: Path) -> tuple[Path, Path]:
    pairs, samples = data_dir / "pairs_train.jsonl", data_dir / "samples_test.jsonl"
    common = [
        sys.executable,
        "-m",
        "telos",
        "data",
        "preferences",
        "--model",
        model_dir,
        "--max-tokens",
        "48",
    ]
    if not pairs.exists():
        subprocess.run([*common, "--data", TRAIN_SPEC, "--out", str(pairs)], check=True)
    if not samples.exists():
        held_pairs = data_dir / "pairs_test.jsonl"
        cmd = [
            *common,
            "--data",
            TEST_SPEC,
            "--seed",
            "1",
            "--out",
            str(held_pairs),
            "--samples-out",
            str(samples),
        ]
        subprocess.run(cmd, check=True)
    return pairs, samples


def train(kind: str, seed: int, model_dir: str, pairs: Path, out: Path, args) -> Path:
    from trainers.rm.train import train_rm
    from trainers.run import load_recipe

    overrides = [
        f"model.name_or_path={model_dir}",
        f"data.train={pairs}",
        "data.test=null",
        f"output_dir={out}",
        f"train.seed={seed}",
        f"train.epochs={args.epochs}",
        f"train.lr={args.lr}",
        "report_to=[]",
    ]
    recipe, raw = load_recipe(str(REPO_ROOT / f"recipes/rm/{kind}_tiny.yaml"), overrides)
    train_rm(recipe, raw)
    return out / "final"


def _split(groups: dict) -> tuple[list, list]:
    keys = sorted(groups)
    return [groups[k] for k in keys[::2]], [groups[k] for k in keys[1::2]]


def evaluate(kind: str, final: Path, rows: list[dict], skip: int) -> dict[str, Any]:
    from eval.rm_metrics import filtered_majority_vote, summarize_goal_filter
    from rewards.reward_model import GoalConditionedRM, RewardModel
    from telos.stats import auroc

    prompts, comps = [r["prompt"] for r in rows], [r["completion"] for r in rows]
    correct = [bool(r["correct"]) for r in rows]
    rm = GoalConditionedRM.from_pretrained(final) if kind == "gcrm" else RewardModel.from_pretrained(final)
    out: dict[str, Any] = {"auroc_reward": auroc(rm.score(prompts, comps), correct)}
    if kind != "gcrm":
        return out
    q = rm.q_values(prompts, comps)
    out["auroc_q_last"] = auroc([v[-1] for v in q], correct)
    groups: dict[int, list[int]] = {}
    for i, r in enumerate(rows):
        groups.setdefault(r["group"], []).append(i)
    answers = [r["extracted"] for r in rows]

    def vote(gs: list[list[int]], tau: float) -> dict:
        per_q = [
            filtered_majority_vote(
                [answers[i] for i in g], [correct[i] for i in g], [q[i] for i in g], skip, tau
            )
            for g in gs
        ]
        return summarize_goal_filter(per_q)

    all_groups = list(groups.values())
    out["goal_filter_tau0"] = vote(all_groups, 0.0)
    dev, test = _split(groups)
    values = sorted(v for g in dev for i in g for v in q[i][skip:])
    grid = [values[int(p * (len(values) - 1))] for p in (0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3)]
    base = vote(dev, float("-inf"))["accuracy_unfiltered"]
    ok = [t for t in grid if vote(dev, t)["accuracy_filtered"] >= base - 0.01]
    tau = max(ok) if ok else grid[0]
    out["goal_filter_calibrated"] = {"tau": tau, "calibrated_on": len(dev), **vote(test, tau)}
    return out


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--model", default="tiny:arith")
    p.add_argument("--data-dir", default="runs/rm-data")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--skip", type=int, default=5)
    p.add_argument("--out", default="benchmarks/results/rm_goal_experiment.json")
    args = p.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    model_dir = resolve_model(args.model)
    data_dir = Path(args.data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    pairs, samples = make_data(model_dir, data_dir)

    from envs.math.sources import load_rows

    rows = [r for r in load_rows(str(samples), raw=True) if r["correct"] is not None]
    runs = []
    with tempfile.TemporaryDirectory(prefix="telos-rmexp-") as tmp:
        for seed in seeds:
            for kind in ("bt", "gcrm"):
                final = train(kind, seed, model_dir, pairs, Path(tmp) / f"{kind}-{seed}", args)
                runs.append({"kind": kind, "seed": seed, **evaluate(kind, final, rows, args.skip)})
                print({k: v for k, v in runs[-1].items() if not isinstance(v, dict)}, flush=True)

    def mean_std(kind: str, get) -> dict:
        vals = [get(r) for r in runs if r["kind"] == kind]
        return {"mean": statistics.fmean(vals), "std": statistics.stdev(vals) if len(vals) > 1 else 0.0}

    summary = {
        "bt_auroc": mean_std("bt", lambda r: r["auroc_reward"]),
        "gcrm_auroc_reward": mean_std("gcrm", lambda r: r["auroc_reward"]),
        "gcrm_auroc_q_last": mean_std("gcrm", lambda r: r["auroc_q_last"]),
    }
    for name in ("goal_filter_tau0", "goal_filter_calibrated"):
        for key in (
            "accuracy_unfiltered",
            "accuracy_filtered",
            "accuracy_filtered_paper",
            "accuracy_unfiltered_paper",
            "tokens_saved_share",
            "pruned_share",
        ):
            summary[f"{name}.{key}"] = mean_std("gcrm", lambda r, n=name, k=key: r[n][k])
    result = {
        "benchmark": "rm_goal_experiment",
        "settings": vars(args) | {"model_dir": model_dir, "samples": len(rows)},
        "summary": summary,
        "runs": runs,
        "machine": machine_info(),
    }
    write_json(args.out, result)
    for k, v in summary.items():
        print(f"{k:55s} {v['mean']:.3f} ± {v['std']:.3f}")
    return result


if __name__ == "__main__":
    main()
