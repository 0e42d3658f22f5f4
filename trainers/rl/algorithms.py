"""What makes GRPO, NFT and OREAL different inside the one shared RL loop (trainers/rl/loop.py).

The loop samples groups, keeps those with signal, packs the chosen answers and runs micro-
batched optimizer steps. An ``Algorithm`` answers the questions where the three differ: which
groups carry signal, which answers are trained with which per-sequence tensors, which loss and
settings, what happens before the policy step (OREAL's token RM) and whether the policy is
frozen. Nothing else in the loop knows the algorithm's name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from telos.types import Completion
from trainers.common.batching import PackedBatch
from trainers.rl.advantages import ADVANTAGES, moments_std, nan_moments
from trainers.rl.epo import RewardWeightedBatch, segment_weights
from trainers.rl.gigpo import episode_token_advantages
from trainers.rl.losses import LOSSES, LossBatch, PolicyLossConfig
from trainers.rl.nft import NFTBatch, nft_group_filter, nft_pass_rates
from trainers.rl.oreal import OREALBatch, rloo_advantages, select_pairs
from trainers.rl.recipe import EPORecipe, GRPORecipe, NFTRecipe, OREALRecipe, RLRecipe
from trainers.rl.rollout_batch import (
    ScoredGroups,
    correctness_tensor,
    drop_groups,
    flat_reward_groups,
    rewards_tensor,
    sum_over_ranks,
)


@dataclass
class TrainBatch:
    """The answers one rank trains on this step, with per-sequence ([B]) and per-token
    ([B, Wc], aligned with the packed completion columns) tensors for the loss."""

    completions: list[Completion]
    advantages: Tensor
    valid: Tensor  # [B] bool: scorable answers; the others get a zero token mask
    per_sequence: dict[str, Tensor] = field(default_factory=dict)
    per_token: dict[str, Tensor] = field(default_factory=dict)
    stats: dict[str, float] = field(default_factory=dict)

    def to(self, device: torch.device | str) -> TrainBatch:
        """The tensors moved to ``device`` (where the model and the packed batch live)."""
        self.advantages, self.valid = self.advantages.to(device), self.valid.to(device)
        self.per_sequence = {k: v.to(device) for k, v in self.per_sequence.items()}
        self.per_token = {k: v.to(device) for k, v in self.per_token.items()}
        return self


class Algorithm:
    """GRPO family (the base): reward-variance filter, group advantages, the ``grpo.loss_type``
    loss with PPO clipping, μ passes × ``mini_batches`` optimizer steps per rollout."""

    plot_groups: dict[str, list[str]] = {"clip_ratio": ["clip_ratio"]}

    def __init__(self, recipe: GRPORecipe) -> None:
        g = recipe.grpo
        self.recipe = recipe
        self.loss_fn = LOSSES.get(g.loss_type)
        self.loss_cfg = PolicyLossConfig(epsilon=g.epsilon, epsilon_high=g.epsilon_high, beta=g.beta)
        self.beta = g.beta
        self.num_iterations, self.mini_batches = g.num_iterations, g.mini_batches
        self.dynamic_sampling, self.max_resample_rounds = g.dynamic_sampling, g.max_resample_rounds

    # Sums a small tensor over all ranks (identity until ``attach``): what batch-wide statistics
    # (``scale_rewards: batch``) need, since each rank holds only its own groups.
    sum_over_ranks: Callable[[Tensor], Tensor] = staticmethod(lambda t: t)

    def attach(self, ctx) -> None:
        """Build what the algorithm needs beside the policy, once the run context exists."""
        self.sum_over_ranks = sum_over_ranks(ctx.accelerator)

    def flat_groups(self, groups: ScoredGroups, group_size: int) -> Tensor:
        """[N] bool: groups that carry no learning signal (dropped under dynamic sampling)."""
        return flat_reward_groups(groups, group_size)

    def train_batch(self, groups: ScoredGroups, group_size: int, step: int, rank: int) -> TrainBatch:
        g = self.recipe.grpo
        rewards, valid = (
            rewards_tensor(groups.rewards, group_size)
            if groups.rewards
            else (torch.zeros(0), torch.zeros(0, dtype=torch.bool))
        )
        # every rank takes part in the sum, also one without groups (a collective)
        batch_std = (
            moments_std(self.sum_over_ranks(nan_moments(rewards))) if g.scale_rewards == "batch" else None
        )
        adv = (
            ADVANTAGES.get(g.advantage)(rewards, group_size, scale=g.scale_rewards, batch_std=batch_std)
            if len(rewards)
            else rewards
        )
        if g.step_advantage_weight > 0 and groups.episodes:  # GiGPO: per-turn credit on top
            adv, stats = episode_token_advantages(
                groups.episodes, adv, group_size, g.step_advantage_weight, g.step_gamma, g.step_mode
            )
            return TrainBatch(groups.completions, adv, valid, stats=stats)
        return TrainBatch(groups.completions, adv, valid)

    def step_pools(self, tb: TrainBatch, mask: Tensor, idx: list[int]) -> dict[str, float]:
        """Token pools (besides sequences and tokens) the loss normalises by over a whole
        optimizer step; the loop sums them over ranks, so the keys must not depend on ``idx``."""
        return {}

    def loss_batch(self, common: dict, tb: TrainBatch, idx: list[int], pools: dict[str, float]) -> LossBatch:
        return LossBatch(**common, advantages=tb.advantages[idx])

    def before_update(self, ctx, packed: PackedBatch | None, tb: TrainBatch, step: int) -> dict[str, float]:
        """Work on the packed batch before the policy's step (OREAL trains its token RM here)."""
        return {}

    def policy_frozen(self, step: int) -> bool:
        return False

    # ---- state beyond the policy (OREAL's token RM); saved inside each checkpoint directory
    def checkpoint_writers(self) -> dict[str, object]:
        return {}

    def load_state(self, checkpoint: Path) -> None:
        return None


