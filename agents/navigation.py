"""The agent's own map: where it is (by dead reckoning) and what it has seen, plus path search.

No privileged information: the position is integrated from the agent's own moves. Crafter's
player acts first in a step, on the state the agent just observed, so whether a move succeeds
is known from the view it was chosen on: the target cell must be walkable (grass, sand, path,
or lava) and free of creatures, and a sleeping player does not move. The map is in the agent's
own frame: the start cell is (0, 0), x grows east, y south.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable

from agents.types import AgentView

Cell = tuple[int, int]
WALKABLE = frozenset({"grass", "sand", "path"})
CREATURES = frozenset({"player", "cow", "zombie", "skeleton", "arrow", "plant"})
MOVES = {"move_left": (-1, 0), "move_right": (1, 0), "move_up": (0, -1), "move_down": (0, 1)}
DIRECTIONS = {v: k for k, v in MOVES.items()}
# what is under a creature when the cell was never seen bare: where each kind lives
_GROUND_UNDER = {"skeleton": "path", "arrow": "path"}


def lava_shield(view: AgentView, action: str) -> str:
    """``noop`` instead of a move into visible lava (walkable for the player, and fatal);
    every controller's actions pass through it."""
    if action in MOVES:
        d = MOVES[action]
        rows, cols = len(view.local_view), len(view.local_view[0])
        if view.local_view[rows // 2 + d[1]][cols // 2 + d[0]] == "lava":
            return "noop"
    return action


def add(a: Cell, b: Cell) -> Cell:
    return (a[0] + b[0], a[1] + b[1])


def neighbours(c: Cell) -> list[Cell]:
    return [add(c, d) for d in MOVES.values()]


def chebyshev(a: Cell, b: Cell) -> int:
    return max(abs(a[0] - b[0]), abs(a[1] - b[1]))


class SpatialMap:
    def __init__(self) -> None:
        self.pos: Cell = (0, 0)
        self.facing: Cell = (0, 1)  # Crafter's player starts facing south
        self.cells: dict[Cell, str] = {}
        self.creatures: dict[Cell, str] = {}  # as of the last view only
        self.where: dict[str, set[Cell]] = {}  # name → the cells remembered as it
        # cell → (creature, observation count when last seen there): what left the view
        self.sightings: dict[Cell, tuple[str, int]] = {}
        self.observations = 0

    def view_cells(self, view: AgentView) -> Iterable[tuple[Cell, str | None]]:
        rows, cols = len(view.local_view), len(view.local_view[0])
        for r, row in enumerate(view.local_view):
            for c, name in enumerate(row):
                yield (self.pos[0] + c - cols // 2, self.pos[1] + r - rows // 2), name

    def observe(self, view: AgentView) -> None:
        """Write the view into the map at the current position."""
        self.creatures = {}
        self.observations += 1
        for cell, name in self.view_cells(view):
            if name is None:
                self._write(cell, "outside")
            elif name in CREATURES:
                if name != "player":
                    self.creatures[cell] = name
                    self.sightings[cell] = (name, self.observations)
                if cell not in self.cells:
                    self._write(cell, _GROUND_UNDER.get(name, "grass"))
                continue
            else:
                self._write(cell, name)
            self.sightings.pop(cell, None)

    def _write(self, cell: Cell, name: str) -> None:
        old = self.cells.get(cell)
        if old != name:
            if old is not None:
                self.where[old].discard(cell)
            self.where.setdefault(name, set()).add(cell)
            self.cells[cell] = name

    def sighted(self, name: str, within: int) -> list[Cell]:
        """Cells where ``name`` was seen in the last ``within`` observations and not seen gone."""
        return [c for c, (n, t) in self.sightings.items() if n == name and self.observations - t < within]

    def apply(self, before: AgentView, action: str) -> None:
        """Dead reckoning: update position and facing for ``action`` taken on ``before``."""
        if action not in MOVES or (before.sleeping and before.vitals.get("energy", 0) < 9):
            return
        d = MOVES[action]
        self.facing = d
        rows, cols = len(before.local_view), len(before.local_view[0])
        target = before.local_view[rows // 2 + d[1]][cols // 2 + d[0]]
        if target in WALKABLE or target == "lava":
            self.pos = add(self.pos, d)

    def get(self, cell: Cell) -> str:
        return self.cells.get(cell, "unknown")

    def known(self, names: set[str] | frozenset[str]) -> list[Cell]:
        return [c for c, n in self.cells.items() if n in names]

    def search(
        self,
        cost: Callable[[Cell, str], float | None],
        is_goal: Callable[[Cell], bool],
        max_expand: int = 6000,
    ) -> list[Cell] | None:
        """Dijkstra from the current position; ``cost(cell, name)`` is the price of entering a
        cell (None: impassable). Returns the cells to walk through, goal last ([] if the
        agent stands on a goal), or None when no goal is reachable."""
        start = self.pos
        if is_goal(start):
            return []
        dist = {start: 0.0}
        parent: dict[Cell, Cell] = {}
        heap = [(0.0, start)]
        expanded = 0
        while heap and expanded < max_expand:
            d, cell = heapq.heappop(heap)
            if d > dist.get(cell, float("inf")):
                continue
            if cell != start and is_goal(cell):
                path = [cell]
                while path[-1] in parent and parent[path[-1]] != start:
                    path.append(parent[path[-1]])
                return path[::-1]
            expanded += 1
            for nxt in neighbours(cell):
                step = cost(nxt, self.get(nxt))
                if step is None:
                    continue
                nd = d + step
                if nd < dist.get(nxt, float("inf")):
                    dist[nxt] = nd
                    parent[nxt] = cell
                    heapq.heappush(heap, (nd, nxt))
        return None

    def is_frontier(self, cell: Cell) -> bool:
        """A known, enterable cell next to never-seen ones: walking there reveals new ground."""
        return self.get(cell) not in ("unknown", "outside") and any(
            self.get(n) == "unknown" for n in neighbours(cell)
        )


def stations_in_reach(m: SpatialMap, reach: int = 25) -> frozenset[str]:
    """Stations remembered within ``reach`` (as the crow flies) that can be used: a table,
    and a furnace only where one cell has both in crafting reach (what iron tools need);
    a furnace elsewhere is not reported, so the planner places a new one by a table."""
    tables = [c for c in m.known({"table"}) if chebyshev(c, m.pos) <= reach]
    furnaces = [c for c in m.known({"furnace"}) if chebyshev(c, m.pos) <= reach]
    out = {"table"} if tables else set()
    if any(chebyshev(t, f) <= 2 for t in tables for f in furnaces):
        out.add("furnace")
    return frozenset(out)
