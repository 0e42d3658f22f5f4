"""The controller side shared by every cloned policy (GCBC, GOAP): goal bookkeeping, sampling,
the lava shield, and when a subgoal counts as done or failed.

A subclass supplies ``logits(view)`` for the current goal and may keep its own memory in
``remember(before, action, after)``.
"""

from __future__ import annotations

from abc import abstractmethod

import torch

from agents.encoding import ACTIONS, GOALS, goal_index
from agents.navigation import lava_shield
from agents.progress import SubgoalTracker
from agents.types import AgentView, Controller, SubgoalStatus
from envs.crafter.techtree import Subgoal
from telos.errors import UserError


class ClonedController(Controller):
    """Runs a cloned policy on one subgoal at a time.

    Done when the subgoal's events (``agents.progress``) reach its count; failed after
    ``max_steps_without_progress`` steps without one of them — a cloned policy has no other way
    to know it is stuck, and the planner can then re-plan.
    """

    def __init__(self, *, temperature: float, seed: int, max_steps_without_progress: int) -> None:
        if temperature < 0:
            raise UserError(f"temperature must be ≥ 0, got {temperature}")
        if max_steps_without_progress < 1:
            raise UserError(f"max_steps_without_progress must be ≥ 1, got {max_steps_without_progress}")
        self.temperature = temperature  # 0 = argmax
        self.seed = seed
        self.max_steps_without_progress = max_steps_without_progress
        # a private generator: sampling is reproducible and leaves the global RNG alone
        self._generator = torch.Generator().manual_seed(seed)
        self.reset()

    def reset(self) -> None:
        self._subgoal: Subgoal | None = None
        self._goal = -1
        self._tracker: SubgoalTracker | None = None
        self._last_view: AgentView | None = None
        self._stalled = 0

    def start(self, subgoal: Subgoal, view: AgentView) -> None:
        try:
            self._goal = goal_index(subgoal)
        except KeyError:
            valid = ", ".join(f"{v} {t}" for v, t in GOALS)
            raise UserError(f"the {self.name} controller has no goal {subgoal}; valid: {valid}") from None
        self._subgoal = subgoal
        self._tracker = SubgoalTracker(subgoal)
        self._last_view = view
        self._stalled = 0

    @abstractmethod
    def logits(self, view: AgentView) -> torch.Tensor:
        """The policy's action logits [17] for ``view`` and the current goal (``self._goal``)."""

    def remember(self, before: AgentView | None, action: int | None, after: AgentView) -> None:  # noqa: B027
        """A policy with memory updates it here (``before`` is None at the episode's start)."""

    def act(self, view: AgentView) -> int:
        if self._goal < 0:
            raise RuntimeError(f"{type(self).__name__}.act before start()")
        logits = self.logits(view)
        if self.temperature == 0:
            action = int(logits.argmax())
        else:
            probs = torch.softmax(logits / self.temperature, dim=-1)
            action = int(torch.multinomial(probs, 1, generator=self._generator))
        return ACTIONS.index(lava_shield(view, ACTIONS[action]))

    def observe(self, view: AgentView, action: int | None = None) -> None:
        self.remember(self._last_view if action is not None else None, action, view)
        if self._tracker is not None and self._last_view is not None and action is not None:
            before = self._tracker.progress
            self._tracker.update(self._last_view, ACTIONS[int(action)], view)
            self._stalled = 0 if self._tracker.progress > before else self._stalled + 1
        self._last_view = view

    def status(self, view: AgentView) -> SubgoalStatus:
        if self._tracker is None:
            return SubgoalStatus("failed", "no subgoal started")
        if self._tracker.met:
            return SubgoalStatus("done")
        if self._stalled >= self.max_steps_without_progress:
            return SubgoalStatus(
                "failed",
                f"no progress on {self._subgoal} in {self._stalled} steps "
                f"({self._tracker.progress}/{self._tracker.subgoal.count} done)",
            )
        return SubgoalStatus("running")

    def describe(self) -> dict:
        return {
            "name": self.name,
            "temperature": self.temperature,
            "seed": self.seed,
            "max_steps_without_progress": self.max_steps_without_progress,
        }
