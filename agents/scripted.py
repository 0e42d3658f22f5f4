"""The scripted controller: Crafter skills built only on what the agent sees and remembers.

Each step it first serves survival reflexes (fight an adjacent zombie or skeleton, sleep in a
sealed pocket dug into stone when tired, drink, hunt cows), then the current subgoal:
``collect M`` walks to the nearest remembered M (tunnelling through what its pickaxe can
mine) and strikes it, exploring the nearest unseen ground when none is known; ``place T``
puts T on a free faced cell (a furnace next to a known table, so both are in crafting reach);
``make I`` walks to a cell with the needed stations within reach and crafts.

A subgoal fails, with a reason the planner can read, when a tool or ingredient is missing,
when the ground is explored without finding the target, or after a step budget spent on the
subgoal itself (steps spent on survival do not count).
"""

from __future__ import annotations

from dataclasses import dataclass

from agents.navigation import (
    DIRECTIONS,
    MOVES,
    WALKABLE,
    Cell,
    SpatialMap,
    add,
    chebyshev,
    lava_shield,
    neighbours,
    stations_in_reach,
)
from agents.progress import SubgoalTracker
from agents.types import AgentView, Controller, SubgoalStatus
from envs.crafter.env import action_names
from envs.crafter.techtree import RULES, Subgoal

# cells a zombie cannot enter or spawn on: a pocket walled by these is safe to sleep in
SOLID = frozenset(
    {"stone", "coal", "iron", "diamond", "tree", "water", "lava", "table", "furnace", "outside"}
)
MOUNTAIN = frozenset({"stone", "coal", "iron", "diamond", "path", "lava"})
# steps of work allowed per unit of a subgoal before it is declared failed
COLLECT_BUDGET = {
    "tree": 200,
    "stone": 300,
    "coal": 500,
    "iron": 1500,
    "diamond": 2500,
    "water": 300,
    "grass": 300,
}


@dataclass
class ScriptedConfig:
    drink_below: int = 4  # go to water when drink ≤ this (and drink to 9)
    eat_below: int = 5  # hunt a visible cow when food ≤ this
    sleep_below: int = 2  # sleep when energy ≤ this
    night_below: float = 0.35  # daylight under which a pickaxe holder waits in a shelter
    retreat_below: int = 5  # health at which a pickaxe holder hides in a shelter to heal ...
    healed: int = 8  # ... until health is back to this
    hunt_below: int = 4  # food at which the agent goes looking for cows it cannot see
    spare_wood: int = 2  # extra wood gathered (once) for a wood and a stone sword
    spare_stone: int = 1  # extra stone gathered (once) for the stone sword
    place_budget: int = 300
    make_budget: int = 300
    repath_every: int = 12  # steps before a cached path is searched again