def mixed_correctness_flat(groups: ScoredGroups, group_size: int) -> Tensor:
    """[N] bool: groups without both a correct and a wrong answer (NFT's and OREAL's filter)."""
    if not groups.correct:
        return torch.zeros(0, dtype=torch.bool)
    keep, _ = nft_group_filter(correctness_tensor(groups.correct), group_size)
    return ~keep


def _rows(tb: TrainBatch, idx: list[int]) -> dict[str, Tensor]:
    """The per-sequence and per-token tensors of the selected rows, by field name."""
    return {k: v[idx] for k, v in (tb.per_sequence | tb.per_token).items()}


class NFTAlgorithm(Algorithm):
    """NFT: groups with 0 < p < 1 on correctness; every answer of a kept group is trained with
    its correctness and its group's pass rate; the ``nft`` loss (no clip, no KL)."""

    plot_groups = {"nft": ["p_hat_mean", "neg_clamped_frac"], "nft_ratio": ["ratio_mean"]}

    def __init__(self, recipe: NFTRecipe) -> None:
        n = recipe.nft
        self.recipe = recipe
        self.loss_fn, self.loss_cfg, self.beta = LOSSES.get("nft"), n, 0.0
        self.num_iterations, self.mini_batches = n.num_iterations, n.mini_batches
        self.dynamic_sampling, self.max_resample_rounds = n.dynamic_sampling, n.max_resample_rounds

    def flat_groups(self, groups: ScoredGroups, group_size: int) -> Tensor:
        return mixed_correctness_flat(groups, group_size)

    def train_batch(self, groups: ScoredGroups, group_size: int, step: int, rank: int) -> TrainBatch:
        # All-correct / all-wrong groups are dropped in every mode, not only under dynamic
        # sampling: the p̂ clamp would give them a spurious ±p̂-sized gradient (nft_group_filter).
        groups = drop_groups(groups, mixed_correctness_flat(groups, group_size), group_size)
        correct = correctness_tensor(groups.correct)
        if not len(correct):
            return TrainBatch([], correct, correct.bool())
        pass_rate = nft_pass_rates(correct, group_size)
        return TrainBatch(
            groups.completions,
            advantages=(correct - pass_rate).nan_to_num(0.0),  # logged only: NFT's loss ignores it
            valid=~torch.isnan(correct),
            per_sequence={"correct": correct, "pass_rate": pass_rate},
        )

    def loss_batch(self, common: dict, tb: TrainBatch, idx: list[int], pools: dict[str, float]) -> LossBatch:
        return NFTBatch(**common, advantages=tb.advantages[idx], **_rows(tb, idx))


