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


def by_trial(records: list[dict]) -> list[dict]:
    """Per trial t (1-based): the share of (game, episode) attempts solved by trial t, with its
    Wilson interval, and the mean best score so far (a game solved earlier is not replayed)."""
    attempts: dict[tuple[str, int], list[dict]] = defaultdict(list)
    for r in records:
        attempts[(r["game_id"], r["episode"])].append(r)
    trials = 1 + max((r.get("trial", 0) for r in records), default=0)
    n, out = len(attempts), []
    for t in range(trials):
        solved, scores = 0, []
        for rs in attempts.values():
            upto = [r for r in rs if r.get("trial", 0) <= t]
            solved += any(r["won"] for r in upto)
            scores.append(max((r["normalized_score"] for r in upto), default=0.0))
        mean, half = mean_interval(scores)
        out.append(
            {
                "trial": t + 1,
                "success_rate": solved / n if n else 0.0,
                "success_ci95": [round(x, 4) for x in wilson_interval(solved, n)],
                "score_mean": mean,
                "score_ci95_half": half,
            }
        )
    return out


def _game_summary(records: list[dict]) -> dict:
    last = by_trial(records)[-1]
    return {"success_rate": last["success_rate"], "score_mean": last["score_mean"], "episodes": len(records)}


def summarize(config: dict, records: list[dict], wall: float) -> dict:
    """Success and score are per attempt (a game's episode), after its last trial."""
    trials = by_trial(records)
    last = (
        trials[-1]
        if trials
        else {"success_rate": 0.0, "success_ci95": [0.0, 0.0], "score_mean": 0.0, "score_ci95_half": 0.0}
    )
    by_game: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        by_game[r["game_id"]].append(r)
    finishes: dict[str, int] = defaultdict(int)
    for r in records:
        finishes[r["finish"]] += 1
    n = len(records)
    return {
        "config": config,
        "episodes": n,
        "attempts": len({(r["game_id"], r["episode"]) for r in records}),
        "success_rate": last["success_rate"],
        "success_ci95": last["success_ci95"],
        "score_mean": last["score_mean"],
        "score_ci95_half": last["score_ci95_half"],
        "by_trial": trials,
        "turns_mean": statistics.fmean(r["turns"] for r in records) if records else 0.0,
        "finish_counts": dict(finishes),
        "episodes_per_s": n / wall if wall > 0 else None,
        "wall_seconds": wall,
        "games": {g: _game_summary(rs) for g, rs in by_game.items()},
    }


def report_markdown(summary: dict) -> str:
    cfg = summary["config"]
    lo, hi = summary["success_ci95"]
    rows = [
        ["success rate", f"{summary['success_rate']:.3f} [{lo:.3f}, {hi:.3f}]"],
        ["score / max score", f"{summary['score_mean']:.3f} ± {summary['score_ci95_half']:.3f}"],
        ["turns per episode", f"{summary['turns_mean']:.2f}"],
        ["attempts (game × episode)", summary["attempts"]],
        ["episodes played", summary["episodes"]],
        ["episodes / s", summary["episodes_per_s"]],
    ]
    finish = [[k, v] for k, v in sorted(summary["finish_counts"].items())]
    trials = [
        [t["trial"], f"{t['success_rate']:.3f} [{t['success_ci95'][0]:.3f}, {t['success_ci95'][1]:.3f}]",
         f"{t['score_mean']:.3f} ± {t['score_ci95_half']:.3f}"]
        for t in summary["by_trial"]
    ]  # fmt: skip
    models = [f"strategist `{cfg['strategist']}`" if cfg.get("strategist") else "",
              f"retrospective `{cfg['retrospective']}`" if cfg.get("retrospective") else ""]  # fmt: skip
    by_trial_md = (
        ["Solved by trial (a game solved earlier is not replayed):", "",
         markdown_table(trials, ["trial", "success rate [95 %]", "best score so far"])]
        if len(trials) > 1 else []
    )  # fmt: skip
    return "\n".join(
        [
            f"# telos eval agent: {cfg['actor']}",
            "",
            f"`{cfg['env']}`, {cfg['games']} games × {cfg['episodes']} episodes, temperature "
            f"{cfg['temperature']}, {cfg['workers']} worker(s). Intervals are 95 % (Wilson for the "
            "success rate, 1.96·s/√n for the score)." + "".join(f" With {m}." for m in models if m),
            "",
            markdown_table(rows, ["metric", "value"]),
            *by_trial_md,
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
    trials = summary["by_trial"]
    if len(trials) > 1:  # success by trial, as the Reflexion / Retroformer papers plot it
        xs = [t["trial"] for t in trials]
        ys = [t["success_rate"] for t in trials]
        lo_hi = [
            [y - t["success_ci95"][0] for y, t in zip(ys, trials, strict=True)],
            [t["success_ci95"][1] - y for y, t in zip(ys, trials, strict=True)],
        ]
        ax.errorbar(xs, ys, yerr=lo_hi, marker="o", capsize=4)
        ax.set_xticks(xs)
        ax.set_xlabel("trial")
        ax.set_ylabel("success rate (95 % Wilson)")
        ax.set_ylim(0, 1.05)
        ax.set_title(f"{Path(summary['config']['actor']).name}: {summary['attempts']} attempts")
        ax.grid(True, alpha=0.3)
        fig.tight_layout()
        return save_figure(fig, path)
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
