"""A process RM on Math-Shepherd labels from the tiny SFT policy (CPU, minutes, offline).

The commands of ``recipes/rm/prm_tiny.yaml``'s header, in order, with one result file:

1. ``telos data process-labels`` on TRAIN problems (SOLUTIONS_TRAIN solutions each, ROLLOUTS
   completions per step prefix: soft label = the share that reach the answer) and on held-out
   TEST problems (SOLUTIONS_TEST solutions each, seed 1);
2. ``telos train recipes/rm/prm_tiny.yaml`` on the training rows;
3. ``telos eval rm`` on the held-out rows: step accuracy, best-of-n / weighted vote by min, last
   and prod step-score aggregation, and the random-pick / majority-vote / oracle baselines.

    python benchmarks/prm_experiment.py

Writes benchmarks/results/prm_experiment.json (the eval's metrics, the commands and settings).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import REPO_ROOT, machine_info, resolve_model, set_offline, write_json  # noqa: E402

set_offline()


def telos(*args: str) -> list[str]:
    return [sys.executable, "-m", "telos", *args]


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="tiny:arith")
    p.add_argument("--train-problems", type=int, default=300)
    p.add_argument("--test-problems", type=int, default=100)
    p.add_argument("--solutions-train", type=int, default=2)
    p.add_argument("--solutions-test", type=int, default=4)
    p.add_argument("--rollouts", type=int, default=8)
    p.add_argument("--aggregate", default="min")
    p.add_argument("--out", default="benchmarks/results/prm_experiment.json")
    args = p.parse_args(argv)
    model_dir = resolve_model(args.model)
    spec = "procedural:arith{}?n={}&max_value=50&max_operand=9"
    commands: list[list[str]] = []
    seconds: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="telos-prm-") as tmp:
        work = Path(tmp)
        train, test = work / "steps_train.jsonl", work / "steps_test.jsonl"
        labels = ["data", "process-labels", "--model", model_dir, "--rollouts", str(args.rollouts)]
        steps = {
            "labels_train": telos(
                *labels, "--data", spec.format("", args.train_problems),
                "--solutions", str(args.solutions_train), "--out", str(train),
            ),
            "labels_test": telos(
                *labels, "--data", spec.format(":test", args.test_problems),
                "--solutions", str(args.solutions_test), "--seed", "1", "--out", str(test),
            ),
            "train": telos(
                "train", str(REPO_ROOT / "recipes/rm/prm_tiny.yaml"), f"model.name_or_path={model_dir}",
                f"data.train={train}", f"data.test={test}", f"output_dir={work / 'prm'}", "report_to=[]",
            ),
            "eval": telos(
                "eval", "rm", "--model", str(work / "prm" / "final"), "--data", str(test),
                "--aggregate", args.aggregate, "--out", str(work / "eval"),
            ),
        }  # fmt: skip
        for name, cmd in steps.items():
            t0 = time.perf_counter()
            subprocess.run(cmd, check=True, cwd=work)
            seconds[name] = round(time.perf_counter() - t0, 1)
            commands.append(cmd)
        metrics = json.loads((work / "eval" / "results.json").read_text())["metrics"]
        rows = {
            "train_solutions": sum(1 for _ in train.open()),
            "test_solutions": sum(1 for _ in test.open()),
        }
    result = {
        "benchmark": "prm_experiment",
        "settings": vars(args) | {"model_dir": model_dir, **rows},
        "metrics": metrics,
        "seconds": seconds,
        "commands": [" ".join(c) for c in commands],
        "machine": machine_info(),
    }
    write_json(args.out, result)
    for key in ("solutions", "steps", "step_accuracy", f"best_of_n_{args.aggregate}",
                "majority_vote_accuracy", "random_pick_accuracy", "oracle_any_correct"):  # fmt: skip
        print(f"{key:28s} {metrics.get(key)}")
    return result


if __name__ == "__main__":
    main()
