"""Plan text ↔ subgoals, the on-paper plan check, subgoal events read from two views, and the
agent-evaluation statistics — all by hand, no environment steps."""

from __future__ import annotations

import math

import pytest

pytest.importorskip("crafter")

from agents.plans import MAX_COUNT, check_plan, format_plan, parse_plan  # noqa: E402
from agents.progress import SubgoalTracker, step_events  # noqa: E402
from agents.types import AgentView  # noqa: E402
from envs.crafter.techtree import RULES, Subgoal, oracle_plan  # noqa: E402
from eval.agent_metrics import (  # noqa: E402
    achievement_rates,
    balrog_progress,
    crafter_score,
    wilson_interval,
)
from telos.errors import UserError  # noqa: E402

S = Subgoal

# ----------------------------------------------------------------------------- parse_plan


def test_parse_numbered_plan():
    text = "1. collect tree x2\n2. place table\n3. make wood_pickaxe"
    subgoals, errors = parse_plan(text)
    assert errors == []
    assert subgoals == [S("collect", "tree", 2), S("place", "table"), S("make", "wood_pickaxe")]


@pytest.mark.parametrize(
    "line, expected",
    [
        ("- collect tree", S("collect", "tree")),
        ("* collect tree x3", S("collect", "tree", 3)),
        ("1) collect stone ×4", S("collect", "stone", 4)),
        ("2: make wood_pickaxe", S("make", "wood_pickaxe")),
        ("10. place table.", S("place", "table")),
        ("  Collect Tree X2  ", S("collect", "tree", 2)),
        ("collect tree *9", S("collect", "tree", 9)),
        ("collect tree x 5", S("collect", "tree", 5)),
        # the item a material yields is accepted as the material
        ("collect wood", S("collect", "tree")),
        ("collect wood x3", S("collect", "tree", 3)),
        ("collect drink", S("collect", "water")),
        ("collect sapling", S("collect", "grass")),
    ],
)
def test_parse_line_forms_and_aliases(line, expected):
    subgoals, errors = parse_plan(line)
    assert errors == []
    assert subgoals == [expected]


def test_blank_lines_skipped_and_task_line_stops_parsing():
    text = "\n1. collect tree\n\n2. place table\nTask: make_stone_pickaxe\n1. collect stone\n"
    subgoals, errors = parse_plan(text)
    assert subgoals == [S("collect", "tree"), S("place", "table")]
    assert errors == []


@pytest.mark.parametrize(
    "line, must_contain",
    [
        ("1. chop tree", ["not a subgoal", "chop tree"]),
        ("Here is my plan:", ["not a subgoal"]),
        ("collect 3 wood", ["not a subgoal"]),
        ("1. collect unicorn", ["unknown collect target 'unicorn'", "tree"]),
        ("make table", ["unknown make target 'table'", "wood_pickaxe"]),
        ("place wood_pickaxe", ["unknown place target 'wood_pickaxe'", "table"]),
        ("collect tree x0", ["count 0", f"1..{MAX_COUNT}"]),
        ("collect tree x12", ["count 12", f"1..{MAX_COUNT}"]),
    ],
)
def test_invalid_lines_give_one_error(line, must_contain):
    subgoals, errors = parse_plan(line)
    assert subgoals == []
    assert len(errors) == 1
    for part in must_contain:
        assert part in errors[0], errors[0]


def test_partially_valid_text_keeps_valid_subgoals_and_one_error_per_bad_line():
    text = "\n".join(
        [
            "1. collect wood x2",
            "2. chop the tree",  # bad: not a subgoal
            "3. place table",
            "4. make diamond_hoe",  # bad: unknown target
            "5. make wood_pickaxe",
            "6. collect tree x12",  # bad: count
            "I hope this helps!",  # bad: prose
        ]
    )
    subgoals, errors = parse_plan(text)
    assert subgoals == [S("collect", "tree", 2), S("place", "table"), S("make", "wood_pickaxe")]
    assert len(errors) == 4
    assert "chop the tree" in errors[0]
    assert "diamond_hoe" in errors[1]
    assert "count 12" in errors[2]
    assert "I hope this helps!" in errors[3]


def test_format_parse_round_trip():
    plan = [S("collect", "tree", 3), S("place", "table"), S("make", "wood_pickaxe"), S("collect", "stone", 9)]
    text = format_plan(plan)
    assert text == "1. collect tree x3\n2. place table\n3. make wood_pickaxe\n4. collect stone x9"
    assert parse_plan(text) == (plan, [])
    # sloppy input → canonical text → the same subgoals
    messy = "- Collect wood ×3\n* place table.\n3) make wood_pickaxe\n4: collect stone*9"
    subgoals, errors = parse_plan(messy)
    assert errors == [] and subgoals == plan
    assert format_plan(subgoals) == text
    # every oracle plan survives the round trip
    for ach in ("collect_diamond", "make_iron_sword", "place_furnace", "make_stone_pickaxe"):
        p = oracle_plan(ach)
        assert parse_plan(format_plan(p)) == (p, [])


