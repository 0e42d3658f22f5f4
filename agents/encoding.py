"""Fixed numeric encodings of what an agent sees, for learned controllers and play data.

Fixed lists (not read from the game) so a saved model and a data file keep their meaning
across Crafter versions; a name the list lacks maps to ``unknown``.
"""

from __future__ import annotations

import numpy as np

from agents.navigation import SpatialMap
from agents.types import AgentView
from envs.crafter.techtree import Subgoal

VIEW_NAMES = (
    "outside", "unknown", "water", "grass", "stone", "path", "sand", "tree", "lava", "coal", "iron",
    "diamond", "table", "furnace", "player", "cow", "zombie", "skeleton", "arrow", "plant",
)  # fmt: skip
INVENTORY_KEYS = (
    "health", "food", "drink", "energy", "sapling", "wood", "stone", "coal", "iron", "diamond",
    "wood_pickaxe", "stone_pickaxe", "iron_pickaxe", "wood_sword", "stone_sword", "iron_sword",
)  # fmt: skip
GOALS = (
    ("collect", "tree"), ("collect", "stone"), ("collect", "coal"), ("collect", "iron"),
    ("collect", "diamond"), ("collect", "water"), ("collect", "grass"),
    ("place", "stone"), ("place", "table"), ("place", "furnace"), ("place", "plant"),
    ("make", "wood_pickaxe"), ("make", "stone_pickaxe"), ("make", "iron_pickaxe"),
    ("make", "wood_sword"), ("make", "stone_sword"), ("make", "iron_sword"),
)  # fmt: skip
# Crafter's action names in id order; stored in every model so a saved policy never needs the game
# installed to name the action it chose (and a reordering in a future Crafter is detected).
ACTIONS = (
    "noop", "move_left", "move_right", "move_up", "move_down", "do", "sleep", "place_stone",
    "place_table", "place_furnace", "place_plant", "make_wood_pickaxe", "make_stone_pickaxe",
    "make_iron_pickaxe", "make_wood_sword", "make_stone_sword", "make_iron_sword",
)  # fmt: skip
_VIEW_INDEX = {n: i for i, n in enumerate(VIEW_NAMES)}
_GOAL_INDEX = {g: i for i, g in enumerate(GOALS)}


def encode_view(local_view: list[list[str | None]]) -> np.ndarray:
    """int8 [rows, cols] indices into ``VIEW_NAMES`` (None → ``outside``)."""
    unknown = _VIEW_INDEX["unknown"]
    return np.array(
        [
            [_VIEW_INDEX["outside"] if n is None else _VIEW_INDEX.get(n, unknown) for n in row]
            for row in local_view
        ],
        dtype=np.int8,
    )


def encode_facing(facing: str | None) -> int:
    """VIEW_NAMES id of the cell the player faces (as ``encode_view`` encodes a cell)."""
    return int(encode_view([[facing]])[0, 0])


def encode_inventory(view: AgentView) -> np.ndarray:
    """int8 [16] counts in ``INVENTORY_KEYS`` order (vitals first)."""
    held = {**view.inventory, **view.vitals}
    return np.array([held.get(k, 0) for k in INVENTORY_KEYS], dtype=np.int8)


def goal_index(subgoal: Subgoal) -> int:
    """Index of (verb, target) in ``GOALS``; the count is not part of a controller's goal."""
    return _GOAL_INDEX[(subgoal.verb, subgoal.target)]


# the reflexes of the scripted controller (its ``mode``), as recorded in goal-observation-action data
REFLEXES = ("", "fight", "sleep", "drink", "eat")
STATUS_DIM = len(INVENTORY_KEYS) + 2  # counts, daylight, sleeping


def encode_map(spatial_map: SpatialMap, radius: int) -> np.ndarray:
    """int8 [2r+1, 2r+1]: the agent's own remembered map (``agents.navigation.SpatialMap``,
    dead reckoning, no privileged state) in ``VIEW_NAMES`` ids, centred on the agent, rows north
    → south; never-seen cells are ``unknown``. Creatures are not part of it (the view has them)."""
    unknown = _VIEW_INDEX["unknown"]
    px, py = spatial_map.pos
    cells = spatial_map.cells
    size = 2 * radius + 1
    out = np.full((size, size), unknown, dtype=np.int8)
    # iterate over what is known when that is smaller than the window (early in an episode)
    if len(cells) < size * size:
        for (x, y), name in cells.items():
            dx, dy = x - px + radius, y - py + radius
            if 0 <= dx < size and 0 <= dy < size:
                out[dy, dx] = _VIEW_INDEX.get(name, unknown)
    else:
        for dy in range(size):
            y = py + dy - radius
            for dx in range(size):
                name = cells.get((px + dx - radius, y))
                if name is not None:
                    out[dy, dx] = _VIEW_INDEX.get(name, unknown)
    return out


# what the compass points to: the nearest remembered cell of each (cows: seen in the last
# COW_MEMORY observations), anywhere on the agent's own map, not just the map window
COMPASS_TARGETS = ("water", "tree", "stone", "coal", "iron", "diamond", "table", "furnace", "cow")
COMPASS_UNKNOWN = -128  # int8 offset of a target not remembered
COMPASS_RANGE = 100  # offsets are clipped to ±this
COW_MEMORY = 40  # cows wander: a sighting older than this many steps is dropped


def encode_compass(spatial_map: SpatialMap) -> np.ndarray:
    """int8 [len(COMPASS_TARGETS), 2]: (dx, dy) from the agent to the nearest remembered cell of
    each target (squared Euclidean distance; ties to the first found), ``COMPASS_UNKNOWN`` for both
    when none is remembered. From the agent's own dead-reckoned map: no privileged state."""
    out = np.full((len(COMPASS_TARGETS), 2), COMPASS_UNKNOWN, dtype=np.int8)
    px, py = spatial_map.pos
    for i, name in enumerate(COMPASS_TARGETS):
        cells = spatial_map.sighted(name, COW_MEMORY) if name == "cow" else spatial_map.where.get(name)
        if not cells:
            continue
        xy = np.array(list(cells), dtype=np.int64) - (px, py)
        out[i] = np.clip(xy[int(np.argmin((xy * xy).sum(axis=1)))], -COMPASS_RANGE, COMPASS_RANGE)
    return out


def encode_status(view: AgentView) -> tuple[np.ndarray, int, bool]:
    """(inventory int8 [16], daylight as uint8 0–255, sleeping): what a policy reads besides the
    view and the map."""
    return encode_inventory(view), int(round(max(0.0, min(1.0, view.daylight)) * 255)), bool(view.sleeping)
