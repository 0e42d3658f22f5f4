"""results.json, report.md, success.png and episode GIFs for ``telos eval minecraft``."""

from __future__ import annotations

import importlib.metadata
from collections import defaultdict
from dataclasses import asdict
from pathlib import Path

import numpy as np

from eval.agent_metrics import achievement_rates, balrog_progress, crafter_score, wilson_interval
from eval.report import markdown_table, write_json, write_text
from telos.plots import never_raises


def _mean(xs: list[float]) -> float | None:
    return float(np.mean(xs)) if xs else None


def task_stats(rows: list[dict]) -> dict:
    n, k = len(rows), sum(r["success"] for r in rows)
    won = [r["steps"] for r in rows if r["success"]]
    return {
        "success_rate": k / n if n else 0.0,
        "ci95": list(wilson_interval(k, n)),
        "episodes": n,
        "successes": k,
        "mean_steps": _mean(won),  # over successful episodes: time to reach the goal
        "mean_steps_all": _mean([r["steps"] for r in rows]),
        "replans_mean": _mean([r["replans"] for r in rows]),
        "plan_failures": sum(r["plan_failures"] for r in rows),
        "deaths": sum(r["died"] for r in rows),
        "llm_calls_per_episode": _mean([r["llm_calls"] for r in rows]),
        "prompt_tokens_per_episode": _mean([r["prompt_tokens"] for r in rows]),
        "completion_tokens_per_episode": _mean([r["completion_tokens"] for r in rows]),
    }


def subgoal_stats(rows: list[dict]) -> dict[str, dict]:
    """The controller's per-subgoal record: how often a dispatched subgoal was met."""
    acc: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    for r in rows:
        for s in r["subgoals"]:
            key = s["subgoal"].split(" ×")[0]
            acc[key][0] += s["outcome"] == "done"
            acc[key][1] += 1
            acc[key][2] += s["steps"]
    return {
        k: {"success_rate": d / n, "dispatched": n, "mean_steps": steps / n}
        for k, (d, n, steps) in sorted(acc.items())
    }


def summarize(suite, spec, probe, results: list[dict], wall: float, args) -> dict:
    from envs.crafter.techtree import RULES

    task_rows = [r for r in results if not r["job"]["balrog"]]
    balrog_rows = [r for r in results if r["job"]["balrog"]]
    by_task: dict[str, list[dict]] = defaultdict(list)
    for r in task_rows:
        by_task[r["task_id"]].append(r)
    tasks = {t.id: {"tier": t.tier, "budget": t.budget, **task_stats(by_task[t.id])} for t in suite.tasks}
    tiers = {}
    for tier in sorted({t.tier for t in suite.tasks}):
        rows = [r for t in suite.tasks if t.tier == tier for r in by_task[t.id]]
        tiers[str(tier)] = task_stats(rows)
    names = RULES().achievements
    rates = achievement_rates([r["achievements"] for r in task_rows], names)
    balrog = None
    if balrog_rows:
        b_rates = achievement_rates([r["achievements"] for r in balrog_rows], names)
        balrog = {
            "episodes": len(balrog_rows),
            "steps": 2000,
            "progress_percent": balrog_progress([r["achievements"] for r in balrog_rows], len(names)),
            "crafter_score": crafter_score(b_rates),
            "achievement_rates": b_rates,
        }
    planner, controller = probe["planner"], probe["controller"]
    env_version = _version("crafter") if spec.env == "crafter" else _version("minedojo")
    return {
        "suite": suite.name,
        "tasks": tasks,
        "tiers": tiers,
        "mean_success": float(np.mean([v["success_rate"] for v in tasks.values()])) if tasks else 0.0,
        "crafter_score": crafter_score(rates),
        "achievement_rates": rates,
        "balrog": balrog,
        "controller_subgoals": subgoal_stats(results),
        "episodes_per_s": len(results) / wall if wall > 0 else 0.0,
        "env_steps_per_s": sum(r["steps"] for r in results) / wall if wall > 0 else 0.0,
        "wall_s": wall,
        "config": {
            "env": {"name": spec.env, "version": env_version, "kwargs": _env_kwargs(spec.env)},
            "suite": spec.suite,
            "seeds": [args.seed + i for i in range(args.episodes)],
            "balrog_seeds": [args.seed + 10_000 + i for i in range(args.balrog)],
            "budgets": {t.id: t.budget if args.budget is None else args.budget for t in suite.tasks},
            "episodes": args.episodes,
            "workers": args.workers,
            "max_replans": spec.max_replans,
            "planner": planner.describe(),
            "controller": controller.describe(),
            "memory": spec.memory,
            "privileged_observation_used": bool(planner.uses_privileged or controller.uses_privileged),
        },
    }


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _env_kwargs(env: str) -> dict:
    if env == "crafter":
        from envs.crafter.env import CrafterConfig

        return asdict(CrafterConfig())
    return {}


