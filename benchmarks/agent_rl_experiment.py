"""Multi-turn agent RL on TextWorld cooking games, three parts:

- ``collector``: episodes per second of the episode collector with every live episode's turn
  in one engine call vs one call per episode (the tiny actor, held-out games, T = 1);
- ``tiny``: GRPO from the tiny text-world actor, episode-level group advantages vs GiGPO
  (step_advantage_weight 1.0), 3 seeds: held-out success and score before and after;
- ``smollm2``: the same with the real SmolLM2-135M-Instruct actor in its chat template. The
  model zero-shot repeats the observation back (0 of 16 held-out games, score 0), which gives
  GRPO no reward signal, so it is first cloned from the same noisy walkthroughs as the tiny
  actor (``warm_start_smollm2``: the tiny actor's demonstrations and loss, 30 steps × 4).

    python benchmarks/agent_rl_experiment.py                        # all parts
    python benchmarks/agent_rl_experiment.py --parts collector --repeats 3

Writes benchmarks/results/agent_rl_experiment.{json,md} and agent_rl.png; each finished run is
kept in a partial file, so a killed experiment resumes where it was.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import REPO_ROOT, PartialRuns, machine_info, set_offline, write_json  # noqa: E402
from eval.agent_report import mean_interval  # noqa: E402

RESULTS = REPO_ROOT / "benchmarks" / "results"
HELD_OUT = "env:textworld-cooking?recipe=1&take=1&go=1&split=valid&games=32&seed=0&max_steps=6"
ADVANTAGES = {"episode": "0.0", "gigpo": "1.0"}


def collector_run(repeats: int, games: int, per_game: int) -> dict:
    """Wall time of the same T = 1 episodes (same seeds) played batched and unbatched."""
    from envs.text.pools import load_pool
    from rollout.backends import make_engine
    from rollout.episodes import EpisodeSettings, collect_episodes
    from telos.models import load_model, load_tokenizer
    from telos.types import SamplingParams
    from trainers.common.start_model import start_model_dir

    path = start_model_dir("tiny:textworld-cooking")
    tok, model = load_tokenizer(path), load_model(path, "float32", None)
    engine = make_engine("hf", model, tok)
    rows = load_pool(HELD_OUT)[:games]
    out: dict = {"part": "collector", "games": games, "episodes_per_game": per_game, "repeats": []}
    for rep in range(repeats):
        row = {}
        for batched in (True, False):
            params = SamplingParams(temperature=1.0, seed=rep)
            t0 = time.perf_counter()
            eps = collect_episodes(
                engine, tok, rows, params, EpisodeSettings(), per_row=per_game, batched=batched
            )
            dt = time.perf_counter() - t0
            key = "batched" if batched else "per_episode"
            row[key] = {
                "seconds": dt,
                "episodes_per_s": len(eps) / dt,
                "turns": sum(len(e.turns) for e in eps),
            }
        row["speedup"] = row["batched"]["episodes_per_s"] / row["per_episode"]["episodes_per_s"]
        out["repeats"].append(row)
        print(row, flush=True)
    return out


def warm_start_smollm2(steps: int = 30) -> tuple[str, dict]:
    """SmolLM2 behaviour-cloned from noisy walkthroughs of 24 train-split games (chat layout):
    the tiny actor's demonstrations and masked loss, from the pretrained weights."""
    from dataclasses import replace

    from rollout.episodes import EpisodeSettings
    from telos.cache import atomic_path
    from telos.models import load_model, load_tokenizer
    from trainers.common.sft import SFTConfig, masked_batch, train_sft
    from trainers.common.start_model import start_model_dir
    from trainers.common.tiny_actor import TINY_COOKING, TinyActorConfig, demonstrations

    out = REPO_ROOT / "runs" / "experiment-agent" / "smollm2-walkthrough-sft"
    info_path = out / "warm_start.json"
    if info_path.is_file():
        return str(out), json.loads(info_path.read_text())
    base = start_model_dir("smollm2:135m-instruct")
    tok, model = load_tokenizer(base), load_model(base, "float32", None)
    cfg = TinyActorConfig(
        env=f"env:textworld-cooking?{TINY_COOKING}&split=train&games=24&seed=1000&max_steps=12",
        settings=replace(EpisodeSettings(), chat=True, instruction=SMOLLM2_INSTRUCTION),
    )
    episodes = demonstrations(cfg, tok)
    examples = [(e.prompt_ids + e.token_ids, [0] * len(e.prompt_ids) + e.loss_mask) for e in episodes]
    t0 = time.perf_counter()
    sft = SFTConfig(steps=steps, batch_size=4, lr=5e-5, warmup_steps=4)
    losses = train_sft(model, tok, examples, sft, collate=lambda items: masked_batch(tok.pad_token_id, items))
    with atomic_path(out) as tmp:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        info = {"demonstrations": len(examples), "steps": steps, "batch_size": 4, "lr": 5e-5,
                "first_loss": losses[0], "final_loss": losses[-1], "seconds": time.perf_counter() - t0}  # fmt: skip
        (tmp / "warm_start.json").write_text(json.dumps(info))
    return str(out), info


