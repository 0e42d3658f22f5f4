"""MineDojo observations → what the Crafter wrapper gives agents: a local view, what the player
faces, vitals, daylight and the same kind of text observation — pure functions over numpy
arrays and dicts, so they are tested without the game.

Field names follow MineDojo's observation space (https://docs.minedojo.org/sections/core_api/
obs_space.html; minedojo 0.1 ``sim/handlers/agent/observations/``): ``voxels["block_name"]``
and ``voxels["blocks_movement"]`` indexed [x, y, z] in ascending order (``voxel_lidar.py``),
``inventory`` {"name", "quantity"} (``true_flat_inventory.py``), ``life_stats["life"]`` and
``["food"]`` out of 20 (``lifestats.py``), ``location_stats["pos"]``, ``["yaw"]``, ``["pitch"]``
in degrees and ``["sun_brightness"]`` in 0–1 (``location_stats.py``).

Minecraft axes: +x east, +z south, +y up. ``origin`` is the voxel index of the player's feet
(``-xmin, -ymin, -zmin`` of the voxel window). Yaw 0 faces south, 90 west, ±180 north, -90 east.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from envs.crafter.env import direction, time_of_day
from envs.minedojo.tasks import item_name

# The voxel window telos asks for: Crafter's 9 × 7 view around the feet, from the block
# below them to the one above the head.
VOXEL_SIZE = {"xmin": -4, "xmax": 4, "ymin": -1, "ymax": 2, "zmin": -3, "zmax": 3}
ORIGIN = (4, 1, 3)
TERRAIN = ("dirt", "grass", "gravel", "sand", "snow_layer", "tallgrass")  # listed, not located
MAX_LIFE = MAX_FOOD = 20  # minedojo/sim/mc_meta/mc.py
FEET, HEAD = 0, 1  # levels above the feet
CARDINALS = {"south": (0, 1), "west": (-1, 0), "north": (0, -1), "east": (1, 0)}
YAWS = {"south": 0.0, "west": 90.0, "north": 180.0, "east": -90.0}


def scalar(value: Any, default: float = 0.0) -> float:
    """MineDojo's stats come as shape-(1,) arrays; a missing one reads as ``default``."""
    if value is None:
        return default
    return float(np.asarray(value, dtype=float).reshape(-1)[0])


def origin_of(voxel_size: dict[str, int]) -> tuple[int, int, int]:
    return (-voxel_size["xmin"], -voxel_size["ymin"], -voxel_size["zmin"])


def block_at(names: np.ndarray, origin: tuple[int, int, int], dx: int, dy: int, dz: int) -> str | None:
    """The block ``dx`` east, ``dy`` up, ``dz`` south of the feet (None: outside the window)."""
    x, y, z = origin[0] + dx, origin[1] + dy, origin[2] + dz
    if 0 <= x < names.shape[0] and 0 <= y < names.shape[1] and 0 <= z < names.shape[2]:
        return item_name(names[x, y, z])
    return None


def local_view(names: np.ndarray, origin: tuple[int, int, int] = ORIGIN) -> list[list[str | None]]:
    """The foot-level slice, rows north → south, columns west → east, the player's own cell
    written ``player`` as in Crafter's view."""
    ox, oy, oz = origin
    view = [[item_name(names[x, oy, z]) for x in range(names.shape[0])] for z in range(names.shape[2])]
    view[oz][ox] = "player"
    return view


def nearest_blocks(
    names: np.ndarray, origin: tuple[int, int, int] = ORIGIN
) -> dict[str, tuple[int, int, int]]:
    """For each kind of block in the window (air, terrain and the player's two cells out), the
    offset (dx, dy, dz) of its nearest cell: fewest horizontal steps, then least height
    difference, then north-west first."""
    best: dict[str, tuple[int, int, int]] = {}

    def key(o: tuple[int, int, int]) -> tuple[int, int]:
        return abs(o[0]) + abs(o[2]), abs(o[1])

    for z in range(names.shape[2]):
        for x in range(names.shape[0]):
            for y in range(names.shape[1]):
                off = (x - origin[0], y - origin[1], z - origin[2])
                name = item_name(names[x, y, z])
                if name == "air" or name in TERRAIN or off in ((0, FEET, 0), (0, HEAD, 0)):
                    continue
                if name not in best or key(off) < key(best[name]):
                    best[name] = off
    return best


def direction3(dx: int, dy: int, dz: int) -> str:
    """``2 north, 1 east, 1 down``: Crafter's wording, plus the height from the feet."""
    parts = [] if dx == dz == 0 else [direction(dx, dz)]
    if dy:
        parts.append(f"{abs(dy)} {'up' if dy > 0 else 'down'}")
    return ", ".join(parts) or "here"