def report_markdown(summary: dict) -> str:
    cfg = summary["config"]
    lines = [
        f"# {summary['suite']}: planner {cfg['planner'].get('name')} + controller {cfg['controller'].get('name')}",
        "",
        f"{cfg['episodes']} episodes per task (seeds {cfg['seeds'][0]}–{cfg['seeds'][-1]}), env "
        f"{cfg['env']['name']} {cfg['env']['version']}, privileged observation used: "
        f"{cfg['privileged_observation_used']}. {summary['episodes_per_s']:.3f} episodes/s with "
        f"{cfg['workers']} worker(s) ({summary['env_steps_per_s']:.0f} env steps/s).",
        "",
    ]
    rows = [
        [tid, v["tier"], v["success_rate"], f"[{v['ci95'][0]:.2f}, {v['ci95'][1]:.2f}]", v["mean_steps"],
         v["replans_mean"], v["deaths"], v["llm_calls_per_episode"]]
        for tid, v in summary["tasks"].items()
    ]  # fmt: skip
    lines.append(
        markdown_table(
            rows, ["task", "tier", "success", "95% CI", "mean steps", "re-plans", "deaths", "LLM calls"]
        )
    )
    tier_rows = [
        [t, v["success_rate"], f"[{v['ci95'][0]:.2f}, {v['ci95'][1]:.2f}]", v["episodes"]]
        for t, v in summary["tiers"].items()
    ]
    lines += ["## Tiers", "", markdown_table(tier_rows, ["tier", "success", "95% CI", "episodes"])]
    lines += [
        f"Crafter score over these episodes: **{summary['crafter_score']:.2f} %** "
        "(geometric mean of the 22 achievement rates, `exp(mean ln(1 + s_i)) − 1`).",
        "",
    ]
    if summary["balrog"]:
        b = summary["balrog"]
        lines += [
            f"BALROG protocol ({b['episodes']} open-ended {b['steps']}-step episodes): progress "
            f"**{b['progress_percent']:.1f} %** (unlocked / 22), Crafter score {b['crafter_score']:.2f} %.",
            "",
        ]
    sub_rows = [
        [k, v["success_rate"], v["dispatched"], v["mean_steps"]]
        for k, v in summary["controller_subgoals"].items()
    ]
    lines += [
        "## Controller, per subgoal",
        "",
        markdown_table(sub_rows, ["subgoal", "met", "dispatched", "mean steps"]),
    ]
    return "\n".join(lines)


@never_raises()
def success_plot(summary: dict, path: Path) -> Path:
    """Success rate per task with its 95 % Wilson interval as the error bar."""
    from telos.plots import new_figure, save_figure

    names = list(summary["tasks"])
    v = [summary["tasks"][n] for n in names]
    rates = np.array([x["success_rate"] for x in v], dtype=float)
    # matplotlib rejects a negative error; a bound a rounding error inside the rate is 0
    lo = np.clip(rates - np.array([x["ci95"][0] for x in v], dtype=float), 0.0, None)
    hi = np.clip(np.array([x["ci95"][1] for x in v], dtype=float) - rates, 0.0, None)
    fig = new_figure(figsize=(max(6.0, 0.7 * len(names) + 2), 4.4))
    ax = fig.add_subplot()
    colors = [f"C{x['tier'] % 10}" for x in v]
    # lists, not a (2, N) array: with one bar matplotlib turns that array into a scalar (a
    # NumPy deprecation, an error in later releases)
    ax.bar(range(len(names)), rates, yerr=[lo.tolist(), hi.tolist()], color=colors, capsize=3)
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=35, ha="right")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("success rate (95 % Wilson CI)")
    cfg = summary["config"]
    ax.set_title(f"{summary['suite']}: {cfg['planner'].get('name')} + {cfg['controller'].get('name')}")
    ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, path)


@never_raises()
def write_gif(frames: list, path: Path, max_frames: int = 300, scale: int = 4) -> Path:
    """Frames (image, caption) → an animated GIF, the caption drawn on a strip above each."""
    from PIL import Image, ImageDraw

    stride = max(1, len(frames) // max_frames)
    images = []
    for image, caption in frames[::stride]:
        img = Image.fromarray(np.asarray(image, dtype=np.uint8)).resize(
            (image.shape[1] * scale, image.shape[0] * scale), Image.NEAREST
        )
        canvas = Image.new("RGB", (img.width, img.height + 18), "black")
        canvas.paste(img, (0, 18))
        ImageDraw.Draw(canvas).text((3, 3), caption, fill="white")
        images.append(canvas)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:], duration=80, loop=0)
    tmp.replace(path)
    return path


def write_outputs(out: Path, suite, spec, probe, results: list[dict], wall: float, args) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    recordings = [(r, r["frames"]) for r in results if r["frames"]]
    for r in results:
        r["frames"] = []  # images are not JSON
    summary = summarize(suite, spec, probe, results, wall, args)
    # the numbers first: nothing after these two lines can lose a finished evaluation
    write_json(out / "results.json", summary)
    write_json(out / "episodes.json", {"episodes": results})
    write_text(out / "report.md", report_markdown(summary))
    success_plot(summary, out / "success.png")
    for r, frames in recordings:
        write_gif(frames, out / "episodes" / f"{r['task_id']}-seed{r['seed']}.gif")
    return summary
