"""EPO and Retroformer on TextWorld cooking with the tiny guided actor (``tiny:textworld-guided``),
on 32 held-out games (split ``valid``: unseen foods), against their baselines:

- ``baselines``: the actor alone (greedy); with the untrained strategist (its starting weights);
  over 4 trials at actor T 0.7 with no reflection and with the untrained retrospective model;
- ``epo``: EPO's reward-weighted self-play (recipes/agents/epo_textworld_tiny.yaml) and
  multi-turn GRPO on the strategist (epo_grpo_textworld_tiny.yaml), held-out success after
  each self-play iteration / evaluation, per training seed;
- ``retroformer``: the retrospective model trained online with GRPO
  (retroformer_textworld_tiny.yaml), then success by trial over 4 trials, per training seed.

    python benchmarks/planner_experiment.py                    # all parts, seeds 0,1,2
    python benchmarks/planner_experiment.py --parts epo --seeds 0

Writes benchmarks/results/planner_experiment.{json,md}, planner_epo.png and
planner_retroformer.png; each finished run is kept in a partial file (a killed run resumes).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import REPO_ROOT, PartialRuns, machine_info, set_offline, write_json  # noqa: E402
from eval.agent_report import mean_interval  # noqa: E402

RESULTS = REPO_ROOT / "benchmarks" / "results"
HELD_OUT = "env:textworld-cooking?recipe=1&take=1&go=1&split=valid&games=32&seed=0&max_steps=6"
TRAIN_GAMES = (
    "env:textworld-cooking?recipe=1&take=1&go=1&split=train&games=32&seed=0&max_steps=6"  # the recipes' own
)
ACTOR = "tiny:textworld-guided"
TRIALS, TRIAL_TEMPERATURE = 4, 0.7
OBJECTIVES = {
    "reward_weighted": "recipes/agents/epo_textworld_tiny.yaml",
    "grpo": "recipes/agents/epo_grpo_textworld_tiny.yaml",
}


def evaluate(
    strategist: str | None = None, retrospective: str | None = None, trials: int = 1, pool: str = HELD_OUT
) -> dict:
    """``telos eval agent``'s own loop in this process: success and score by trial."""
    from envs.text.pools import load_pool
    from eval.agent import AgentEvalSpec, play_games
    from eval.agent_report import by_trial
    from rollout.episodes import EpisodeSettings

    temperature = TRIAL_TEMPERATURE if trials > 1 else 0.0
    spec = AgentEvalSpec(pool, ACTOR, 1, temperature, 0, "hf", EpisodeSettings(), strategist=strategist,
                         retrospective=retrospective, trials=trials)  # fmt: skip
    return {"by_trial": by_trial(play_games(spec, load_pool(pool))), "temperature": temperature}


def oracle_evaluate(kind: str, trials: int = 1, pool: str = HELD_OUT) -> dict:
    """The room guidance has: the thought is the next walkthrough step the actor has not yet
    taken (``strategist``), or the reflection is the whole walkthrough (``retrospective``)."""
    from agents.reflection import run_trials
    from envs.text.pools import load_pool
    from eval.agent_report import by_trial
    from rollout.episodes import EpisodeSettings, collect_episodes
    from telos.types import SamplingParams
    from trainers.common.frozen import load_frozen

    rows = load_pool(pool)
    walk = {r["game_id"]: r["walkthrough"] for r in rows}
    actor = load_frozen(ACTOR, "actor")

    def next_step(ep) -> str:
        plan, done = walk[ep.game_id], 0
        for turn in ep.turns:
            done += done < len(plan) and turn.action == plan[done]
        return plan[done] if done < len(plan) else ""

    guide = (lambda live: [next_step(ep) for ep in live]) if kind == "strategist" else None
    temperature = TRIAL_TEMPERATURE if trials > 1 else 0.0

    def play(rows_, instructions, trial):
        params = SamplingParams(temperature=temperature, seed=trial * 1000)
        return collect_episodes(actor.engine, actor.tokenizer, rows_, params, EpisodeSettings(max_context=actor.max_context),
                                guide=guide, instructions=instructions)  # fmt: skip

    reflect = (
        (lambda failed, past: [", ".join(walk[ep.game_id]) for ep in failed])
        if kind == "retrospective"
        else None
    )
    result = run_trials(rows, play, reflect, trials)
    records = [
        {**ep.record(), "episode": 0, "trial": t} for t, eps in enumerate(result.episodes) for ep in eps if ep
    ]
    return {"by_trial": by_trial(records), "temperature": temperature}


