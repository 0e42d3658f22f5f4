"""The ten Crafter tech-tree task ids (``eval/suites/crafter-techtree.yaml``) as MineDojo tasks.

Each telos id maps to (a) the MineDojo *Programmatic* task closest to it, for comparing with
the MineDojo benchmark, and (b) the meta-task kwargs telos actually builds with, because
Programmatic tasks fix ``voxel_size`` to 3×3×3 (``tasks_specs.yaml``) and ``minedojo.make``
passes ``**task_specs, **kwargs`` together, so a larger voxel window cannot be asked for there.

Ids were checked in MineDojo/MineDojo (minedojo 0.1 wheel):
``minedojo/tasks/description_files/programmatic_tasks.yaml`` (``harvest_1_log``,
``harvest_1_crafting_table``, ``harvest_1_cobblestone``, ``harvest_1_coal``,
``harvest_1_furnace``, ``harvest_1_iron_ore``, ``harvest_1_diamond``,
``techtree_from_barehand_to_{wooden,stone,iron}_pickaxe``) and their templates in
``tasks_specs.yaml`` (``harvest_{quantity}_{ore_type}`` → ``__cls__: harvest``;
``techtree_from_barehand_to_{from_barehand_tools}_{target_tools}`` → ``__cls__: techtree``).

Telos judges success itself, from the same data MineDojo's success checks read
(``minedojo/tasks/meta/utils/success_criteria.py``): the increase since reset of an item in
``info["inventory"]`` (harvest tasks) or of ``info["stat"]["use_item"]["minecraft"][item]``.
Crafter's ``place_*`` achievements need the block placed, and placing a block counts as
using it in Minecraft's statistics, so those use ``use_item``; MineDojo's own
``harvest_1_crafting_table`` succeeds on merely holding one, and its techtree tasks only on
*using* the tool, which is stricter than Crafter's ``make_*``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from telos.errors import UserError

Counter = Literal["inventory", "use_item"]


@dataclass(frozen=True)
class MineDojoTask:
    """One telos task in Minecraft terms."""

    task_id: str  # the telos (Crafter achievement) id
    programmatic_id: str  # MineDojo's benchmark task id (programmatic_tasks.yaml)
    meta_task: str  # the meta task telos builds: "harvest"
    meta_kwargs: dict[str, Any] = field(default_factory=dict)  # passed to minedojo.make(meta_task, ...)
    items: tuple[str, ...] = ()  # Minecraft item names; their counts are summed
    quantity: int = 1
    counter: Counter = "inventory"  # what is counted: items held, or times used (placed)

    def describe(self) -> str:
        what = "place" if self.counter == "use_item" else "have"
        return f"{what} {self.quantity} {' or '.join(self.items)}"


def _harvest(task_id: str, programmatic_id: str, item: str, *alt: str, counter: Counter = "inventory"):
    kwargs = {"target_names": item, "target_quantities": 1}
    return MineDojoTask(task_id, programmatic_id, "harvest", kwargs, (item, *alt), 1, counter)


# Wood: Minecraft 1.11 has two log blocks (oak/spruce/birch/jungle are "log", acacia and dark
# oak "log2"); MineDojo's harvest_1_log counts "log" only, Crafter's collect_wood any tree.
TASKS: dict[str, MineDojoTask] = {
    t.task_id: t
    for t in (
        _harvest("collect_wood", "harvest_1_log", "log", "log2"),
        _harvest("place_table", "harvest_1_crafting_table", "crafting_table", counter="use_item"),
        _harvest("make_wood_pickaxe", "techtree_from_barehand_to_wooden_pickaxe", "wooden_pickaxe"),
        _harvest("collect_stone", "harvest_1_cobblestone", "cobblestone"),
        _harvest("make_stone_pickaxe", "techtree_from_barehand_to_stone_pickaxe", "stone_pickaxe"),
        _harvest("collect_coal", "harvest_1_coal", "coal"),
        _harvest("place_furnace", "harvest_1_furnace", "furnace", counter="use_item"),
        _harvest("collect_iron", "harvest_1_iron_ore", "iron_ore"),
        _harvest("make_iron_pickaxe", "techtree_from_barehand_to_iron_pickaxe", "iron_pickaxe"),
        _harvest("collect_diamond", "harvest_1_diamond", "diamond"),
    )
}


def minedojo_task(task_id: str) -> MineDojoTask:
    """The MineDojo form of a telos task id; a UserError naming the valid ids otherwise."""
    try:
        return TASKS[task_id]
    except KeyError:
        raise UserError(f"no MineDojo mapping for task {task_id!r}; valid: {', '.join(TASKS)}") from None


def item_name(raw: str) -> str:
    """Minecraft's id form: MineDojo's ``obs["inventory"]["name"]`` writes ``crafting table``
    (``sim/handlers/agent/observations/true_flat_inventory.py`` swaps ``_`` for spaces);
    ``info["inventory"]`` and ``voxels`` keep ``crafting_table``."""
    return str(raw).strip().replace(" ", "_")


def counts(names: Any, quantities: Any) -> dict[str, int]:
    """Slot names and quantities (``obs["inventory"]``) → item totals, empty (``air``) slots out."""
    total: dict[str, int] = {}
    for name, qty in zip(list(names), list(quantities), strict=True):
        key = item_name(name)
        if key != "air" and int(qty) > 0:
            total[key] = total.get(key, 0) + int(qty)
    return total


def progress(task: MineDojoTask, start: dict[str, dict[str, int]], now: dict[str, dict[str, int]]) -> int:
    """How far the task's counter rose since ``start``; each state is
    ``{"inventory": {item: n}, "use_item": {item: n}}``."""

    def total(state: dict[str, dict[str, int]]) -> int:
        return sum(int(state.get(task.counter, {}).get(i, 0)) for i in task.items)

    return total(now) - total(start)


def reached(start: dict[str, dict[str, int]], now: dict[str, dict[str, int]]) -> list[str]:
    """The telos task ids whose condition holds, in tech-tree order."""
    return [tid for tid, t in TASKS.items() if progress(t, start, now) >= t.quantity]
