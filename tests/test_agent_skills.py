"""The scripted controller's skills in the real Crafter, on fixed seeds: dead reckoning matches
the true position, each skill reaches its subgoal within a step bound (checked against the
game, not the agent's beliefs), a missing tool fails at once, and the agent side never sees
``info["privileged"]``."""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

import pytest

pytest.importorskip("crafter")

from agents.navigation import MOVES, SpatialMap  # noqa: E402
from agents.scripted import ScriptedController  # noqa: E402
from agents.types import AgentView  # noqa: E402
from envs.crafter.env import CrafterEnv, action_names, semantic_names  # noqa: E402
from envs.crafter.techtree import Subgoal  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
ACTIONS = action_names()


@pytest.fixture(scope="module")
def env() -> CrafterEnv:
    return CrafterEnv()


def _public(info: dict) -> dict:
    """``info`` without the privileged part: all an agent may be given."""
    return {k: v for k, v in info.items() if k != "privileged"}


class Episode:
    """An env + controller pair; the controller only ever gets AgentViews built from the
    public part of ``info``. The test keeps the full ``info`` to check the game's truth."""

    def __init__(self, env: CrafterEnv, seed: int) -> None:
        self.env = env
        obs, self.info = env.reset(seed=seed)
        self.view = AgentView.from_env(obs, _public(self.info))
        self.ctrl = ScriptedController()
        self.ctrl.reset()
        self.ctrl.observe(self.view, None)
        self.steps = 0
        self.died = False

    def step(self, action: int | str) -> None:
        action = action if isinstance(action, int) else ACTIONS.index(action)
        obs, _, terminated, _, self.info = self.env.step(action)
        self.steps += 1
        self.view = AgentView.from_env(obs, _public(self.info))
        self.ctrl.observe(self.view, action)
        self.died = self.died or terminated

    def run(self, subgoal: Subgoal, bound: int):
        """Work on ``subgoal`` until done, failed, dead or ``bound`` steps; → (status, steps)."""
        self.ctrl.start(subgoal, self.view)
        for n in range(bound + 1):
            status = self.ctrl.status(self.view)
            if status.state != "running" or self.died or n == bound:
                return status, n
            self.step(self.ctrl.act(self.view))
        raise AssertionError("unreachable")

    @property
    def inventory(self) -> dict[str, int]:  # the game's own inventory, not the agent's memory
        return self.env._env._player.inventory

    @property
    def achievements(self) -> set[str]:
        return {k for k, v in self.env._env._player.achievements.items() if v > 0}


# ----------------------------------------------------------------------------- dead reckoning


@pytest.mark.parametrize("seed", [0, 1])
def test_dead_reckoning_matches_the_true_position(env, seed):
    """≥ 600 random actions (moves into walls, water and creatures, `do`, placing, and sleep:
    moves while asleep do nothing); the map's position is the true one relative to the start
    at every step. A death starts the world again (and a fresh map)."""
    rng = random.Random(seed)
    choices = list(MOVES) * 4 + ["sleep"] * 2 + ["do", "noop"] + ACTIONS[7:]
    total = moved = blocked = asleep_moves = 0
    while total < 600:
        obs, info = env.reset(seed=seed)
        start = info["privileged"]["player_pos"]
        view, m = AgentView.from_env(obs, _public(info)), SpatialMap()
        assert m.pos == (0, 0)
        while total < 600:
            action = rng.choice(choices)
            obs, _, terminated, _, info = env.step(action)
            total += 1
            before = m.pos
            m.apply(view, action)
            true = info["privileged"]["player_pos"]
            assert m.pos == (true[0] - start[0], true[1] - start[1]), (
                f"step {total}: {action} from {before} (asleep={view.sleeping}) → map {m.pos}, "
                f"true {(true[0] - start[0], true[1] - start[1])}"
            )
            if action in MOVES:
                if view.sleeping:
                    asleep_moves += 1
                elif m.pos != before:
                    moved += 1
                else:
                    blocked += 1
            view = AgentView.from_env(obs, _public(info))
            m.observe(view)
            if terminated:
                break
    # the walk exercised every branch of the dead reckoning
    assert moved > 100 and blocked > 5 and asleep_moves > 5, (moved, blocked, asleep_moves)


