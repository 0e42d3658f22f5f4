"""Sampling metrics for verifiable answers: unbiased pass@k, majority vote (maj@k), summaries.

Pure functions on plain lists, shared by ``telos eval math`` and the reward-model evaluation.
A score of ``None`` means "cannot score" (see the reward-function contract): such samples are
excluded from every denominator and counted, never scored 0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from rewards.selection import vote_winner

__all__ = ["default_ks", "majority_vote", "pass_at_k", "summarize"]


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased estimate of pass@k from ``n`` samples of which ``c`` are correct (Chen et al.
    2021, "Evaluating Large Language Models Trained on Code", eq. 1):

        pass@k = 1 - C(n - c, k) / C(n, k)
               = 1 - prod_{i = n - c + 1}^{n} (1 - k / i)

    i.e. the probability that at least one of k samples drawn without replacement from the n is
    correct. The product form avoids the huge binomials of the ratio (C(200, 100) ~ 1e58).
    """
    if not (isinstance(n, int) and isinstance(c, int) and isinstance(k, int)):
        raise TypeError(f"pass_at_k needs integers, got n={n!r}, c={c!r}, k={k!r}")
    if n < 1 or not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass_at_k needs n >= 1, 0 <= c <= n, 1 <= k <= n; got n={n}, c={c}, k={k}")
    if n - c < k:  # every k-subset contains a correct sample
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def majority_vote(answers: Sequence[str | None], correct: Sequence[bool]) -> bool:
    """Whether the majority answer is correct.

    ``answers[i]`` is sample i's extracted final answer (None: it states none and does not vote),
    ``correct[i]`` whether sample i was judged correct. Numbers are compared after
    ``normalize_number`` (``rewards.selection.vote_key``). Ties go to the answer that appears
    first; the vote is correct if the first sample giving the winning answer is correct. No
    answer at all → False.
    """
    if len(answers) != len(correct):
        raise ValueError(f"{len(answers)} answers but {len(correct)} correctness flags")
    winner = vote_winner(answers)
    return winner is not None and bool(correct[winner])


def default_ks(samples: int) -> list[int]:
    """k values to report for ``samples`` samples per problem: 1, 2, 4, ... up to and including
    ``samples`` itself."""
    if samples < 1:
        raise ValueError(f"samples must be >= 1, got {samples}")
    ks, k = [], 1
    while k < samples:
        ks.append(k)
        k *= 2
    ks.append(samples)
    return ks


def _mean(xs: Sequence[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def summarize(
    scores: Sequence[Sequence[float | None]],
    answers: Sequence[Sequence[str | None]] | None = None,
    ks: Sequence[int] | None = None,
    threshold: float = 0.0,
) -> dict[str, float | int | None]:
    """pass@k, maj@k and counts for a set of problems.

    ``scores[p][j]``: the reward of sample j of problem p (None: unscorable). A sample is
    correct when its score is ``> threshold`` (the rule the trainers' evaluation uses, so the
    numbers agree). ``answers[p][j]``: its extracted final answer, for maj@k (omitted: no maj@k).
    ``ks`` defaults to :func:`default_ks` of the largest group.

    Unscorable samples are dropped. For problem p with n_p scorable samples and c_p correct ones,
    pass@k is the mean over problems with n_p >= k of ``pass_at_k(n_p, c_p, k)``; maj@k votes
    over the scorable samples among the first k and averages over problems with at least one.
    ``pass@1`` is therefore the mean correctness (over all samples when no sample is dropped).
    A problem with no scorable sample counts in ``unscorable_problems`` and nowhere else.
    Metrics with no problem to average over are None.
    """
    if answers is not None and len(answers) != len(scores):
        raise ValueError(f"{len(answers)} answer groups for {len(scores)} problems")
    max_n = max((len(s) for s in scores), default=0)
    if ks is None:
        ks = default_ks(max_n) if max_n else []
    out: dict[str, float | int | None] = {
        "num_problems": len(scores),
        "num_samples": sum(len(s) for s in scores),
        "unscorable_samples": sum(v is None for s in scores for v in s),
        "unscorable_problems": sum(all(v is None for v in s) for s in scores),
    }
    scored = [v for s in scores for v in s if v is not None]
    out["reward_mean"] = _mean(scored)

    for k in ks:
        vals = []
        for s in scores:
            flags = [v > threshold for v in s if v is not None]
            if len(flags) >= k:
                vals.append(pass_at_k(len(flags), sum(flags), k))
        out[f"pass@{k}"] = _mean(vals)
    if answers is not None:
        for k in ks:
            vals = []
            for s, a in zip(scores, answers, strict=True):
                if len(a) != len(s):
                    raise ValueError(f"{len(a)} answers for {len(s)} scores in one problem")
                keep = [j for j in range(min(k, len(s))) if s[j] is not None]
                if keep:
                    ok = majority_vote([a[j] for j in keep], [s[j] > threshold for j in keep])
                    vals.append(float(ok))
            out[f"maj@{k}"] = _mean(vals)
    return out
