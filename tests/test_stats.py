"""AUROC by hand: the Mann–Whitney count over (positive, negative) pairs, ties worth ½."""

from __future__ import annotations

import math

import pytest
import torch

from telos.stats import auroc


def test_perfect_and_reversed_separation():
    assert auroc([0.9, 0.8, 0.1, 0.2], [1, 1, 0, 0]) == 1.0
    assert auroc([0.1, 0.2, 0.9, 0.8], [1, 1, 0, 0]) == 0.0


def test_pairs_counted_by_hand_with_a_tie():
    # positives 3, 1; negatives 2, 1. Pairs: (3,2) win, (3,1) win, (1,2) loss, (1,1) tie → 2.5 / 4
    assert auroc([3.0, 1.0, 2.0, 1.0], [1, 1, 0, 0]) == pytest.approx(0.625)


def test_constant_score_is_chance_and_nan_labels_are_left_out():
    assert auroc([0.5] * 4, [1, 0, 1, 0]) == 0.5
    # the NaN-labelled sample would make the pair count 2 × 2; left out, 1 × 2 pairs, both won
    assert auroc(torch.tensor([5.0, 9.0, 1.0, 2.0]), torch.tensor([1.0, float("nan"), 0.0, 0.0])) == 1.0


def test_one_class_only_is_nan_and_shapes_must_match():
    assert math.isnan(auroc([0.1, 0.2], [1, 1]))
    with pytest.raises(ValueError):
        auroc([0.1, 0.2, 0.3], [1, 0])
