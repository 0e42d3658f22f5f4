"""Choosing one answer among n samples: the pure rules shared by ``telos eval rm`` (which asks
"is the chosen sample correct?") and ``telos serve`` (which returns the chosen sample).

Every rule returns the *index* of the selected original sample, so a server can answer with
a real candidate and an evaluator can look up that candidate's correctness.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from envs.math.answers import normalize_number
from telos.errors import UserError

AGGREGATIONS = ("min", "last", "prod")


def vote_key(answer: str) -> str:
    """The ballot an answer casts: "3", "3.0" and "3.00" are one vote; non-numbers (LaTeX,
    words) vote as their cleaned text."""
    return normalize_number(answer) or answer.strip()


def vote_tally(answers: Sequence[str | None], weights: Sequence[float] | None = None) -> dict[str, float]:
    """W(a) = Σ_{i: key(answer_i) = a} w_i (w_i = 1 without weights), in first-seen order; None
    and empty answers abstain."""
    if weights is not None and len(weights) != len(answers):
        raise ValueError(f"{len(answers)} answers but {len(weights)} weights")
    tally: dict[str, float] = {}
    for i, a in enumerate(answers):
        key = None if a is None else vote_key(a)
        if key:
            tally[key] = tally.get(key, 0.0) + (1.0 if weights is None else float(weights[i]))
    return tally


def vote_winner(answers: Sequence[str | None], weights: Sequence[float] | None = None) -> int | None:
    """The first sample giving the answer a* = argmax_a W(a) (majority vote without weights,
    weighted vote with them); ties go to the answer seen first. None when nobody votes."""
    tally = vote_tally(answers, weights)
    if not tally:
        return None
    winner = max(tally, key=tally.__getitem__)  # insertion order + first maximum: ties → first seen
    return next(i for i, a in enumerate(answers) if a is not None and vote_key(a) == winner)


def best_index(scores: Sequence[float]) -> int | None:
    """argmax_i score_i, ties to the first maximum; None for no scores."""
    if not scores:
        return None
    return max(range(len(scores)), key=lambda i: scores[i])


def goal_filter(q_values: Sequence[float], skip: int = 5, tau: float = 0.0) -> int | None:
    """Where the goal-conditioned filter prunes an answer:

        t* = min { t >= skip : Q_t < tau },   None if that set is empty (the answer survives)

    ``q_values[t]`` is the goal-conditioned Q-value after token t. The first ``skip`` tokens are
    ignored because their Q-values are noisy (the paper drops 5); a dip there never prunes. The
    comparison is strict, so Q_t == tau survives, as in the paper's ``np.min(...) >= threshold``.
    """
    if skip < 0:
        raise ValueError(f"skip must be >= 0, got {skip}")
    for t in range(skip, len(q_values)):
        if q_values[t] < tau:
            return t
    return None


def aggregate_steps(step_scores: Sequence[float], how: str) -> float:
    """One answer score from per-step PRM scores p_1..p_K:

    min:  min_k p_k      (a chain is as good as its weakest step)
    last: p_K
    prod: Π_k p_k        (probability every step is right, if steps are independent)
    """
    if how not in AGGREGATIONS:
        raise UserError(f"unknown step aggregation {how!r}; valid: {', '.join(AGGREGATIONS)}")
    if len(step_scores) == 0:
        raise ValueError("aggregate_steps needs at least one step score")
    if how == "min":
        return float(min(step_scores))
    if how == "last":
        return float(step_scores[-1])
    return float(math.prod(step_scores))
