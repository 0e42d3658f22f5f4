"""Where the RL loop's scored groups come from: prompts answered once (math), or episodes
played in a text world (``data.train: env:...``). The loop asks a source for the groups of
some row indices and for a held-out evaluation, and never knows which kind it has.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from envs.math.prompts import format_prompt
from rewards.functions import reward_inputs
from rollout.episodes import EnvPool, Episode, EpisodeSettings, collect_episodes
from telos.types import SamplingParams
from trainers.rl.rollout_batch import ScoredGroups, generate_scored_groups


@dataclass
class PromptSource:
    """Math prompts: G completions each, scored by the recipe's reward functions."""

    engine: object
    tokenizer: object
    rows: list[dict]
    prompts: list[str]
    test_rows: list[dict]
    reward_fns: list[Callable]
    reward_weights: list[float]
    correctness_fn: Callable | None
    max_tokens: int
    stop: list[str]

    @classmethod
    def build(cls, recipe, engine, tokenizer, rows, test_rows, reward_fns, correctness_fn) -> PromptSource:
        def prompt_of(row: dict) -> str:
            return format_prompt(row, recipe.data.template, tokenizer=tokenizer, chat=recipe.data.chat)

        return cls(
            engine,
            tokenizer,
            rows,
            [prompt_of(r) for r in rows],
            [{**r, "_prompt": prompt_of(r)} for r in test_rows],
            reward_fns,
            [s.weight for s in recipe.rewards],
            correctness_fn,
            recipe.sampling.max_tokens,
            recipe.sampling.stop,
        )

    def groups(self, idx: list[int], params: SamplingParams) -> ScoredGroups:
        prompts = [self.prompts[i] for i in idx]
        return generate_scored_groups(
            self.engine,
            self.rows,
            idx,
            prompts,
            params,
            self.reward_fns,
            self.reward_weights,
            self.correctness_fn,
        )

    def evaluate(self) -> dict[str, float]:
        """Greedy pass@1 on the held-out rows (every rank computes the same number)."""
        rows = self.test_rows
        if not rows:
            return {"eval_accuracy": float("nan")}
        fn = self.correctness_fn or self.reward_fns[0]
        params = SamplingParams(n=1, temperature=0.0, max_tokens=self.max_tokens, stop=self.stop)
        outs = self.engine.generate([r["_prompt"] for r in rows], params)
        cols = {k: [r.get(k) for r in rows] for k in rows[0] if k not in ("prompt", "_prompt")}
        prompts, completions = reward_inputs(  # TRL's shapes, as in training
            [r["prompt"] for r in rows], [r["_prompt"] for r in rows], [o.text for o in outs]
        )
        scores = fn(prompts, completions, **cols)
        return {"eval_accuracy": sum(1.0 for s in scores if s is not None and s > 0) / len(rows)}


def episode_settings(recipe, max_context: int) -> EpisodeSettings:
    """How the actor sees its episodes (the recipe's ``episodes:``); ``max_context`` is the
    actor's context when ``episodes.max_context`` is not set."""
    e = recipe.episodes
    return EpisodeSettings(
        instruction=e.instruction,
        admissible=e.admissible,
        chat=e.chat,
        action_tokens=e.action_tokens,
        max_context=e.max_context or max_context,
    )


def episode_groups(episodes: list[Episode], idx: list[int], reward: str) -> ScoredGroups:
    """Episodes as scored groups: the reward is the normalised score (or won), correctness is
    won; the episodes ride along for per-turn credit (GiGPO)."""
    rewards = [float(ep.won) if reward == "won" else ep.normalized_score for ep in episodes]
    return ScoredGroups(
        completions=[ep.completion(k) for k, ep in enumerate(episodes)],
        rewards=rewards,
        correct=[float(ep.won) for ep in episodes],
        row_indices=list(idx),
        episodes=list(episodes),
    )


@dataclass
class EpisodeSource:
    """Text-world games: G episodes of each game through the batched episode collector."""

    engine: object
    tokenizer: object
    rows: list[dict]
    test_rows: list[dict]
    settings: EpisodeSettings
    reward: str
    pool: EnvPool
    eval_temperature: float = 0.0
    eval_episodes: int = 1

    @classmethod
    def build(cls, recipe, engine, tokenizer, rows, test_rows, max_context: int) -> EpisodeSource:
        e = recipe.episodes
        return cls(
            engine,
            tokenizer,
            rows,
            test_rows,
            episode_settings(recipe, max_context),
            e.reward,
            EnvPool(),
            e.eval_temperature,
            e.eval_episodes,
        )

    def groups(self, idx: list[int], params: SamplingParams) -> ScoredGroups:
        episodes = collect_episodes(
            self.engine,
            self.tokenizer,
            [self.rows[i] for i in idx],
            params,
            self.settings,
            per_row=params.n,
            pool=self.pool,
        )
        groups = episode_groups(episodes, idx, self.reward)
        groups.stats = episode_stats(episodes)
        return groups

    def evaluate(self) -> dict[str, float]:
        """Held-out episodes (greedy, or ``eval_episodes`` per game at ``eval_temperature`` with
        seeds 0..k−1, the same for every evaluation): success rate (``eval_accuracy``) and score."""
        if not self.test_rows:
            return {"eval_accuracy": float("nan")}
        episodes = []
        for k in range(self.eval_episodes):
            params = SamplingParams(temperature=self.eval_temperature, seed=k)
            episodes += collect_episodes(
                self.engine, self.tokenizer, self.test_rows, params, self.settings, pool=self.pool
            )
        stats = episode_stats(episodes)
        return {"eval_accuracy": stats["success"], "eval_score": stats["score"], "eval_turns": stats["turns"]}


def episode_stats(episodes: list[Episode]) -> dict[str, float]:
    n = max(1, len(episodes))
    return {
        "success": sum(ep.won for ep in episodes) / n,
        "score": sum(ep.normalized_score for ep in episodes) / n,
        "turns": sum(len(ep.turns) for ep in episodes) / n,
        "truncated_by_context": sum(ep.finish == "context" for ep in episodes) / n,
    }