SMOLLM2_INSTRUCTION = (
    "You play a text adventure. Read the cookbook, take what the recipe needs, prepare the meal "
    "and eat it. Answer with one action per turn and nothing else."
)


def train_run(recipe: str, name: str, overrides: list[str]) -> dict:
    out = REPO_ROOT / "runs" / "experiment-agent" / name
    cmd = [sys.executable, "-m", "telos", "train", recipe, f"output_dir={out}", "resume=latest", *overrides]
    subprocess.run(cmd, cwd=REPO_ROOT, check=True)
    return json.loads((out / "summary.json").read_text())


def rl_record(part: str, advantage: str, seed: int, s: dict) -> dict:
    return {
        "part": part, "advantage": advantage, "seed": seed,
        "success_before": s["initial_eval_accuracy"], "success_after": s["eval_accuracy"],
        "score_before": s.get("initial_eval_score"), "score_after": s.get("eval_score"),
        "steps": s["steps"], "train_seconds": s["train_seconds"],
    }  # fmt: skip


def training_reward(run: dict) -> dict | None:
    """Mean training reward of the first and last 4 steps (from the run's metrics.jsonl)."""
    from telos.tracking import read_metrics

    path = (
        REPO_ROOT
        / "runs"
        / "experiment-agent"
        / f"{run['part']}-{run['advantage']}-{run['seed']}"
        / "metrics.jsonl"
    )
    rows = (
        [r for r in read_metrics(path) if r.get("step", 0) >= 1 and "reward_mean" in r]
        if path.is_file()
        else []
    )
    if not rows:
        return None
    first, last = rows[:4], rows[-4:]
    out = {
        "first4": sum(r["reward_mean"] for r in first) / len(first),
        "last4": sum(r["reward_mean"] for r in last) / len(last),
    }
    for key in ("step_groups_mean_size", "step_adv_nonzero_frac"):  # GiGPO runs only
        vals = [r[key] for r in rows if key in r]
        if vals:
            out[key] = sum(vals) / len(vals)
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--parts", default="collector,tiny,smollm2")
    ap.add_argument("--seeds", default="0,1,2", help="training seeds of the tiny part")
    ap.add_argument("--smollm2-seeds", default="0")
    ap.add_argument(
        "--smollm2-advantages", default="episode", help="episode,gigpo: which the smollm2 part runs"
    )
    ap.add_argument("--repeats", type=int, default=2, help="collector timing repeats")
    ap.add_argument("--games", type=int, default=16, help="collector: held-out games")
    ap.add_argument("--episodes-per-game", type=int, default=4, help="collector: episodes per game")
    args = ap.parse_args(argv)
    set_offline()
    parts = args.parts.split(",")
    partial = RESULTS / "agent_rl_experiment.partial.jsonl"
    done = PartialRuns(partial)
    runs, have, record = done.runs, done.have, done.record

    if "collector" in parts and not have(part="collector"):
        record(collector_run(args.repeats, args.games, args.episodes_per_game))
    for part, recipe, seeds, kinds in (
        ("tiny", "recipes/agents/grpo_textworld_tiny.yaml", args.seeds, list(ADVANTAGES)),
        (
            "smollm2",
            "recipes/agents/grpo_textworld_smollm2.yaml",
            args.smollm2_seeds,
            args.smollm2_advantages.split(","),
        ),
    ):
        if part not in parts:
            continue
        extra = []
        if part == "smollm2":
            start, info = warm_start_smollm2()
            if not have(part="smollm2-warm-start"):
                record({"part": "smollm2-warm-start", **info})
            extra = [f"model.name_or_path={start}"]
        for seed in map(int, seeds.split(",")):
            for advantage in kinds:
                weight = ADVANTAGES[advantage]
                if not have(part=part, advantage=advantage, seed=seed):
                    s = train_run(
                        recipe,
                        f"{part}-{advantage}-{seed}",
                        [f"train.seed={seed}", f"grpo.step_advantage_weight={weight}", *extra],
                    )
                    record(rl_record(part, advantage, seed, s))
                    print(runs[-1], flush=True)
    for run in runs:
        if run.get("part") in ("tiny", "smollm2") and "training_reward" not in run:
            run["training_reward"] = training_reward(run)
    result = {
        "benchmark": "agent_rl_experiment",
        "command": "python benchmarks/agent_rl_experiment.py " + " ".join(argv or sys.argv[1:]),
        "machine": machine_info(),
        "runs": runs,
        "tables": tables(runs),
    }
    write_json(RESULTS / "agent_rl_experiment.json", result)
    (RESULTS / "agent_rl_experiment.md").write_text(markdown(result["tables"]))
    plot(result["tables"], RESULTS / "agent_rl.png")
    return result


