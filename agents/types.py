"""What agents see, and the ``Planner`` / ``Controller`` interfaces the agent loop drives.

``AgentView`` is built from the environment's observation and ``info`` *without* its
``privileged`` part: controllers and planners see the local view, the inventory, the vitals
and their own memory — never the world map or the player's absolute position.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Literal

from envs.crafter.techtree import Subgoal


@dataclass(frozen=True)
class AgentView:
    text: str  # the text observation an LLM planner reads
    local_view: list[list[str | None]]  # 9 columns × 7 rows of names, rows north → south
    inventory: dict[str, int]  # items (vitals apart)
    vitals: dict[str, int]  # health, food, drink, energy (0–9)
    facing: str | None
    daylight: float
    sleeping: bool
    achievements: tuple[str, ...]  # unlocked so far this episode
    step: int

    @classmethod
    def from_env(cls, obs: dict, info: dict) -> AgentView:
        return cls(
            text=obs["text"],
            local_view=info["local_view"],
            inventory=dict(info["inventory"]),
            vitals=dict(info["vitals"]),
            facing=info["facing"],
            daylight=float(info["daylight"]),
            sleeping=bool(info["sleeping"]),
            achievements=tuple(info["achievements"]),
            step=int(info["step"]),
        )

    def visible(self) -> set[str]:
        return {name for row in self.local_view for name in row if name is not None}


@dataclass(frozen=True)
class Goal:
    """What a task asks for, as the planner reads it."""

    task_id: str
    achievement: str | None = None
    inventory: dict[str, int] = field(default_factory=dict)

    def describe(self) -> str:
        if self.achievement:
            return self.achievement
        return "have " + ", ".join(f"{k} {v}" for k, v in self.inventory.items())


@dataclass(frozen=True)
class MemoryEntry:
    task: str
    state: str  # the observation text the plan was made from
    plan: tuple[str, ...]  # subgoals as text
    success: bool = True


@dataclass
class PlanRequest:
    goal: Goal
    view: AgentView
    memories: list[MemoryEntry] = field(default_factory=list)
    failure: str | None = None  # why the previous plan failed (re-plan), if it did
    stations: frozenset[str] = frozenset()  # tables/furnaces the agent knows are in reach


@dataclass
class PlanResult:
    subgoals: list[Subgoal]
    text: str = ""  # the raw plan text (LLM output or the oracle's formatted plan)
    llm_calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    errors: list[str] = field(default_factory=list)  # parse / self-check problems seen on the way

    @property
    def ok(self) -> bool:
        return bool(self.subgoals)


class Planner(ABC):
    name: str = "planner"
    uses_privileged: bool = False

    @abstractmethod
    def plan(self, request: PlanRequest) -> PlanResult: ...

    def describe(self) -> dict:
        """What results.json records about this planner (model, temperature, ...)."""
        return {"name": self.name}


Status = Literal["running", "done", "failed"]


@dataclass(frozen=True)
class SubgoalStatus:
    state: Status
    reason: str = ""


class Controller(ABC):
    name: str = "controller"
    uses_privileged: bool = False

    def reset(self) -> None:  # noqa: B027 — stateless controllers need nothing
        """Forget everything from the previous episode."""

    @abstractmethod
    def start(self, subgoal: Subgoal, view: AgentView) -> None:
        """Begin working on ``subgoal``."""

    @abstractmethod
    def act(self, view: AgentView) -> int:
        """The next Crafter action id."""

    @abstractmethod
    def status(self, view: AgentView) -> SubgoalStatus:
        """Whether the current subgoal is met, still running or failed (with a reason)."""

    def observe(self, view: AgentView, action: int) -> None:  # noqa: B027
        """Called after every environment step with the new view and the action taken."""

    def describe(self) -> dict:
        return {"name": self.name}
