"""Crafter's tech tree, read from the game's own rules (``crafter/data.yaml``), and the oracle
plan: the ordered subgoals that reach an achievement from an inventory — the upper bound a
planner is compared against.

A subgoal is one of Crafter's verbs on one target: ``collect wood ×2``, ``place table``,
``make wood_pickaxe``. Plans assume a placed table or furnace stays within reach (the
controller crafts where it placed them); tools and materials are counted as they are used up.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from telos.errors import UserError


@dataclass(frozen=True)
class Subgoal:
    verb: str  # collect | place | make
    target: str  # material collected (tree, stone, ...), thing placed, or item made
    count: int = 1

    @property
    def achievement(self) -> str:
        """Crafter's achievement this subgoal unlocks (``collect_wood`` for collecting trees)."""
        item = RULES().collect[self.target]["receive"] if self.verb == "collect" else {self.target: 1}
        return f"{self.verb}_{next(iter(item))}"

    def __str__(self) -> str:
        suffix = f" ×{self.count}" if self.count > 1 else ""
        return f"{self.verb} {self.target}{suffix}"


@dataclass(frozen=True)
class Rules:
    collect: dict  # material → {require, receive, leaves}
    place: dict  # thing → {uses, where, type}
    make: dict  # item → {uses, nearby, gives}
    achievements: tuple[str, ...]


@cache
def RULES() -> Rules:  # noqa: N802 — a constant read once from the installed game
    try:
        import crafter
    except ImportError:
        raise UserError("crafter is not installed: pip install crafter") from None
    import yaml

    data = yaml.safe_load((crafter.constants.root / "data.yaml").read_text())
    return Rules(data["collect"], data["place"], data["make"], tuple(data["achievements"]))


def _source_of(item: str) -> str | None:
    """The material whose collection yields ``item`` (wood ← tree), if any."""
    for material, rule in RULES().collect.items():
        if item in rule["receive"] and material not in ("water", "grass"):
            return material
    return None


def oracle_plan(
    goal: str, inventory: dict[str, int] | None = None, stations: set[str] | None = None
) -> list[Subgoal]:
    """The subgoals, in order, that unlock achievement ``goal`` starting from ``inventory``
    with ``stations`` (placed tables/furnaces) in reach. Adjacent collections of the same
    material are merged."""
    rules = RULES()
    if goal not in rules.achievements:
        raise UserError(f"unknown Crafter achievement {goal!r}; valid: {', '.join(rules.achievements)}")
    inv = {k: v for k, v in (inventory or {}).items()}
    placed = set(stations or ())
    steps: list[Subgoal] = []

    def add(sub: Subgoal) -> None:
        if steps and sub.verb == "collect" and steps[-1].verb == "collect" and steps[-1].target == sub.target:
            steps[-1] = Subgoal("collect", sub.target, steps[-1].count + sub.count)
        else:
            steps.append(sub)

    def obtain(item: str, n: int) -> None:
        """Make sure ``n`` of ``item`` are held (tools stay, materials are spent by callers)."""
        missing = n - inv.get(item, 0)
        if missing <= 0:
            return
        if item in rules.make:
            for _ in range(missing):
                make(item)
            return
        material = _source_of(item)
        if material is None:
            raise UserError(f"no rule yields {item!r}")
        for tool, k in rules.collect[material]["require"].items():
            obtain(tool, k)
        add(Subgoal("collect", material, missing))
        inv[item] = n

    def spend(uses: dict[str, int]) -> None:
        # take each ingredient as soon as it is held, so obtaining the next one (which may
        # craft a tool from the same materials) cannot use it up a second time
        for item, k in uses.items():
            obtain(item, k)
            inv[item] -= k

    def place(thing: str) -> None:
        spend(rules.place[thing]["uses"])
        add(Subgoal("place", thing))
        placed.add(thing)

    def make(item: str) -> None:
        rule = rules.make[item]
        for station in rule["nearby"]:
            if station not in placed:
                place(station)
        spend(rule["uses"])
        add(Subgoal("make", item))
        inv[item] = inv.get(item, 0) + rule["gives"]

    verb, _, target = goal.partition("_")
    if verb == "collect":
        material = _source_of(target) or target
        if material not in rules.collect:
            raise UserError(f"the oracle does not plan {goal!r} (no collect rule for {target!r})")
        for tool, k in rules.collect[material]["require"].items():
            obtain(tool, k)
        add(Subgoal("collect", material))
    elif verb == "place" and target in rules.place:
        place(target)
    elif verb == "make" and target in rules.make:
        make(target)
    else:
        raise UserError(f"the oracle plans collect_*, place_* and make_* achievements, not {goal!r}")
    return _gather_early(steps)


def _gather_early(steps: list[Subgoal]) -> list[Subgoal]:
    """Collect each material's total at its first collection (one trip to the trees, not one
    per recipe). Safe: the tools a material needs are held by its first collection, and
    collected items are only spent later. Skipped where the total passes Crafter's cap of 9."""
    totals: dict[str, int] = {}
    for s in steps:
        if s.verb == "collect":
            totals[s.target] = totals.get(s.target, 0) + s.count
    out: list[Subgoal] = []
    seen: set[str] = set()
    for s in steps:
        if s.verb != "collect" or totals[s.target] > 9:
            out.append(s)
        elif s.target not in seen:
            seen.add(s.target)
            out.append(Subgoal("collect", s.target, totals[s.target]))
    return out
