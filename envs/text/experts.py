"""A scripted actor for demonstrations: the game's walkthrough with harmless mistakes left in.

At each turn, with probability ``mistake_rate``, the expert spends the turn on an action that
changes nothing (examine something, look, inventory) instead of its next walkthrough step, so
a policy cloned from it wastes turns — room for RL to learn to skip them. Mistakes never
break the walkthrough: closing the fridge or eating an ingredient would.
"""

from __future__ import annotations

import random

HARMLESS_PREFIXES = ("examine ", "look", "inventory")


def harmless_actions(admissible: list[str]) -> list[str]:
    return [a for a in admissible if a.startswith(HARMLESS_PREFIXES)] or ["look"]


class NoisyWalkthrough:
    """``choose(episode)``: the next walkthrough action, or (with ``mistake_rate``) a harmless
    one. ``walkthroughs`` maps a game id to its winning action list."""

    def __init__(self, walkthroughs: dict[str, list[str]], mistake_rate: float, seed: int = 0) -> None:
        if not 0.0 <= mistake_rate < 1.0:
            raise ValueError(f"mistake_rate must be in [0, 1), got {mistake_rate}")
        self.walkthroughs, self.mistake_rate = walkthroughs, mistake_rate
        self.rng = random.Random(seed)
        self._progress: dict[int, int] = {}

    def __call__(self, episode) -> str:
        if self.next_step(episode) is None or self.rng.random() < self.mistake_rate:
            return self.rng.choice(harmless_actions(episode.admissible))
        return self.take_step(episode)

    def next_step(self, episode) -> str | None:
        """The next walkthrough action of ``episode`` (None once the walkthrough is done)."""
        done, plan = self._progress.get(id(episode), 0), self.walkthroughs[episode.game_id]
        return plan[done] if done < len(plan) else None

    def take_step(self, episode) -> str:
        """The next walkthrough action, without a mistake (a hint or a plan is being followed)."""
        step = self.next_step(episode)
        if step is None:
            return self.rng.choice(harmless_actions(episode.admissible))
        self._progress[id(episode)] = self._progress.get(id(episode), 0) + 1
        return step
