"""Advantage estimators: rewards of G answers per prompt → one advantage per answer.

Rewards arrive flat, ``[num_prompts × G]``, each prompt's G answers contiguous. A reward of
NaN marks an answer no reward function could score (DESIGN.md: "excluded, never silently
scored 0"): it is left out of its group's statistics and gets advantage 0, as in TRL.

The loop calls ``ADVANTAGES.get(name)(rewards, group_size, **options)``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from telos.errors import UserError
from telos.registry import Registry

AdvantageFn = Callable[..., Tensor]
ADVANTAGES: Registry[AdvantageFn] = Registry("advantage estimator")

SCALES = ("group", "batch", "none")


def _grouped(rewards: Tensor, group_size: int) -> Tensor:
    """[N·G] → [N, G]; a length that is not a multiple of G is a bug in the caller."""
    if group_size < 1 or rewards.dim() != 1 or rewards.numel() % group_size != 0:
        raise ValueError(
            f"rewards must be flat with a multiple of group_size={group_size} entries, "
            f"got shape {tuple(rewards.shape)}"
        )
    # Integer rewards (0/1 correctness) need a float dtype for means; floats keep their precision.
    return (rewards if rewards.is_floating_point() else rewards.float()).view(-1, group_size)


def _nan_std(x: Tensor, dim: int | None = None) -> Tensor:
    """Sample std (Bessel, N−1) ignoring NaNs; 0 where fewer than 2 values are present.

    torch has no nan-aware std. Fewer than 2 values give 0 rather than NaN: the centred
    reward is then 0 too, so the advantage is 0 either way (TRL gets the same result via NaN).
    """
    present = ~torch.isnan(x)
    count = present.sum(dim=dim, keepdim=True) if dim is not None else present.sum()
    mean = torch.nanmean(x, dim=dim, keepdim=True) if dim is not None else torch.nanmean(x)
    sq = torch.where(present, (x - mean) ** 2, torch.zeros_like(x))
    sq_sum = sq.sum(dim=dim, keepdim=True) if dim is not None else sq.sum()
    var = sq_sum / (count - 1).clamp(min=1)
    return torch.where(count > 1, var.sqrt(), torch.zeros_like(var))


def nan_moments(x: Tensor) -> Tensor:
    """[3] float64 (count, Σx, Σx²) over the non-NaN entries of ``x``: summed over ranks they
    give the whole batch's std (``moments_std``) without gathering every reward."""
    v = x[~torch.isnan(x)].double()
    return torch.stack([torch.tensor(float(v.numel()), dtype=torch.float64), v.sum(), (v * v).sum()])


def moments_std(moments: Tensor) -> Tensor:
    """Sample std (Bessel) from (n, Σx, Σx²):  σ = sqrt((Σx² − (Σx)²/n) / (n − 1)); 0 for n < 2."""
    n, s, q = moments.double().unbind()
    if n < 2:
        return torch.zeros((), dtype=torch.float64)
    return ((q - s * s / n) / (n - 1)).clamp(min=0.0).sqrt()


@ADVANTAGES.register("grpo")
def group_normalized(
    rewards: Tensor,
    group_size: int,
    scale: str = "group",
    eps: float = 1e-4,
    batch_std: Tensor | float | None = None,
) -> Tensor:
    """GRPO advantage: the reward minus its group's mean, optionally divided by a std.

        A_i = (r_i − mean_g(r)) / (σ + eps)

    σ = the group's std (``scale="group"``, GRPO), the whole batch's std (``"batch"``, more
    robust when a group's std is tiny), or no division at all (``"none"``, Dr. GRPO).
    σ is the *sample* std (Bessel's correction, N−1), which is what TRL 1.16 uses (its
    ``nanstd``), and eps=1e-4 is TRL's constant; together they make our advantages equal TRL's.
    A group whose rewards all agree gets A = 0 for every answer (0 / eps).
    ``batch_std``: σ for ``"batch"`` when the batch spans several ranks (TRL's std is over the
    rewards gathered from all processes); default: the std of ``rewards`` itself.
    """
    if scale not in SCALES:
        raise UserError(f"unknown advantage scale {scale!r}; valid: {', '.join(SCALES)}")
    grouped = _grouped(rewards, group_size)
    centred = grouped - torch.nanmean(grouped, dim=1, keepdim=True)
    if scale == "group":
        centred = centred / (_nan_std(grouped, dim=1) + eps)
    elif scale == "batch":
        sigma = _nan_std(grouped.flatten()) if batch_std is None else torch.as_tensor(batch_std)
        centred = centred / (sigma.to(centred.dtype) + eps)
    # Unscorable answers (NaN reward) carry no signal: advantage exactly 0.
    return torch.nan_to_num(centred, nan=0.0).flatten()


@ADVANTAGES.register("rloo")
def rloo(rewards: Tensor, group_size: int, **_: object) -> Tensor:
    """RLOO (leave-one-out) advantage, the baseline excludes the answer itself:

        A_i = r_i − mean_{j≠i} r_j = n/(n−1) · (r_i − mean_g(r))

    n = scorable answers in the group. Unbiased, no std division (OREAL uses it on ±1 rewards:
    ≈ 2(1−p) for a correct answer, ≈ −2p for a wrong one). Groups with n < 2 get A = 0.
    Extra keyword options (``scale``, ``eps``) are accepted and ignored so the loop can pass
    the same options to every estimator.
    """
    grouped = _grouped(rewards, group_size)
    n = (~torch.isnan(grouped)).sum(dim=1, keepdim=True).to(grouped.dtype)
    centred = grouped - torch.nanmean(grouped, dim=1, keepdim=True)
    # The closed form n/(n−1)·(r_i − mean) avoids building the G×G leave-one-out sums.
    adv = torch.where(n > 1, centred * n / (n - 1).clamp(min=1), torch.zeros_like(centred))
    return torch.nan_to_num(adv, nan=0.0).flatten()


def zero_std_groups(rewards: Tensor, group_size: int, atol: float = 1e-6) -> Tensor:
    """bool [num_groups]: True where all (scorable) rewards of the group are equal within atol.

    Such a group has zero advantage under every estimator here, so it gives no gradient;
    DAPO's dynamic sampling drops it and keeps sampling. A group with no scorable answer
    counts as zero-std too.
    """
    grouped = _grouped(rewards, group_size)
    nan = torch.isnan(grouped)
    hi = torch.where(nan, torch.full_like(grouped, -torch.inf), grouped).amax(dim=1)
    lo = torch.where(nan, torch.full_like(grouped, torch.inf), grouped).amin(dim=1)
    # All-NaN rows give hi − lo = −inf, which also counts as "no signal".
    return (hi - lo) <= atol
