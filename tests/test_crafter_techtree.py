"""The oracle plan from Crafter's own rules, and the suite files."""

from __future__ import annotations

import pytest

from eval.suites import load_suite
from telos.errors import UserError

pytest.importorskip("crafter")

from envs.crafter.techtree import RULES, Subgoal, oracle_plan  # noqa: E402


def _plan(goal, *args):
    return [str(s) for s in oracle_plan(goal, *args)]


def test_rules_come_from_the_game():
    r = RULES()
    assert r.collect["stone"]["require"] == {"wood_pickaxe": 1}
    assert r.make["iron_pickaxe"]["nearby"] == ["table", "furnace"]
    assert len(r.achievements) == 22


def test_iron_pickaxe_plan_by_hand():
    """The plan spends exactly what Crafter's data.yaml says: table (wood ×T), wood pickaxe
    (wood 1, table in reach), furnace (stone ×F), stone pickaxe (wood 1, stone 1), iron pickaxe
    (wood 1, coal 1, iron 1, table and furnace in reach). Each material's total is collected
    at its first collection: wood T + 3, stone F + 1."""
    r = RULES()
    t, f = r.place["table"]["uses"]["wood"], r.place["furnace"]["uses"]["stone"]
    assert _plan("make_iron_pickaxe") == [
        f"collect tree ×{t + 3}", "place table", "make wood_pickaxe", f"collect stone ×{f + 1}",
        "place furnace", "collect coal", "make stone_pickaxe", "collect iron", "make iron_pickaxe",
    ]  # fmt: skip


def test_plan_uses_inventory_and_stations_and_ends_with_the_goal():
    assert _plan("make_stone_pickaxe", {"wood": 5, "wood_pickaxe": 1}, {"table"}) == [
        "collect stone",
        "make stone_pickaxe",
    ]
    assert _plan("collect_wood") == ["collect tree"]
    for goal in ("collect_coal", "place_furnace", "collect_diamond"):
        plan = oracle_plan(goal)
        assert plan[-1].achievement == goal
    assert Subgoal("collect", "tree").achievement == "collect_wood"


def test_unknown_or_unplannable_goals_are_user_errors():
    with pytest.raises(UserError, match="valid: collect_coal"):
        oracle_plan("fly")
    with pytest.raises(UserError, match="does not plan|plans collect"):
        oracle_plan("defeat_zombie")


def test_shipped_suite_covers_the_tech_tree_with_crafter_ids():
    suite = load_suite("crafter-techtree", RULES().achievements)
    ids = [t.id for t in suite.tasks]
    assert ids == [
        "collect_wood", "place_table", "make_wood_pickaxe", "collect_stone", "make_stone_pickaxe",
        "collect_coal", "place_furnace", "collect_iron", "make_iron_pickaxe", "collect_diamond",
    ]  # fmt: skip
    assert all(t.achievement == t.id for t in suite.tasks)
    assert suite.tasks[0].done({"collect_wood"}, {}) and not suite.tasks[1].done({"collect_wood"}, {})


def test_user_suite_inventory_goal_and_errors(tmp_path):
    good = tmp_path / "mine.yaml"
    good.write_text("tasks:\n  - {id: three_wood, goal: {inventory: {wood: 3}}, tier: 1, budget: 100}\n")
    (task,) = load_suite(str(good)).tasks
    assert task.done([], {"wood": 3}) and not task.done([], {"wood": 2})
    bad = tmp_path / "bad.yaml"
    bad.write_text("tasks:\n  - {id: x, goal: {achievement: fly}, tier: 1, budget: 10}\n")
    with pytest.raises(UserError, match="unknown achievement 'fly'"):
        load_suite(str(bad), RULES().achievements)
    with pytest.raises(UserError, match="valid: crafter-techtree"):
        load_suite("nope")
    bad.write_text("tasks:\n  - {id: x, goal: {achievement: collect_wood}, tier: 1, budget: 0}\n")
    with pytest.raises(UserError, match="budget"):
        load_suite(str(bad))
