"""A dense reward for throughput benchmarks on random-weight models, which never earn a
verifier's reward: with every reward 0, every advantage is 0 and the comparison of final
rewards says nothing. Usable as ``rewards: [{name: benchmarks.rewards:digit_fraction}]``."""

from __future__ import annotations

from typing import Any


def digit_fraction(prompts: list[Any], completions: list[Any], **columns: Any) -> list[float]:
    """Share of the completion's non-space characters that are digits (0 for an empty one)."""
    out = []
    for c in completions:
        text = c if isinstance(c, str) else str(c)
        chars = [ch for ch in text if not ch.isspace()]
        out.append(sum(ch.isdigit() for ch in chars) / len(chars) if chars else 0.0)
    return out
