"""Small statistics shared by trainers and evaluations."""

from __future__ import annotations

from collections.abc import Sequence

import torch


def auroc(scores: Sequence[float] | torch.Tensor, labels: Sequence[float] | torch.Tensor) -> float:
    """Area under the ROC curve of ``scores`` for binary ``labels`` (Mann–Whitney form):

        AUROC = P(s⁺ > s⁻) + ½ P(s⁺ = s⁻)

    over all (positive, negative) pairs — 1.0 when every positive outscores every negative,
    0.5 for a constant score. NaN labels are left out; NaN when a class is empty.
    """
    s = torch.as_tensor(scores, dtype=torch.float64).flatten()
    y = torch.as_tensor(labels, dtype=torch.float64).flatten()
    if s.shape != y.shape:
        raise ValueError(f"scores and labels differ in length: {s.numel()} vs {y.numel()}")
    keep = ~torch.isnan(y)
    s, y = s[keep], y[keep] > 0.5
    pos, neg = s[y], s[~y]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    diff = pos[:, None] - neg[None, :]
    return float(((diff > 0).double() + 0.5 * (diff == 0).double()).mean())
