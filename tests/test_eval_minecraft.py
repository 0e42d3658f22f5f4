"""``telos eval minecraft``: suite files checked with one-line errors, a small end-to-end run with
one and two workers (results.json, report.md, success.png, a GIF, the plan memory), and bad
command lines that exit 2 with one ``error:`` line."""

from __future__ import annotations

import contextlib
import io
import json
import sys
from pathlib import Path

import pytest
import yaml

pytest.importorskip("crafter")

from envs.crafter.techtree import RULES  # noqa: E402
from eval.suites import available_suites, load_suite  # noqa: E402
from telos.cli import main  # noqa: E402
from telos.errors import UserError  # noqa: E402

TWO_TASKS = {
    "name": "two-tasks",
    "env": "crafter",
    "tasks": [
        {"id": "collect_wood", "goal": {"achievement": "collect_wood"}, "tier": 1, "budget": 300},
        {"id": "place_table", "goal": {"achievement": "place_table"}, "tier": 1, "budget": 500},
    ],
}


def _write(tmp_path: Path, data, name: str = "suite.yaml") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
    return path


def _task(**overrides) -> dict:
    task = {"id": "t", "goal": {"achievement": "collect_wood"}, "tier": 1, "budget": 100}
    task.update(overrides)
    return {k: v for k, v in task.items() if v is not ...}


# ----------------------------------------------------------------------------- suites


def test_shipped_suite_loads():
    assert "crafter-techtree" in available_suites()
    suite = load_suite("crafter-techtree", RULES().achievements)
    assert suite.name == "crafter-techtree" and suite.env == "crafter"
    assert suite.tasks[0].id == "collect_wood" and len(suite.tasks) == 10
    assert all(t.achievement in RULES().achievements for t in suite.tasks)


def test_user_suite_with_two_tasks_loads(tmp_path):
    data = {
        "name": "mine",
        "tasks": [
            {"id": "wood", "goal": {"achievement": "collect_wood"}, "tier": 1, "budget": 300},
            {"id": "stash", "goal": {"inventory": {"wood": 3, "sapling": 1}}, "tier": 2, "budget": 400},
        ],
    }
    suite = load_suite(str(_write(tmp_path, data)), RULES().achievements)
    assert suite.name == "mine" and suite.env == "crafter"  # env defaults to crafter
    wood, stash = suite.tasks
    assert (wood.id, wood.achievement, wood.tier, wood.budget) == ("wood", "collect_wood", 1, 300)
    assert (stash.achievement, stash.inventory, stash.budget) == (None, {"wood": 3, "sapling": 1}, 400)
    assert wood.done(["collect_wood"], {}) and not wood.done([], {"wood": 5})
    assert stash.done([], {"wood": 3, "sapling": 1}) and not stash.done([], {"wood": 9})


def test_unknown_suite_name():
    with pytest.raises(UserError, match=r"unknown suite 'no-such-suite'; valid: .*crafter-techtree"):
        load_suite("no-such-suite")


@pytest.mark.parametrize(
    "data, message",
    [
        ({"name": "x"}, r"'tasks' must be a non-empty list"),
        ({"tasks": []}, r"'tasks' must be a non-empty list"),
        ({"tasks": [_task(budget=...)]}, r"task 0: needs id, goal, tier and budget"),
        ({"tasks": [_task(), _task(id="u", goal=...)]}, r"task 1: needs id, goal, tier and budget"),
        ({"tasks": ["collect_wood"]}, r"task 0: needs id, goal, tier and budget"),
        ({"tasks": [_task(goal="collect_wood")]}, r"goal must be \{achievement: NAME\}"),
        ({"tasks": [_task(goal={"reach": "x"})]}, r"goal must be \{achievement: NAME\}"),
        (
            {"tasks": [_task(goal={"achievement": "collect_wood", "inventory": {"wood": 1}})]},
            r"goal must be \{achievement: NAME\} or \{inventory: \{ITEM: COUNT\}\}",
        ),
        ({"tasks": [_task(budget=0)]}, r"budget a positive integer"),
        ({"tasks": [_task(tier="one")]}, r"tier must be an integer"),
        ({"tasks": [_task(goal={"inventory": {"wood": 0}})]}, r"maps items to positive counts"),
        ({"tasks": [_task(goal={"inventory": ["wood"]})]}, r"maps items to positive counts"),
        ({"tasks": [_task(id="a"), _task(id="b"), _task(id="a")]}, r"task 2: duplicate task id 'a'"),
        (
            {"tasks": [_task(goal={"achievement": "collect_unicorn"})]},
            r"unknown achievement 'collect_unicorn'; valid: .*collect_wood",
        ),
    ],
)
def test_bad_suite_files(tmp_path, data, message):
    path = _write(tmp_path, data, "bad.yaml")
    with pytest.raises(UserError, match=message) as info:
        load_suite(str(path), RULES().achievements)
    assert "\n" not in str(info.value)
    assert "bad.yaml" in str(info.value)  # the message names the file


def test_suite_file_that_is_not_yaml(tmp_path):
    path = _write(tmp_path, "tasks: [unclosed\n", "broken.yaml")
    with pytest.raises(UserError, match="not valid YAML"):
        load_suite(str(path))


@pytest.mark.parametrize("goal", [{"achievement": None}, {"inventory": {}}])
def test_empty_goal_is_rejected(tmp_path, goal):
    path = _write(tmp_path, {"tasks": [_task(goal=goal)]}, "empty.yaml")
    with pytest.raises(UserError, match="goal"):
        load_suite(str(path), RULES().achievements)


