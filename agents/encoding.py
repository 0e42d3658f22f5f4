"""Fixed numeric encodings of what an agent sees, for learned controllers and play data.

Fixed lists (not read from the game) so a saved model and a data file keep their meaning
across Crafter versions; a name the list lacks maps to ``unknown``.
"""

from __future__ import annotations

import numpy as np

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


def encode_inventory(view: AgentView) -> np.ndarray:
    """int8 [16] counts in ``INVENTORY_KEYS`` order (vitals first)."""
    held = {**view.inventory, **view.vitals}
    return np.array([held.get(k, 0) for k in INVENTORY_KEYS], dtype=np.int8)


def goal_index(subgoal: Subgoal) -> int:
    """Index of (verb, target) in ``GOALS``; the count is not part of a controller's goal."""
    return _GOAL_INDEX[(subgoal.verb, subgoal.target)]