class OREALAlgorithm(Algorithm):
    """OREAL: RLOO on the full group, then one correct + one wrong answer per kept group;
    token weights from an online token RM; the ``oreal`` loss; one optimizer step per rollout."""

    plot_groups = {
        "token_rm": ["rm_loss", "rm_auroc"],
        "token_weights": ["pos_token_weight_mean", "neg_token_weight_mean"],
        "oreal_terms": ["bc_loss", "neg_loss"],
    }

    def __init__(self, recipe: OREALRecipe) -> None:
        o = recipe.oreal
        self.recipe = recipe
        self.loss_fn, self.loss_cfg, self.beta = LOSSES.get("oreal"), o, o.beta
        self.num_iterations = self.mini_batches = 1  # on-policy by design
        self.dynamic_sampling, self.max_resample_rounds = o.dynamic_sampling, o.max_resample_rounds
        self.token_rm = None  # an OnlineTokenRM, built by ``attach`` once the policy exists

    def attach(self, ctx) -> None:
        super().attach(ctx)
        if self.recipe.oreal.token_rm:
            from trainers.rl.token_rm_online import OnlineTokenRM

            self.token_rm = OnlineTokenRM(ctx, self.recipe.oreal)

    def flat_groups(self, groups: ScoredGroups, group_size: int) -> Tensor:
        return mixed_correctness_flat(groups, group_size)

    def train_batch(self, groups: ScoredGroups, group_size: int, step: int, rank: int) -> TrainBatch:
        correct = correctness_tensor(groups.correct)
        if not len(correct):
            return TrainBatch([], correct, correct.bool())
        adv = rloo_advantages(correct, group_size)  # on the full group, before selection
        gen = torch.Generator().manual_seed(self.recipe.oreal.pair_seed * 1_000_003 + step * 101 + rank)
        picked = select_pairs(correct, group_size, generator=gen)
        return TrainBatch(
            [groups.completions[i] for i in picked.tolist()],
            advantages=adv[picked],
            valid=torch.ones(len(picked), dtype=torch.bool),
            per_sequence={"correct": correct[picked]},
            stats={"pairs": float(len(picked) // 2)},
        )

    def step_pools(self, tb: TrainBatch, mask: Tensor, idx: list[int]) -> dict[str, float]:
        if not idx:  # every rank must send the same keys, also one without sequences
            return {"num_pos_tokens": 0.0, "num_neg_tokens": 0.0}
        correct = tb.per_sequence["correct"][idx] > 0.5
        m = mask[idx]
        return {"num_pos_tokens": float(m[correct].sum()), "num_neg_tokens": float(m[~correct].sum())}

    def loss_batch(self, common: dict, tb: TrainBatch, idx: list[int], pools: dict[str, float]) -> LossBatch:
        return OREALBatch(**common, advantages=tb.advantages[idx], **_rows(tb, idx), **pools)

    def before_update(self, ctx, packed: PackedBatch | None, tb: TrainBatch, step: int) -> dict[str, float]:
        if self.token_rm is None:
            return {}
        weights, metrics = self.token_rm.train_step(packed, tb.per_sequence.get("correct"))
        if weights is not None:
            tb.per_token["token_weights"] = weights
        return metrics

    def policy_frozen(self, step: int) -> bool:
        return step <= self.recipe.oreal.freeze_policy_steps

    def checkpoint_writers(self) -> dict[str, object]:
        return {} if self.token_rm is None else {"token_rm": self.token_rm.save}

    def load_state(self, checkpoint: Path) -> None:
        if self.token_rm is not None:
            self.token_rm.load(checkpoint / "token_rm")


class EPOAlgorithm(Algorithm):
    """EPO: every episode is trained, each turn's tokens weighted by its discounted, max-abs
    normalised process return over the turn's length (``trainers/rl/epo.py``); the
    ``reward_weighted`` loss; μ epochs × ``mini_batches`` steps per self-play batch."""

    plot_groups = {"epo": ["weighted_nll", "weight_mean"]}

    def __init__(self, recipe: EPORecipe) -> None:
        e = recipe.epo
        self.recipe = recipe
        self.loss_fn, self.loss_cfg, self.beta = LOSSES.get("reward_weighted"), e, 0.0
        self.num_iterations, self.mini_batches = e.num_iterations, e.mini_batches
        self.dynamic_sampling, self.max_resample_rounds = False, 0

    def flat_groups(self, groups: ScoredGroups, group_size: int) -> Tensor:
        return torch.zeros(len(groups.row_indices), dtype=torch.bool)  # no group baseline: none is flat

    def train_batch(self, groups: ScoredGroups, group_size: int, step: int, rank: int) -> TrainBatch:
        weights, segments = segment_weights(groups.episodes, self.recipe.epo.gamma)
        rewarded = float((weights.abs().sum(-1) > 0).float().mean()) if len(weights) else 0.0
        return TrainBatch(
            groups.completions,
            advantages=weights,
            valid=torch.ones(len(groups.completions), dtype=torch.bool),
            per_sequence={"segments": segments},
            stats={"rewarded_episodes_frac": rewarded},
        )

    def loss_batch(self, common: dict, tb: TrainBatch, idx: list[int], pools: dict[str, float]) -> LossBatch:
        return RewardWeightedBatch(**common, advantages=tb.advantages[idx], **_rows(tb, idx))


ALGORITHMS: dict[str, type[Algorithm]] = {
    "grpo": Algorithm,
    "nft": NFTAlgorithm,
    "oreal": OREALAlgorithm,
    "epo": EPOAlgorithm,
}


def make_algorithm(recipe: RLRecipe) -> Algorithm:
    return ALGORITHMS[recipe.trainer](recipe)