# ----------------------------------------------------------------------------- end to end


def _eval(directory: Path, workers: int) -> Path:
    suite = _write(directory, TWO_TASKS)
    out = directory / f"out-w{workers}"
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = main(
            ["eval", "minecraft", "--suite", str(suite), "--episodes", "2", "--workers", str(workers),
             "--record", "1", "--out", str(out), "--memory", str(directory / f"memory-w{workers}.jsonl")]
        )  # fmt: skip
    assert code == 0
    assert f"done: {out}/results.json" in stdout.getvalue()
    return out


def _check_outputs(out: Path, workers: int) -> dict:
    results = json.loads((out / "results.json").read_text())
    assert set(results["tasks"]) == {"collect_wood", "place_table"}
    for task in results["tasks"].values():
        for key in ("success_rate", "ci95", "mean_steps", "episodes"):
            assert key in task, key
        assert task["episodes"] == 2
        assert task["success_rate"] == 1.0  # the oracle + scripted skills on these two tasks
        lo, hi = task["ci95"]
        assert 0.0 <= lo < task["success_rate"] <= hi <= 1.0
        assert task["mean_steps"] > 0
    assert isinstance(results["crafter_score"], float) and 0 < results["crafter_score"] <= 100
    assert results["episodes_per_s"] > 0
    cfg = results["config"]
    assert cfg["env"]["name"] == "crafter" and cfg["env"]["version"]
    assert cfg["seeds"] == [0, 1]
    assert cfg["planner"]["name"] == "oracle" and cfg["controller"]["name"] == "scripted"
    assert cfg["privileged_observation_used"] is False
    assert cfg["workers"] == workers and cfg["episodes"] == 2
    assert (out / "report.md").is_file() and (out / "success.png").stat().st_size > 0
    report = (out / "report.md").read_text()
    assert "collect_wood" in report and "place_table" in report and "95% CI" in report
    gifs = list((out / "episodes").glob("*.gif"))
    assert [g.name for g in gifs] == ["collect_wood-seed0.gif"]  # --record 1: the first job
    assert gifs[0].read_bytes()[:6] in (b"GIF89a", b"GIF87a")
    return results


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """One run of the 2-task suite with one worker, shared by the end-to-end tests."""
    directory = tmp_path_factory.mktemp("eval-minecraft")
    _eval(directory, 1)
    return directory


def _episodes(out: Path) -> list[tuple]:
    eps = json.loads((out / "episodes.json").read_text())["episodes"]
    return [(e["task_id"], e["seed"], e["success"], e["steps"]) for e in eps]


def test_eval_minecraft_one_worker(run_dir):
    out = run_dir / "out-w1"
    _check_outputs(out, 1)
    episodes = json.loads((out / "episodes.json").read_text())["episodes"]
    assert [(e["task_id"], e["seed"]) for e in episodes] == [
        ("collect_wood", 0), ("place_table", 0), ("collect_wood", 1), ("place_table", 1)
    ]  # fmt: skip
    assert all(e["frames"] == [] for e in episodes)  # frames went to the GIF, not the JSON
    memory = [json.loads(m) for m in (run_dir / "memory-w1.jsonl").read_text().splitlines()]
    assert len(memory) >= 2 and {m["task"] for m in memory} == {"collect_wood", "place_table"}
    assert all(m["success"] for m in memory)


def test_eval_minecraft_two_workers_matches_one(run_dir):
    out2 = _eval(run_dir, 2)
    _check_outputs(out2, 2)
    # same worlds, same agent, whatever the worker count
    assert _episodes(out2) == _episodes(run_dir / "out-w1")
    # and the memory merged in the parent process is the same too
    assert (run_dir / "memory-w2.jsonl").read_text() == (run_dir / "memory-w1.jsonl").read_text()


# ----------------------------------------------------------------------------- bad command lines


def _one_error_line(capsys, argv: list[str], *must_name: str) -> str:
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    for word in must_name:
        assert word in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize(
    "extra, must_name",
    [
        (["--planner", "foo"], ["planner 'foo'", "oracle"]),
        (["--controller", "foo"], ["controller 'foo'", "scripted"]),
        (["--controller", "learned:/no/such/dir"], ["/no/such/dir"]),
        (["--env", "mars"], ["--env 'mars'", "crafter, minedojo"]),
        (["--suite", "no-such-suite"], ["unknown suite 'no-such-suite'"]),
        (["--episodes", "0"], ["--episodes"]),
        (["--planner-option", "temperature"], ["KEY=VALUE"]),
    ],
)
def test_bad_options_are_one_error_line(tmp_path, capsys, monkeypatch, extra, must_name):
    monkeypatch.delenv("TELOS_DEBUG", raising=False)
    out = tmp_path / "out"
    _one_error_line(capsys, ["eval", "minecraft", "--out", str(out), *extra], *must_name)
    assert not out.exists()  # failed before any work


def test_minedojo_not_installed_is_one_error_line(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("TELOS_DEBUG", raising=False)
    monkeypatch.setitem(sys.modules, "minedojo", None)  # import minedojo → ImportError
    out = tmp_path / "out"
    _one_error_line(capsys, ["eval", "minecraft", "--env", "minedojo", "--out", str(out)], "MineDojo", "pip")
    assert not out.exists()
