"""MCTS* tree math (rollout/search/tree.py) and B-STaR balance math (trainers/selftrain/balance.py),
checked against numbers worked out by hand."""

from __future__ import annotations

import math
import random

import pytest

from rollout.search.tree import (
    Node,
    backup,
    best_child,
    best_terminal,
    grade,
    mix_rollout_value,
    select_leaf,
    target_rows,
    tree_stats,
    tree_to_json,
    uct,
    value_targets,
)
from trainers.selftrain.balance import (
    balance_score,
    choose_configuration,
    default_n_star,
    exploration_exploitation,
    query_balance,
    sample_score,
)


def chain(wrong_branch: bool = False, wrong_at_root: bool = False):
    """root → s1 → s2 → s3 → s4 (terminal, correct); optionally s1 → w2 → w3 (terminal, wrong)
    and root → w1 (terminal, wrong). Graded through ``grade`` on the step list."""
    root = Node()
    s1 = root.add_child("s1", 0.1)
    s2 = s1.add_child("s2", 0.2)
    s3 = s2.add_child("s3", 0.3)
    s4 = s3.add_child("s4", 0.4)
    s4.terminal, s4.answer = True, "42"
    nodes = {"root": root, "s1": s1, "s2": s2, "s3": s3, "s4": s4}
    if wrong_branch:
        nodes["w2"] = s1.add_child("w2", 0.5)
        nodes["w3"] = nodes["w2"].add_child("w3", 0.6)
        nodes["w3"].terminal, nodes["w3"].answer = True, "7"
    if wrong_at_root:
        nodes["w1"] = root.add_child("w1", 0.7)
        nodes["w1"].terminal, nodes["w1"].answer = True, "9"
    grade(root, lambda steps: steps == ["s1", "s2", "s3", "s4"])
    return nodes


def test_uct_by_hand():
    # 0.5 + 0.5·sqrt(2·ln 2 / 1) = 0.5 + 0.5·1.177410 = 1.088705
    assert uct(0.5, 1, 2, 0.5, 0.9) == pytest.approx(1.088705, abs=1e-6)
    # unvisited: 0.3 + INF 0.9 = 1.2, whatever N and c
    assert uct(0.3, 0, 2, 0.5, 0.9) == pytest.approx(1.2)
    assert uct(0.3, 0, 100, 5.0, 0.9) == pytest.approx(1.2)


def test_best_child_prefers_unvisited_and_select_leaf_descends():
    root = Node(visits=2, expanded=True)
    a = root.add_child("a", 0.5)
    a.visits = 1
    b = root.add_child("b", 0.3)  # 1.2 > 1.0887
    for seed in range(5):
        assert best_child(root, 0.5, 0.9, random.Random(seed)) is b
        assert select_leaf(root, 0.5, 0.9, random.Random(seed)) is b
    # with INF 0 the visited child wins: 1.0887 > 0.3
    assert best_child(root, 0.5, 0.0, random.Random(0)) is a
    # an unexpanded root is its own leaf
    root.expanded = False
    assert select_leaf(root, 0.5, 0.9, random.Random(0)) is root


def test_best_child_ties_broken_by_rng():
    root = Node(visits=2, expanded=True)
    x = root.add_child("x", 0.3)
    y = root.add_child("y", 0.3)
    picks = {best_child(root, 0.5, 0.9, random.Random(seed)) for seed in range(50)}
    assert picks == {x, y}
    # the same seed gives the same pick
    assert best_child(root, 0.5, 0.9, random.Random(3)) is best_child(root, 0.5, 0.9, random.Random(3))


def test_mix_rollout_value():
    assert mix_rollout_value(0.4, 0.8, 0.5) == pytest.approx(0.6)  # 0.5·0.4 + 0.5·0.8
    assert mix_rollout_value(0.4, 0.8, 0.25) == pytest.approx(0.5)  # 0.75·0.4 + 0.25·0.8
    assert mix_rollout_value(0.4, 0.8, 0.0) == pytest.approx(0.4)


def test_backup_visit_weighted_mean():
    root = Node(value=0.1, visits=4, expanded=True)
    a = root.add_child("a", 0.9)
    a.visits, a.expanded = 4, True
    b = a.add_child("b", 0.2)
    b.visits = 1
    c = a.add_child("c", 0.8)
    c.visits = 3
    backup(a)
    assert a.visits == 5
    assert a.value == pytest.approx(0.65)  # (0.2·1 + 0.8·3) / 4
    assert root.visits == 5
    assert root.value == pytest.approx(0.65)  # only child a: 0.65·5 / 5
    assert (b.visits, c.visits) == (1, 3)  # below the node: untouched