def cardinal(yaw: float) -> str:
    """The compass direction nearest a Minecraft yaw."""
    return ("south", "west", "north", "east")[round(((yaw % 360) + 360) % 360 / 90) % 4]


def look_level(pitch: float) -> int:
    """The level of the adjacent block the crosshair meets: head height looking level or up,
    the feet's block looking 30° or more down (pitch grows downwards)."""
    return FEET if pitch >= 30 else HEAD


def facing_block(
    names: np.ndarray, yaw: float, pitch: float, origin: tuple[int, int, int] = ORIGIN
) -> str | None:
    """The block next to the player in the compass direction it looks, at the level it looks."""
    dx, dz = CARDINALS[cardinal(yaw)]
    return block_at(names, origin, dx, look_level(pitch), dz)


def aim_pitch(names: np.ndarray, yaw: float, origin: tuple[int, int, int] = ORIGIN) -> float:
    """The pitch ``do`` aims at: level at a head-high block ahead, else 45° down at the one at
    the feet (a log's base, stone in a wall, the ground ahead)."""
    dx, dz = CARDINALS[cardinal(yaw)]
    return 0.0 if block_at(names, origin, dx, HEAD, dz) not in (None, "air") else 45.0


def needs_jump(blocks_movement: np.ndarray, yaw: float, origin: tuple[int, int, int] = ORIGIN) -> bool:
    """Whether walking ahead means stepping up one block: the feet's block ahead is in the way,
    the head's block ahead and the one above the player's head are free."""
    dx, dz = CARDINALS[cardinal(yaw)]
    ox, oy, oz = origin
    x, z = ox + dx, oz + dz
    if not (0 <= x < blocks_movement.shape[0] and 0 <= z < blocks_movement.shape[2]):
        return False
    above = oy + HEAD + 1
    head_free = not blocks_movement[x, oy + HEAD, z]
    above_free = above >= blocks_movement.shape[1] or not blocks_movement[ox, above, oz]
    return bool(blocks_movement[x, oy, z]) and head_free and above_free


def vitals(life_stats: dict) -> dict[str, int]:
    """Crafter's four vitals out of 9, so controllers written for Crafter read them alike:
    health and food scaled from Minecraft's 20; drink and energy have no Minecraft
    counterpart and stay full (no controller should try to drink or sleep)."""

    def nine(value: float, top: float) -> int:
        return max(0, min(9, round(value / top * 9)))

    life = scalar(life_stats.get("life"), MAX_LIFE)
    food = scalar(life_stats.get("food"), MAX_FOOD)
    return {"health": nine(life, MAX_LIFE), "food": nine(food, MAX_FOOD), "drink": 9, "energy": 9}


def daylight(location_stats: dict) -> float:
    """Minecraft's sun brightness, 0.2 at night to 1 at noon (MineDojo's default: 0.94)."""
    return scalar(location_stats.get("sun_brightness"), 0.94)


def text_observation(
    names: np.ndarray,
    inventory: dict[str, int],
    life_stats: dict,
    location_stats: dict,
    origin: tuple[int, int, int] = ORIGIN,
) -> str:
    """What the player perceives, in the layout of Crafter's ``text_observation``: blocks in
    the voxel window with direction and steps, terrain, what it faces, inventory, vitals in
    Minecraft's own units, time of day."""
    yaw = scalar(location_stats.get("yaw"))
    pitch = scalar(location_stats.get("pitch"))
    things = nearest_blocks(names, origin)
    seen = sorted(things.items(), key=lambda kv: (abs(kv[1][0]) + abs(kv[1][2]), abs(kv[1][1]), kv[0]))
    lines = ["You see:"]
    lines += [f"- {n}: {direction3(*o)} ({abs(o[0]) + abs(o[2])} steps)" for n, o in seen] or [
        "- nothing but terrain"
    ]
    ground = sorted({item_name(n) for n in np.asarray(names).reshape(-1)} & set(TERRAIN))
    if ground:
        lines.append(f"Terrain around: {', '.join(ground)}.")
    lines.append(f"You face {cardinal(yaw)}: {facing_block(names, yaw, pitch, origin) or 'nothing'}.")
    items = [f"{k} {v}" for k, v in inventory.items() if v > 0]
    lines.append(f"Inventory: {', '.join(items) if items else 'empty'}.")
    life = scalar(life_stats.get("life"), MAX_LIFE)
    food = scalar(life_stats.get("food"), MAX_FOOD)
    lines.append(f"Vitals: health {life:g}/{MAX_LIFE}, food {food:g}/{MAX_FOOD}.")
    lines.append(f"Time: {time_of_day(daylight(location_stats))}.")
    return "\n".join(lines)
