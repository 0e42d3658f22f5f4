"""Read-outs for learned Crafter controllers: facts a policy could in principle find in its
inputs but learns slowly from them, computed from the same inputs (the agent's own map and
status; no privileged state).

- The compass (``compass_vector``): per remembered target (water, tree, ores, table, furnace,
  cow) the offset to the nearest one and a known flag.
- The goal compass (``goal_compass_features``): the compass entry of the current goal's own target.
- The survival read-out (``survival_features``): what the scripted expert's reflexes depend on.
  The expert leaves its subgoal to drink when drink ≤ 4, to eat when food ≤ 5, and to shelter
  when it is dark and it holds a wood pickaxe, when it is exhausted, or when it is hurt and fed.
  To shelter it walks to a walkable cell ``a`` from which, in a direction ``d``, two diggable
  cells lie between solid walls with a solid cell behind, digs them, steps in, seals the mouth
  with a stone and sleeps until it is light. A clone sees these triggers only as vitals / 9 and a
  daylight number, and the site test as a conjunction of nine of its 441 map cells; neither is
  easy to learn from the ~90k reflex steps in 200k steps of play. Layout::

      [night, dark, tired, hurt, thirsty, hungry,
       water entry (6, as the goal compass reads one), cow entry (6),
       site known, dx / 16, dy / 16, path length / 16, at the site, dig direction (one-hot: left,
       right, up, down), walls around the agent / 4]

  where the site is the nearest (breadth-first over walkable cells of the map window) cell ``a``
  passing the expert's test, and "walls around the agent" counts its four neighbours that a
  zombie cannot enter (4: sealed in).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from agents.encoding import COMPASS_RANGE, COMPASS_TARGETS, COMPASS_UNKNOWN, GOALS, INVENTORY_KEYS, VIEW_NAMES
from agents.navigation import MOVES, WALKABLE
from agents.scripted import SOLID, ScriptedConfig

COMPASS_DIM = 3 * len(COMPASS_TARGETS)
COMPASS_SCALE = 16.0


def compass_vector(compass: np.ndarray) -> np.ndarray:
    """float32 [..., COMPASS_DIM] from int8 offsets [..., targets, 2]: per target dx / 16, dy / 16
    (0 when unknown) and a known flag. Offsets beyond the map window (±COMPASS_RANGE) keep their
    direction, which is what the policy needs to walk toward what it remembers."""
    known = compass[..., 0] != COMPASS_UNKNOWN
    xy = np.where(known[..., None], compass.astype(np.float32), 0.0) / COMPASS_SCALE
    out = np.concatenate([xy, known[..., None].astype(np.float32)], axis=-1)
    return out.reshape(*compass.shape[:-2], COMPASS_DIM).astype(np.float32)


assert COMPASS_RANGE < -COMPASS_UNKNOWN  # a clipped offset never reads as unknown


def _goal_target(verb: str, item: str) -> str | None:
    """The remembered cell a goal is worked at: its material for collect, the table for wood and
    stone tools and the furnace (placed at a table) for iron ones (Crafter makes an item only
    within one cell of its stations), the table for a furnace; None for goals done anywhere."""
    if verb == "collect":
        return item if item in COMPASS_TARGETS else None
    if verb == "make":
        return "furnace" if item.startswith("iron") else "table"
    return "table" if (verb, item) == ("place", "furnace") else None


# GOALS id → COMPASS_TARGETS id, -1 where the goal has no target
GOAL_TARGETS = tuple(COMPASS_TARGETS.index(t) if (t := _goal_target(*g)) is not None else -1 for g in GOALS)
GOAL_COMPASS_DIM = 6


def goal_compass_features(compass: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """float [B, GOAL_COMPASS_DIM]: the compass entry of each row's goal target, read out.

    With (u, v, k) = compass[b, 3·target[b] : 3·target[b] + 3] (offset / 16 and the known flag)::

        [u, v, sign(u), sign(v), k, k · 1{max(|16u|, |16v|) ≤ 1}]

    the last being "the station is within Crafter's crafting reach". A row whose goal has no
    target (target = -1) is all zeros. The full compass already holds the entry; reading it out
    for the goal spares the policy learning the recipe table, and the reach flag is the one fact
    a make action depends on that an offset / 16 shows only as a small number."""
    entries = compass.reshape(compass.shape[0], -1, 3)
    has = target >= 0
    picked = entries[torch.arange(compass.shape[0], device=compass.device), target.clamp(min=0)]
    picked = picked * has[:, None]
    u, v, k = picked.unbind(-1)
    cells = torch.maximum(u.abs(), v.abs()) * COMPASS_SCALE  # Chebyshev distance in cells
    reach = k * (cells.round() <= 1).float()
    return torch.stack([u, v, u.sign(), v.sign(), k, reach], dim=-1)


SURVIVAL_DIM = 28
DIGGABLE = frozenset({"stone", "path"})  # dug out, or a pocket already dug
_EXPERT = ScriptedConfig()
_DAYLIGHT = len(INVENTORY_KEYS)  # the status vector: counts / 9, daylight, sleeping
_KEY = {k: i for i, k in enumerate(INVENTORY_KEYS)}
_SCALE = 9.0
_WATER, _COW = COMPASS_TARGETS.index("water"), COMPASS_TARGETS.index("cow")


def _lookup(names: frozenset[str]) -> torch.Tensor:
    return torch.tensor([n in names for n in VIEW_NAMES])


_WALKABLE, _DIGGABLE, _SOLID = _lookup(WALKABLE), _lookup(DIGGABLE), _lookup(SOLID)


def _shift(x: torch.Tensor, dx: int, dy: int) -> torch.Tensor:
    """out[b, y, x] = x[b, y + dy, x + dx]; False beyond the window."""
    k = max(abs(dx), abs(dy))
    size = x.shape[-1]
    padded = F.pad(x.to(torch.uint8), (k, k, k, k))
    return padded[:, k + dy : k + dy + size, k + dx : k + dx + size].bool()


def site_directions(cells: torch.Tensor) -> torch.Tensor:
    """bool [B, 4, S, S]: cell (y, x) is a shelter mouth ``a`` with dig direction ``MOVES[i]`` —
    ``a`` walkable, a + d and a + 2d diggable, a + 3d solid, both sides of a + d and a + 2d solid
    (``ScriptedController._find_shelter``'s test). ``cells``: VIEW_NAMES ids [B, S, S], rows north
    → south; cells beyond the window count as neither diggable nor solid."""
    walk, dig, solid = (t.to(cells.device)[cells] for t in (_WALKABLE, _DIGGABLE, _SOLID))
    out = []
    for dx, dy in MOVES.values():
        px, py = dy, dx  # perpendicular
        ok = walk & _shift(dig, dx, dy) & _shift(dig, 2 * dx, 2 * dy) & _shift(solid, 3 * dx, 3 * dy)
        for k in (1, 2):
            for s in (1, -1):
                ok = ok & _shift(solid, k * dx + s * px, k * dy + s * py)
        out.append(ok)
    return torch.stack(out, dim=1)


def walking_distance(cells: torch.Tensor) -> torch.Tensor:
    """float [B, S, S]: steps from the window's centre (the agent) to each cell over walkable
    cells (4-neighbour breadth-first search), inf where unreachable inside the window."""
    size = cells.shape[-1]
    walk = _WALKABLE.to(cells.device)[cells]
    r = size // 2
    reached = torch.zeros_like(walk)
    reached[:, r, r] = True  # the agent's own cell, whatever the map holds under it
    dist = torch.full(walk.shape, float("inf"), device=cells.device)
    dist[:, r, r] = 0.0
    for step in range(1, size * size):
        grown = (
            reached
            | _shift(reached, 1, 0)
            | _shift(reached, -1, 0)
            | _shift(reached, 0, 1)
            | _shift(reached, 0, -1)
        )
        grown = grown & walk | reached
        new = grown & ~reached
        if not bool(new.any()):
            break
        dist[new] = float(step)
        reached = grown
    return dist


def survival_features(cells: torch.Tensor, status: torch.Tensor, compass: torch.Tensor) -> torch.Tensor:
    """float [B, SURVIVAL_DIM] (the module docstring's layout) from the map window ``cells``
    (VIEW_NAMES ids [B, S, S], the agent at the centre), ``status`` (``status_vector``: counts
    and vitals / 9, daylight, sleeping) and ``compass`` (``compass_vector``).

    The expert's thresholds (``ScriptedConfig``): night = daylight < 0.35 and a wood pickaxe
    held; dark = daylight < 0.35; tired = energy ≤ 2; hurt = health ≤ 5, food and drink > 2 and a
    wood pickaxe; thirsty = drink ≤ 4; hungry = food ≤ 5. The site is the reachable mouth with the
    fewest steps (ties: the first in row-major order, then the first direction in ``MOVES``);
    without one, its eight entries are 0."""
    cells = cells.long()
    b, size, _ = cells.shape
    r = size // 2
    count = (status[:, : len(INVENTORY_KEYS)].float() * _SCALE).round()
    held = count[:, _KEY["wood_pickaxe"]] >= 1
    dark = status[:, _DAYLIGHT].float() < _EXPERT.night_below
    food, drink = count[:, _KEY["food"]], count[:, _KEY["drink"]]
    triggers = [
        dark & held,
        dark,
        count[:, _KEY["energy"]] <= _EXPERT.sleep_below,
        (count[:, _KEY["health"]] <= _EXPERT.retreat_below) & (torch.minimum(food, drink) > 2) & held,
        drink <= _EXPERT.drink_below,
        food <= _EXPERT.eat_below,
    ]
    rows = torch.arange(b, device=cells.device)
    water = goal_compass_features(compass, torch.full((b,), _WATER, device=cells.device))
    cow = goal_compass_features(compass, torch.full((b,), _COW, device=cells.device))

    sites = site_directions(cells)  # [B, 4, S, S]
    dist = walking_distance(cells).masked_fill(~sites.any(dim=1), float("inf")).flatten(1)
    best = dist.argmin(dim=1)  # the first minimum in row-major order
    steps = dist.gather(1, best[:, None])[:, 0]
    known = torch.isfinite(steps)
    y, x = best // size, best % size
    direction = sites[rows, :, y, x]  # [B, 4]
    first = direction.float().cumsum(dim=1).eq(1) & direction  # the expert takes the first that fits
    k = known.float()[:, None]
    offset = torch.stack([x - r, y - r], dim=1).float() / COMPASS_SCALE

    solid = _SOLID.to(cells.device)[cells]
    walls = sum(solid[:, r + dy, r + dx].float() for dx, dy in MOVES.values())
    return torch.cat(
        [
            torch.stack(triggers, dim=1).float(),
            water,
            cow,
            k,
            offset * k,
            (steps.nan_to_num(posinf=0.0) / COMPASS_SCALE)[:, None],
            (known & (steps == 0)).float()[:, None],
            first.float() * k,
            (walls / 4.0)[:, None],
        ],
        dim=1,
    )