def test_backup_keeps_value_without_child_visits_or_unexpanded():
    node = Node(value=0.4, expanded=True)
    node.add_child("a", 0.9)  # zero visits
    backup(node)
    assert (node.visits, node.value) == (1, 0.4)
    leaf = Node(value=0.7)  # unexpanded, childless: N += 1 only
    backup(leaf)
    assert (leaf.visits, leaf.value) == (1, 0.7)


def test_value_targets_correct_chain():
    n = chain()
    t = value_targets(n["root"])
    # m = 4, 3, 2, 1: 0 + 1/4; 0.25 + 0.75/3; 0.5 + 0.5/2; 0.75 + 0.25/1
    assert [t[n[k]] for k in ("s1", "s2", "s3", "s4")] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert n["root"] not in t and len(t) == 4


def test_value_targets_wrong_branches():
    n = chain(wrong_branch=True, wrong_at_root=True)
    t = value_targets(n["root"])
    assert [t[n[k]] for k in ("s1", "s2", "s3", "s4")] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    # w2 takes s1's m = 4: max(0, 0.25 − 0.75/4) = 0.0625
    assert t[n["w2"]] == pytest.approx(0.0625)
    # w3: max(0, 0.0625 − 0.9375/4) = max(0, −0.171875) = 0
    assert t[n["w3"]] == 0.0
    # w1 under root takes root's m = 5: max(0, 0 − 1/5) = 0
    assert t[n["w1"]] == 0.0
    assert len(t) == 7


def test_value_targets_no_correct_leaf():
    root = Node()
    a = root.add_child("a", 0.5)
    b = a.add_child("b", 0.5)
    b.terminal = True
    grade(root, lambda steps: False)
    assert b.correct is False
    assert value_targets(root) == {}
    assert target_rows(root, "q") == []


def test_target_rows():
    n = chain(wrong_branch=True)
    rows = target_rows(n["root"], "Q?")
    by_last = {r["completions"][-1]: r for r in rows}
    assert len(rows) == 2 and set(by_last) == {"s4", "w3"}
    assert by_last["s4"]["prompt"] == "Q?"
    assert by_last["s4"]["completions"] == ["s1", "s2", "s3", "s4"]
    assert by_last["s4"]["labels"] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert by_last["w3"]["completions"] == ["s1", "w2", "w3"]
    assert by_last["w3"]["labels"] == pytest.approx([0.25, 0.0625, 0.0])


def test_add_child_duplicate_and_steps():
    root = Node()
    a = root.add_child("a", 0.5)
    assert root.add_child("a", 0.9) is None
    assert root.children["a"] is a and a.value == 0.5  # the first one is kept
    b = a.add_child("b", 0.1)
    assert b.steps() == ["a", "b"] and root.steps() == []
    assert (root.depth, a.depth, b.depth) == (0, 1, 2)


def test_tree_to_json_and_stats():
    n = chain(wrong_branch=True)
    t = value_targets(n["root"])
    js = tree_to_json(n["root"], t)
    assert "target" not in js and js["step"] == ""
    s1 = js["children"][0]
    assert s1["step"] == "s1" and s1["target"] == 0.25 and s1["value"] == 0.1
    s2, w2 = s1["children"]
    assert w2["target"] == 0.0625
    s4 = s2["children"][0]["children"][0]
    assert s4 == {"step": "s4", "value": 0.4, "visits": 0, "terminal": True, "answer": "42",
                  "correct": True, "target": 1.0}  # fmt: skip
    w3 = w2["children"][0]
    assert (w3["terminal"], w3["correct"], w3["answer"], w3["target"]) == (True, False, "7", 0.0)
    plain = tree_to_json(n["root"])
    assert "target" not in str(plain)
    # s1..s4, w2, w3 = 6 nodes; deepest s4 at 4; terminals s4, w3; correct s4
    assert tree_stats(n["root"]) == {"nodes": 6, "depth": 4, "terminal": 2, "correct_terminal": 1}


def test_best_terminal():
    n = chain(wrong_branch=True)
    assert best_terminal(n["root"]) is n["w3"]  # V 0.6 > 0.4
    n["s4"].value = 0.95
    assert best_terminal(n["root"]) is n["s4"]
    assert best_terminal(Node()) is None