# ----------------------------------------------------------------------------- check_plan


def _plannable_achievements() -> list[str]:
    out = []
    for ach in RULES().achievements:
        try:
            oracle_plan(ach)
        except UserError:
            continue
        out.append(ach)
    return out


def test_oracle_plans_pass_the_check():
    achievements = _plannable_achievements()
    assert {"collect_wood", "make_wood_pickaxe", "collect_diamond", "make_iron_sword"} <= set(achievements)
    for ach in achievements:
        plan = oracle_plan(ach)
        assert check_plan(plan, ach, {}) == [], (ach, plan)
    # from a part-way inventory with a table in reach
    inv, stations = {"wood": 1, "wood_pickaxe": 1}, {"table"}
    plan = oracle_plan("make_stone_pickaxe", inv, stations)
    assert check_plan(plan, "make_stone_pickaxe", inv, stations) == []


def test_check_missing_tool():
    problems = check_plan([S("collect", "stone")], "collect_stone", {})
    assert problems == ["step 1 (collect stone): needs wood_pickaxe first"]
    assert check_plan([S("collect", "stone")], "collect_stone", {"wood_pickaxe": 1}) == []


def test_check_missing_ingredient():
    problems = check_plan([S("collect", "tree"), S("place", "table")], "place_table", {})
    assert problems == ["step 2 (place table): needs 1 more wood"]
    # count > 1: the second table runs short (3 wood: 2 for the first, 1 left)
    problems = check_plan([S("collect", "tree", 3), S("place", "table", 2)], None, {})
    assert problems == ["step 2 (place table ×2): needs 1 more wood"]


def test_check_missing_station():
    plan = [S("collect", "tree"), S("make", "wood_pickaxe")]
    problems = check_plan(plan, "make_wood_pickaxe", {})
    assert problems == ["step 2 (make wood_pickaxe): needs a table nearby; place one first"]
    assert check_plan(plan, "make_wood_pickaxe", {}, stations={"table"}) == []
    # a furnace is needed too for iron tools
    plan = [S("make", "iron_pickaxe")]
    inv = {"wood": 1, "coal": 1, "iron": 1}
    assert check_plan(plan, "make_iron_pickaxe", inv, {"table"}) == [
        "step 1 (make iron_pickaxe): needs a furnace nearby; place one first"
    ]


def test_check_goal_never_reached():
    problems = check_plan([S("collect", "tree", 2)], "make_wood_pickaxe", {})
    assert problems == ["the plan never reaches make_wood_pickaxe"]
    assert check_plan([], "collect_wood", {}) == ["the plan never reaches collect_wood"]
    problems = check_plan([S("collect", "tree")], None, {}, goal_inventory={"wood": 3})
    assert problems == ["the plan ends with 1 wood, the goal needs 3"]
    assert check_plan([S("collect", "tree", 3)], None, {}, goal_inventory={"wood": 3}) == []


# ----------------------------------------------------------------------------- step events


def _view(inventory=None, vitals=None, achievements=(), step=0, facing="tree") -> AgentView:
    grid = [["grass"] * 9 for _ in range(7)]
    grid[3][4] = "player"
    vit = {"health": 9, "food": 9, "drink": 9, "energy": 9}
    vit.update(vitals or {})
    return AgentView(
        text="",
        local_view=grid,
        inventory=dict(inventory or {}),
        vitals=vit,
        facing=facing,
        daylight=1.0,
        sleeping=False,
        achievements=tuple(achievements),
        step=step,
    )


def test_step_events_collect_tree():
    before, after = _view({"wood": 0}), _view({"wood": 1}, achievements=["collect_wood"])
    assert step_events(before, "do", after) == [S("collect", "tree")]
    # the rise only counts after a `do`
    assert step_events(before, "noop", after) == []


def test_step_events_collect_drink_when_thirsty():
    before, after = _view(vitals={"drink": 5}), _view(vitals={"drink": 6})
    assert step_events(before, "do", after) == [S("collect", "water")]


def test_step_events_collect_drink_at_full_drink():
    """Crafter caps drink at 9, but a strike on water still collects (and unlocks)."""
    before = _view(vitals={"drink": 9}, facing="water")
    after = _view(vitals={"drink": 9}, achievements=["collect_drink"], facing="water")
    assert step_events(before, "do", after) == [S("collect", "water")]
    # facing something else at full drink: nothing collected
    assert step_events(_view(vitals={"drink": 9}), "do", _view(vitals={"drink": 9})) == []


def test_step_events_place_table_spends_wood():
    before, after = _view({"wood": 3}), _view({"wood": 1})
    assert step_events(before, "place_table", after) == [S("place", "table")]
    # nothing spent: the placement failed
    assert step_events(before, "place_table", _view({"wood": 3})) == []
    # placing stone spends one stone
    assert step_events(_view({"stone": 2}), "place_stone", _view({"stone": 1})) == [S("place", "stone")]


