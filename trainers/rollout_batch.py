"""One RL rollout: sample prompts, generate groups, score them, keep groups with signal.

Shared by every policy-gradient trainer (GRPO family, NFT, OREAL): they differ in the loss
and the advantage, not in how a batch of scored groups is produced.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from rewards.functions import score_completions
from telos.types import Completion, SamplingParams
from trainers.advantages import zero_std_groups


class PromptSampler:
    """Epoch-wise shuffled prompt indices, fully determined by (seed, cursor) so a resumed run
    draws exactly the prompts the killed run would have drawn next."""

    def __init__(self, num_rows: int, seed: int, cursor: int = 0) -> None:
        self.num_rows, self.seed, self.cursor = num_rows, seed, cursor
        self._epoch, self._order = -1, []

    def take(self, k: int) -> list[int]:
        out = []
        for _ in range(k):
            epoch, pos = divmod(self.cursor, self.num_rows)
            if epoch != self._epoch:
                self._order = list(range(self.num_rows))
                random.Random(self.seed * 100003 + epoch).shuffle(self._order)
                self._epoch = epoch
            out.append(self._order[pos])
            self.cursor += 1
        return out


@dataclass
class ScoredGroups:
    completions: list[Completion] = field(default_factory=list)
    rewards: list[float | None] = field(default_factory=list)
    correct: list[float | None] = field(default_factory=list)
    row_indices: list[int] = field(default_factory=list)  # one per group
    stats: dict[str, float] = field(default_factory=dict)

    def extend(self, other: ScoredGroups) -> None:
        self.completions += other.completions
        self.rewards += other.rewards
        self.correct += other.correct
        self.row_indices += other.row_indices


def rewards_tensor(values: list[float | None], group_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rewards as a tensor plus a validity mask. An unscorable (None) sample is excluded from
    the loss; for the group statistics it takes the mean of its group's scored samples, so it
    neither adds nor removes signal from the others."""
    r = torch.tensor([float("nan") if v is None else float(v) for v in values])
    valid = ~torch.isnan(r)
    g = r.view(-1, group_size)
    means = torch.nanmean(g, dim=1, keepdim=True).nan_to_num(0.0).expand_as(g)
    return torch.where(torch.isnan(g), means, g).reshape(-1), valid


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
    columns = _columns(
        [rows[completion_row] for completion_row in (row_indices[c.prompt_index] for c in completions)]
    )
    texts = [c.text for c in completions]
    prompt_texts = [prompts[c.prompt_index] for c in completions]
    rewards, _ = score_completions(reward_fns, weights, prompt_texts, texts, columns)
    correct = correctness_fn(prompt_texts, texts, **columns) if correctness_fn else rewards
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
        kept.row_indices.append(groups.row_indices[g])
    return kept


def keep_informative_groups(groups: ScoredGroups, group_size: int) -> tuple[ScoredGroups, int]:
    """Drop groups whose rewards all agree; returns (kept groups, number dropped)."""
    flat = flat_reward_groups(groups, group_size)
    return drop_groups(groups, flat, group_size), int(flat.sum())
