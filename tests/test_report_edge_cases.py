"""Report writers over edge cases: 0 %, 100 %, one episode, no tasks or tiers, empty and
degenerate plot data. A report step never loses finished numbers and never prints a traceback:
every test here also checks that nothing fell back to the ``warning:`` path."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest

from eval.agent_metrics import wilson_interval
from eval.minecraft_report import report_markdown, success_plot, task_stats
from eval.report import markdown_table, write_json
from telos.plots import bar_chart, line_chart, never_raises, plot_metrics

Z2 = 1.959964**2


def test_wilson_interval_contains_the_rate_at_0_and_100_percent():
    # p = 1: the bounds are n / (n + z²) and exactly 1 (10/10 used to give 0.9999999999999999)
    lo, hi = wilson_interval(10, 10)
    assert hi == 1.0 and lo == pytest.approx(10 / (10 + Z2))  # 0.72247
    # p = 0 with one episode: exactly 0 and z² / (1 + z²) = 0.79345
    lo, hi = wilson_interval(0, 1)
    assert lo == 0.0 and hi == pytest.approx(Z2 / (1 + Z2))
    for n in range(1, 61):
        for k in range(n + 1):
            lo, hi = wilson_interval(k, n)
            assert 0.0 <= lo <= k / n <= hi <= 1.0, (k, n, lo, hi)


def _summary(tasks: dict[str, tuple[int, int, int]]) -> dict:
    """A minecraft summary over tasks ``{id: (tier, successes, episodes)}``, built with the
    report's own ``task_stats``."""

    def rows(k: int, n: int) -> list[dict]:
        return [
            {"success": i < k, "steps": 10 + i, "replans": 0, "plan_failures": 0, "died": False,
             "llm_calls": 0, "prompt_tokens": 0, "completion_tokens": 0}
            for i in range(n)
        ]  # fmt: skip

    stats = {t: {"tier": tier, "budget": 100, **task_stats(rows(k, n))} for t, (tier, k, n) in tasks.items()}
    tiers = {}
    for tier in sorted({v["tier"] for v in stats.values()}):
        tiers[str(tier)] = task_stats(
            [r for t, (ti, k, n) in tasks.items() if ti == tier for r in rows(k, n)]
        )
    return {
        "suite": "edge",
        "tasks": stats,
        "tiers": tiers,
        "crafter_score": 0.0,
        "balrog": None,
        "controller_subgoals": {},
        "episodes_per_s": 0.0,
        "env_steps_per_s": 0.0,
        "config": {
            "planner": {"name": "oracle"},
            "controller": {"name": "scripted"},
            "episodes": 1,
            "seeds": [0],
            "env": {"name": "crafter", "version": None},
            "workers": 1,
            "privileged_observation_used": False,
        },
    }


@pytest.mark.parametrize(
    "tasks",
    [
        {"wood": (1, 10, 10), "table": (2, 0, 10)},  # 100 % and 0 %
        {"wood": (1, 1, 1)},  # one episode, won
        {"wood": (1, 0, 1)},  # one episode, lost
        {},  # no tasks, no tiers
    ],
    ids=["100-and-0", "one-won", "one-lost", "empty"],
)
def test_minecraft_report_and_plot_over_edge_cases(tmp_path, capsys, tasks):
    summary = _summary(tasks)
    md = report_markdown(summary)
    assert "## Tiers" in md
    path = success_plot(summary, tmp_path / "success.png")
    assert path == tmp_path / "success.png" and path.stat().st_size > 0
    assert "warning:" not in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir()] == ["success.png"]  # no temporary file left


@pytest.mark.skipif(importlib.util.find_spec("crafter") is None, reason="needs crafter")
def test_eval_minecraft_with_a_task_at_10_of_10_writes_every_output(tmp_path, subprocess_env):
    """The reported failure: 10 episodes, one task always won → the success plot raised."""
    import subprocess

    suite = tmp_path / "suite.yaml"
    suite.write_text(
        "name: edge\nenv: crafter\ntasks:\n"
        "  - {id: collect_wood, goal: {achievement: collect_wood}, tier: 1, budget: 300}\n"
        "  - {id: place_table, goal: {achievement: place_table}, tier: 2, budget: 1}\n"
    )
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "telos", "eval", "minecraft", "--suite", str(suite), "--episodes", "10"]
    proc = subprocess.run(
        cmd + ["--out", str(out)], env=subprocess_env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "warning:" not in proc.stderr, proc.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert results["tasks"]["collect_wood"]["success_rate"] == 1.0
    assert results["tasks"]["collect_wood"]["ci95"][1] == 1.0
    assert results["tasks"]["place_table"]["success_rate"] == 0.0
    assert (out / "report.md").is_file() and (out / "success.png").stat().st_size > 0


def test_charts_over_degenerate_data(tmp_path, capsys):
    assert bar_chart({"pass@1": 0.0}, tmp_path / "zero.png", "t", "accuracy").is_file()
    assert bar_chart({"pass@1": 1.0, "pass@4": 1.0}, tmp_path / "one.png", "t", "accuracy").is_file()
    assert bar_chart({}, tmp_path / "empty.png", "t", "accuracy").is_file()
    assert line_chart({"auroc": ([0.5], [1.0])}, tmp_path / "point.png", "t", "x", "y").is_file()
    assert line_chart({}, tmp_path / "noline.png", "t", "x", "y").is_file()
    metrics = [{"step": 1, "loss": 0.0}, {"step": 2, "loss": math.nan}, {"step": 3, "reward": 1.0}]
    written = plot_metrics(
        metrics, tmp_path / "plots", {"loss": ["loss"], "reward": ["reward"], "none": ["x"]}
    )
    assert sorted(p.name for p in written) == ["loss.png", "reward.png"]
    assert plot_metrics([], tmp_path / "plots2", {"loss": ["loss"]}) == []
    assert "warning:" not in capsys.readouterr().err
    assert not [p for p in tmp_path.rglob(".*tmp*")]


def test_a_plot_that_cannot_be_drawn_is_one_warning_line(tmp_path, capsys):
    (tmp_path / "file").write_text("not a directory")
    assert bar_chart({"a": 1.0}, tmp_path / "file" / "x.png", "t", "y") is None
    err = capsys.readouterr().err
    assert err.startswith("warning: bar_chart failed") and err.count("\n") == 1 and "Traceback" not in err

    @never_raises(default=[])
    def broken() -> list:
        raise ValueError("'yerr' must not contain negative values")

    assert broken() == []
    assert "'yerr' must not contain negative values" in capsys.readouterr().err


def test_report_tables_and_json_over_empty_and_missing_values(tmp_path):
    table = markdown_table([], ["metric", "value"])
    assert table.splitlines()[0].startswith("| metric")
    table = markdown_table([["pass@1", None], ["maj@4", math.nan], ["n", 1]], ["metric", "value"])
    assert "n/a" in table and "nan" in table
    path = write_json(tmp_path / "r" / "results.json", {"metrics": {"pass@1": 0.0}})
    assert json.loads(path.read_text()) == {"metrics": {"pass@1": 0.0}}
    assert [p.name for p in path.parent.iterdir()] == ["results.json"]


def test_no_temporary_file_is_left_by_a_report(tmp_path):
    bar_chart({"a": 0.5}, tmp_path / "a.png", "t", "y")
    assert sorted(p.name for p in Path(tmp_path).iterdir()) == ["a.png"]