def test_step_events_make_wood_pickaxe():
    before = _view({"wood": 1, "wood_pickaxe": 0})
    after = _view({"wood": 0, "wood_pickaxe": 1})
    assert step_events(before, "make_wood_pickaxe", after) == [S("make", "wood_pickaxe")]
    assert step_events(before, "make_wood_pickaxe", before) == []


def test_no_event_when_nothing_changes():
    v = _view({"wood": 2, "stone": 1})
    for action in ("noop", "do", "move_left", "sleep", "place_table", "place_stone", "make_wood_pickaxe"):
        assert step_events(v, action, v) == [], action


def test_subgoal_tracker_counts_matching_events_only():
    tracker = SubgoalTracker(S("collect", "tree", 2))
    assert not tracker.met and tracker.progress == 0
    tracker.update(_view({"wood": 0}), "do", _view({"wood": 1}))
    assert tracker.progress == 1 and not tracker.met
    tracker.update(_view({"stone": 0}), "do", _view({"stone": 1}))  # another material
    tracker.update(_view({"wood": 1}), "noop", _view({"wood": 1}))  # nothing
    tracker.update(_view({"wood": 3}), "place_table", _view({"wood": 1}))  # another kind
    assert tracker.progress == 1 and not tracker.met
    tracker.update(_view({"wood": 1}), "do", _view({"wood": 2}))
    assert tracker.progress == 2 and tracker.met

    make = SubgoalTracker(S("make", "wood_pickaxe"))
    make.update(_view({"wood": 1}), "make_wood_pickaxe", _view({"wood_pickaxe": 1}))
    assert make.met


# ----------------------------------------------------------------------------- agent metrics

Z = 1.959964


def test_wilson_interval_by_hand():
    # z² = 3.841459; n = 20 → z²/n = 0.1920730, denominator 1 + z²/n = 1.1920730.
    # 0/20: centre = (z²/2n)/1.192073 = 0.0960365/1.192073 = 0.0805627, half-width
    #   = z·sqrt(z²/4n²)/1.192073 = (z²/2n)/1.192073 = 0.0805627 → [0, 0.1611254]
    lo, hi = wilson_interval(0, 20)
    assert lo == 0.0
    assert hi == pytest.approx(0.1611254, abs=1e-6)
    # 20/20: the mirror image → [1 − 0.1611254, 1]
    lo, hi = wilson_interval(20, 20)
    assert lo == pytest.approx(0.8388746, abs=1e-6)
    assert hi == pytest.approx(1.0)
    # 10/20: p = 0.5, centre = (0.5 + 0.0960365)/1.192073 = 0.5;
    #   half = z·sqrt(0.25/20 + z²/1600)/1.192073 = 1.959964·sqrt(0.0149009)/1.192073
    #        = 1.959964·0.1220693/1.192073 = 0.2007022 → [0.2992978, 0.7007022]
    lo, hi = wilson_interval(10, 20)
    assert lo == pytest.approx(0.2992978, abs=1e-6)
    assert hi == pytest.approx(0.7007022, abs=1e-6)
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_crafter_score_by_hand():
    names = RULES().achievements
    assert crafter_score({a: 0.0 for a in names}) == pytest.approx(0.0)
    assert crafter_score({a: 1.0 for a in names}) == pytest.approx(100.0)  # exp(ln 101) − 1
    # rates 3 % and 8 %: exp((ln 4 + ln 9)/2) − 1 = sqrt(36) − 1 = 5
    assert crafter_score({"a": 0.03, "b": 0.08}) == pytest.approx(5.0)
    # 100 % and 0 %: sqrt(101 · 1) − 1 = 9.0498756
    assert crafter_score({"a": 1.0, "b": 0.0}) == pytest.approx(math.sqrt(101) - 1)
    assert crafter_score({"a": 1.0, "b": 0.0}) == pytest.approx(9.0498756, abs=1e-6)
    # 3 %, 0 %, 0 %, 0 %: exp(ln 4 / 4) − 1 = sqrt(2) − 1
    assert crafter_score({"a": 0.03, "b": 0, "c": 0, "d": 0}) == pytest.approx(math.sqrt(2) - 1)
    assert crafter_score({}) == 0.0


def test_achievement_rates_and_balrog_progress_by_hand():
    episodes = [["collect_wood", "place_table"], ["collect_wood"], [], ["collect_wood", "collect_wood"]]
    rates = achievement_rates(episodes, ["collect_wood", "place_table", "collect_diamond"])
    assert rates == {"collect_wood": 0.75, "place_table": 0.25, "collect_diamond": 0.0}
    # unlocked: 2, 1, 0, 1 (duplicates count once) of 22 → 100 · (4/22)/4 = 100/22 = 4.5454545
    assert balrog_progress(episodes) == pytest.approx(100 / 22)
    assert balrog_progress([["a", "b"]], num_achievements=4) == pytest.approx(50.0)
    assert balrog_progress([]) == 0.0
    assert achievement_rates([], ["collect_wood"]) == {"collect_wood": 0.0}
