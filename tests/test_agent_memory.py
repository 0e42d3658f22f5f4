"""The plan memory: ranking by task then state, JSONL persistence, dedup and eviction, and the
hashed embedding it ranks with."""

from __future__ import annotations

import numpy as np
import pytest

from agents.memory import DIM, PlanMemory, embed
from agents.types import MemoryEntry

FOREST = (
    "You see:\n- tree: 1 north (1 steps)\n- cow: 3 east (3 steps)\nTerrain around: grass.\n"
    "You face: tree.\nInventory: wood 2.\nVitals: health 9/9, food 9/9, drink 9/9, energy 9/9.\nTime: day."
)
FOREST_LIKE = (
    "You see:\n- tree: 2 north (2 steps)\n- cow: 4 east (4 steps)\nTerrain around: grass.\n"
    "You face: grass.\nInventory: wood 2.\nVitals: health 9/9, food 8/9, drink 9/9, energy 9/9.\nTime: day."
)
CAVE = (
    "You see:\n- stone: 1 west (1 steps)\n- coal: 2 south (2 steps)\n- zombie: 3 north (3 steps)\n"
    "Terrain around: path.\nYou face: stone.\nInventory: wood_pickaxe 1, stone 3.\n"
    "Vitals: health 5/9, food 3/9, drink 2/9, energy 1/9.\nTime: night."
)
PICKAXE_PLAN = ("collect tree ×3", "place table", "make wood_pickaxe")


def _entries() -> list[MemoryEntry]:
    return [
        MemoryEntry("collect_stone", FOREST, ("collect stone",)),
        MemoryEntry("make_wood_pickaxe", CAVE, ("place table", "make wood_pickaxe")),
        MemoryEntry("collect_wood", FOREST, ("collect tree",)),
        MemoryEntry("make_wood_pickaxe", FOREST, PICKAXE_PLAN),
        MemoryEntry("place_furnace", CAVE, ("collect stone ×4", "place furnace")),
    ]


def test_retrieve_ranks_same_task_first_then_most_similar_state():
    mem = PlanMemory()
    for e in _entries():
        mem.add(e)
    assert len(mem) == 5
    # the task decides first: both make_wood_pickaxe entries beat a forest entry of another task
    got = mem.retrieve("make_wood_pickaxe", FOREST_LIKE, k=2)
    assert [e.task for e in got] == ["make_wood_pickaxe", "make_wood_pickaxe"]
    # ... and among them the state most like the query comes first
    assert got[0].state == FOREST and got[0].plan == PICKAXE_PLAN
    got = mem.retrieve("make_wood_pickaxe", CAVE, k=2)
    assert [e.state for e in got] == [CAVE, FOREST]
    assert mem.retrieve("collect_wood", CAVE, k=1)[0].task == "collect_wood"
    assert len(mem.retrieve("collect_wood", FOREST, k=10)) == 5
    assert PlanMemory().retrieve("collect_wood", FOREST) == []


def test_retrieve_skips_unsuccessful_entries():
    mem = PlanMemory()
    mem.add(MemoryEntry("collect_wood", FOREST, ("collect stone",), success=False))
    mem.add(MemoryEntry("collect_wood", FOREST_LIKE, ("collect tree",)))
    got = mem.retrieve("collect_wood", FOREST, k=5)
    assert [e.plan for e in got] == [("collect tree",)]


def test_retrieve_returns_k_successful_entries_when_a_failure_ranks_high():
    mem = PlanMemory()
    mem.add(MemoryEntry("collect_wood", FOREST, ("collect stone",), success=False))  # the best match
    mem.add(MemoryEntry("collect_wood", FOREST_LIKE, ("collect tree",)))
    mem.add(MemoryEntry("collect_wood", CAVE, ("collect tree x2",)))
    got = mem.retrieve("collect_wood", FOREST, k=2)
    assert [e.plan for e in got] == [("collect tree",), ("collect tree x2",)]


