"""Crafter as a Gymnasium-style environment with what an agent may see, in text and structure.

Crafter (Hafner 2021) is a 2-D Minecraft-like survival game: 17 actions, 22 achievements, a tech
tree from wood to diamond. Its own ``info["semantic"]`` is the *whole* 64×64 world map — an
agent that reads it knows where every diamond is. This wrapper gives agents only what the game
draws for the player: the 9×7 local view around them, their inventory and vitals, the time of
day and what they face. The map and the player's absolute position stay in
``info["privileged"]``, for evaluation code that says it uses them.

Coordinates: Crafter's positions are (x, y) with y growing southwards; the text says north
for −y, east for +x. ``local_view`` rows run north → south, columns west → east.
"""

from __future__ import annotations

import copy
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from telos.errors import UserError

VIEW_W, VIEW_H = 9, 7  # the local view Crafter draws above its two inventory rows
VITALS = ("health", "food", "drink", "energy")
GROUND = ("grass", "sand", "path")  # terrain listed as present, not located


def _crafter():
    try:
        import crafter
    except ImportError:
        raise UserError("crafter is not installed: pip install crafter (or telos-rl[minecraft])") from None
    return crafter


def action_names() -> list[str]:
    return list(_crafter().constants.actions)


def semantic_names(env) -> dict[int, str]:
    """Crafter's semantic ids → names (materials, then object classes in lower case)."""
    names = {i: (m or "unknown") for m, i in env._world._mat_ids.items()}
    names.update({i: cls.__name__.lower() for cls, i in env._sem_view._obj_ids.items()})
    return names