def test_sample_score():
    assert sample_score(True, 0.9, 5) == pytest.approx(1.16)  # 1 + (1.8 − 1)/5
    assert sample_score(False, 0.2, 5) == pytest.approx(-0.12)  # (0.4 − 1)/5
    assert sample_score(True, None) == 1.0
    assert sample_score(False, None) == 0.0


def test_query_balance():
    texts, ok = ["a", "a", "b", "c"], [True, True, True, False]
    assert query_balance(texts, ok, 4) == pytest.approx(0.25)  # 2 unique correct: (2/4)·(2/4)
    assert query_balance(texts, ok, 2) == pytest.approx(0.5)  # min(2/2, 1)·(2/4)
    assert query_balance(texts, ok, 1) == pytest.approx(0.5)  # capped at 1
    assert query_balance([], [], 4) == 0.0


Q_TEXTS = [["x", "y", "z"], ["p", "q"]]
Q_OK = [[True, True, False], [False, True]]
Q_SCORES = [[1.1, 0.9, 0.5], [0.2, 1.05]]


def test_balance_score():
    # τ = 0.9 (strict): q1 keeps x → (1/2)·1/1 = 0.5; q2 keeps q → 0.5; mean 0.5
    assert balance_score(Q_TEXTS, Q_OK, Q_SCORES, 0.9, 2) == pytest.approx(0.5)
    # τ = 0: q1 keeps all → 1·2/3; q2 keeps both → (1/2)·(1/2) = 1/4; mean (2/3 + 1/4)/2 = 11/24
    assert balance_score(Q_TEXTS, Q_OK, Q_SCORES, 0.0, 2) == pytest.approx(11 / 24)
    # τ = 2: nothing kept → 0
    assert balance_score(Q_TEXTS, Q_OK, Q_SCORES, 2.0, 2) == 0.0
    assert balance_score([], [], [], 0.0, 2) == 0.0


def test_choose_configuration_argmax():
    # T = 1.0, one query: τ = 0.9 keeps a, b → 1·2/2 = 1.0; τ = 0 keeps all → 1·2/4 = 0.5
    hot = ([["a", "b", "c", "d"]], [[True, True, False, False]], [[1.2, 1.1, 0.3, 0.1]])
    choice, table = choose_configuration({1.0: hot, 0.5: (Q_TEXTS, Q_OK, Q_SCORES)}, [0.0, 0.9], 2)
    assert table == pytest.approx({(0.5, 0.9): 0.5, (0.5, 0.0): 11 / 24, (1.0, 0.9): 1.0, (1.0, 0.0): 0.5})
    assert (choice.temperature, choice.threshold, choice.balance) == (1.0, 0.9, pytest.approx(1.0))


def test_choose_configuration_ties():
    # every score > 0.9: both τ keep a, b → min(1/1, 1)·1/2 = 0.5 at every (T, τ)
    same = ([["a", "b"]], [[True, False]], [[1.2, 0.95]])
    choice, table = choose_configuration({1.0: same, 0.7: same}, [0.0, 0.9], 1)
    assert len(table) == 4 and set(table.values()) == {0.5}
    assert (choice.temperature, choice.threshold) == (0.7, 0.9)  # lower T, then stricter τ


def test_default_n_star():
    assert default_n_star(67500, 11500) == 6  # ⌈5.87⌉
    assert default_n_star(12, 4) == 3
    assert default_n_star(0, 0) == 1


def test_exploration_exploitation():
    correct = [[True, False, True], [False, False, False]]
    texts = [["a", "b", "a"], ["c", "d", "e"]]
    kept = [[True, True, False], [False, True, False]]
    out = exploration_exploitation(correct, texts, kept, reward_best=[2, None])
    # pass@K 1/2; distinct correct (1 + 0)/2; kept 3, right 1 → 1/3; 3/2 kept a query;
    # reward@K: q1 top index 2 is correct, q2 has none → 1/2
    assert out == pytest.approx(
        {"pass_at_k": 0.5, "distinct_correct": 0.5, "kept_precision": 1 / 3, "kept_per_query": 1.5,
         "reward_at_k": 0.5}
    )  # fmt: skip
    none_kept = exploration_exploitation(correct, texts, [[False] * 3, [False] * 3])
    assert math.isnan(none_kept["kept_precision"]) and none_kept["kept_per_query"] == 0.0
    assert "reward_at_k" not in none_kept