def train_run(recipe: str, name: str, overrides: list[str]) -> Path:
    out = REPO_ROOT / "runs" / "experiment-planners" / name
    cmd = [sys.executable, "-m", "telos", "train", recipe, f"output_dir={out}", "resume=latest", *overrides]
    subprocess.run(cmd, cwd=REPO_ROOT, check=True)
    return out


def eval_curve(run_dir: Path) -> list[dict]:
    """The run's held-out evaluations, by step (step 0: the starting strategist)."""
    from telos.tracking import read_metrics

    rows = [r for r in read_metrics(run_dir / "metrics.jsonl") if "eval_accuracy" in r]
    return [{"step": r["step"], "success": r["eval_accuracy"], "score": r.get("eval_score")} for r in rows]


def training_reward(run: dict) -> list[float] | None:
    from telos.tracking import read_metrics

    name = f"epo-{run['objective']}-{run['seed']}" if run["part"] == "epo" else f"retroformer-{run['seed']}"
    path = REPO_ROOT / "runs" / "experiment-planners" / name / "metrics.jsonl"
    if not path.is_file():
        return None
    return [r["reward_mean"] for r in read_metrics(path) if r.get("step", 0) >= 1 and "reward_mean" in r]


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--parts", default="baselines,epo,retroformer")
    ap.add_argument("--seeds", default="0,1,2", help="training seeds")
    args = ap.parse_args(argv)
    set_offline()
    parts, seeds = args.parts.split(","), [int(s) for s in args.seeds.split(",")]
    done = PartialRuns(RESULTS / "planner_experiment.partial.jsonl")
    have, record = done.have, done.record

    if "baselines" in parts:
        for arm, kwargs in (
            ("actor", {}),
            ("untrained_strategist", {"strategist": ACTOR}),
            ("no_reflection", {"trials": TRIALS}),
            ("untrained_retrospective", {"retrospective": ACTOR, "trials": TRIALS}),
        ):
            if not have(part="baseline", arm=arm):
                record({"part": "baseline", "arm": arm, **evaluate(**kwargs)})
        for arm, kind, trials in (
            ("oracle_strategist", "strategist", 1),
            ("oracle_retrospective", "retrospective", TRIALS),
        ):
            if not have(part="baseline", arm=arm):
                record({"part": "baseline", "arm": arm, **oracle_evaluate(kind, trials)})
        # the same guidance on the training games, whose foods the actor's vocabulary has seen
        if not have(part="baseline", arm="actor_train_games"):
            record({"part": "baseline", "arm": "actor_train_games", **evaluate(pool=TRAIN_GAMES)})
        if not have(part="baseline", arm="oracle_strategist_train_games"):
            record({"part": "baseline", "arm": "oracle_strategist_train_games",
                    **oracle_evaluate("strategist", 1, TRAIN_GAMES)})  # fmt: skip
    for seed in seeds:
        if "epo" in parts:
            for objective, recipe in OBJECTIVES.items():
                if not have(part="epo", objective=objective, seed=seed):
                    out = train_run(recipe, f"epo-{objective}-{seed}", [f"train.seed={seed}"])
                    summary = json.loads((out / "summary.json").read_text())
                    record({"part": "epo", "objective": objective, "seed": seed, "curve": eval_curve(out),
                            "train_seconds": summary["train_seconds"]})  # fmt: skip
        if "retroformer" in parts and not have(part="retroformer", seed=seed):
            out = train_run(
                "recipes/agents/retroformer_textworld_tiny.yaml",
                f"retroformer-{seed}",
                [f"train.seed={seed}"],
            )
            summary = json.loads((out / "summary.json").read_text())
            record({"part": "retroformer", "seed": seed, "train_seconds": summary["train_seconds"],
                    **evaluate(retrospective=str(out / "final"), trials=TRIALS)})  # fmt: skip
    for run in done.runs:  # the training reward by step, from each run's metrics
        if run.get("part") in ("epo", "retroformer") and "training_reward" not in run:
            run["training_reward"] = training_reward(run)
    result = {
        "benchmark": "planner_experiment",
        "command": "python benchmarks/planner_experiment.py " + " ".join(argv or sys.argv[1:]),
        "machine": machine_info(),
        "held_out": HELD_OUT,
        "runs": done.runs,
        "tables": tables(done.runs),
    }
    write_json(RESULTS / "planner_experiment.json", result)
    (RESULTS / "planner_experiment.md").write_text(markdown(result["tables"]))
    plot_epo(result["tables"], RESULTS / "planner_epo.png")
    plot_retroformer(result["tables"], RESULTS / "planner_retroformer.png")
    return result


