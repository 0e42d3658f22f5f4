"""Reward-model metrics by hand (eval/rm_metrics.py): pairs, partial AUROC, goal filter, PRM steps."""

from __future__ import annotations

import math

import pytest
import torch

from eval.rm_metrics import (
    DEFAULT_FRACTIONS,
    aggregate_steps,
    best_of_n,
    filtered_majority_vote,
    goal_filter,
    pairwise_accuracy,
    partial_auroc,
    prefix_lengths,
    step_accuracy,
    summarize_goal_filter,
    weighted_vote,
)
from telos.errors import UserError

# --------------------------------------------------------------------------- pairwise / partial AUROC


def test_pairwise_accuracy_counts_ties_half():
    # wins: pair 0; loss: pair 1; tie: pair 2 → (1 + 0 + 0.5) / 3
    assert pairwise_accuracy([2.0, 0.0, 1.0], [1.0, 3.0, 1.0]) == pytest.approx(0.5)
    assert pairwise_accuracy(torch.tensor([1.0, 1.0]), torch.tensor([0.0, 0.0])) == 1.0
    assert pairwise_accuracy([0.3] * 4, [0.3] * 4) == 0.5
    assert math.isnan(pairwise_accuracy([], []))
    with pytest.raises(ValueError):
        pairwise_accuracy([1.0], [1.0, 2.0])


def test_prefix_lengths_ceil_and_ends():
    assert prefix_lengths(10) == list(range(11))
    # a fraction built as 3 * 0.1 is 0.30000000000000004; times 10 that must still be 3 tokens, not 4
    assert prefix_lengths(10, [3 * 0.1, 0.3]) == [3, 3]
    # ceil: 0.1 * 7 = 0.7 → 1 token, 0.5 * 7 = 3.5 → 4
    assert prefix_lengths(7, [0.0, 0.1, 0.5, 1.0]) == [0, 1, 4, 7]
    assert prefix_lengths(0, [0.0, 0.5, 1.0]) == [0, 0, 0]
    with pytest.raises(ValueError):
        prefix_lengths(5, [1.2])


def test_partial_auroc_small_example():
    # 2 correct, 2 wrong answers; scores at 0 %, 50 %, 100 %.
    scores_at = [
        [0.0, 0.2, 0.9],  # correct
        [0.0, 0.8, 0.7],  # correct
        [0.0, 0.5, 0.1],  # wrong
        [0.0, 0.1, 0.3],  # wrong
    ]
    correct = [True, True, False, False]
    out = partial_auroc(scores_at, correct, [0.0, 0.5, 1.0])
    assert out[0.0] == 0.5  # constant score: chance
    # at 50 %: pos {0.2, 0.8} vs neg {0.5, 0.1}: (0.2>0.5 no, 0.2>0.1 yes, 0.8 both) → 3 / 4
    assert out[0.5] == pytest.approx(0.75)
    assert out[1.0] == 1.0
    assert list(out) == [0.0, 0.5, 1.0]
    with pytest.raises(ValueError):
        partial_auroc([[0.1, 0.2]], [True], [0.0, 0.5, 1.0])
    assert len(DEFAULT_FRACTIONS) == 11 and DEFAULT_FRACTIONS[3] == 0.3


# --------------------------------------------------------------------------- goal filter


def test_goal_filter_ignores_dips_in_skip_window_and_picks_first_dip_after():
    q = [-1.0, -1.0, 0.5, 0.5, 0.5, 0.5, -0.1, 0.5, -0.2]
    assert goal_filter(q, skip=5, tau=0.0) == 6  # dips at 0, 1 are inside the window
    assert goal_filter(q, skip=0, tau=0.0) == 0
    assert goal_filter(q, skip=7, tau=0.0) == 8
    assert goal_filter([-1.0] * 5 + [0.0, 0.2], skip=5, tau=0.0) is None  # Q == tau survives
    assert goal_filter([0.2, 0.3], skip=5) is None  # shorter than the window
    assert goal_filter([0.2] * 6 + [0.25], skip=5, tau=0.3) == 5