def test_save_and_reload_keeps_entries(tmp_path):
    path = tmp_path / "sub" / "memory.jsonl"
    mem = PlanMemory(path)
    assert len(mem) == 0 and not path.exists()
    for e in _entries():
        mem.add(e)
    mem.add(MemoryEntry("collect_coal", CAVE, ("collect coal",), success=False))
    assert mem.save() == path
    assert path.is_file()
    assert [p.name for p in path.parent.iterdir()] == ["memory.jsonl"]  # atomic: no .tmp left
    assert len(path.read_text().splitlines()) == 6

    again = PlanMemory(path)
    assert again.entries == mem.entries
    assert all(isinstance(e.plan, tuple) for e in again.entries)
    assert again.entries[-1].success is False
    query = ("make_wood_pickaxe", FOREST_LIKE)
    assert again.retrieve(*query, k=3) == mem.retrieve(*query, k=3)

    # save elsewhere, then overwrite in place
    other = mem.save(tmp_path / "copy.jsonl")
    assert PlanMemory(other).entries == mem.entries
    again.add(MemoryEntry("collect_wood", CAVE, ("collect tree",)))
    again.save()
    assert len(PlanMemory(path)) == 7
    assert sorted(p.name for p in path.parent.iterdir()) == ["memory.jsonl"]


def test_save_without_a_path_is_an_error():
    with pytest.raises(ValueError, match="needs a path"):
        PlanMemory().save()


def test_dedup():
    mem = PlanMemory()
    e = MemoryEntry("collect_wood", FOREST, ("collect tree",))
    mem.add(e)
    mem.add(MemoryEntry("collect_wood", FOREST, ("collect tree",)))
    assert len(mem) == 1
    mem.add(MemoryEntry("collect_wood", FOREST, ("collect tree x2",)))  # another plan
    mem.add(MemoryEntry("collect_wood", CAVE, ("collect tree",)))  # another state
    mem.add(MemoryEntry("place_table", FOREST, ("collect tree",)))  # another task
    assert len(mem) == 4
    assert len(mem._task_vecs) == len(mem._state_vecs) == 4


def test_dedup_on_reload(tmp_path):
    path = tmp_path / "m.jsonl"
    mem = PlanMemory(path)
    mem.add(MemoryEntry("collect_wood", FOREST, ("collect tree",)))
    mem.save()
    path.write_text(path.read_text() * 3)  # the same line three times
    assert len(PlanMemory(path)) == 1


def test_max_entries_evicts_the_oldest():
    mem = PlanMemory(max_entries=3)
    entries = [MemoryEntry(f"task_{i}", f"state number {i}", (f"collect tree x{i + 1}",)) for i in range(5)]
    for e in entries:
        mem.add(e)
    assert mem.entries == entries[2:]
    assert len(mem._task_vecs) == len(mem._state_vecs) == 3
    # the vectors stay aligned with their entries after eviction
    for e in entries[2:]:
        assert mem.retrieve(e.task, e.state, k=1) == [e]


def test_embed_is_deterministic_and_unit_norm():
    a, b = embed(FOREST), embed(FOREST)
    assert a.shape == (DIM,) and a.dtype == np.float32
    assert np.array_equal(a, b)
    assert np.linalg.norm(a) == pytest.approx(1.0, abs=1e-5)
    for text in (CAVE, "collect_wood", "x", "make wood_pickaxe 3"):
        assert np.linalg.norm(embed(text)) == pytest.approx(1.0, abs=1e-5)
    # case-insensitive, punctuation-blind
    assert np.array_equal(embed("Collect Wood!"), embed("collect wood"))
    # similar texts are closer than unrelated ones
    assert float(embed(FOREST) @ embed(FOREST_LIKE)) > float(embed(FOREST) @ embed(CAVE))
    # nothing to hash → the zero vector, not NaN
    assert not np.any(embed("").astype(bool)) and not np.any(np.isnan(embed("...")))
    assert embed("collect wood", dim=64).shape == (64,)
