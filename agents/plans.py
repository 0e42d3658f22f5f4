"""Plans as text: the strict subgoal vocabulary, parsing LLM output into it, and the
self-check that simulates a plan against Crafter's recipes before it is executed.

Plan text is one subgoal per line, ``N. VERB TARGET [xCOUNT]``::

    1. collect tree x2
    2. place table
    3. make wood_pickaxe

Targets are Crafter's own names (``RULES()``); ``collect`` also accepts the item a material
yields (``collect wood`` = ``collect tree``), as LLMs tend to write it.
"""

from __future__ import annotations

import re

from envs.crafter.techtree import RULES, Subgoal

_LINE = re.compile(
    r"^\s*(?:[-*]|\d+\s*[.):])?\s*(collect|place|make)\s+([a-z_]+)(?:\s*[x×*]\s*(\d+))?\s*\.?\s*$"
)
MAX_COUNT = 9  # Crafter caps every item at 9


def vocabulary() -> dict[str, tuple[str, ...]]:
    r = RULES()
    return {"collect": tuple(r.collect), "place": tuple(r.place), "make": tuple(r.make)}


def _collect_aliases() -> dict[str, str]:
    """Item → the material that yields it (wood → tree), for materials that yield one item."""
    out = {}
    for material, rule in RULES().collect.items():
        for item in rule["receive"]:
            out.setdefault(item, material)
    return out


def format_plan(subgoals: list[Subgoal]) -> str:
    return "\n".join(
        f"{i}. {s.verb} {s.target}{f' x{s.count}' if s.count > 1 else ''}" for i, s in enumerate(subgoals, 1)
    )


def parse_plan(text: str) -> tuple[list[Subgoal], list[str]]:
    """Subgoals from plan text, and one error per line that is not a valid subgoal.
    Blank lines are skipped; parsing stops at the first line that starts with ``Task:``
    (a model continuing with a new prompt)."""
    vocab, aliases = vocabulary(), _collect_aliases()
    subgoals, errors = [], []
    for raw in text.strip().splitlines():
        line = raw.strip().lower()
        if not line:
            continue
        if line.startswith("task:"):
            break
        m = _LINE.match(line)
        if m is None:
            errors.append(f"not a subgoal: {raw.strip()!r} (expected 'collect|place|make TARGET [xN]')")
            continue
        verb, target, count = m.group(1), m.group(2), int(m.group(3) or 1)
        if verb == "collect" and target not in vocab["collect"]:
            target = aliases.get(target, target)
        if target not in vocab[verb]:
            errors.append(f"unknown {verb} target {target!r}; valid: {', '.join(vocab[verb])}")
            continue
        if not 1 <= count <= MAX_COUNT:
            errors.append(f"count {count} in {raw.strip()!r} must be 1..{MAX_COUNT}")
            continue
        subgoals.append(Subgoal(verb, target, count))
    return subgoals, errors


def check_plan(
    subgoals: list[Subgoal],
    achievement: str | None,
    inventory: dict[str, int],
    stations: frozenset[str] | set[str] = frozenset(),
    goal_inventory: dict[str, int] | None = None,
) -> list[str]:
    """Problems found by executing the plan on paper with Crafter's rules: a tool or
    ingredient missing when a step needs it, a station not placed before crafting, or a goal
    still unmet at the end. Empty list = the plan is feasible."""
    rules = RULES()
    inv = dict(inventory)
    placed = set(stations)
    unlocked: set[str] = set()
    problems = []
    for i, s in enumerate(subgoals, 1):
        if s.verb == "collect":
            rule = rules.collect[s.target]
            missing = [f"{t}" for t, k in rule["require"].items() if inv.get(t, 0) < k]
            if missing:
                problems.append(f"step {i} ({s}): needs {', '.join(missing)} first")
            for item, k in rule["receive"].items():
                inv[item] = min(MAX_COUNT, inv.get(item, 0) + k * s.count)
            unlocked.add(s.achievement)
        else:
            rule = rules.place[s.target] if s.verb == "place" else rules.make[s.target]
            for station in rule.get("nearby", []):
                if station not in placed:
                    problems.append(f"step {i} ({s}): needs a {station} nearby; place one first")
            for _ in range(s.count):
                short = [
                    f"{k - inv.get(t, 0)} more {t}" for t, k in rule["uses"].items() if inv.get(t, 0) < k
                ]
                if short:
                    problems.append(f"step {i} ({s}): needs {', '.join(short)}")
                    break
                for t, k in rule["uses"].items():
                    inv[t] -= k
                if s.verb == "make":
                    inv[s.target] = inv.get(s.target, 0) + rule["gives"]
            if s.verb == "place":
                placed.add(s.target)
            unlocked.add(s.achievement)
    if achievement is not None and achievement not in unlocked:
        problems.append(f"the plan never reaches {achievement}")
    for item, k in (goal_inventory or {}).items():
        if inv.get(item, 0) < k:
            problems.append(f"the plan ends with {inv.get(item, 0)} {item}, the goal needs {k}")
    return problems