def tables(runs: list[dict]) -> dict:
    out: dict = {"rl": {}, "collector": None}
    for part in ("tiny", "smollm2"):
        for advantage in ADVANTAGES:
            rs = [r for r in runs if r.get("part") == part and r.get("advantage") == advantage]
            if not rs:
                continue
            rewards = [r["training_reward"] for r in rs if r.get("training_reward")]
            out["rl"][f"{part}/{advantage}"] = {
                "seeds": len(rs),
                "training_reward_first4": mean_interval([x["first4"] for x in rewards]),
                "training_reward_last4": mean_interval([x["last4"] for x in rewards]),
                **{
                    k: mean_interval([r[k] for r in rs if r[k] is not None])
                    for k in ("success_before", "success_after", "score_before", "score_after")
                },
            }
    warm = next((r for r in runs if r.get("part") == "smollm2-warm-start"), None)
    warm_eval = next((r for r in runs if r.get("part") == "smollm2-warm-start-eval"), None)
    if warm and warm_eval:
        out["smollm2_warm_start"] = {**warm, "held_out": warm_eval}
    col = next((r for r in runs if r.get("part") == "collector"), None)
    if col:
        speed = [rep["speedup"] for rep in col["repeats"]]
        out["collector"] = {
            "batched_episodes_per_s": [rep["batched"]["episodes_per_s"] for rep in col["repeats"]],
            "per_episode_episodes_per_s": [rep["per_episode"]["episodes_per_s"] for rep in col["repeats"]],
            "speedup": speed,
            "episodes": col["games"] * col["episodes_per_game"],
        }
    return out


def _fmt(pair) -> str:
    mean, half = pair
    return f"{mean:.3f} ± {half:.3f}" if half else f"{mean:.3f}"


def markdown(t: dict) -> str:
    lines = [
        "# Multi-turn agent RL on TextWorld cooking",
        "",
        "Held-out games (TextWorld split `valid`: unseen foods; 32 for the tiny actor, 16 for SmolLM2), "
        "greedy, 6 steps per episode. ± is the 95 % interval over training seeds (1.96·s/√n).",
        "",
        "| actor / advantage | seeds | success before | success after | score before | score after "
        "| training reward, first 4 → last 4 steps |",
        "|---|---|---|---|---|---|---|",
    ]
    for key, v in t["rl"].items():
        lines.append(
            f"| {key} | {v['seeds']} | {_fmt(v['success_before'])} | {_fmt(v['success_after'])} | "
            f"{_fmt(v['score_before'])} | {_fmt(v['score_after'])} | "
            f"{_fmt(v['training_reward_first4'])} → {_fmt(v['training_reward_last4'])} |"
        )
    w = t.get("smollm2_warm_start")
    if w:
        h = w["held_out"]
        lines += [
            "",
            f"SmolLM2-135M-Instruct cloned from {w['demonstrations']} noisy walkthroughs ({w['steps']} steps × "
            f"{w['batch_size']}, lr {w['lr']}, loss {w['first_loss']:.2f} → {w['final_loss']:.2f}, "
            f"{w['seconds']:.0f} s): held-out success {h['success']:.3f}, score {h['score']:.3f} on {h['games']} games "
            "(greedy). GRPO from it was not run to its end.",
        ]
    c = t.get("collector")
    if c:
        lines += [
            "",
            f"Collector, {c['episodes']} episodes at T = 1: batched "
            + ", ".join(f"{x:.2f}" for x in c["batched_episodes_per_s"])
            + " episodes/s vs one call per episode "
            + ", ".join(f"{x:.2f}" for x in c["per_episode_episodes_per_s"])
            + " (speed-up "
            + ", ".join(f"{x:.1f}×" for x in c["speedup"])
            + ").",
        ]
    return "\n".join(lines) + "\n"


def plot(t: dict, path: Path) -> None:
    from telos.plots import new_figure, save_figure

    keys = list(t["rl"])
    if not keys:
        return
    fig = new_figure(figsize=(max(6.0, 1.6 * len(keys) + 2), 4.2))
    ax = fig.add_subplot()
    width = 0.2
    for j, (metric, label) in enumerate(
        [("success_before", "success before"), ("success_after", "success after"),
         ("score_before", "score before"), ("score_after", "score after")]
    ):  # fmt: skip
        means = [t["rl"][k][metric][0] for k in keys]
        halves = [t["rl"][k][metric][1] for k in keys]
        ax.bar(
            [i + (j - 1.5) * width for i in range(len(keys))],
            means,
            width,
            yerr=halves,
            capsize=3,
            label=label,
        )
    ax.set_xticks(range(len(keys)))
    ax.set_xticklabels(keys)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("held-out (95 % interval over seeds)")
    ax.set_title("GRPO on TextWorld cooking: episode-level vs GiGPO advantages")
    ax.legend(fontsize="small")
    ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path)


if __name__ == "__main__":
    main()
