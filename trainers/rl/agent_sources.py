"""Sources for the planner methods, where the trained model is not the actor (``agent.role``):

- ``strategist`` (EPO): the frozen actor plays G episodes of a game, the policy writing a
  thought before each action; the groups are the strategist's own sequences, rewarded with the
  actor's score, each thought credited with what the action after it gained.
- ``retrospective`` (Retroformer, trained online): each training game the frozen actor failed
  at trial 0 is reflected on G times by the policy; the actor replays the game once per
  reflection; a reflection's reward is its rating ``G_1 − G_0``. Held-out: up to
  ``agent.eval_trials`` trials with the policy's greedy reflections.
"""

from __future__ import annotations

from dataclasses import dataclass

from agents.reflection import Reflector, memory_instruction, reflection_rating, run_trials
from agents.strategist import STRATEGIST_INSTRUCTION, Strategist, StrategistSettings
from rollout.episodes import EnvPool, Episode, EpisodeSettings, collect_episodes
from telos.errors import UserError
from telos.types import SamplingParams
from trainers.common.frozen import FrozenModel, load_frozen
from trainers.rl.rollout_batch import ScoredGroups
from trainers.rl.sources import EpisodeSource, episode_groups, episode_settings, episode_stats


def _actor(recipe) -> FrozenModel:
    if not recipe.agent.actor:
        raise UserError(f"'agent.actor' is needed for agent.role {recipe.agent.role}: the frozen actor model")
    return load_frozen(recipe.agent.actor, "'agent.actor'", seed=recipe.train.seed)


@dataclass
class StrategistSource(EpisodeSource):
    """EPO: the policy is the strategist of a frozen actor."""

    actor: FrozenModel | None = None
    strategist: StrategistSettings | None = None
    actor_temperature: float = 0.0

    @classmethod
    def build(cls, recipe, engine, tokenizer, rows, test_rows, max_context: int) -> StrategistSource:
        a, actor = recipe.agent, _actor(recipe)
        strategist = StrategistSettings(
            a.instruction or STRATEGIST_INSTRUCTION, a.chat, a.thought_tokens, max_context
        )
        # the actor's episodes as an actor run would see them (its own context), plus the two models
        src = super().build(recipe, engine, tokenizer, rows, test_rows, actor.max_context)
        src.actor, src.strategist, src.actor_temperature = actor, strategist, a.actor_temperature
        return src

    def play(
        self, rows: list[dict], params: SamplingParams, per_row: int
    ) -> tuple[list[Episode], list[Episode]]:
        """(the actor's episodes, the strategist's episodes of them)."""
        guide = Strategist(self.engine, self.tokenizer, self.strategist, params)
        seed = None if params.seed is None else params.seed + 1
        actor_params = SamplingParams(temperature=self.actor_temperature, seed=seed)
        played = collect_episodes(
            self.actor.engine,
            self.actor.tokenizer,
            rows,
            actor_params,
            self.settings,
            per_row,
            pool=self.pool,
            guide=guide,
        )
        return played, guide.episodes(played)

    def groups(self, idx: list[int], params: SamplingParams) -> ScoredGroups:
        played, thoughts = self.play([self.rows[i] for i in idx], params, params.n)
        groups = episode_groups(thoughts, idx, self.reward)
        groups.stats = episode_stats(played)
        return groups

    def evaluate(self) -> dict[str, float]:
        if not self.test_rows:
            return {"eval_accuracy": float("nan")}
        played = []
        for k in range(self.eval_episodes):
            params = SamplingParams(temperature=self.eval_temperature, seed=k)
            played += self.play(self.test_rows, params, 1)[0]
        stats = episode_stats(played)
        return {"eval_accuracy": stats["success"], "eval_score": stats["score"], "eval_turns": stats["turns"]}


@dataclass
class ReflectionSource:
    """Retroformer: the policy is the retrospective model of a frozen actor."""

    engine: object
    tokenizer: object
    rows: list[dict]  # the training games the actor failed at trial 0
    failures: list[Episode]  # their trial-0 episodes
    test_rows: list[dict]
    settings: EpisodeSettings  # the actor's
    actor: FrozenModel
    reward: str
    pool: EnvPool
    reflector: Reflector  # the policy's engine, writing reflections
    eval_trials: int
    actor_temperature: float = 0.0
    seed: int = 0

    @classmethod
    def build(cls, recipe, engine, tokenizer, rows, test_rows, max_context: int) -> ReflectionSource:
        a, actor = recipe.agent, _actor(recipe)
        settings, pool = episode_settings(recipe, actor.max_context), EnvPool()
        src = cls(
            engine, tokenizer, [], [], test_rows, settings, actor, recipe.episodes.reward, pool,
            Reflector(engine, tokenizer, a.chat, a.reflection_tokens, max_context), a.eval_trials,
            a.actor_temperature, recipe.train.seed,
        )  # fmt: skip
        first = src.play_actor(rows, [settings.instruction] * len(rows), seed=recipe.train.seed)
        kept = [(r, ep) for r, ep in zip(rows, first, strict=True) if not ep.won]
        if not kept:
            raise UserError(
                f"the actor {recipe.agent.actor!r} wins all {len(rows)} training games at trial 0: "
                "there is no failed trial to reflect on; use harder games (data.train) or another actor"
            )
        src.rows, src.failures = [r for r, _ in kept], [ep for _, ep in kept]
        return src

    def play_actor(self, rows: list[dict], instructions: list[str], seed: int | None) -> list[Episode]:
        params = SamplingParams(temperature=self.actor_temperature, seed=seed)
        return collect_episodes(
            self.actor.engine,
            self.actor.tokenizer,
            rows,
            params,
            self.settings,
            pool=self.pool,
            instructions=instructions,
        )

    def groups(self, idx: list[int], params: SamplingParams) -> ScoredGroups:
        G = params.n
        failed = [self.failures[i] for i in idx]
        outs, notes = self.reflector(failed, [[] for _ in idx], params)
        rows = [self.rows[i] for i in idx for _ in range(G)]
        base = self.settings.instruction
        replays = self.play_actor(rows, [memory_instruction(base, [n]) for n in notes], seed=params.seed)
        before = [f for f in failed for _ in range(G)]
        rewards = [reflection_rating(b, a, self.reward) for b, a in zip(before, replays, strict=True)]
        stats = {f"trial1_{k}": v for k, v in episode_stats(replays).items()}
        return ScoredGroups(
            completions=outs,
            rewards=rewards,
            correct=[float(ep.won) for ep in replays],
            row_indices=list(idx),
            stats={**stats, "trial0_score": sum(f.normalized_score for f in failed) / max(1, len(failed))},
        )

    def evaluate(self) -> dict[str, float]:
        """Up to ``eval_trials`` trials of each held-out game, greedy reflections after failures."""
        if not self.test_rows:
            return {"eval_accuracy": float("nan")}
        greedy = SamplingParams(temperature=0.0)
        result = run_trials(
            self.test_rows,
            lambda rows, instructions, trial: self.play_actor(rows, instructions, seed=self.seed + trial),
            lambda failed, past: self.reflector(failed, past, greedy)[1],
            self.eval_trials,
            self.settings.instruction,
        )
        success, score = result.success_by_trial(), result.score_by_trial()
        out = {"eval_accuracy": success[-1], "eval_score": score[-1]}
        out.update({f"eval_success_trial{k + 1}": v for k, v in enumerate(success)})
        return out


SOURCES = {"actor": EpisodeSource, "strategist": StrategistSource, "retrospective": ReflectionSource}
