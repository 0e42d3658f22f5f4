"""results.json, report.md and success.png for ``telos eval agent`` (text-world episodes)."""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from pathlib import Path

from eval.agent_metrics import wilson_interval
from eval.report import markdown_table, write_json, write_text
from telos.plots import never_raises


def mean_interval(values: list[float]) -> tuple[float, float]:
    """Mean and the half-width of its 95 % normal interval, 1.96·s/√n (0 for fewer than 2)."""
    if not values:
        return 0.0, 0.0
    mean = statistics.fmean(values)
    half = 1.96 * statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else 0.0
    return mean, half


def summarize(config: dict, records: list[dict], wall: float) -> dict:
    n = len(records)
    wins = sum(r["won"] for r in records)
    score, half = mean_interval([r["normalized_score"] for r in records])
    by_game: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        by_game[r["game_id"]].append(r)
    finishes: dict[str, int] = defaultdict(int)
    for r in records:
        finishes[r["finish"]] += 1
    return {
        "config": config,
        "episodes": n,
        "success_rate": wins / n if n else 0.0,
        "success_ci95": [round(x, 4) for x in wilson_interval(wins, n)],
        "score_mean": score,
        "score_ci95_half": half,
        "turns_mean": statistics.fmean(r["turns"] for r in records) if records else 0.0,
        "finish_counts": dict(finishes),
        "episodes_per_s": n / wall if wall > 0 else None,
        "wall_seconds": wall,
        "games": {
            g: {
                "success_rate": sum(r["won"] for r in rs) / len(rs),
                "score_mean": statistics.fmean(r["normalized_score"] for r in rs),
                "episodes": len(rs),
            }
            for g, rs in by_game.items()
        },
    }


def report_markdown(summary: dict) -> str:
    cfg = summary["config"]
    lo, hi = summary["success_ci95"]
    rows = [
        ["success rate", f"{summary['success_rate']:.3f} [{lo:.3f}, {hi:.3f}]"],
        ["score / max score", f"{summary['score_mean']:.3f} ± {summary['score_ci95_half']:.3f}"],
        ["turns per episode", f"{summary['turns_mean']:.2f}"],
        ["episodes", summary["episodes"]],
        ["episodes / s", summary["episodes_per_s"]],
    ]
    finish = [[k, v] for k, v in sorted(summary["finish_counts"].items())]
    return "\n".join(
        [
            f"# telos eval agent: {cfg['actor']}",
            "",
            f"`{cfg['env']}`, {cfg['games']} games × {cfg['episodes']} episodes, temperature "
            f"{cfg['temperature']}, {cfg['workers']} worker(s). Intervals are 95 % (Wilson for the "
            "success rate, 1.96·s/√n for the score).",
            "",
            markdown_table(rows, ["metric", "value"]),
            "How episodes ended:",
            "",
            markdown_table(finish, ["finish", "episodes"]),
        ]
    )


@never_raises()
def success_plot(summary: dict, path: Path) -> Path:
    """Success rate and normalised score with their 95 % intervals."""
    from telos.plots import new_figure, save_figure

    rate, (lo, hi) = summary["success_rate"], summary["success_ci95"]
    score, half = summary["score_mean"], summary["score_ci95_half"]
    fig = new_figure(figsize=(5.0, 4.2))
    ax = fig.add_subplot()
    errs = [[max(0.0, rate - lo), half], [max(0.0, hi - rate), half]]
    ax.bar([0, 1], [rate, score], yerr=errs, color=["C0", "C1"], capsize=4)
    ax.set_xticks([0, 1])
    ax.set_xticklabels(["success rate", "score / max"])
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("95 % interval")
    ax.set_title(f"{Path(summary['config']['actor']).name}: {summary['episodes']} episodes")
    ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, path)


def write_outputs(out: Path, config: dict, records: list[dict], wall: float) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    summary = summarize(config, records, wall)
    write_json(out / "results.json", {"summary": summary, "episodes": records})
    write_text(out / "report.md", report_markdown(summary))
    success_plot(summary, out / "success.png")
    return summary
