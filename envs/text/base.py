"""One Gymnasium-style interface over offline text worlds, and their pools of games.

``reset() -> (observation, info)`` and ``step(action) -> (observation, reward, terminated,
truncated, info)``: the observation is text; ``info`` carries ``admissible`` (the actions the
game accepts now), ``score``, ``max_score``, ``won``, ``lost`` and ``state_key`` (a string equal
for equal game states, which GiGPO's step groups compare). ``reward`` is the score gained by the
step. An action the game does not understand is answered by the game's own text ("I don't
understand that"), never an exception: an LLM actor's bad action is part of the episode.

A *pool* is a list of game rows (plain dicts, JSON-able) built from an env spec such as
``env:textworld-cooking?recipe=1&take=1&split=train&games=16&seed=0``; each backend registers
a ``TextWorldBackend`` that makes the rows and an env for one row (``envs.text.pools`` parses
specs, builds pools and makes envs).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

from telos.errors import UserError
from telos.registry import Registry

SPEC_PREFIX = "env:"
# keys every spec takes, whatever the backend; the rest go to the backend
COMMON_KEYS = {"games": 16, "seed": 0, "max_steps": 20, "split": "train"}


class TextEnv(ABC):
    """One game; ``reset`` starts (or restarts) it."""

    max_steps: int = 20

    @abstractmethod
    def reset(self) -> tuple[str, dict[str, Any]]: ...

    @abstractmethod
    def step(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]: ...

    def close(self) -> None:  # noqa: B027 - most games hold nothing
        """Release the game's process or file handles."""


@dataclass(frozen=True)
class EnvSpec:
    """A parsed ``env:<name>?k=v&...`` spec: the backend name, the common keys, the backend's."""

    name: str
    games: int
    seed: int
    max_steps: int
    split: str
    options: dict[str, str] = field(default_factory=dict)

    @property
    def text(self) -> str:
        query = {"games": self.games, "seed": self.seed, "max_steps": self.max_steps, "split": self.split}
        query.update(self.options)
        return f"{SPEC_PREFIX}{self.name}?" + "&".join(f"{k}={v}" for k, v in sorted(query.items()))


class TextWorldBackend(ABC):
    """Makes a pool of game rows for a spec, and the env of one row."""

    splits: tuple[str, ...] = ("train", "valid", "test")
    option_names: tuple[str, ...] = ()

    @abstractmethod
    def pool(self, spec: EnvSpec) -> list[dict[str, Any]]:
        """``spec.games`` rows: each names its game and carries ``walkthrough`` (a list of
        actions that wins it) and ``max_score``."""

    @abstractmethod
    def make(self, row: dict[str, Any], max_steps: int) -> TextEnv: ...

    def check(self, spec: EnvSpec) -> None:  # noqa: B027 - a backend without option values to check
        """Raise a UserError for a bad option value (called by ``parse_env_spec``: cheap, no
        game is built)."""


TEXT_ENVS: Registry[TextWorldBackend] = Registry("text environment")


def is_env_spec(spec: str | None) -> bool:
    return isinstance(spec, str) and spec.strip().startswith(SPEC_PREFIX)


def missing_package(env: str, module: str, pip: str) -> UserError:
    return UserError(f"{env} needs the {module} package, which is not installed: pip install '{pip}'")
