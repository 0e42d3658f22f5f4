"""The MineDojo adapter without the game: task mapping, observation → text, action mapping, the
missing-package error, and the env's plumbing over a stand-in ``minedojo`` module."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np
import pytest
import yaml

from agents.types import AgentView
from envs.minedojo import actions as A
from envs.minedojo import text as T
from envs.minedojo.env import INSTALL, MineDojoConfig, MineDojoEnv
from envs.minedojo.tasks import TASKS, counts, minedojo_task, progress, reached
from telos.errors import UserError

SUITE = Path(__file__).resolve().parents[1] / "eval" / "suites" / "crafter-techtree.yaml"
SUITE_IDS = [t["id"] for t in yaml.safe_load(SUITE.read_text())["tasks"]]


def world() -> np.ndarray:
    """The telos voxel window (9 × 4 × 7, [x, y, z]): grass under the feet, a log two blocks
    north and one east (feet and head high), water three west one level down, stone ahead
    (north) under the feet."""
    names = np.full((9, 4, 7), "air", dtype=object)
    names[:, 0, :] = "grass"
    ox, oy, oz = T.ORIGIN
    names[ox + 1, oy, oz - 2] = names[ox + 1, oy + 1, oz - 2] = "log"
    names[ox - 3, oy - 1, oz] = "water"
    names[ox, oy - 1, oz - 1] = "stone"
    return names


LIFE = {"life": np.array([20.0]), "food": np.array([9.0])}
NOON = {"yaw": np.array([180.0]), "pitch": np.array([0.0]), "sun_brightness": np.array([0.94])}


# ---- tasks ----


def test_every_suite_task_maps_to_a_real_minedojo_task():
    assert list(TASKS) == SUITE_IDS
    assert {
        t: minedojo_task(t).programmatic_id for t in ("collect_wood", "make_iron_pickaxe", "place_furnace")
    } == {
        "collect_wood": "harvest_1_log",
        "make_iron_pickaxe": "techtree_from_barehand_to_iron_pickaxe",
        "place_furnace": "harvest_1_furnace",
    }
    items = [minedojo_task(t).items[0] for t in SUITE_IDS]
    assert items == [
        "log", "crafting_table", "wooden_pickaxe", "cobblestone", "stone_pickaxe",
        "coal", "furnace", "iron_ore", "iron_pickaxe", "diamond",
    ]  # fmt: skip
    assert minedojo_task("collect_iron").meta_kwargs == {"target_names": "iron_ore", "target_quantities": 1}
    assert minedojo_task("place_table").describe() == "place 1 crafting_table"


def test_unknown_task_names_the_valid_ids():
    with pytest.raises(
        UserError, match="no MineDojo mapping for task 'eat_cow'; valid: collect_wood, place_table"
    ):
        minedojo_task("eat_cow")


def test_inventory_counts_and_task_progress():
    inv = counts(["crafting table", "log", "air", "log"], [1, 2, 0, 3])
    assert inv == {"crafting_table": 1, "log": 5}
    start = {"inventory": {}, "use_item": {"crafting_table": 2}}
    now = {"inventory": {"log2": 1, "crafting_table": 1}, "use_item": {"crafting_table": 2}}
    assert progress(TASKS["collect_wood"], start, now) == 1
    assert reached(start, now) == ["collect_wood"]  # held, not placed: no place_table
    now["use_item"]["crafting_table"] = 3
    assert reached(start, now) == ["collect_wood", "place_table"]


# ---- observation → text ----


def test_local_view_rows_run_north_to_south():
    view = T.local_view(world())
    assert (len(view), len(view[0])) == (7, 9)
    assert view[3][4] == "player" and view[1][5] == "log" and view[0][5] == "air"


def test_nearest_facing_and_helpers():
    names = world()
    assert T.nearest_blocks(names) == {"log": (1, 0, -2), "stone": (0, -1, -1), "water": (-3, -1, 0)}
    assert T.direction3(1, 0, -2) == "2 north, 1 east" and T.direction3(0, -1, 0) == "1 down"
    assert [T.cardinal(y) for y in (0, 90, 180, -180, -90, 265)] == [
        "south",
        "west",
        "north",
        "north",
        "east",
        "east",
    ]
    names[4, 2, 2] = "leaves"  # head high, one north
    assert T.facing_block(names, 180.0, 0.0) == "leaves"
    assert T.facing_block(names, 180.0, 40.0) == "air"  # looking down: the feet's block ahead
    assert T.aim_pitch(names, 180.0) == 0.0 and T.aim_pitch(names, 0.0) == 45.0
    assert T.vitals(LIFE) == {"health": 9, "food": 4, "drink": 9, "energy": 9}
    assert T.daylight({"sun_brightness": np.array([0.2])}) == pytest.approx(0.2)


def test_needs_jump_only_for_a_one_block_step():
    moving = np.zeros((9, 4, 7), dtype=bool)
    moving[:, 0, :] = True
    moving[4, 1, 2] = True  # a block at the feet, one north
    assert T.needs_jump(moving, 180.0) and not T.needs_jump(moving, 0.0)
    moving[4, 2, 2] = True  # two high: a wall
    assert not T.needs_jump(moving, 180.0)


def test_text_observation_exact():
    text = T.text_observation(world(), {"log": 2, "wooden_pickaxe": 1}, LIFE, NOON)
    assert text == (
        "You see:\n"
        "- stone: 1 north, 1 down (1 steps)\n"
        "- log: 2 north, 1 east (3 steps)\n"
        "- water: 3 west, 1 down (3 steps)\n"
        "Terrain around: grass.\n"
        "You face north: air.\n"
        "Inventory: log 2, wooden_pickaxe 1.\n"
        "Vitals: health 20/20, food 9/20.\n"
        "Time: day."
    )
    empty = np.full((3, 3, 3), "air", dtype=object)
    night = {"sun_brightness": np.array([0.2])}
    assert T.text_observation(empty, {}, {}, night, origin=(1, 1, 1)) == (
        "You see:\n- nothing but terrain\nYou face south: air.\nInventory: empty.\n"
        "Vitals: health 20/20, food 20/20.\nTime: night."
    )


# ---- actions ----


def test_action_names_follow_crafter_ids():
    crafter = pytest.importorskip("crafter")
    assert list(A.CRAFTER_ACTIONS) == list(crafter.constants.actions)
    assert A.action_name(5) == "do" and A.action_name(17) == "make_planks"
    with pytest.raises(UserError, match="'sleep' has no MineDojo equivalent"):
        A.action_name(6)
    with pytest.raises(UserError, match="unknown MineDojo action 'fly'; valid: noop, move_left"):
        A.action_name("fly")
    with pytest.raises(UserError, match="out of range 0..21"):
        A.action_name(22)


def test_moves_turn_to_the_compass_direction_then_walk():
    assert [A.camera_bin(d) for d in (0, 15, -90, 180, 270, 400)] == [12, 13, 6, 0, 6, 15]
    up = A.compile_action("move_up", yaw=0.0, pitch=30.0, slots=[], move_repeat=3, jump=True)
    assert up == [[1, 0, 0, 10, 0, 0, 0, 0], [1, 0, 1, 12, 12, 0, 0, 0], [1, 0, 1, 12, 12, 0, 0, 0]]
    right = A.compile_action("move_right", yaw=-90.0, pitch=0.0, slots=[], move_repeat=1)
    assert right == [[1, 0, 0, 12, 12, 0, 0, 0]]
    assert A.compile_action("noop", yaw=0, pitch=0, slots=[]) == [list(A.NOOP)]


def test_do_place_make():
    slots = ["air", "log", "crafting table".replace(" ", "_"), "stone_pickaxe", "dirt", "wooden_pickaxe"]
    do = A.compile_action("do", yaw=0, pitch=0, slots=slots, attack_repeat=2, do_pitch=45.0)
    assert do == [[0, 0, 0, 12, 12, 5, 0, 3], [0, 0, 0, 15, 12, 3, 0, 0], [0, 0, 0, 12, 12, 3, 0, 0]]
    assert len(A.compile_action("do", yaw=0, pitch=0, slots=["stone_pickaxe"], attack_repeat=1)) == 1
    place = A.compile_action("place_table", yaw=0, pitch=0, slots=slots)
    assert place == [[0, 0, 0, 15, 12, 0, 0, 0], [0, 0, 0, 12, 12, 6, 0, 2]]
    assert A.compile_action("place_furnace", yaw=0, pitch=0, slots=slots) == [list(A.NOOP)]
    assert A.compile_action("make_wood_pickaxe", yaw=0, pitch=0, slots=[]) == [[0, 0, 0, 12, 12, 4, 219, 0]]
    assert A.compile_action("make_iron_ingot", yaw=0, pitch=0, slots=[])[0][6] == 239


# ---- the env ----


def test_missing_minedojo_is_one_install_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "minedojo", None)  # import minedojo → ImportError
    with pytest.raises(UserError) as err:
        MineDojoEnv()
    assert str(err.value) == INSTALL and "\n" not in INSTALL
    assert INSTALL.startswith("MineDojo is not installed: pip install minedojo (needs Java 8")
    with pytest.raises(UserError, match="no MineDojo mapping"):  # a bad id fails first
        MineDojoEnv(MineDojoConfig(task_id="nope"))


class FakeTask:
    """Stands in for a MineDojo meta task: records actions, places a table on ``place``."""

    def __init__(self, **kwargs):
        self.kwargs, self.sent, self.used, self.is_successful = kwargs, [], 0, False
        self.prev_info = self._info()

    def _info(self):
        return {"stat": {"use_item": {"minecraft": {"crafting_table": self.used}}}}

    def _obs(self):
        names = ["crafting table", "log"] + ["air"] * 34
        return {
            "rgb": np.zeros((3, 4, 6), dtype=np.uint8),
            "inventory": {"name": np.array(names), "quantity": np.array([1, 3] + [0] * 34)},
            "voxels": {"block_name": world(), "blocks_movement": np.zeros((9, 4, 7), dtype=bool)},
            "life_stats": LIFE,
            "location_stats": {**NOON, "pos": np.array([1.5, 64.0, -3.5])},
        }

    def reset(self):
        return self._obs()

    def step(self, action):
        self.sent.append(list(action))
        self.used += int(action[5] == A.PLACE_FN)
        return self._obs(), 0.0, False, self._info()


def test_env_plumbing_over_a_stand_in_minedojo(monkeypatch):
    made = []
    fake = types.ModuleType("minedojo")
    fake.make = lambda task, **kw: made.append((task, kw)) or FakeTask(**kw)
    monkeypatch.setitem(sys.modules, "minedojo", fake)
    env = MineDojoEnv(MineDojoConfig(task_id="place_table", move_repeat=2))
    assert made[0][0] == "harvest" and made[0][1]["target_names"] == "crafting_table"
    assert made[0][1]["voxel_size"] == T.VOXEL_SIZE
    obs, info = env.reset()
    assert obs["image"].shape == (4, 6, 3) and obs["text"].startswith("You see:\n- stone")
    assert set(info) == {
        "inventory",
        "vitals",
        "achievements",
        "local_view",
        "facing",
        "daylight",
        "sleeping",
        "step",
        "privileged",
    }
    assert info["achievements"] == []  # logs held from the start are not collected this episode
    assert info["privileged"]["player_pos"] == [1.5, 64.0, -3.5]
    view = AgentView.from_env(obs, info)
    assert view.inventory == {"crafting_table": 1, "log": 3} and view.vitals["health"] == 9
    env.step("move_up")
    assert env._env.sent == [[1, 0, 0, 12, 12, 0, 0, 0], [1, 0, 0, 12, 12, 0, 0, 0]]
    obs, reward, terminated, truncated, info = env.step(A.ACTIONS.index("place_table"))
    assert info["achievements"] == ["place_table"] and info["step"] == 2
    assert (reward, terminated, truncated) == (0.0, False, False)