def tables(runs: list[dict]) -> dict:
    base = {r["arm"]: r["by_trial"] for r in runs if r.get("part") == "baseline"}
    epo: dict = {}
    for objective in OBJECTIVES:
        rs = [r for r in runs if r.get("part") == "epo" and r["objective"] == objective]
        if rs:
            steps = sorted({p["step"] for r in rs for p in r["curve"]})
            epo[objective] = {
                "seeds": len(rs),
                "steps": steps,
                "success": [
                    mean_interval([p["success"] for r in rs for p in r["curve"] if p["step"] == s])
                    for s in steps
                ],
                "score": [
                    mean_interval([p["score"] for r in rs for p in r["curve"] if p["step"] == s])
                    for s in steps
                ],
                "training_reward_first2": mean_interval(
                    [sum(r["training_reward"][:2]) / 2 for r in rs if r.get("training_reward")]
                ),
                "training_reward_last2": mean_interval(
                    [sum(r["training_reward"][-2:]) / 2 for r in rs if r.get("training_reward")]
                ),
            }
    retro = [r for r in runs if r.get("part") == "retroformer"]
    trained = None
    if retro:
        trained = {
            "seeds": len(retro),
            "success": [
                mean_interval([r["by_trial"][t]["success_rate"] for r in retro]) for t in range(TRIALS)
            ],
            "score": [mean_interval([r["by_trial"][t]["score_mean"] for r in retro]) for t in range(TRIALS)],
        }
    return {"baselines": base, "epo": epo, "retroformer": trained}


def _pm(pair) -> str:
    mean, half = pair
    return f"{mean:.3f} ± {half:.3f}" if half else f"{mean:.3f}"


def _wilson(t: dict) -> str:
    lo, hi = t["success_ci95"]
    return f"{t['success_rate']:.3f} [{lo:.2f}, {hi:.2f}]"