def test_filtered_vote_survivors_and_exact_tokens_saved():
    ok = [0.5] * 10
    answers = ["7", "3", "3", "7.0"]
    correct = [True, False, False, True]
    q = [
        ok,  # survives
        [0.5] * 5 + [-0.5] + [0.5] * 4,  # pruned at t = 5 of 10 → 4 tokens after it
        [-0.9] * 5 + [0.5] * 3,  # dips only inside the window: survives
        [0.5] * 8 + [-0.1, 0.5, 0.5, 0.5],  # pruned at t = 8 of 12 → 3 tokens after it
    ]
    out = filtered_majority_vote(answers, correct, q, skip=5, tau=0.0)
    # survivors vote "7" (1) vs "3" (1): tie → first seen, "7", correct
    assert out["correct"] is True
    assert out["fallback"] is False
    assert out["pruned_share"] == 0.5
    assert out["tokens"] == 10 + 10 + 8 + 12
    assert out["tokens_saved"] == 4 + 3
    assert out["tokens_saved_share"] == pytest.approx(7 / 40)
    # unfiltered: "7" and "7.0" normalise to one answer with 2 votes vs "3" with 2: tie → "7"
    assert out["correct_unfiltered"] is True


def test_filter_changes_the_vote():
    answers = ["1", "2", "2", "1", "1"]
    correct = [True, False, False, True, True]
    good, bad = [0.1] * 8, [0.1] * 6 + [-0.1] * 2
    q = [good, good, good, bad, bad]  # pruning two of the three correct answers
    out = filtered_majority_vote(answers, correct, q)
    assert out["correct"] is False  # "2" 2 votes vs "1" 1 vote
    assert out["correct_unfiltered"] is True  # "1" 3 votes vs "2" 2
    assert out["tokens_saved"] == 2 * (8 - 6 - 1)


def test_all_pruned_falls_back_to_vote_over_all():
    answers = ["4", "5", "4"]
    correct = [True, False, True]
    q = [[0.0] * 5 + [-1.0]] * 3
    out = filtered_majority_vote(answers, correct, q, skip=5, tau=0.0)
    assert out["fallback"] is True
    assert out["correct"] is True  # "4" wins 2 to 1 over all answers
    assert out["pruned_share"] == 1.0
    assert out["tokens_saved"] == 0 and out["tokens_saved_share"] == 0.0  # all generated in full
    out = filtered_majority_vote(["5", "5", "4"], [False, False, True], q)
    assert out["fallback"] is True and out["correct"] is False


def test_ties_strict_first_seen_and_paper():
    keep = [[1.0] * 6] * 4
    # "9" (wrong) seen first ties "8" (correct) 2–2.
    answers, correct = ["9", "8", "8", "9"], [False, True, True, False]
    out = filtered_majority_vote(answers, correct, keep)
    assert out["correct"] is False  # first seen, "9", is wrong
    assert out["correct_strict"] is False  # a tied answer is wrong
    assert out["correct_paper"] is True  # paper: #correct (2) >= largest wrong bucket (2)
    # correct answer seen first: first-seen says right, strict still wrong
    out = filtered_majority_vote(["8", "9", "8", "9"], [True, False, True, False], keep)
    assert out["correct"] is True
    assert out["correct_strict"] is False
    assert out["correct_paper"] is True
    # no tie: all three rules agree
    out = filtered_majority_vote(["8", "8", "8", "9"], [True, True, True, False], keep)
    assert out["correct"] is out["correct_strict"] is out["correct_paper"] is True