def crop_view(semantic: np.ndarray, pos: tuple[int, int], names: dict[int, str]) -> list[list[str | None]]:
    """The VIEW_W × VIEW_H window centred on ``pos`` as names, rows north → south (None: outside
    the world)."""
    px, py = int(pos[0]), int(pos[1])
    rows = []
    for dy in range(-(VIEW_H // 2), VIEW_H // 2 + 1):
        row = []
        for dx in range(-(VIEW_W // 2), VIEW_W // 2 + 1):
            x, y = px + dx, py + dy
            inside = 0 <= x < semantic.shape[0] and 0 <= y < semantic.shape[1]
            row.append(names[int(semantic[x, y])] if inside else None)
        rows.append(row)
    return rows


def direction(dx: int, dy: int) -> str:
    """``2 north, 1 east`` for an offset (dx east, dy south); ``here`` for (0, 0)."""
    parts = []
    if dy:
        parts.append(f"{abs(dy)} {'north' if dy < 0 else 'south'}")
    if dx:
        parts.append(f"{abs(dx)} {'east' if dx > 0 else 'west'}")
    return ", ".join(parts) or "here"


def nearest_things(view: list[list[str | None]]) -> dict[str, tuple[int, int]]:
    """For each non-ground kind in view (the player excluded), the offset (dx, dy) of its
    nearest cell by steps (|dx| + |dy|), ties to the first in reading order."""
    cy, cx = len(view) // 2, len(view[0]) // 2
    best: dict[str, tuple[int, int]] = {}
    for r, row in enumerate(view):
        for c, name in enumerate(row):
            if name is None or name in GROUND or name == "player" or (r, c) == (cy, cx):
                continue
            off = (c - cx, r - cy)
            if name not in best or abs(off[0]) + abs(off[1]) < abs(best[name][0]) + abs(best[name][1]):
                best[name] = off
    return best


def time_of_day(daylight: float) -> str:
    return "day" if daylight > 0.5 else ("dusk" if daylight > 0.2 else "night")


def text_observation(
    view: list[list[str | None]],
    inventory: dict[str, int],
    facing: str | None,
    daylight: float,
    sleeping: bool = False,
) -> str:
    """What the player perceives, as text for an LLM planner: things in view with direction
    and steps, terrain around, what it faces, inventory, vitals out of 9, time of day."""
    things = nearest_things(view)
    seen = sorted(things.items(), key=lambda kv: (abs(kv[1][0]) + abs(kv[1][1]), kv[0]))
    lines = ["You see:"]
    lines += [f"- {name}: {direction(*off)} ({abs(off[0]) + abs(off[1])} steps)" for name, off in seen] or [
        "- nothing but terrain"
    ]
    ground = sorted({n for row in view for n in row if n in GROUND})
    if ground:
        lines.append(f"Terrain around: {', '.join(ground)}.")
    lines.append(f"You face: {facing or 'nothing'}.")
    items = [f"{k} {v}" for k, v in inventory.items() if k not in VITALS and v > 0]
    lines.append(f"Inventory: {', '.join(items) if items else 'empty'}.")
    lines.append("Vitals: " + ", ".join(f"{k} {inventory.get(k, 0)}/9" for k in VITALS) + ".")
    lines.append(f"Time: {time_of_day(daylight)}{' (you are asleep)' if sleeping else ''}.")
    return "\n".join(lines)


class _InsertionOrderedSet(dict):
    """The set operations Crafter's world uses on a chunk's objects, iterated in insertion
    order (a dict's) instead of memory-address order (a set of objects hashed by id)."""

    def add(self, item) -> None:
        self[item] = None

    def remove(self, item) -> None:
        del self[item]


def _ordered_chunks(world) -> None:
    """Make a world's chunk → objects index iterate in a fixed order. Crafter picks which
    creature to despawn by index into ``list(chunk_set)``, so with plain sets the same seed
    gave different episodes in different processes (after the first despawn, a few hundred
    steps in)."""
    import collections

    chunks = collections.defaultdict(_InsertionOrderedSet)
    for obj in world.objects:  # in the order they were added
        chunks[world.chunk_key(obj.pos)].add(obj)
    world._chunks = chunks


def _world_path(directory: str, seed: int) -> Path:
    return Path(directory) / f"world-{seed}.pkl"


def _load_world(directory: str, seed: int) -> Any | None:
    """The world another process of this run generated for ``seed``, or None. The directory is
    the run's own (``tempfile``, mode 700), so its pickles are this run's."""
    try:
        return pickle.loads(_world_path(directory, seed).read_bytes())
    except FileNotFoundError:
        return None


def _save_world(directory: str, seed: int, game: Any) -> None:
    """Written to a private temp name and renamed: a reader never sees half a file, and two
    processes that generated the same world at once both write the same bytes' worth."""
    path = _world_path(directory, seed)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(pickle.dumps(game, protocol=pickle.HIGHEST_PROTOCOL))
    os.replace(tmp, path)


@dataclass
class CrafterConfig:
    seed: int | None = None
    length: int = 10_000  # steps before truncation (Crafter's default episode length)
    size: int = 64  # rendered image side in pixels
    area: int = 64  # world side in cells
    cache_worlds: int = 64  # freshly generated worlds kept per seed (generation takes ~1 s)
    # a directory private to one run whose processes share the worlds they generate (~95 kB
    # each, 1 ms to load): eval workers then generate each seed's world once between them
    world_dir: str | None = None


class CrafterEnv:
    """``reset(seed) → (obs, info)``, ``step(action) → (obs, reward, terminated, truncated, info)``.

    ``obs = {"image": uint8 [size, size, 3], "text": str}``; ``info`` holds ``inventory``,
    ``vitals``, ``achievements`` (unlocked this episode), ``local_view``, ``facing``,
    ``daylight``, ``step`` and, apart, ``privileged`` (``player_pos``, ``semantic``).
    Actions are Crafter's ids 0–16 or their names (``"do"``, ``"place_table"``, ...).
    """

    def __init__(self, config: CrafterConfig | None = None) -> None:
        self.config = config or CrafterConfig()
        crafter = _crafter()
        c = self.config
        self._env = crafter.Env(area=(c.area, c.area), size=(c.size, c.size), length=c.length, seed=c.seed)
        self.actions = list(crafter.constants.actions)
        self._names = None
        self._step = 0
        self._worlds: dict[int, Any] = {}

    def reset(self, seed: int | None = None) -> tuple[dict, dict]:
        if seed is not None and seed not in self._worlds and self.config.world_dir:
            shared = _load_world(self.config.world_dir, seed)
            if shared is not None:
                self._worlds[seed] = shared
        if seed is not None and seed in self._worlds:
            # a deep copy of the just-generated game, RNG state included: the same episode as a
            # fresh reset with this seed, without the second of noise-based world generation
            self._env = copy.deepcopy(self._worlds[seed])
            image = self._env._obs()
        else:
            if seed is not None:  # Crafter seeds a world from (seed, episode count): restart the count
                self._env._seed, self._env._episode = seed, 0
            image = self._env.reset()
            _ordered_chunks(self._env._world)
            if seed is not None and self.config.cache_worlds > 0:
                if len(self._worlds) >= self.config.cache_worlds:
                    self._worlds.pop(next(iter(self._worlds)))
                self._worlds[seed] = copy.deepcopy(self._env)
                if self.config.world_dir:
                    _save_world(self.config.world_dir, seed, self._worlds[seed])
        self._names = self._names or semantic_names(self._env)
        self._step = 0
        self._unlocked: set[str] = set()
        return self._observe(image, self._env._player.inventory.copy(), self._env._player.achievements)

    def action_id(self, action: int | str) -> int:
        if isinstance(action, str):
            if action not in self.actions:
                raise UserError(f"unknown Crafter action {action!r}; valid: {', '.join(self.actions)}")
            return self.actions.index(action)
        if not 0 <= int(action) < len(self.actions):
            raise UserError(f"Crafter action id {action} out of range 0..{len(self.actions) - 1}")
        return int(action)

    def step(self, action: int | str) -> tuple[dict, float, bool, bool, dict]:
        image, reward, done, raw = self._env.step(self.action_id(action))
        self._step += 1
        obs, info = self._observe(image, raw["inventory"], raw["achievements"])
        terminated = self._env._player.health <= 0
        truncated = bool(done and not terminated)
        return obs, float(reward), bool(terminated), truncated, info

    def _observe(self, image: np.ndarray, inventory: dict, achievements: dict) -> tuple[dict, dict]:
        player = self._env._player
        semantic = self._env._sem_view()
        view = crop_view(semantic, player.pos, self._names)
        fx, fy = player.pos[0] + player.facing[0], player.pos[1] + player.facing[1]
        inside = 0 <= fx < semantic.shape[0] and 0 <= fy < semantic.shape[1]
        facing = self._names[int(semantic[fx, fy])] if inside else None
        daylight = float(self._env._world.daylight)
        self._unlocked |= {k for k, v in achievements.items() if v > 0}
        text = text_observation(view, inventory, facing, daylight, player.sleeping)
        info: dict[str, Any] = {
            "inventory": {k: v for k, v in inventory.items() if k not in VITALS},
            "vitals": {k: inventory[k] for k in VITALS},
            "achievements": sorted(self._unlocked),
            "local_view": view,
            "facing": facing,
            "daylight": daylight,
            "sleeping": bool(player.sleeping),
            "step": self._step,
            "privileged": {"player_pos": [int(player.pos[0]), int(player.pos[1])], "semantic": semantic},
        }
        return {"image": image, "text": text}, info
