"""One RL rollout: sample prompts, generate groups, score them, keep groups with signal.

Shared by every policy-gradient trainer (GRPO family, NFT, OREAL): they differ in the loss
and the advantage, not in how a batch of scored groups is produced.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from rewards.functions import reward_inputs, score_completions
from telos.types import Completion, SamplingParams
from trainers.rl.advantages import moments_std, nan_moments, zero_std_groups


@dataclass
class ScoredGroups:
    completions: list[Completion] = field(default_factory=list)
    rewards: list[float | None] = field(default_factory=list)
    correct: list[float | None] = field(default_factory=list)
    row_indices: list[int] = field(default_factory=list)  # one per group
    stats: dict[str, float] = field(default_factory=dict)
    # multi-turn data: the Episode behind each completion (per-turn spans, rewards and states)
    episodes: list = field(default_factory=list)

    def extend(self, other: ScoredGroups) -> None:
        self.completions += other.completions
        self.rewards += other.rewards
        self.correct += other.correct
        self.row_indices += other.row_indices
        self.episodes += other.episodes

    def truncate(self, num_groups: int, group_size: int) -> None:
        """Keep the first ``num_groups`` groups."""
        n = num_groups * group_size
        self.completions, self.rewards, self.correct = (
            self.completions[:n],
            self.rewards[:n],
            self.correct[:n],
        )
        self.row_indices, self.episodes = self.row_indices[:num_groups], self.episodes[:n]


def rewards_tensor(values: list[float | None], group_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rewards as a tensor (NaN where unscorable) plus a validity mask.

    An unscorable (None) sample stays NaN so the advantage estimators leave it out of its
    group's statistics entirely (mean, Bessel std, RLOO's n) and give it advantage 0, as TRL
    does; filling it with the group mean would still count it as an answer (n, n − 1).
    ``group_size`` only checks the length (whole groups)."""
    if group_size < 1 or len(values) % group_size:
        raise ValueError(f"{len(values)} rewards are not whole groups of {group_size}")
    r = torch.tensor([float("nan") if v is None else float(v) for v in values])
    return r, ~torch.isnan(r)


def sum_over_ranks(acc) -> Callable[[torch.Tensor], torch.Tensor]:
    """A function summing a small 1-D tensor over all ranks of accelerator ``acc`` (every rank
    must call it: it is a collective); the result is on the CPU, in the input's dtype."""

    def total(t: torch.Tensor) -> torch.Tensor:
        return acc.gather(t.reshape(1, -1).to(acc.device)).sum(0).cpu().to(t.dtype)

    return total


def rollout_stats(
    groups: ScoredGroups, flat_groups: int, total: Callable[[torch.Tensor], torch.Tensor]
) -> dict[str, float]:
    """Batch metrics over the groups of *all* ranks (``total`` sums a tensor over ranks; every
    rank must call this). With S = scorable samples, C = those scored correct (> 0):

        reward_mean = Σ_S r / |S|,  reward_std = sample std over S,  accuracy = |C| / |S_c|,
        frac_zero_std_groups = flat groups / groups,  num_unscorable = samples − |S|

    (S_c: samples the correctness function could score.)"""
    r, _ = rewards_tensor(groups.rewards, 1)
    correct = [c for c in groups.correct if c is not None]
    local = torch.cat(
        [
            nan_moments(r),
            torch.tensor(
                [len(r), sum(c > 0 for c in correct), len(correct), flat_groups, len(groups.row_indices)],
                dtype=torch.float64,
            ),
        ]
    )
    m = total(local)
    n_scored, n_all, n_correct, n_corr_scored, n_flat, n_groups = (float(v) for v in m[[0, 3, 4, 5, 6, 7]])
    return {
        "reward_mean": float(m[1] / n_scored) if n_scored else float("nan"),
        "reward_std": float(moments_std(m[:3])),
        "accuracy": n_correct / max(1.0, n_corr_scored),
        "num_unscorable": int(n_all - n_scored),
        "frac_zero_std_groups": n_flat / max(1.0, n_groups),
    }


def generate_scored_groups(
    engine,
    rows: list[dict],
    row_indices: list[int],
    prompts: list[str],
    params: SamplingParams,
    reward_fns: list[Callable],
    weights: list[float],
    correctness_fn: Callable | None,
) -> ScoredGroups:
    completions = engine.generate(prompts, params)
    sample_rows = [rows[row_indices[c.prompt_index]] for c in completions]
    columns = _columns(sample_rows)
    # TRL's shapes: message lists for conversational rows, text otherwise
    fn_prompts, fn_completions = reward_inputs(
        [r.get("prompt") for r in sample_rows],
        [prompts[c.prompt_index] for c in completions],
        [c.text for c in completions],
    )
    rewards, _ = score_completions(reward_fns, weights, fn_prompts, fn_completions, columns)
    correct = correctness_fn(fn_prompts, fn_completions, **columns) if correctness_fn else rewards
    return ScoredGroups(completions, list(rewards), list(correct), list(row_indices))


def _columns(rows: list[dict]) -> dict[str, list]:
    keys = set().union(*(r.keys() for r in rows)) - {"prompt"}
    return {k: [r.get(k) for r in rows] for k in keys}


def correctness_tensor(values: list[float | None]) -> torch.Tensor:
    """Correctness as 1.0 / 0.0 (a score > 0 counts as correct), NaN where unscorable."""
    return torch.tensor([float("nan") if v is None else float(v > 0) for v in values])


def flat_reward_groups(groups: ScoredGroups, group_size: int) -> torch.Tensor:
    """[N] bool: groups whose rewards all agree (zero advantage everywhere: no gradient signal)."""
    r, _ = rewards_tensor(groups.rewards, group_size)
    return zero_std_groups(r, group_size)


def drop_groups(groups: ScoredGroups, flat: torch.Tensor, group_size: int) -> ScoredGroups:
    """The groups whose ``flat`` entry is False, in order."""
    kept = ScoredGroups()
    for g, is_flat in enumerate(flat.tolist()):
        if is_flat:
            continue
        sl = slice(g * group_size, (g + 1) * group_size)
        kept.completions += groups.completions[sl]
        kept.rewards += groups.rewards[sl]
        kept.correct += groups.correct[sl]
        kept.episodes += groups.episodes[sl]
        kept.row_indices.append(groups.row_indices[g])
    return kept


def keep_informative_groups(groups: ScoredGroups, group_size: int) -> tuple[ScoredGroups, int]:
    """Drop groups whose rewards all agree; returns (kept groups, number dropped)."""
    flat = flat_reward_groups(groups, group_size)
    return drop_groups(groups, flat, group_size), int(flat.sum())