# ----------------------------------------------------------------------------- skills


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_scripted_skills_wood_to_stone(env, seed):
    """collect tree ×3 → place table → make wood_pickaxe → collect stone, each within a step
    bound, each checked against the game's inventory, achievements and world."""
    ep = Episode(env, seed)

    status, n = ep.run(Subgoal("collect", "tree", 3), bound=150)
    assert status.state == "done" and not ep.died, (status, n)
    assert ep.inventory["wood"] >= 3 and "collect_wood" in ep.achievements

    wood = ep.inventory["wood"]
    status, n = ep.run(Subgoal("place", "table"), bound=40)
    assert status.state == "done" and not ep.died, (status, n)
    assert "place_table" in ep.achievements
    assert ep.inventory["wood"] == wood - 2  # a table costs 2 wood
    # a table stands next to the player in the world
    names = semantic_names(env._env)
    px, py = ep.info["privileged"]["player_pos"]
    semantic = ep.info["privileged"]["semantic"]
    around = {names[int(semantic[px + dx, py + dy])] for dx in (-1, 0, 1) for dy in (-1, 0, 1)}
    assert "table" in around

    status, n = ep.run(Subgoal("make", "wood_pickaxe"), bound=40)
    assert status.state == "done" and not ep.died, (status, n)
    assert ep.inventory["wood_pickaxe"] >= 1 and "make_wood_pickaxe" in ep.achievements

    status, n = ep.run(Subgoal("collect", "stone"), bound=250)
    assert status.state == "done" and not ep.died, (status, n)
    assert ep.inventory["stone"] >= 1 and "collect_stone" in ep.achievements
    assert ep.steps <= 450


@pytest.mark.parametrize("seed", [0, 1])
def test_scripted_drinks_when_thirsty(env, seed):
    ep = Episode(env, seed)
    for _ in range(25):  # thirst: drink drops by one after 20 steps
        ep.step("noop")
    drink = ep.inventory["drink"]
    assert drink < 9
    status, n = ep.run(Subgoal("collect", "water"), bound=200)
    assert status.state == "done" and not ep.died, (status, n)
    assert "collect_drink" in ep.achievements  # only a sip of water unlocks it


def test_scripted_collect_water_at_full_drink(env):
    ep = Episode(env, 4)  # water is ~8 steps away: reached before thirst sets in
    status, n = ep.run(Subgoal("collect", "water"), bound=100)
    assert "collect_drink" in ep.achievements
    assert status.state == "done", (status, n)


def test_missing_tool_fails_at_once(env):
    ep = Episode(env, 0)
    assert ep.inventory["wood_pickaxe"] == 0
    ep.ctrl.start(Subgoal("collect", "stone"), ep.view)
    action = ep.ctrl.act(ep.view)
    status = ep.ctrl.status(ep.view)
    assert status.state == "failed"
    assert "wood_pickaxe" in status.reason
    assert ACTIONS[action] == "noop"
    # making without the ingredients or a table fails the same way
    ep.ctrl.start(Subgoal("make", "stone_pickaxe"), ep.view)
    ep.ctrl.act(ep.view)
    status = ep.ctrl.status(ep.view)
    assert status.state == "failed" and "stone_pickaxe" in status.reason


# ----------------------------------------------------------------------------- no privileged view


def test_controller_never_sees_privileged_information(env):
    fields = {f.name for f in dataclasses.fields(AgentView)}
    assert "privileged" not in fields and "semantic" not in fields and "player_pos" not in fields
    obs, info = env.reset(seed=0)
    assert "privileged" in info  # the env has it, for evaluation code ...
    view = AgentView.from_env(obs, info)
    assert not hasattr(view, "privileged")  # ... the agent's view does not
    assert AgentView.from_env(obs, _public(info)) == view  # and building it does not need it
    assert ScriptedController.uses_privileged is False
    # the controller's modules never index it out of anything
    for module in ("scripted", "navigation", "progress"):
        source = (REPO / "agents" / f"{module}.py").read_text()
        assert '"privileged"' not in source and "'privileged'" not in source, module
