"""B-STaR's selection math: sample scores, the balance score, and the (T, τ) it picks.

Pure functions on plain numbers (the trainer supplies correctness, PRM scores and texts).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


def sample_score(correct: bool, prm_min: float | None, scale: float = 5.0) -> float:
    """score = 1[answer correct] + PRM_min / scale, with the PRM's minimum step probability
    p ∈ [0, 1] mapped to 2p − 1 ∈ [−1, 1] (the official code normalises to about [−1, 1]);
    without a PRM, score = 1[correct]."""
    return float(correct) + (0.0 if prm_min is None else (2.0 * prm_min - 1.0) / scale)


def query_balance(kept_texts: Sequence[str], kept_correct: Sequence[bool], n_star: int) -> float:
    """bs_i = min(n'_i / n*, 1) · n'_i / n_i: n_i responses kept for query i, n'_i of them
    correct and distinct (identical texts count once); 0 when nothing is kept."""
    n = len(kept_texts)
    if n == 0:
        return 0.0
    unique_correct = len({t for t, c in zip(kept_texts, kept_correct, strict=True) if c})
    return min(unique_correct / n_star, 1.0) * unique_correct / n


def balance_score(
    texts: Sequence[Sequence[str]],
    correct: Sequence[Sequence[bool]],
    scores: Sequence[Sequence[float]],
    threshold: float,
    n_star: int,
) -> float:
    """mean_i bs_i over queries, keeping the responses with score > ``threshold``."""
    if not texts:
        return 0.0
    total = 0.0
    for t, c, s in zip(texts, correct, scores, strict=True):
        keep = [j for j in range(len(t)) if s[j] > threshold]
        total += query_balance([t[j] for j in keep], [c[j] for j in keep], n_star)
    return total / len(texts)


@dataclass(frozen=True)
class Choice:
    temperature: float
    threshold: float
    balance: float


def choose_configuration(
    by_temperature: dict[float, tuple[list[list[str]], list[list[bool]], list[list[float]]]],
    thresholds: Sequence[float],
    n_star: int,
) -> tuple[Choice, dict[tuple[float, float], float]]:
    """argmax over (T, τ) of the balance score; ties go to the lower T, then the stricter τ
    (the first maximum over the sorted grid). Returns the choice and the whole table."""
    table: dict[tuple[float, float], float] = {}
    for temperature in sorted(by_temperature):
        texts, correct, scores = by_temperature[temperature]
        for tau in sorted(thresholds, reverse=True):
            table[(temperature, tau)] = balance_score(texts, correct, scores, tau, n_star)
    (t_best, tau_best), bs = max(table.items(), key=lambda kv: kv[1])
    return Choice(t_best, tau_best, bs), table


def default_n_star(samples_kept_per_iteration: int, queries_per_iteration: int) -> int:
    """n* = ⌈N / M⌉ (the paper: samples kept per iteration ÷ queries per iteration)."""
    return max(1, math.ceil(samples_kept_per_iteration / max(1, queries_per_iteration)))


def exploration_exploitation(
    correct: Sequence[Sequence[bool]],
    texts: Sequence[Sequence[str]],
    kept: Sequence[Sequence[bool]],
    reward_best: Sequence[int | None] | None = None,
) -> dict[str, float]:
    """The paper's dynamics metrics on one iteration's samples (K per query):

    - pass@K-S: share of queries with a correct sample (exploration);
    - distinct_correct: mean number of distinct correct responses per query (exploration);
    - kept_precision: share of kept responses that are correct (exploitation);
    - reward@K-S: accuracy of the reward model's top response per query (exploitation; needs
      ``reward_best``, the index the PRM ranks first for each query)."""
    q = max(1, len(correct))
    out = {
        "pass_at_k": sum(any(c) for c in correct) / q,
        "distinct_correct": sum(
            len({t for t, ok in zip(ts, cs, strict=True) if ok})
            for ts, cs in zip(texts, correct, strict=True)
        )
        / q,
    }
    kept_total = sum(sum(k) for k in kept)
    kept_right = sum(
        sum(1 for ok, k in zip(cs, ks, strict=True) if ok and k) for cs, ks in zip(correct, kept, strict=True)
    )
    out["kept_precision"] = kept_right / kept_total if kept_total else float("nan")
    out["kept_per_query"] = kept_total / q
    if reward_best is not None:
        out["reward_at_k"] = (
            sum(1 for cs, b in zip(correct, reward_best, strict=True) if b is not None and cs[b]) / q
        )
    return out
