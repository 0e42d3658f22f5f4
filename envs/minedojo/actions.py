"""Crafter's action names → short sequences of MineDojo's MultiDiscrete actions.

MineDojo's action (``sim/wrappers/ar_nn/nn_action_space_wrapper.py``; docs: core_api/
action_space) is 8 integers: [0] 0 noop / 1 forward / 2 back; [1] 0 / 1 left / 2 right;
[2] 0 / 1 jump / 2 sneak / 3 sprint; [3] camera pitch and [4] yaw *change* in 15° bins, 0 =
-180°, 12 = no change, 24 = +180°; [5] 0 noop / 1 use / 2 drop / 3 attack / 4 craft / 5 equip /
6 place / 7 destroy; [6] the item to craft or smelt (an index into
``minedojo.sim.mc_meta.mc.ALL_CRAFT_SMELT_ITEMS``, 244 items); [7] the inventory slot to
equip, place or destroy (36 slots, 0 = main hand).

Crafter's world is a grid and its moves are absolute (``move_up`` goes north one cell);
Minecraft's are relative to where the player looks and a block is ~5 game ticks of walking.
So ``move_*`` turns to the compass direction, levels the camera and walks ``move_repeat``
ticks (jumping where a block is in the way); ``do`` equips the best pickaxe held, aims (see
``text.aim_pitch``) and attacks ``attack_repeat`` ticks, since breaking a block takes many
ticks. ``place_*`` looks 45° down and places the item from its slot; an item not held is a
noop, as an impossible action is in Crafter. ``make_*`` crafts (MineDojo checks for a
crafting table or furnace nearby). No equivalent: ``sleep`` (Minecraft sleeps in a placed bed,
at night only) — it raises UserError. Minecraft's tech tree has steps Crafter skips (planks,
sticks, smelting iron), reachable with the extra names in ``EXTRA_ACTIONS``.
"""

from __future__ import annotations

from collections.abc import Sequence

from envs.minedojo.text import YAWS
from telos.errors import UserError

# crafter.constants.actions (crafter/data.yaml), in order: the ids telos controllers emit.
CRAFTER_ACTIONS = (
    "noop", "move_left", "move_right", "move_up", "move_down", "do", "sleep", "place_stone",
    "place_table", "place_furnace", "place_plant", "make_wood_pickaxe", "make_stone_pickaxe",
    "make_iron_pickaxe", "make_wood_sword", "make_stone_sword", "make_iron_sword",
)  # fmt: skip
EXTRA_ACTIONS = ("make_planks", "make_stick", "make_crafting_table", "make_furnace", "make_iron_ingot")
ACTIONS = CRAFTER_ACTIONS + EXTRA_ACTIONS
UNSUPPORTED = {"sleep": "Minecraft sleeps only in a placed bed at night; MineDojo has no sleep action"}

MOVES = {"move_left": "west", "move_right": "east", "move_up": "north", "move_down": "south"}
PLACE = {"place_stone": "cobblestone", "place_table": "crafting_table", "place_furnace": "furnace"}
PLACE["place_plant"] = "sapling"
MAKE = {
    "make_wood_pickaxe": "wooden_pickaxe",
    "make_stone_pickaxe": "stone_pickaxe",
    "make_iron_pickaxe": "iron_pickaxe",
    "make_wood_sword": "wooden_sword",
    "make_stone_sword": "stone_sword",
    "make_iron_sword": "iron_sword",
    "make_planks": "planks",
    "make_stick": "stick",
    "make_crafting_table": "crafting_table",
    "make_furnace": "furnace",
    "make_iron_ingot": "iron_ingot",  # smelted
}
# Their indices in ALL_CRAFT_SMELT_ITEMS as minedojo 0.1 builds it; the env re-reads the
# installed list, this is the fallback and what the tests check against.
CRAFT_INDEX = {
    "crafting_table": 7, "planks": 29, "stick": 41, "furnace": 119, "iron_pickaxe": 146,
    "iron_sword": 148, "stone_pickaxe": 207, "stone_sword": 212, "wooden_pickaxe": 219,
    "wooden_sword": 222, "iron_ingot": 239,
}  # fmt: skip
PICKAXES = ("iron_pickaxe", "stone_pickaxe", "wooden_pickaxe")  # best first

CAM_STEP, CAM_NOOP, CAM_BINS = 15, 12, 25
FORWARD, JUMP = 1, 1
USE, ATTACK, CRAFT, EQUIP, PLACE_FN = 1, 3, 4, 5, 6
NOOP = (0, 0, 0, CAM_NOOP, CAM_NOOP, 0, 0, 0)


def action_name(action: int | str) -> str:
    """Crafter's id or name (or an extra name) → the name; UserError for unknown or
    unsupported ones."""
    if isinstance(action, str):
        name = action
        if name not in ACTIONS:
            raise UserError(f"unknown MineDojo action {name!r}; valid: {', '.join(ACTIONS)}")
    else:
        if not 0 <= int(action) < len(ACTIONS):
            raise UserError(f"MineDojo action id {action} out of range 0..{len(ACTIONS) - 1}")
        name = ACTIONS[int(action)]
    if name in UNSUPPORTED:
        raise UserError(f"action {name!r} has no MineDojo equivalent: {UNSUPPORTED[name]}")
    return name


def camera_bin(delta: float) -> int:
    """A camera change in degrees → its bin, wrapped to ±180° and rounded to 15°."""
    wrapped = (delta + 180.0) % 360.0 - 180.0
    return max(0, min(CAM_BINS - 1, CAM_NOOP + round(wrapped / CAM_STEP)))


def vector(**parts: int) -> list[int]:
    """NOOP with the named entries set (forward, strafe, jump, pitch, yaw, fn, craft, slot)."""
    out = list(NOOP)
    for i, key in enumerate(("forward", "strafe", "jump", "pitch", "yaw", "fn", "craft", "slot")):
        if key in parts:
            out[i] = int(parts[key])
    return out


def compile_action(
    name: str,
    *,
    yaw: float,
    pitch: float,
    slots: Sequence[str],
    craft_index: dict[str, int] | None = None,
    move_repeat: int = 5,
    attack_repeat: int = 20,
    jump: bool = False,
    do_pitch: float = 0.0,
) -> list[list[int]]:
    """The MineDojo actions that carry out one Crafter action. ``slots`` are the 36 inventory
    slot names (``obs["inventory"]["name"]``, ``_`` form), slot 0 the main hand; ``jump``:
    a block is in the way ahead after the turn (``text.needs_jump``)."""
    name = action_name(name)
    craft_index = craft_index or CRAFT_INDEX
    if name == "noop":
        return [list(NOOP)]
    if name in MOVES:
        turn = vector(pitch=camera_bin(-pitch), yaw=camera_bin(YAWS[MOVES[name]] - yaw), forward=FORWARD)
        walk = vector(forward=FORWARD, jump=JUMP if jump else 0)
        return [turn] + [walk] * (move_repeat - 1)
    if name == "do":
        out = []
        best = next((p for p in PICKAXES if p in slots), None)
        if best is not None and slots[0] != best:
            out.append(vector(fn=EQUIP, slot=list(slots).index(best)))
        out.append(vector(pitch=camera_bin(do_pitch - pitch), fn=ATTACK))
        return out + [vector(fn=ATTACK)] * (attack_repeat - 1)
    if name in PLACE:
        item = PLACE[name]
        if item not in slots:
            return [list(NOOP)]
        return [vector(pitch=camera_bin(45.0 - pitch)), vector(fn=PLACE_FN, slot=list(slots).index(item))]
    return [vector(fn=CRAFT, craft=craft_index[MAKE[name]])]