class ScriptedController(Controller):
    name = "scripted"

    def __init__(self, config: ScriptedConfig | None = None) -> None:
        self.config = config or ScriptedConfig()
        self.actions = action_names()
        self.reset()

    # ----------------------------------------------------------------- bookkeeping
    def reset(self) -> None:
        self.map = SpatialMap()
        self.view: AgentView | None = None
        self.subgoal: Subgoal | None = None
        self.tracker: SubgoalTracker | None = None
        self.target_count = 0
        self.bank: dict[str, int] = {}  # items gathered beyond the plan, which swords may use
        self._extra: tuple[str | None, int] = (None, 0)
        self.cows: dict[Cell, int] = {}  # cow positions seen, with the step last seen
        self.work_steps = 0  # steps spent on the current subgoal (reflexes excluded)
        self.failure = ""
        self.mode = ""  # the reflex in control, "" for the subgoal
        self.shelter: dict | None = None
        self._path: list[Cell] = []
        self._path_key: object = None
        self._path_age = 0
        self._no_shelter_until = -1  # step before which no new shelter search is made

    def observe(self, view: AgentView, action: int | None = None) -> None:
        name = self.actions[action] if action is not None else None
        if name is not None and self.view is not None:
            self.map.apply(self.view, name)
            if self.tracker is not None:
                self.tracker.update(self.view, name, view)
        self.map.observe(view)
        self.view = view

    def start(self, subgoal: Subgoal, view: AgentView) -> None:
        self.subgoal, self.tracker = subgoal, SubgoalTracker(subgoal)
        # a little more wood/stone than asked while no stone sword is held: it kills a zombie
        # in 2 hits instead of 5 (Crafter caps items at 9)
        item = {"tree": "wood", "stone": "stone"}.get(subgoal.target) if subgoal.verb == "collect" else None
        wanted = {"wood": self.config.spare_wood, "stone": self.config.spare_stone}.get(item or "", 0)
        armed = view.inventory.get("stone_sword", 0) > 0
        extra = 0 if armed or item is None else wanted - self.bank.get(item, 0)
        extra = max(0, min(extra, 9 - view.inventory.get(item or "", 0) - subgoal.count))
        self.target_count, self._extra = subgoal.count + extra, (item, extra)
        self.work_steps, self.failure = 0, ""
        self._path, self._path_key = [], None
        if self.view is None:
            self.observe(view)

    def status(self, view: AgentView) -> SubgoalStatus:
        if self.tracker is not None and self.tracker.progress >= self.target_count:
            item, extra = self._extra
            if item is not None:
                self.bank[item] = self.bank.get(item, 0) + extra
                self._extra = (None, 0)
            return SubgoalStatus("done")
        if self.failure:
            return SubgoalStatus("failed", self.failure)
        return SubgoalStatus("running")

    def known_stations(self, reach: int = 25) -> frozenset[str]:
        return stations_in_reach(self.map, reach)

    def act(self, view: AgentView) -> int:
        if self.view is None:
            self.observe(view)
        action = self._reflex(view)
        if action is None:
            self.mode = ""
            self.work_steps += 1
            action = self._work(view)
        return self.actions.index(lava_shield(view, action))

    # ----------------------------------------------------------------- reflexes
    def _reflex(self, view: AgentView) -> str | None:
        c, vit = self.config, view.vitals
        if view.sleeping:
            return "noop"
        for cell in neighbours(self.map.pos):
            if self.map.creatures.get(cell) in ("zombie", "skeleton"):
                self.mode = "fight"
                return self._face_and(cell, "do")
        # healing needs food and drink above 0: hiding hungry or thirsty only runs them down
        fed = min(vit["food"], vit["drink"]) > 2
        hurt = vit["health"] <= c.retreat_below and fed and view.inventory.get("wood_pickaxe", 0) > 0
        if self.mode == "sleep" or vit["energy"] <= c.sleep_below or self._night(view) or hurt:
            action = self._sleep(view)
            if action is not None:
                self.mode = "sleep"
                return action
            self.mode = ""
        if self.mode == "drink" or vit["drink"] <= c.drink_below or (self._night(view) and vit["drink"] < 6):
            if vit["drink"] < 9 and self.map.known({"water"}):
                self.mode = "drink"
                action = self._interact({"water"}, "do", view, key="drink")
                if action is not None:
                    return action
            self.mode = ""
        if self.mode == "eat" or vit["food"] <= c.eat_below:
            visible = {cell for cell, n in self.map.creatures.items() if n == "cow"}
            self.cows.update(dict.fromkeys(visible, view.step))
            self.cows = {k: t for k, t in self.cows.items() if view.step - t < 40}  # cows wander
            cows = visible or set(self.cows)
            if cows and vit["food"] < 9:
                self.mode = "eat"
                action = self._interact_cells(cows, "do", key=("eat", tuple(sorted(cows))))
                if action is not None:
                    return action
            if vit["food"] <= c.hunt_below:
                self.mode = "eat"
                action = self._explore(view, seek="cow", fail=False)
                if action is not None:
                    return action
            self.mode = ""
        return None

    def _night(self, view: AgentView) -> bool:
        return view.daylight < self.config.night_below and view.inventory.get("wood_pickaxe", 0) > 0

    def _sleep(self, view: AgentView) -> str | None:
        """Dig a two-cell pocket into stone, seal its mouth with a stone, sleep and wait out
        the night inside (zombies spawn on grass in the dark and hit sleepers for 7). Without a
        pickaxe or a suitable wall, sleep where we stand when exhausted. None when done."""
        s, tired = self.shelter, view.vitals["energy"] <= self.config.sleep_below
        if s is None:
            thirsty = view.vitals["drink"] < 6 and self.map.known({"water"})
            if thirsty and not tired:  # drink first: a night inside costs ~3 drink
                return None
            if view.step >= self._no_shelter_until:
                s = self._find_shelter(view)
                if s is None:
                    self._no_shelter_until = view.step + 25
            if s is None:
                s = {"stage": "open"} if tired else None
            if s is None:
                return None
            self.shelter = s
        stage, m = s["stage"], self.map
        if stage in ("go", "dig") and min(view.vitals["food"], view.vitals["drink"]) <= 2 and not tired:
            return self._abandon_shelter(tired)  # eat and drink first
        if stage == "open":
            if view.vitals["energy"] >= 9:
                self.shelter = None
                return None
            return "sleep"
        a, d = s["a"], s["d"]
        cell_s, cell_t = add(a, d), add(add(a, d), d)
        back = (-d[0], -d[1])
        if stage == "go":
            if m.pos == a:
                s["stage"] = "dig"
            else:
                return self._walk_to({a}, key=("shelter", a)) or self._abandon_shelter(tired)
        if s["stage"] == "dig":
            if m.pos == a:
                return self._face_and(cell_s, "do") if m.get(cell_s) != "path" else DIRECTIONS[d]
            if m.pos == cell_s:
                return self._face_and(cell_t, "do") if m.get(cell_t) != "path" else DIRECTIONS[d]
            if m.pos == cell_t:
                s["stage"] = "seal"
                return DIRECTIONS[back]
            return self._abandon_shelter(tired)
        if s["stage"] == "seal":
            if m.pos != cell_s or m.facing != back:
                return self._abandon_shelter(tired)
            if m.get(a) == "stone":
                s["stage"] = "rest"
            elif view.inventory.get("stone", 0) >= 1 and a not in m.creatures:
                return "place_stone"
            else:
                return self._abandon_shelter(tired)
        critical = min(view.vitals["drink"], view.vitals["food"]) <= 2
        if view.vitals["energy"] < 9 and not critical:
            return "sleep"
        healing = view.vitals["health"] < self.config.healed
        if (view.daylight < self.config.night_below or healing) and not critical:
            return "noop"
        self.shelter = None
        return "do" if m.get(a) == "stone" and m.facing == back else None

    def _abandon_shelter(self, tired: bool) -> str | None:
        self.shelter = {"stage": "open"} if tired else None
        self._no_shelter_until = self.view.step + 25 if self.view else 0
        return "sleep" if tired else None

    def _find_shelter(self, view: AgentView) -> dict | None:
        if view.inventory.get("wood_pickaxe", 0) < 1:
            return None
        m = self.map

        def site(a: Cell) -> Cell | None:
            if m.get(a) not in WALKABLE:
                return None
            for d in MOVES.values():
                cs, ct = add(a, d), add(add(a, d), d)
                diggable = ("stone", "path")  # stone is dug out; a path pocket is ready-made
                if m.get(cs) not in diggable or m.get(ct) not in diggable or m.get(add(ct, d)) not in SOLID:
                    continue
                side = [(d[1], d[0]), (-d[1], -d[0])]
                if all(m.get(add(c, o)) in SOLID for c in (cs, ct) for o in side):
                    return d
            return None

        path = m.search(self._cost(view), lambda c: chebyshev(c, m.pos) <= 30 and site(c) is not None, 3000)
        if path is None:
            return None
        a = path[-1] if path else m.pos
        return {"stage": "go", "a": a, "d": site(a)}

    # ----------------------------------------------------------------- subgoal work
    def _work(self, view: AgentView) -> str:
        sg = self.subgoal
        if sg is None or self.failure:
            return "noop"
        handler = {"collect": self._collect, "place": self._place, "make": self._make}[sg.verb]
        return handler(sg, view)

    def _fail(self, reason: str) -> str:
        self.failure = reason
        return "noop"

    def _collect(self, sg: Subgoal, view: AgentView) -> str:
        rule = RULES().collect[sg.target]
        missing = [t for t, k in rule["require"].items() if view.inventory.get(t, 0) < k]
        if missing:
            return self._fail(f"collecting {sg.target} needs {', '.join(missing)}")
        if self.work_steps > COLLECT_BUDGET.get(sg.target, 500) * sg.count:
            return self._fail(f"no {sg.target} collected in {self.work_steps} steps")
        if sg.target == "grass" and self._facing_name() == "grass":  # saplings: strike grass in front
            return "do"
        action = self._interact({sg.target}, "do", view, key=("collect", sg.target))
        if action is not None:
            return action
        return self._explore(view, seek=sg.target)

    def _place(self, sg: Subgoal, view: AgentView) -> str:
        rule = RULES().place[sg.target]
        short = _shortfall(rule["uses"], view.inventory)
        if short:
            return self._fail(f"placing {sg.target} needs {', '.join(short)}")
        if self.work_steps > self.config.place_budget:
            return self._fail(f"found no free cell to place {sg.target} on")
        m = self.map
        near: set[Cell] = set()
        if sg.target == "furnace":  # keep it within crafting reach of a table
            tables = [c for c in m.known({"table"}) if chebyshev(c, m.pos) <= 25]
            near = {n for t in tables for n in _ring(t) if m.get(n) in WALKABLE}
        if near and m.pos not in near and self.work_steps < self.config.place_budget // 2:
            step = self._walk_to(near, key=("place-near", sg.target))
            if step is not None:
                return step
        front = add(m.pos, m.facing)
        if m.get(front) in rule["where"] and front not in m.creatures and m.get(front) != "unknown":
            return f"place_{sg.target}"
        for d, name in DIRECTIONS.items():  # step so that we face a free cell
            nxt = add(m.pos, d)
            if m.get(nxt) in WALKABLE and nxt not in m.creatures and (not near or nxt in near):
                return name
        return self._explore(view, seek=None)

    def _make(self, sg: Subgoal, view: AgentView) -> str:
        rule = RULES().make[sg.target]
        short = _shortfall(rule["uses"], view.inventory)
        if short:
            return self._fail(f"making {sg.target} needs {', '.join(short)}")
        if self.work_steps > self.config.make_budget:
            return self._fail(f"could not reach a {' and '.join(rule['nearby'])} to make {sg.target}")
        m = self.map
        stations = {n: [c for c in m.known({n}) if chebyshev(c, m.pos) <= 30] for n in rule["nearby"]}
        absent = [n for n, cells in stations.items() if not cells]
        if absent:
            return self._fail(f"no {' or '.join(absent)} nearby to make {sg.target}; place one first")

        def in_reach(c: Cell) -> bool:
            return all(any(chebyshev(c, s) <= 1 for s in cells) for cells in stations.values())

        if in_reach(m.pos):
            return self._sword_first(view, rule) or f"make_{sg.target}"
        step = self._walk_to(None, key=("make", sg.target), goal=in_reach)
        if step is None:
            return self._fail(f"no cell within reach of {' and '.join(rule['nearby'])} to make {sg.target}")
        return step

    def _sword_first(self, view: AgentView, rule: dict) -> str | None:
        """At a table, with wood (and stone) banked beyond the plan: make a sword first."""
        inv, make = view.inventory, RULES().make
        for sword in ("stone_sword", "wood_sword"):
            if inv.get(sword, 0) or inv.get("stone_sword", 0):
                continue
            need = make[sword]["uses"]
            if all(
                min(self.bank.get(t, 0), inv.get(t, 0) - rule["uses"].get(t, 0)) >= k for t, k in need.items()
            ):
                for t, k in need.items():
                    self.bank[t] -= k
                return f"make_{sword}"
        return None

    # ----------------------------------------------------------------- movement
    def _facing_name(self) -> str:
        front = add(self.map.pos, self.map.facing)
        return self.map.creatures.get(front) or self.map.get(front)

    def _face_and(self, cell: Cell, action: str) -> str:
        """``action`` if facing ``cell`` (adjacent), else turn toward it (it is not walkable,
        so the move only turns)."""
        d = (cell[0] - self.map.pos[0], cell[1] - self.map.pos[1])
        return action if self.map.facing == d else DIRECTIONS[d]

    def _interact(self, targets: set[str], action: str, view: AgentView, key: object) -> str | None:
        cells = {c for c in self.map.known(targets) if chebyshev(c, self.map.pos) <= 40}
        if not cells:
            return None
        return self._interact_cells(cells, action, key)

    def _interact_cells(self, cells: set[Cell], action: str, key: object) -> str | None:
        m = self.map
        for n in neighbours(m.pos):
            if n in cells:
                return self._face_and(n, action)
        stand = {n for c in cells for n in neighbours(c)}
        return self._walk_to(stand, key=key)

    def _cost(self, view: AgentView):
        inv = view.inventory
        mineable = set()
        if inv.get("wood_pickaxe", 0):
            mineable |= {"stone", "coal"}
        if inv.get("stone_pickaxe", 0):
            mineable.add("iron")
        if inv.get("iron_pickaxe", 0):
            mineable.add("diamond")
        pos, creatures = self.map.pos, self.map.creatures
        # skeletons shoot arrows along rows and columns (2 damage each): keep out of their lines
        archers = [c for c, n in creatures.items() if n == "skeleton"]

        def cost(cell: Cell, name: str) -> float | None:
            if cell in creatures and chebyshev(cell, pos) <= 2:
                return None
            if name in WALKABLE:
                step = 1.0
            elif name == "unknown":
                step = 3.0
            elif name in mineable:
                step = 4.0
            else:
                return None
            for a in archers:
                if (a[0] == cell[0] or a[1] == cell[1]) and abs(a[0] - cell[0]) + abs(a[1] - cell[1]) <= 5:
                    step += 6.0
            return step

        return cost

    def _walk_to(self, cells: set[Cell] | None, key: object, goal=None) -> str | None:
        """One step along a (cached) shortest path to any of ``cells`` (or cells where
        ``goal(cell)``); None when unreachable or already there."""
        m, view = self.map, self.view
        is_goal = goal or (lambda c: c in cells)
        if is_goal(m.pos):
            return None
        self._path_age += 1
        stale = (
            key != self._path_key
            or not self._path
            or self._path_age > self.config.repath_every
            or self._path[0] not in neighbours(m.pos)
            or not is_goal(self._path[-1])
            or self._path[0] in m.creatures
        )
        if stale:
            path = m.search(self._cost(view), is_goal)
            self._path, self._path_key, self._path_age = path or [], key, 0
            if not path:
                return None
        nxt = self._path[0]
        name = m.get(nxt)
        if name in WALKABLE or name == "unknown":
            if name in WALKABLE:  # the move will succeed (see navigation): that cell is done
                self._path.pop(0)
            return DIRECTIONS[(nxt[0] - m.pos[0], nxt[1] - m.pos[1])]
        return self._face_and(nxt, "do")  # tunnel: mine it, then walk in

    def _explore(self, view: AgentView, seek: str | None, fail: bool = True) -> str | None:
        """Walk to the nearest frontier; for ores prefer frontiers in the mountains."""
        m = self.map
        area = (
            MOUNTAIN if seek in ("stone", "coal", "iron", "diamond") else {"grass"} if seek == "cow" else None
        )

        def near_area(c: Cell) -> bool:
            return any(m.get((c[0] + dx, c[1] + dy)) in area for dx in (-2, 0, 2) for dy in (-2, 0, 2))

        for prefer in (True, False) if area else (False,):
            goal = (lambda c: m.is_frontier(c) and near_area(c)) if prefer else m.is_frontier
            step = self._walk_to(None, key=("explore", seek, prefer), goal=goal)
            if step is not None:
                return step
        if not fail:
            return None
        what = seek or "a free cell"
        return self._fail(f"explored {len(m.cells)} cells without finding {what}")


def _shortfall(uses: dict[str, int], inventory: dict[str, int]) -> list[str]:
    """``["1 more wood", ...]`` for each ingredient held short of what a recipe uses."""
    return [f"{k - inventory.get(t, 0)} more {t}" for t, k in uses.items() if inventory.get(t, 0) < k]


def _ring(c: Cell) -> list[Cell]:
    return [(c[0] + dx, c[1] + dy) for dx in (-1, 0, 1) for dy in (-1, 0, 1) if (dx, dy) != (0, 0)]
