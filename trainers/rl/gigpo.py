"""GiGPO (Feng et al. 2025, verl-agent): step-level credit inside episode groups.

An episode group is G episodes of one game from one start state. GiGPO adds to the episode's
group advantage a *step* advantage computed among the turns of the group that were taken in the
same state (an "anchor state"):

    R_t = r_t + γ · R_{t+1}                        (discounted return of turn t, per episode)
    A_step(t) = (R_t − mean_S R) / (std_S R + ε)   (S: the turns of the group in t's state;
                                                    mean_norm mode: without the division;
                                                    a state seen once: A_step = 0)
    A(t) = A_episode + w · A_step(t)               (w = ``step_advantage_weight``, 1.0 in GiGPO)

and every action token of turn t is trained with A(t). std is the Bessel-corrected sample std,
as verl-agent's ``step_norm_reward``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Hashable, Sequence

import torch
from torch import Tensor

EPS = 1e-6


def discounted_returns(rewards: Sequence[float], gamma: float) -> list[float]:
    """R_t = r_t + γ R_{t+1}, R_T = r_T (the episode's last turn)."""
    out, running = [0.0] * len(rewards), 0.0
    for t in range(len(rewards) - 1, -1, -1):
        running = rewards[t] + gamma * running
        out[t] = running
    return out


def step_group_advantages(
    returns: Sequence[float], keys: Sequence[Hashable], mode: str = "mean_std_norm"
) -> Tensor:
    """Per turn: its return normalised among the turns with the same key (group, state)."""
    if mode not in ("mean_norm", "mean_std_norm"):
        raise ValueError(f"GiGPO mode {mode!r}; valid: mean_norm, mean_std_norm")
    r = torch.tensor(list(returns), dtype=torch.float64)
    out = torch.zeros_like(r)
    members: dict[Hashable, list[int]] = defaultdict(list)
    for i, k in enumerate(keys):
        members[k].append(i)
    for idx in members.values():
        if len(idx) < 2:
            continue  # a state seen once has nothing to be compared with
        vals = r[idx]
        centred = vals - vals.mean()
        out[idx] = centred if mode == "mean_norm" else centred / (vals.std() + EPS)
    return out.float()


def episode_token_advantages(
    episodes: Sequence,
    episode_advantages: Tensor,
    group_size: int,
    weight: float,
    gamma: float,
    mode: str = "mean_std_norm",
) -> tuple[Tensor, dict[str, float]]:
    """[B, W] advantages over each episode's ``token_ids`` (W: the longest): A_episode on every
    token, plus ``weight`` · A_step on each turn's action span. ``episodes[b].turns`` carry the
    spans, per-turn rewards (normalised by ``max_score``) and state keys."""
    width = max(1, max(len(ep.token_ids) for ep in episodes))
    adv = episode_advantages.float()[:, None].repeat(1, width)
    returns, keys, where = [], [], []
    for b, ep in enumerate(episodes):
        scale = ep.max_score or 1.0
        rs = discounted_returns([t.reward / scale for t in ep.turns], gamma)
        for turn, ret in zip(ep.turns, rs, strict=True):
            returns.append(ret)
            keys.append((b // group_size, turn.state_key))
            where.append((b, turn.start, turn.end))
    if not returns:
        return adv, {"step_groups_mean_size": 0.0, "step_adv_nonzero_frac": 0.0}
    step = step_group_advantages(returns, keys, mode)
    for (b, start, end), a in zip(where, step.tolist(), strict=True):
        adv[b, start:end] += weight * a
    sizes: dict[Hashable, int] = defaultdict(int)
    for k in keys:
        sizes[k] += 1
    stats = {
        "step_groups_mean_size": sum(sizes.values()) / len(sizes),
        "step_adv_nonzero_frac": float((step != 0).float().mean()),
    }
    return adv, stats
