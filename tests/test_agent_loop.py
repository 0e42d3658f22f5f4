"""The planner → controller loop in the real Crafter: success with the oracle, re-planning after
a failed subgoal, a planner that never plans, the plan kept for memory, and recorded play data
in the form the GCBC trainer loads."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("crafter")

from agents.loop import run_episode  # noqa: E402
from agents.planners import OraclePlanner  # noqa: E402
from agents.scripted import ScriptedController  # noqa: E402
from agents.types import Goal, Planner, PlanRequest, PlanResult  # noqa: E402
from envs.crafter.env import CrafterEnv  # noqa: E402
from envs.crafter.techtree import Subgoal, oracle_plan  # noqa: E402
from eval.crafter_play import RecordingController, collect_play  # noqa: E402


@pytest.fixture(scope="module")
def env() -> CrafterEnv:
    return CrafterEnv()


def _achieved(name: str):
    return lambda view: name in view.achievements


class BadFirstPlanner(Planner):
    """First plan: `make wood_pickaxe` from nothing (no wood, no table); later: the oracle."""

    name = "bad-first"

    def __init__(self) -> None:
        self.requests: list[PlanRequest] = []
        self.oracle = OraclePlanner()

    def plan(self, request: PlanRequest) -> PlanResult:
        self.requests.append(request)
        if len(self.requests) == 1:
            return PlanResult([Subgoal("make", "wood_pickaxe")], text="1. make wood_pickaxe")
        return self.oracle.plan(request)


class EmptyPlanner(Planner):
    name = "empty"

    def __init__(self) -> None:
        self.calls = 0

    def plan(self, request: PlanRequest) -> PlanResult:
        self.calls += 1
        return PlanResult([], text="I cannot help with that.", errors=["not a subgoal: 'I cannot help'"])


def test_oracle_and_scripted_collect_wood(env):
    goal = Goal("collect_wood", "collect_wood")
    result = run_episode(
        env, goal, _achieved("collect_wood"), OraclePlanner(), ScriptedController(), seed=0, budget=300
    )
    assert result.success and not result.died
    assert 0 < result.steps <= 300
    assert "collect_wood" in result.achievements
    assert result.replans == 0 and result.plan_failures == 0 and result.llm_calls == 0
    assert [r.subgoal for r in result.subgoals] == ["collect tree"]
    assert result.task_id == "collect_wood" and result.seed == 0
    # the plan that succeeded is returned for the memory
    mem = result.new_memory
    assert mem is not None and mem.success
    assert mem.task == "collect_wood"
    assert mem.plan == tuple(str(s) for s in oracle_plan("collect_wood")) == ("collect tree",)
    assert mem.state.startswith("You see:")  # the observation text it was planned from
    assert result.frames == []  # not recording


def test_replans_after_a_failed_subgoal(env):
    planner = BadFirstPlanner()
    goal = Goal("make_wood_pickaxe", "make_wood_pickaxe")
    result = run_episode(
        env, goal, _achieved("make_wood_pickaxe"), planner, ScriptedController(), seed=0, budget=800
    )
    assert result.success and "make_wood_pickaxe" in result.achievements
    assert result.replans >= 1 and len(planner.requests) >= 2
    assert result.plan_failures == 0
    assert planner.requests[0].failure is None
    failure = planner.requests[1].failure
    assert failure is not None and "make wood_pickaxe" in failure and "failed" in failure, failure
    first = result.subgoals[0]
    assert (first.subgoal, first.outcome) == ("make wood_pickaxe", "failed")
    assert "wood" in first.reason
    # the memory keeps the plan that worked, not the failed one
    assert result.new_memory is not None
    assert result.new_memory.plan[-1] == "make wood_pickaxe" and len(result.new_memory.plan) > 1


def test_planner_without_a_plan_ends_the_episode_unsuccessfully(env):
    planner = EmptyPlanner()
    goal = Goal("collect_wood", "collect_wood")
    result = run_episode(
        env, goal, _achieved("collect_wood"), planner, ScriptedController(), seed=0, budget=300, max_replans=2
    )
    assert not result.success and not result.died
    assert result.plan_failures >= 1
    assert planner.calls == result.plan_failures == 3  # the first plan and max_replans re-plans
    assert result.steps == 0 and result.subgoals == []
    assert result.new_memory is None


def test_recording_a_short_episode_keeps_frames(env):
    goal = Goal("collect_wood", "collect_wood")
    result = run_episode(
        env, goal, _achieved("collect_wood"), OraclePlanner(), ScriptedController(), 1, 300, record=True
    )
    assert result.success
    assert len(result.frames) == result.steps + 1
    image, caption = result.frames[-1]
    assert image.dtype == np.uint8 and image.ndim == 3
    assert caption == "collect_wood: collect tree"


def test_recording_controller_and_collect_play_load_as_play_data(tmp_path):
    from trainers.agents.gcbc import load_play_data

    data = collect_play(episodes=2, suite="crafter-techtree", noise=0.2, seed=0)
    expected = {
        "views": np.int8,
        "inventory": np.int8,
        "facing": np.int8,
        "actions": np.int8,
        "commanded": np.int16,
        "noise": np.bool_,
        "events": np.int16,
        "episode": np.int32,
    }
    assert set(data) == set(expected)
    t = len(data["actions"])
    assert t > 0
    for key, dtype in expected.items():
        assert data[key].dtype == dtype, key
        assert len(data[key]) == t, key
    assert set(np.unique(data["episode"])) == {0, 1}
    assert data["noise"].any()  # 20 % noise over > 10 steps
    assert (data["commanded"][data["noise"]] == -1).all()  # noise steps are never commanded
    assert (data["events"] >= 0).any()  # wood was collected on the way

    path = tmp_path / "play.npz"
    np.savez(path, **data)
    play = load_play_data(str(path))
    assert len(play) == t
    assert play.views.shape[0] == t and play.facing is not None and len(play.facing) == t
    np.testing.assert_array_equal(play.actions, data["actions"])
    np.testing.assert_array_equal(play.events, data["events"])


def test_recording_controller_records_every_step(env):
    rec = RecordingController(ScriptedController(), noise=0.0, seed=0)
    goal = Goal("place_table", "place_table")
    result = run_episode(env, goal, _achieved("place_table"), OraclePlanner(), rec, seed=0, budget=500)
    assert result.success
    lengths = {k: len(v) for k, v in rec.rows.items()}
    assert set(lengths.values()) == {result.steps}, lengths
    assert not any(rec.rows["noise"])
    assert rec.rows["events"][-1] >= 0  # the last step placed the table