def markdown(t: dict) -> str:
    b = t["baselines"]
    lines = [
        "# EPO and Retroformer on TextWorld cooking (tiny guided actor)",
        "",
        f"32 held-out games (TextWorld split `valid`: unseen foods), 6 steps each; actor `{ACTOR}` frozen. "
        "Single evaluations carry a 95 % Wilson interval; trained rows are means over training seeds "
        "± 1.96·s/√n. One game = 0.031.",
        "",
        "## EPO: held-out success with a strategist (actor greedy, strategist greedy)",
        "",
    ]
    if "actor" in b:
        lines.append(f"- no strategist: {_wilson(b['actor'][0])}")
    if "untrained_strategist" in b:
        lines.append(
            f"- untrained strategist (its starting weights): {_wilson(b['untrained_strategist'][0])}"
        )
    if "oracle_strategist" in b:
        lines.append(
            f"- oracle thoughts (the next walkthrough step, the room there is): {_wilson(b['oracle_strategist'][0])}"
        )
    if "oracle_strategist_train_games" in b:
        lines.append(
            f"- on the 32 training games (seen foods): no strategist {_wilson(b['actor_train_games'][0])}, "
            f"oracle thoughts {_wilson(b['oracle_strategist_train_games'][0])}"
        )
    for objective, v in t["epo"].items():
        cells = " → ".join(f"{_pm(s)}" for s in v["success"])
        lines.append(
            f"- {objective}, {v['seeds']} seed(s), after iterations/evaluations {v['steps']}: {cells}; "
            f"training reward, first 2 → last 2 steps: {_pm(v['training_reward_first2'])} → {_pm(v['training_reward_last2'])}"
        )
    lines += ["", f"## Retroformer: success by trial (actor T {TRIAL_TEMPERATURE}, greedy reflections)", ""]
    header = "| | " + " | ".join(f"trial {k + 1}" for k in range(TRIALS)) + " |"
    lines += [header, "|---" * (TRIALS + 1) + "|"]
    for arm, label in (
        ("no_reflection", "no reflection (replays)"),
        ("untrained_retrospective", "untrained retrospective"),
        ("oracle_retrospective", "oracle reflection (the walkthrough as the plan)"),
    ):
        if arm in b:
            lines.append(f"| {label} | " + " | ".join(_wilson(x) for x in b[arm]) + " |")
    if t["retroformer"]:
        r = t["retroformer"]
        lines.append(
            f"| trained retrospective ({r['seeds']} seeds) | "
            + " | ".join(_pm(x) for x in r["success"])
            + " |"
        )
    return "\n".join(lines) + "\n"


def _finish(fig, ax, path: Path) -> None:
    """A success axis in [0, 1], legend and grid; saved."""
    from telos.plots import save_figure

    ax.set_ylim(0, 1.05)
    ax.legend(fontsize="small")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path)


def plot_epo(t: dict, path: Path) -> None:
    from telos.plots import new_figure

    if not t["epo"]:
        return
    fig = new_figure(figsize=(6.0, 4.2))
    ax = fig.add_subplot()
    for objective, v in t["epo"].items():
        means, halves = [m for m, _ in v["success"]], [h for _, h in v["success"]]
        ax.errorbar(v["steps"], means, yerr=halves, marker="o", capsize=3, label=f"EPO {objective}")
    for arm, style in (("actor", ":"), ("untrained_strategist", "--"), ("oracle_strategist", "-.")):
        if arm in t["baselines"]:
            ax.axhline(
                t["baselines"][arm][0]["success_rate"],
                linestyle=style,
                color="gray",
                label=arm.replace("_", " "),
            )
    ax.set_xlabel("training step (epo: self-play iteration)")
    ax.set_ylabel("held-out success (95 % over seeds)")
    _finish(fig, ax, path)


def plot_retroformer(t: dict, path: Path) -> None:
    from telos.plots import new_figure

    fig = new_figure(figsize=(6.0, 4.2))
    ax = fig.add_subplot()
    xs = list(range(1, TRIALS + 1))
    for arm in ("no_reflection", "untrained_retrospective", "oracle_retrospective"):
        if arm in t["baselines"]:
            rows = t["baselines"][arm]
            ys = [x["success_rate"] for x in rows]
            err = [[y - x["success_ci95"][0] for y, x in zip(ys, rows, strict=True)],
                   [x["success_ci95"][1] - y for y, x in zip(ys, rows, strict=True)]]  # fmt: skip
            ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=arm.replace("_", " "))
    if t["retroformer"]:
        r = t["retroformer"]["success"]
        ax.errorbar(
            xs,
            [m for m, _ in r],
            yerr=[h for _, h in r],
            marker="s",
            capsize=3,
            label="trained retrospective",
        )
    ax.set_xticks(xs)
    ax.set_xlabel("trial")
    ax.set_ylabel("held-out success so far (95 %)")
    _finish(fig, ax, path)


if __name__ == "__main__":
    main()
