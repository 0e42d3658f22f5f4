"""Evaluation suites: YAML files of tasks (``crafter-techtree.yaml`` ships; users add their own)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from telos.config import load_yaml
from telos.errors import UserError

SUITE_DIR = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Task:
    id: str
    tier: int
    budget: int  # steps per episode
    achievement: str | None = None  # goal: unlock this achievement ...
    inventory: dict[str, int] = field(default_factory=dict)  # ... or hold at least these items

    def done(self, achievements: list[str] | set[str], inventory: dict[str, int]) -> bool:
        if self.achievement is not None:
            return self.achievement in achievements
        return all(inventory.get(k, 0) >= v for k, v in self.inventory.items())


@dataclass(frozen=True)
class Suite:
    name: str
    env: str
    tasks: tuple[Task, ...]


def available_suites() -> list[str]:
    return sorted(p.stem for p in SUITE_DIR.glob("*.yaml"))


def load_suite(name_or_path: str, achievements: tuple[str, ...] | None = None) -> Suite:
    """A shipped suite by name or a YAML file; every task is checked (one `error:` line).
    ``achievements``: the environment's valid achievement names, to check goals against."""
    path = Path(name_or_path)
    if not path.suffix:
        path = SUITE_DIR / f"{name_or_path}.yaml"
        if not path.is_file():
            raise UserError(
                f"unknown suite {name_or_path!r}; valid: {', '.join(available_suites())} or a .yaml file"
            )
    data = load_yaml(path)
    raw_tasks = data.get("tasks")
    if not isinstance(raw_tasks, list) or not raw_tasks:
        raise UserError(f"suite {path}: 'tasks' must be a non-empty list")
    tasks, seen = [], set()
    for i, t in enumerate(raw_tasks):
        where = f"suite {path.name} task {i}"
        if not isinstance(t, dict) or not {"id", "goal", "tier", "budget"} <= set(t):
            raise UserError(f"{where}: needs id, goal, tier and budget")
        goal = t["goal"]
        if (
            not isinstance(goal, dict)
            or len(goal) != 1
            or next(iter(goal)) not in ("achievement", "inventory")
        ):
            raise UserError(f"{where}: goal must be {{achievement: NAME}} or {{inventory: {{ITEM: COUNT}}}}")
        if not isinstance(t["budget"], int) or t["budget"] < 1 or not isinstance(t["tier"], int):
            raise UserError(f"{where}: tier must be an integer and budget a positive integer")
        if t["id"] in seen:
            raise UserError(f"{where}: duplicate task id {t['id']!r}")
        seen.add(t["id"])
        achievement = goal.get("achievement")
        if "achievement" in goal and not isinstance(achievement, str):
            raise UserError(f"{where}: goal achievement must be a name, got {achievement!r}")
        if achievement is not None and achievements is not None and achievement not in achievements:
            raise UserError(f"{where}: unknown achievement {achievement!r}; valid: {', '.join(achievements)}")
        inventory = goal.get("inventory") or {}
        if "inventory" in goal and (
            not isinstance(inventory, dict)
            or not inventory
            or not all(isinstance(v, int) and v > 0 for v in inventory.values())
        ):
            raise UserError(f"{where}: an inventory goal maps items to positive counts")
        tasks.append(Task(str(t["id"]), t["tier"], t["budget"], achievement, dict(inventory)))
    return Suite(str(data.get("name", path.stem)), str(data.get("env", "crafter")), tuple(tasks))
