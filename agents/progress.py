"""Which subgoals one environment step achieved, read from what the agent sees.

Shared by the controllers (is my subgoal met?) and by hindsight relabelling for
goal-conditioned behaviour cloning (which goal did this stretch of play reach?).
"""

from __future__ import annotations

from agents.types import AgentView
from envs.crafter.techtree import RULES, Subgoal

MAX_ITEMS = 9


def _received() -> dict[str, str]:
    """Item → material collected to receive it (wood → tree, drink → water, sapling → grass)."""
    return {item: material for material, rule in RULES().collect.items() for item in rule["receive"]}


def step_events(before: AgentView, action: str, after: AgentView) -> list[Subgoal]:
    """Subgoals (count 1 each) completed between two consecutive views: a collected item or
    drink rises; a placed thing's ingredients were spent by a ``place_*`` action; a made item
    rises after a ``make_*`` action."""
    rules = RULES()
    out: list[Subgoal] = []
    received = _received()
    held_before = {**before.inventory, **before.vitals}
    held_after = {**after.inventory, **after.vitals}
    if action == "do":
        for item, material in received.items():
            rose = held_after.get(item, 0) > held_before.get(item, 0)
            # at Crafter's cap of 9 a strike still collects (and unlocks), the count just stays
            capped = before.facing == material and held_before.get(item, 0) >= MAX_ITEMS
            if rose or capped:
                out.append(Subgoal("collect", material))
    elif action.startswith("place_"):
        thing = action[len("place_") :]
        uses = rules.place[thing]["uses"]
        if all(held_after.get(k, 0) == held_before.get(k, 0) - v for k, v in uses.items()):
            out.append(Subgoal("place", thing))
    elif action.startswith("make_"):
        item = action[len("make_") :]
        if held_after.get(item, 0) > held_before.get(item, 0):
            out.append(Subgoal("make", item))
    return out


class SubgoalTracker:
    """Counts events toward one subgoal since it started; met when the count is reached."""

    def __init__(self, subgoal: Subgoal) -> None:
        self.subgoal = subgoal
        self.progress = 0

    def update(self, before: AgentView, action: str, after: AgentView) -> None:
        for e in step_events(before, action, after):
            if (e.verb, e.target) == (self.subgoal.verb, self.subgoal.target):
                self.progress += 1

    @property
    def met(self) -> bool:
        return self.progress >= self.subgoal.count
