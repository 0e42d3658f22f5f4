"""Reward-model metrics: pairwise accuracy, partial AUROC, goal-conditioned filtering, PRM aggregation.

Pure functions on plain lists (or tensors where noted), called by ``telos eval rm``. Voting reuses
:mod:`eval.metrics` (same answer normalisation and tie rule as ``maj@k``) and AUROC reuses
:func:`telos.stats.auroc`, so the numbers agree with the rest of telos.

The goal filter follows the GC-RM paper's majority-vote filtering (vaskarnathscale/goal-conditioned-rm,
``examples/metrics.py``, ``get_accuracy``); where telos differs from that code the docstring says so.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from eval.metrics import majority_vote
from rewards.rm_losses import hard_step_label
from rewards.selection import AGGREGATIONS, aggregate_steps, best_index, goal_filter, vote_key, vote_winner
from telos.stats import auroc

__all__ = [
    "AGGREGATIONS",
    "DEFAULT_FRACTIONS",
    "aggregate_steps",
    "best_of_n",
    "filtered_majority_vote",
    "goal_filter",
    "pairwise_accuracy",
    "partial_auroc",
    "prefix_lengths",
    "step_accuracy",
    "summarize_goal_filter",
    "weighted_vote",
]

# 0 %, 10 %, ..., 100 %: the paper's percentiles. round() so 0.3 is 0.3, not 0.30000000000000004.
DEFAULT_FRACTIONS: tuple[float, ...] = tuple(round(i / 10, 1) for i in range(11))


# --------------------------------------------------------------------------- outcome RM


def pairwise_accuracy(
    chosen: Sequence[float] | torch.Tensor, rejected: Sequence[float] | torch.Tensor
) -> float:
    """Share of preference pairs the RM orders correctly:

        acc = mean_i ( 1[c_i > r_i] + ½ · 1[c_i = r_i] )

    A tie counts 0.5 (a coin flip), so a constant RM scores 0.5, not 0 or 1. NaN for no pairs.
    """
    c = torch.as_tensor(chosen, dtype=torch.float64).flatten()
    r = torch.as_tensor(rejected, dtype=torch.float64).flatten()
    if c.shape != r.shape:
        raise ValueError(f"{c.numel()} chosen scores but {r.numel()} rejected scores")
    if c.numel() == 0:
        return float("nan")
    return float(((c > r).double() + 0.5 * (c == r).double()).mean())


def prefix_lengths(num_tokens: int, fractions: Sequence[float] = DEFAULT_FRACTIONS) -> list[int]:
    """Token count of the first ``f · 100 %`` of an answer of ``num_tokens`` tokens, for each f:

        len(f) = ceil(f · num_tokens)

    so 0 % → 0 tokens, 100 % → all, and any f > 0 keeps at least one token of a non-empty
    answer. ``f · n`` is rounded to 9 decimals first so float noise (f = 3 · 0.1 = 0.30000000000000004,
    as ``arange`` gives, times 10) does not push ceil up a token. The paper's code floors instead and reads the score at index
    ``max(floor(f · n) - 1, 0)``, i.e. it uses the first token for both 0 % and tiny f.
    """
    if num_tokens < 0:
        raise ValueError(f"num_tokens must be >= 0, got {num_tokens}")
    out = []
    for f in fractions:
        if not 0.0 <= f <= 1.0:
            raise ValueError(f"fractions must lie in [0, 1], got {f}")
        out.append(math.ceil(round(f * num_tokens, 9)))
    return out


def partial_auroc(
    scores_at: Sequence[Sequence[float]],
    correct: Sequence[bool],
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
) -> dict[float, float]:
    """AUROC of the RM score read after only part of each answer, per fraction:

        pAUROC(f_j) = auroc([scores_at[i][j] for each answer i], correct)

    ``scores_at[i][j]`` is answer i's score computed on its first ``prefix_lengths(n_i)[j]``
    tokens (the caller picks the score at a prefix, e.g. the token RM's value there), and
    ``correct[i]`` whether answer i is correct. Shows how early the RM can tell right from
    wrong; at f = 1.0 it is the ordinary AUROC. NaN where one class is empty (see ``auroc``).
    """
    if len(scores_at) != len(correct):
        raise ValueError(f"{len(scores_at)} answers but {len(correct)} correctness flags")
    for i, row in enumerate(scores_at):
        if len(row) != len(fractions):
            raise ValueError(f"answer {i} has {len(row)} scores for {len(fractions)} fractions")
    labels = [float(c) for c in correct]
    return {f: auroc([row[j] for row in scores_at], labels) for j, f in enumerate(fractions)}


# --------------------------------------------------------------------------- goal filter (GC-RM)


def _paper_vote(answers: Sequence[str | None], correct: Sequence[bool]) -> bool:
    # The paper's code pools every correct sample into one bucket whatever its text, buckets the
    # wrong ones by predicted answer (None included, as its own bucket) and calls the vote right
    # when correct_count >= the largest wrong bucket: ties go to the correct answer.
    n_correct = sum(bool(c) for c in correct)
    wrong: dict[str | None, int] = {}
    for a, c in zip(answers, correct, strict=True):
        if not c:
            key = None if a is None else vote_key(a)
            wrong[key] = wrong.get(key, 0) + 1
    if not wrong:
        return True  # the paper counts a question with only correct (or no) voters as right
    return n_correct >= max(wrong.values())


def _strict_vote(answers: Sequence[str | None], correct: Sequence[bool]) -> bool:
    # Group and correctness exactly as majority_vote (normalised keys, None abstains, a group is
    # correct iff its first sample is), but a tie for the top count is right only if every tied
    # group is correct, so a tie never earns credit a coin flip could lose.
    counts: dict[str, int] = {}
    first: dict[str, int] = {}
    for i, a in enumerate(answers):
        key = None if a is None else vote_key(a)
        if not key:
            continue
        counts[key] = counts.get(key, 0) + 1
        first.setdefault(key, i)
    if not counts:
        return False
    top = max(counts.values())
    return all(bool(correct[first[k]]) for k, n in counts.items() if n == top)


def filtered_majority_vote(
    answers: Sequence[str | None],
    correct: Sequence[bool],
    q_values_per_answer: Sequence[Sequence[float]],
    skip: int = 5,
    tau: float = 0.0,
) -> dict[str, bool | float | int]:
    """Majority vote over the answers that survive :func:`goal_filter`, for one question.

    Survivors S = answers with ``goal_filter(q_i, skip, tau) is None``; if S is empty the vote
    falls back to all answers (``fallback`` True). Keys:

    - ``correct``: ``eval.metrics.majority_vote`` over S (numbers normalised, None abstains,
      ties → the answer seen first).
    - ``correct_strict``: same groups, but if several answers share the top count the vote is
      right only when every tied answer is correct (each answer's correctness = its first
      sample's flag, as in majority_vote); with no tie it equals ``correct``.
    - ``correct_paper``: the GC-RM code's rule — all correct samples form one bucket regardless
      of their text, wrong samples are bucketed by answer (None is a bucket), right iff
      #correct >= largest wrong bucket (ties count as right); no wrong voter → right.
    - ``correct_unfiltered`` (``_strict``, ``_paper``): the same three votes over all answers
      (the baseline).
    - ``pruned_share``: pruned answers / all answers (1.0 on fallback; the paper resets it to 0).
    - ``tokens`` = Σ_i n_i with n_i = len(q_i), all tokens of all answers (the paper counts only
      tokens after the skip window).
    - ``tokens_saved`` = Σ_pruned (n_i − t*_i − 1): tokens after each pruning point, which
      online pruning would not generate (token t*_i itself must exist to score Q_t*; the paper
      counts n_i − t*_i). 0 on fallback: every answer is then generated in full to vote, as the
      paper also does.
    - ``tokens_saved_share`` = tokens_saved / tokens (0.0 when there are no tokens).
    """
    n = len(answers)
    if len(correct) != n or len(q_values_per_answer) != n:
        raise ValueError(
            f"{n} answers, {len(correct)} correctness flags, {len(q_values_per_answer)} Q-value lists"
        )
    cuts = [goal_filter(q, skip, tau) for q in q_values_per_answer]
    keep = [i for i, t in enumerate(cuts) if t is None]
    fallback = not keep
    if fallback:
        keep = list(range(n))
    ans = [answers[i] for i in keep]
    ok = [bool(correct[i]) for i in keep]

    tokens = sum(len(q) for q in q_values_per_answer)
    saved = 0
    if not fallback:
        saved = sum(len(q) - t - 1 for q, t in zip(q_values_per_answer, cuts, strict=True) if t is not None)
    pruned = sum(t is not None for t in cuts)
    return {
        "correct": majority_vote(ans, ok),
        "correct_strict": _strict_vote(ans, ok),
        "correct_paper": _paper_vote(ans, ok),
        "correct_unfiltered": majority_vote(answers, [bool(c) for c in correct]),
        "correct_unfiltered_strict": _strict_vote(answers, [bool(c) for c in correct]),
        "correct_unfiltered_paper": _paper_vote(answers, [bool(c) for c in correct]),
        "fallback": fallback,
        "pruned_share": pruned / n if n else 0.0,
        "tokens": tokens,
        "tokens_saved": saved,
        "tokens_saved_share": saved / tokens if tokens else 0.0,
    }


def summarize_goal_filter(per_question: list[dict]) -> dict[str, float | int | None]:
    """Average :func:`filtered_majority_vote` results over questions.

    ``accuracy_filtered`` / ``_strict`` / ``_paper`` / ``accuracy_unfiltered`` are the means of
    the matching ``correct*`` flags; ``fallback_share`` and ``pruned_share`` are per-question
    means; ``tokens_saved_share`` is pooled, Σ tokens_saved / Σ tokens, so long answers weigh
    by their length (it is the share of generation compute saved). None when there is nothing
    to average.
    """
    q = len(per_question)

    def mean(key: str) -> float | None:
        return sum(float(d[key]) for d in per_question) / q if q else None

    tokens = sum(d["tokens"] for d in per_question)
    saved = sum(d["tokens_saved"] for d in per_question)
    return {
        "num_questions": q,
        "accuracy_filtered": mean("correct"),
        "accuracy_filtered_strict": mean("correct_strict"),
        "accuracy_filtered_paper": mean("correct_paper"),
        "accuracy_unfiltered": mean("correct_unfiltered"),
        "accuracy_unfiltered_strict": mean("correct_unfiltered_strict"),
        "accuracy_unfiltered_paper": mean("correct_unfiltered_paper"),
        "fallback_share": mean("fallback"),
        "pruned_share": mean("pruned_share"),
        "tokens": tokens,
        "tokens_saved": saved,
        "tokens_saved_share": saved / tokens if tokens else None,
    }


# --------------------------------------------------------------------------- process RM


def best_of_n(scores: Sequence[float], correct: Sequence[bool]) -> bool:
    """Whether the highest-scored answer is correct: ``correct[argmax_i scores_i]``.

    Ties go to the first maximum (a fixed, order-only rule). No answers → False.
    """
    if len(scores) != len(correct):
        raise ValueError(f"{len(scores)} scores but {len(correct)} correctness flags")
    best = best_index(scores)
    return best is not None and bool(correct[best])


def weighted_vote(answers: Sequence[str | None], scores: Sequence[float], correct: Sequence[bool]) -> bool:
    """RM-weighted majority vote: the answer a maximising W(a) = Σ_{i: answer_i = a} score_i wins.

    Answers are grouped as in ``eval.metrics.majority_vote`` (numbers via ``normalize_number``,
    None abstains); ties go to the answer seen first; the vote is correct if the first sample
    giving the winner is. No answer at all → False.
    """
    if not len(answers) == len(scores) == len(correct):
        raise ValueError(f"{len(answers)} answers, {len(scores)} scores, {len(correct)} flags")
    winner = vote_winner(answers, scores)
    return winner is not None and bool(correct[winner])


def step_accuracy(pred: Sequence[float] | torch.Tensor, labels: Sequence[float] | torch.Tensor) -> float:
    """Share of steps whose predicted class matches the label: mean_k 1[(p_k > 0.5) = (y_k > 0)],
    1[y > 0] Math-Shepherd's hard label (``rewards.rm_losses.hard_step_label``; y soft or 0/1).

    NaN labels (unlabelled steps) are left out, as in ``auroc``; NaN when no step is left.
    """
    p = torch.as_tensor(pred, dtype=torch.float64).flatten()
    y = torch.as_tensor(labels, dtype=torch.float64).flatten()
    if p.shape != y.shape:
        raise ValueError(f"{p.numel()} predictions but {y.numel()} labels")
    keep = ~torch.isnan(y)
    if not bool(keep.any()):
        return float("nan")
    return float(((p[keep] > 0.5) == hard_step_label(y[keep])).double().mean())
