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
    python benchmarks/rm_goal_experiment.py --setting smollm2      # SmolLM2-135M-Instruct
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

from benchmarks.common import (  # noqa: E402
    REPO_ROOT,
    append_partial,
    machine_info,
    read_partial,
    resolve_model,
    set_offline,
    write_json,
)
from trainers.common.recipe_data import ADDITIONS, SMOLLM2_SAMPLING  # noqa: E402

set_offline()

# --setting presets: what the policy answers, how, and how the RMs train on its pairs
SETTINGS: dict[str, dict[str, Any]] = {
    "tiny": {
        "model": "tiny:arith",
        "train_spec": "procedural:arith?n=1000&max_value=50&max_operand=9",
        "test_spec": "procedural:arith:test?n=200&max_value=50&max_operand=9",
        "data_args": ["--max-tokens", "48"],
        "recipe": "{kind}_tiny.yaml",
        "rm_overrides": [],
        "epochs": 4,
        "lr": 1e-3,
        "data_dir": "runs/rm-data",
        "out": "benchmarks/results/rm_goal_experiment.json",
    },
    # SmolLM2-135M-Instruct as policy and RM trunk: 1-2-digit additions answered step by step
    # (~50-token worked answers, sample accuracy ~0.1, so most prompts give pairs); the RMs
    # train their top 4 of 30 layers (rm.train_layers), which a 2-core CPU can afford
    "smollm2": {
        "model": "smollm2:135m-instruct",
        "train_spec": f"reasoning-gym:basic_arithmetic?size=200&seed=1&{ADDITIONS}",
        "test_spec": f"reasoning-gym:basic_arithmetic?size=40&seed=7&{ADDITIONS}",
        "data_args": list(SMOLLM2_SAMPLING),
        "recipe": "{kind}_tiny.yaml",
        "rm_overrides": [
            "rm.train_layers=4",
            "train.batch_size=16",
            "train.micro_batch_size=8",
            "data.max_length=192",
        ],
        "epochs": 1,
        "lr": 2e-5,
        "data_dir": "runs/rm-data-smollm2",
        "out": "benchmarks/results/rm_goal_experiment_smollm2.json",
    },
}


def make_data(model_dir: str, data_dir: Path, preset: dict[str, Any]) -> tuple[Path, Path]:
    pairs, samples = data_dir / "pairs_train.jsonl", data_dir / "samples_test.jsonl"
    common = [
        sys.executable,
        "-m",
        "telos",
        "data",
        "preferences",
        "--model",
        model_dir,
        *preset["data_args"],
    ]
    if not pairs.exists():
        subprocess.run([*common, "--data", preset["train_spec"], "--out", str(pairs)], check=True)
    if not samples.exists():
        held_pairs = data_dir / "pairs_test.jsonl"
        cmd = [
            *common,
            "--data",
            preset["test_spec"],
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
        *SETTINGS[args.setting]["rm_overrides"],
    ]
    recipe, raw = load_recipe(
        str(REPO_ROOT / "recipes/rm" / SETTINGS[args.setting]["recipe"].format(kind=kind)), overrides
    )
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
    p.add_argument("--setting", choices=sorted(SETTINGS), default="tiny", help="policy, task and RM presets")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--model", default=None, help="policy and RM trunk (default: the setting's)")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--skip", type=int, default=5)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    preset = SETTINGS[args.setting]
    for key in ("model", "data_dir", "epochs", "lr", "out"):
        if getattr(args, key) is None:
            setattr(args, key, preset[key])
    seeds = [int(s) for s in args.seeds.split(",")]
    model_dir = resolve_model(args.model)
    data_dir = Path(args.data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    pairs, samples = make_data(model_dir, data_dir, preset)

    from envs.math.sources import load_rows

    rows = [r for r in load_rows(str(samples), raw=True) if r["correct"] is not None]
    partial = Path(args.out).with_suffix(".partial.jsonl")
    key = {k: v for k, v in vars(args).items() if k not in ("seeds", "out")}
    done = {(r["kind"], r["seed"]): r for r in read_partial(partial) if r.pop("settings", None) == key}
    runs = []
    with tempfile.TemporaryDirectory(prefix="telos-rmexp-") as tmp:
        for seed in seeds:
            for kind in ("bt", "gcrm"):
                if (kind, seed) in done:  # finished before a kill: kept, not retrained
                    runs.append(done[(kind, seed)])
                    continue
                final = train(kind, seed, model_dir, pairs, Path(tmp) / f"{kind}-{seed}", args)
                runs.append({"kind": kind, "seed": seed, **evaluate(kind, final, rows, args.skip)})
                append_partial(partial, runs[-1] | {"settings": key})
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
    partial.unlink(missing_ok=True)  # the result file now holds every run
    for k, v in summary.items():
        print(f"{k:55s} {v['mean']:.3f} ± {v['std']:.3f}")
    return result


if __name__ == "__main__":
    main()
