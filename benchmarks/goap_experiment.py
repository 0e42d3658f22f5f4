"""GOAP against its baselines on Crafter's long subgoals, with the oracle planner.

Every controller is cloned from the same goal-observation-action data (``telos data crafter-goap``,
200k steps of oracle + scripted play, world seeds 0…1535) and evaluated with ``telos eval
minecraft`` on the same unseen worlds (seeds 100000…100000+N-1, ``--eval-seed``) of
``benchmarks/suites/crafter-long.yaml`` (make_stone_pickaxe,
make_iron_pickaxe, collect_diamond: their plans dispatch every subgoal of the tech tree):

- ``goap``: the GOAP policy (recipes/agents/goap_crafter.yaml), 3 training seeds;
- ``no_behaviour``: the ablation without behaviour tokens; ``goal_only``: STEVE-1-like;
- ``gcbc``: the earlier conv policy (recipes/agents/gcbc_crafter.yaml) on the same steps, exported
  to its play format (its hindsight labels, the scripted goal as fallback);
- ``scripted``: the controller the data came from (the ceiling);
- ``scale``: GOAP on the first 50k steps (and on a 1M-step directory with ``--data-1m``).

    python benchmarks/goap_experiment.py --data runs/crafter-goap          # all parts
    python benchmarks/goap_experiment.py --data runs/crafter-goap --parts goap --seeds 0

Trainings run two at a time (one thread each); each finished training and evaluation is kept
(run directories and a partial file), so a killed experiment resumes. Writes
benchmarks/results/goap_experiment.{json,md} and goap_subgoals.png.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import REPO_ROOT, PartialRuns, machine_info, write_json  # noqa: E402
from eval.agent_report import mean_interval  # noqa: E402

RESULTS = REPO_ROOT / "benchmarks" / "results"
SUITE = REPO_ROOT / "benchmarks" / "suites" / "crafter-long.yaml"
LONG_SUBGOALS = ("collect stone", "make stone_pickaxe", "collect coal", "place furnace", "collect iron",
                 "make iron_pickaxe", "collect diamond")  # fmt: skip
TARGETS = {"make_stone_pickaxe": 0.78, "make_iron_pickaxe": 0.26, "collect_diamond": 0.12}
VARIANTS = ("goap", "no_behaviour", "goal_only")


def telos(*args: str, threads: int = 1) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    proc = subprocess.run([sys.executable, "-m", "telos.cli", *args], env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"telos {' '.join(args)} failed:\n{proc.stderr[-3000:]}")


def export_play(data_dir: Path, out: Path) -> Path:
    """The GOAP data in ``telos data crafter-play``'s arrays, for GCBC: ``commanded`` is the
    dispatched goal where no reflex acted (what RecordingController writes)."""
    import numpy as np

    if out.is_file():
        return out
    a = {n: np.load(data_dir / f"{n}.npy") for n in ("views", "inventory", "facing", "actions", "goal",
                                                      "reflex", "noise", "events", "episode")}  # fmt: skip
    commanded = np.where((a["reflex"] == 0) & ~a["noise"], a["goal"], -1).astype(np.int16)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.stem + ".tmp.npz")
    np.savez(tmp, views=a["views"], inventory=a["inventory"], facing=a["facing"], actions=a["actions"],
             commanded=commanded, noise=a["noise"], events=a["events"], episode=a["episode"])  # fmt: skip
    os.replace(tmp, out)
    return out


def train_job(job: dict, work: Path, data: Path, steps: int) -> Path:
    """One training (skipped when its final/ exists) → the model directory."""
    run = work / "runs" / job["name"]
    final = run / "final"
    if (final / "config.json").is_file():
        return final
    if job["kind"] == "gcbc":
        play = export_play(data, work / "gcbc-play.npz")
        telos("train", "recipes/agents/gcbc_crafter.yaml", f"data.path={play}", f"run_dir={run}",
              f"name={job['name']}", f"seed={job['seed']}", "resume=latest")  # fmt: skip
    else:
        extra = [f"data.max_steps={job['max_steps']}"] if job.get("max_steps") else []
        telos("train", "recipes/agents/goap_crafter.yaml", f"data.path={job.get('data', data)}",
              f"run_dir={run}", f"name={job['name']}", f"seed={job['seed']}", f"model.variant={job['variant']}",
              f"train.steps={steps}", "rollout.every=0", "resume=latest", *extra)  # fmt: skip
    return final


def evaluate(controller: str, out: Path, episodes: int, seed: int, temperature: float | None = None) -> dict:
    if not (out / "results.json").is_file():
        options = ["--controller-option", f"temperature={temperature}"] if temperature is not None else []
        telos("eval", "minecraft", "--suite", str(SUITE), "--controller", controller, "--episodes",
              str(episodes), "--workers", "2", "--seed", str(seed), "--out", str(out), *options)  # fmt: skip
    r = json.loads((out / "results.json").read_text())
    return {
        "tasks": {
            k: {f: v[f] for f in ("success_rate", "ci95", "episodes", "deaths", "mean_steps_all")}
            for k, v in r["tasks"].items()
        },  # fmt: skip
        "subgoals": {
            k: {"success_rate": v["success_rate"], "dispatched": v["dispatched"]}
            for k, v in r["controller_subgoals"].items()
        },  # fmt: skip
        "failures": failure_reasons(out),
        "episodes_per_s": r["episodes_per_s"],
    }


def failure_reasons(out: Path) -> dict[str, dict[str, int]]:
    """Per task: how the unsuccessful episodes ended (death, timeout, a subgoal given up on)."""
    episodes = json.loads((out / "episodes.json").read_text())["episodes"]
    reasons: dict[str, dict[str, int]] = {}
    for ep in episodes:
        if ep["success"]:
            continue
        if ep["died"]:
            why = "death"
        elif any(s["outcome"] == "failed" for s in ep["subgoals"]):
            why = "subgoal failed (no progress)"
        else:
            why = "budget"
        counts = reasons.setdefault(ep["task_id"], {})
        counts[why] = counts.get(why, 0) + 1
    return reasons


def jobs(parts: set[str], seeds: list[int], data_1m: str | None) -> list[dict]:
    out = []
    for seed in seeds:
        for variant in VARIANTS:
            if variant in parts:
                out.append({"kind": "goap", "variant": variant, "seed": seed, "name": f"{variant}-s{seed}"})
        if "gcbc" in parts:
            out.append({"kind": "gcbc", "variant": "gcbc", "seed": seed, "name": f"gcbc-s{seed}"})
        if "scale" in parts:
            out.append(
                {
                    "kind": "goap",
                    "variant": "goap",
                    "seed": seed,
                    "name": f"goap-50k-s{seed}",
                    "max_steps": 50_000,
                }
            )
    if "scale" in parts and data_1m:
        out.append({"kind": "goap", "variant": "goap", "seed": 0, "name": "goap-1m-s0", "data": data_1m})
    return out


def summarize(runs: list[dict]) -> dict:
    """Per model group (variant / data size): task success and per-subgoal success, mean ± 95 %
    half-width over training seeds (1.96·s/√n)."""
    groups: dict[str, list[dict]] = {}
    for r in runs:
        groups.setdefault(r["group"], []).append(r)
    out = {}
    for group, rs in groups.items():
        tasks = {
            t: mean_interval([r["eval"]["tasks"][t]["success_rate"] for r in rs])
            for t in rs[0]["eval"]["tasks"]
        }
        subgoals = {}
        for sg in LONG_SUBGOALS + ("collect tree", "place table", "make wood_pickaxe"):
            vals = [r["eval"]["subgoals"][sg]["success_rate"] for r in rs if sg in r["eval"]["subgoals"]]
            if vals:
                subgoals[sg] = mean_interval(vals)
        out[group] = {"seeds": sorted(r["seed"] for r in rs), "tasks": tasks, "subgoals": subgoals}
    return out


def plot(summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = [
        g for g in ("scripted", "goap", "no_behaviour", "goal_only", "gcbc", "goap-50k") if g in summary
    ]
    fig, ax = plt.subplots(figsize=(11, 4.5))
    width = 0.8 / max(1, len(groups))
    for i, g in enumerate(groups):
        sub = summary[g]["subgoals"]
        xs = [j + i * width for j in range(len(LONG_SUBGOALS))]
        ys = [sub.get(s, (0.0, 0.0))[0] for s in LONG_SUBGOALS]
        err = [sub.get(s, (0.0, 0.0))[1] for s in LONG_SUBGOALS]
        ax.bar(xs, ys, width, yerr=err, capsize=2, label=g)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(LONG_SUBGOALS))], LONG_SUBGOALS, rotation=20)
    ax.set_ylabel("subgoal success (met / dispatched)")
    ax.set_ylim(0, 1.05)
    ax.set_title("Crafter long subgoals, oracle planner (mean ± 95 % over training seeds)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)


def report(result: dict) -> str:
    s = result["summary"]
    groups = [
        g for g in ("scripted", "goap", "no_behaviour", "goal_only", "gcbc", "goap-50k", "goap-1m") if g in s
    ]
    fmt = lambda v: f"{v[0]:.2f} ± {v[1]:.2f}" if v[1] else f"{v[0]:.2f}"  # noqa: E731
    lines = ["# GOAP on Crafter's long subgoals (oracle planner)", "",
             f"Data: {result['data_steps']} steps; {result['episodes']} episodes per task and model; "
             f"training seeds {result['seeds']}; ± = 1.96·s/√n over seeds.", "",
             "| subgoal | " + " | ".join(groups) + " |", "|---|" + "---:|" * len(groups)]  # fmt: skip
    for sg in LONG_SUBGOALS:
        lines.append(
            f"| {sg} | " + " | ".join(fmt(s[g]["subgoals"].get(sg, (float("nan"), 0))) for g in groups) + " |"
        )
    lines += ["", "| task | " + " | ".join(groups) + " | target |", "|---|" + "---:|" * (len(groups) + 1)]
    for task, target in TARGETS.items():
        lines.append(f"| {task} | " + " | ".join(fmt(s[g]["tasks"].get(task, (float("nan"), 0))) for g in groups)
                     + f" | ≥ {target} |")  # fmt: skip
    lines += ["", "Failures of the main GOAP model (seed 0), per task:", ""]
    for task, counts in result.get("goap_failures", {}).items():
        lines.append(f"- {task}: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True, help="a `telos data crafter-goap` directory (200k steps)")
    ap.add_argument("--data-1m", default=None, help="a 1M-step directory for the scaling part")
    ap.add_argument("--parts", default="scripted,goap,no_behaviour,goal_only,gcbc,scale")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--steps", type=int, default=2000, help="GOAP training steps")
    ap.add_argument("--episodes", type=int, default=20, help="evaluation episodes per task")
    ap.add_argument(
        "--temperature", type=float, default=1.0,
        help="sampling temperature of the cloned controllers (argmax, 0, locks into loops: see README)",
    )  # fmt: skip
    ap.add_argument(
        "--eval-seed", type=int, default=100_000, help="first evaluation world (unseen in the data)"
    )
    ap.add_argument("--work", default="runs/goap-experiment")
    ap.add_argument("--parallel", type=int, default=2, help="trainings at once (one thread each)")
    args = ap.parse_args(argv)
    parts = set(args.parts.split(","))
    work, data = Path(args.work), Path(args.data)
    partial = PartialRuns(work / "partial.jsonl")
    todo = jobs(parts, args.seeds, args.data_1m)
    with ThreadPoolExecutor(args.parallel) as pool:
        finals = list(pool.map(lambda j: train_job(j, work, data, args.steps), todo))
    for job, final in zip(todo, finals, strict=True):
        if partial.have(name=job["name"], episodes=args.episodes):
            continue
        spec = ("learned:" if job["kind"] == "gcbc" else "goap:") + str(final)
        group = {"goap-50k": "goap-50k", "goap-1m": "goap-1m"}.get(
            job["name"].rsplit("-s", 1)[0], job["variant"]
        )
        train = json.loads((final.parent / "summary.json").read_text())
        partial.record({"name": job["name"], "group": group, "seed": job["seed"], "episodes": args.episodes,
                        "val_accuracy": train["val_accuracy"], "train_seconds": train["train_seconds"],
                        "parameters": train["parameters"],
                        "eval": evaluate(spec, work / "eval" / job["name"], args.episodes, args.eval_seed,
                                         args.temperature)})  # fmt: skip
    if "scripted" in parts and not partial.have(name="scripted", episodes=args.episodes):
        partial.record({"name": "scripted", "group": "scripted", "seed": 0, "episodes": args.episodes,
                        "eval": evaluate("scripted", work / "eval" / "scripted", args.episodes, args.eval_seed)})  # fmt: skip
    runs = [r for r in partial.runs if r["episodes"] == args.episodes]
    meta = json.loads((data / "meta.json").read_text())
    main_run = next((r for r in runs if r["name"] == "goap-s0"), None)
    result = {
        "command": "python benchmarks/goap_experiment.py " + " ".join(argv or sys.argv[1:]),
        "suite": str(SUITE.relative_to(REPO_ROOT)),
        "data_steps": meta["steps"],
        "data_episodes": meta["episodes"],
        "seeds": args.seeds,
        "episodes": args.episodes,
        "eval_seeds": [args.eval_seed, args.eval_seed + args.episodes - 1],
        "temperature": args.temperature,
        "goap_steps": args.steps,
        "targets": TARGETS,
        "summary": summarize(runs),
        "goap_failures": main_run["eval"]["failures"] if main_run else {},
        "runs": runs,
        "machine": machine_info(("torch", "crafter")),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    write_json(RESULTS / "goap_experiment.json", result)
    (RESULTS / "goap_experiment.md").write_text(report(result))
    plot(result["summary"], RESULTS / "goap_subgoals.png")
    print(report(result))
    return result


if __name__ == "__main__":
    main()
