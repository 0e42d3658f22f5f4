"""Unbiased pass@k, majority vote and the summary over problems (eval/metrics.py)."""

from __future__ import annotations

import itertools
from math import comb

import pytest

from eval.metrics import default_ks, majority_vote, pass_at_k, summarize


@pytest.mark.parametrize(
    ("n", "c", "k", "expected"),
    [
        (5, 2, 1, 0.4),
        (5, 2, 2, 1 - comb(3, 2) / comb(5, 2)),  # 0.7
        (5, 0, 1, 0.0),
        (5, 0, 5, 0.0),
        (5, 4, 2, 1.0),  # n - c = 1 < k: every pair holds a correct sample
        (5, 5, 1, 1.0),
        (1, 1, 1, 1.0),
        (1, 0, 1, 0.0),
        (10, 3, 10, 1.0),
    ],
)
def test_pass_at_k_hand_computed(n, c, k, expected):
    assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)
    assert 0.0 <= pass_at_k(n, c, k) <= 1.0


def test_pass_at_k_examples_from_the_brief():
    assert pass_at_k(5, 2, 2) == pytest.approx(0.7)


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 6, 7])
def test_pass_at_k_equals_brute_force_over_subsets(n):
    # The estimator is the mean, over all k-subsets of the n samples, of "some sample is correct".
    for c in range(n + 1):
        outcomes = [True] * c + [False] * (n - c)
        for k in range(1, n + 1):
            subsets = list(itertools.combinations(outcomes, k))
            brute = sum(any(s) for s in subsets) / len(subsets)
            assert pass_at_k(n, c, k) == pytest.approx(brute, abs=1e-12), (n, c, k)


def test_pass_at_k_large_n_is_stable():
    # C(200, 100) ~ 9e58: the product form stays exact enough and never overflows.
    exact = 1 - comb(150, 100) / comb(200, 100)
    assert pass_at_k(200, 50, 100) == pytest.approx(exact, rel=1e-9)
    assert pass_at_k(2000, 1, 1) == pytest.approx(1 / 2000)


def test_pass_at_k_monotone_in_k():
    for c in range(9):
        vals = [pass_at_k(8, c, k) for k in range(1, 9)]
        assert vals == sorted(vals)


@pytest.mark.parametrize(("n", "c", "k"), [(0, 0, 1), (5, 6, 1), (5, -1, 1), (5, 2, 0), (5, 2, 6)])
def test_pass_at_k_rejects_bad_arguments(n, c, k):
    with pytest.raises(ValueError):
        pass_at_k(n, c, k)


def test_majority_vote_basic():
    assert majority_vote(["3", "4", "3"], [True, False, True]) is True
    assert majority_vote(["4", "3", "4"], [False, True, False]) is False


def test_majority_vote_tie_goes_to_first_occurrence():
    assert majority_vote(["5", "7", "7", "5"], [True, False, False, True]) is True
    assert majority_vote(["7", "5", "5", "7"], [False, True, True, False]) is False
    assert majority_vote(["1", "2"], [False, True]) is False


def test_majority_vote_all_none_is_wrong():
    assert majority_vote([None, None, None], [False, False, False]) is False
    assert majority_vote([], []) is False


def test_majority_vote_none_does_not_vote():
    # two samples state no answer; the one that does wins
    assert majority_vote([None, "9", None], [False, True, False]) is True


def test_majority_vote_normalises_numbers():
    # "3.0", "3" and "3.00" are one answer (2 + 1 votes) and beat "4" (2 votes)
    assert majority_vote(["4", "3.0", "4", "3", "3.00"], [False, True, False, True, True]) is True
    assert majority_vote(["1,000", "1000", "999"], [True, True, False]) is True
    # non-numbers vote as text
    assert majority_vote(["\\frac{1}{2}", "x", "\\frac{1}{2}"], [True, False, True]) is True


def test_majority_vote_uses_the_first_sample_of_the_winner():
    # the verifier judged only the first "3" correct; the vote follows that sample
    assert majority_vote(["3", "3.0", "5"], [True, False, False]) is True
    assert majority_vote(["3", "3.0", "5"], [False, True, False]) is False


def test_majority_vote_length_mismatch():
    with pytest.raises(ValueError):
        majority_vote(["1"], [True, False])


def test_default_ks():
    assert default_ks(1) == [1]
    assert default_ks(2) == [1, 2]
    assert default_ks(4) == [1, 2, 4]
    assert default_ks(6) == [1, 2, 4, 6]
    assert default_ks(16) == [1, 2, 4, 8, 16]


def test_summarize_pass_and_maj():
    scores = [[1.0, 0.0, 0.0, 1.0], [0.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]]
    answers = [["3", "4", "4", "3.0"], ["1", "1", None, "2"], ["7", "7", "7", "7"]]
    m = summarize(scores, answers)
    assert m["num_problems"] == 3
    assert m["num_samples"] == 12
    assert m["unscorable_samples"] == 0
    assert m["unscorable_problems"] == 0
    assert m["pass@1"] == pytest.approx((0.5 + 0 + 1) / 3)
    assert m["pass@2"] == pytest.approx((pass_at_k(4, 2, 2) + 0 + 1) / 3)
    assert m["pass@4"] == pytest.approx((1 + 0 + 1) / 3)
    assert m["reward_mean"] == pytest.approx(6 / 12)
    # maj@1: first samples; maj@2 on ["3","4"] is a tie → "3" (correct); maj@4: 3 vs 4 tie → "3"
    assert m["maj@1"] == pytest.approx(2 / 3)
    assert m["maj@2"] == pytest.approx(2 / 3)
    assert m["maj@4"] == pytest.approx(2 / 3)


def test_summarize_excludes_and_counts_unscorable():
    scores = [[None, None], [1.0, None], [0.0, 1.0]]
    answers = [["1", "1"], ["2", "3"], ["4", "5"]]
    m = summarize(scores, answers, ks=[1, 2])
    assert m["unscorable_samples"] == 3
    assert m["unscorable_problems"] == 1
    # problem 0 is out; problem 1 has one scorable sample (correct), problem 2 one of two
    assert m["pass@1"] == pytest.approx((1.0 + 0.5) / 2)
    assert m["pass@2"] == pytest.approx(1.0)  # only problem 2 has two scorable samples
    assert m["maj@1"] == pytest.approx((1.0 + 0.0) / 2)
    assert m["reward_mean"] == pytest.approx(2 / 3)


def test_summarize_nothing_scorable_gives_none_not_zero():
    m = summarize([[None], [None]], [[None], ["1"]])
    assert m["pass@1"] is None
    assert m["maj@1"] is None
    assert m["reward_mean"] is None
    assert m["unscorable_problems"] == 2


def test_summarize_threshold_and_partial_credit():
    # scores in [0, 1] with partial credit: correct means "> threshold"
    m = summarize([[0.25, 0.0]], ks=[1], threshold=0.5)
    assert m["pass@1"] == 0.0
    m = summarize([[0.25, 0.0]], ks=[1])
    assert m["pass@1"] == 0.5
    assert "maj@1" not in m  # no answers given