def test_tie_with_all_tied_answers_correct_and_paper_pooling():
    keep = [[1.0] * 6] * 4
    # "1/2" and "0.5" both judged correct but not the same vote key: strict tie of two correct
    # answers is right; the paper pools all 4 correct samples against 1 wrong.
    out = filtered_majority_vote(
        ["1/2", "0.5", "0.5", "1/2", "3"], [True, True, True, True, False], [[1.0] * 6] * 5
    )
    assert out["correct"] is True and out["correct_strict"] is True and out["correct_paper"] is True
    # paper pools correct answers with different texts: 2 correct (texts differ) vs 2 wrong "3" →
    # paper right; our vote sees "3" with 2 votes vs 1 each → wrong.
    out = filtered_majority_vote(["1/2", "3", "0.5", "3"], [True, False, True, False], keep)
    assert out["correct"] is False and out["correct_strict"] is False and out["correct_paper"] is True
    # paper: wrong answers with no answer (None) form their own bucket: 3 None vs 2 correct → wrong
    out = filtered_majority_vote(
        [None, None, None, "2", "2"], [False, False, False, True, True], [[1.0] * 6] * 5
    )
    assert out["correct_paper"] is False
    assert out["correct"] is True  # None abstains in majority_vote


def test_summarize_goal_filter():
    a = filtered_majority_vote(["1", "2", "1"], [True, False, True], [[1.0] * 10, [1.0] * 10, [1.0] * 10])
    b = filtered_majority_vote(
        ["1", "2", "2"], [True, False, False], [[1.0] * 10, [1.0] * 10, [1.0] * 6 + [-1.0] * 4]
    )
    # b: "2" pruned at t = 6 → 3 tokens saved; survivors "1" vs "2" tie → "1" first → right
    assert b["correct"] is True and b["correct_unfiltered"] is False
    s = summarize_goal_filter([a, b])
    assert s["num_questions"] == 2
    assert s["accuracy_filtered"] == 1.0
    assert s["accuracy_unfiltered"] == 0.5
    assert s["accuracy_filtered_strict"] == 0.5
    assert s["pruned_share"] == pytest.approx((0 + 1 / 3) / 2)
    assert s["tokens"] == 60 and s["tokens_saved"] == 3
    assert s["tokens_saved_share"] == pytest.approx(3 / 60)
    assert s["fallback_share"] == 0.0
    empty = summarize_goal_filter([])
    assert empty["accuracy_filtered"] is None and empty["tokens_saved_share"] is None


def test_filter_length_mismatch():
    with pytest.raises(ValueError):
        filtered_majority_vote(["1"], [True], [[1.0], [1.0]])


# --------------------------------------------------------------------------- PRM aggregation


def test_aggregate_steps_values():
    steps = [0.9, 0.4, 0.8]
    assert aggregate_steps(steps, "min") == 0.4
    assert aggregate_steps(steps, "last") == 0.8
    assert aggregate_steps(steps, "prod") == pytest.approx(0.288)
    with pytest.raises(UserError, match="min, last, prod"):
        aggregate_steps(steps, "mean")
    with pytest.raises(ValueError):
        aggregate_steps([], "min")


def test_best_of_n_first_on_ties():
    assert best_of_n([0.1, 0.9, 0.3], [False, True, False]) is True
    assert best_of_n([0.9, 0.9, 0.3], [False, True, True]) is False  # tie → first
    assert best_of_n([], []) is False


def test_weighted_vote_sums_scores_over_normalised_answers():
    # "5" and "5.0" pool: 0.3 + 0.3 = 0.6 > "6" with 0.5 (plain count would also say "5")
    assert weighted_vote(["5", "6", "5.0"], [0.3, 0.5, 0.3], [True, False, True]) is True
    # 2 votes for "5" weigh 0.2 in total, 1 vote for "6" weighs 0.9: weights beat counts
    assert weighted_vote(["5", "5", "6"], [0.1, 0.1, 0.9], [True, True, False]) is False
    # tie in weight → first seen
    assert weighted_vote(["6", "5"], [0.5, 0.5], [False, True]) is False
    assert weighted_vote([None, "5"], [10.0, 0.1], [False, True]) is True  # None abstains
    assert weighted_vote([None], [1.0], [False]) is False


def test_step_accuracy():
    # classes: pred (T, F, T, F) vs label (T, T, F, F) → 2 / 4
    assert step_accuracy([0.9, 0.2, 0.6, 0.5], [1.0, 1.0, 0.0, 0.0]) == 0.5
    assert step_accuracy([0.9, 0.1], [1.0, float("nan")]) == 1.0  # unlabelled step left out
    assert math.isnan(step_accuracy([], []))
