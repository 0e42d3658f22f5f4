"""Agent-evaluation statistics: success-rate intervals and Crafter's score."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence


def wilson_interval(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95 % Wilson score interval for a binomial rate: centre ``(p + z²/2n) / (1 + z²/n)``,
    half-width ``z·sqrt(p(1−p)/n + z²/4n²) / (1 + z²/n)``. Unlike p ± 1.96·SE it stays inside
    [0, 1] and is not empty at p = 0 or 1 (what 20-episode agent results need).

    The interval always contains p: at p = 1 the exact upper bound is 1, but in floating point
    ``centre + half`` can come out as 0.9999999999999999 (10/10 does), which would put the rate
    outside its own interval and give a plot a negative error bar."""
    if n == 0:
        return (0.0, 1.0)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (min(p, max(0.0, centre - half)), max(p, min(1.0, centre + half)))


def achievement_rates(
    unlocked_per_episode: Sequence[Iterable[str]], achievements: Sequence[str]
) -> dict[str, float]:
    """For each achievement, the fraction of episodes that unlocked it."""
    n = len(unlocked_per_episode)
    sets = [set(u) for u in unlocked_per_episode]
    return {a: (sum(a in s for s in sets) / n if n else 0.0) for a in achievements}


def crafter_score(rates: dict[str, float]) -> float:
    """Crafter's score (Hafner 2021), in percent: ``exp(mean_i ln(1 + s_i)) − 1`` with
    ``s_i`` the success rate of achievement i in percent."""
    if not rates:
        return 0.0
    return math.exp(sum(math.log(1 + 100 * r) for r in rates.values()) / len(rates)) - 1


def balrog_progress(unlocked_per_episode: Sequence[Iterable[str]], num_achievements: int = 22) -> float:
    """BALROG's Crafter progress, in percent: mean over episodes of unlocked / 22."""
    if not unlocked_per_episode:
        return 0.0
    return 100 * sum(len(set(u)) / num_achievements for u in unlocked_per_episode) / len(unlocked_per_episode)
