"""EPO's strategist (Liu et al. 2025): an LLM that writes a one-line strategy ("Thought") before
each of the actor's actions; the actor reads it under its observation (``rollout.episodes``'s
guide hook) and acts. The strategist is what EPO trains; the actor stays frozen.

The strategist keeps its own token sequence per actor episode, in the collector's layout: its
instruction, then the observation, its thought (sampled, mask 1), the actor's action and the
next observation (environment text, mask 0), and so on::

    {instruction}\\n\\n{observation 0}\\nThought: {thought 0}\\n> {action 0}\\n{observation 1}\\nThought: ...

(or the tokenizer's chat template: observations and actions as user turns, thoughts as the
assistant's). So the trainer scores its sequences exactly like the actor's: one Episode each,
whose turns are the thoughts, each rewarded with what the actor's action after it gained.
Official ALFWorld/WebShop code puts the thought in the actor's chat as an assistant message;
here it is a line of the actor's observation, which a plain-text actor reads the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from rollout.episodes import Episode, Turn, append_env_text, append_sampled
from rollout.layout import Layout, layout_for
from telos.types import SamplingParams

THOUGHT_CUE = "\nThought: "
STRATEGIST_INSTRUCTION = (
    "You guide an agent through a text game. After each observation, give the agent one short "
    "sentence of strategy for its next action."
)


@dataclass
class StrategistSettings:
    instruction: str = STRATEGIST_INSTRUCTION
    chat: bool = False
    thought_tokens: int = 24  # thought length cap per turn
    max_context: int = 1024  # a strategist whose next thought would not fit stays silent


class Strategist:
    """``guide(live actor episodes) -> thoughts``: one batched ``generate_ids`` call per turn.
    ``episodes(actor_episodes)`` then gives the strategist's own Episode for each actor episode,
    with the actor's outcome and per-turn rewards (trainable like any episode)."""

    def __init__(self, engine, tokenizer, settings: StrategistSettings, params: SamplingParams) -> None:
        self.engine, self.tokenizer, self.settings = engine, tokenizer, settings
        self.params = replace(params, n=1, max_tokens=settings.thought_tokens, stop=["\n"])
        self.layout: Layout = layout_for(settings.instruction, settings.chat, tokenizer, cue=THOUGHT_CUE)
        self._own: dict[int, Episode] = {}  # id(actor episode) → the strategist's episode
        self._calls = 0

    def _encode(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _view(self, actor: Episode) -> Episode:
        """The strategist's episode of ``actor``, brought up to the actor's latest observation."""
        own = self._own.get(id(actor))
        if own is None:
            own = Episode(actor.row_index, actor.game_id, [], max_score=actor.max_score)
            own.pending = self.layout.head + actor.transcript[0]
            self._own[id(actor)] = own
        else:  # the actor's action and the game's answer since the last thought
            own.pending += f"> {actor.turns[-1].action}\n{actor.transcript[-1]}"
        append_env_text(own, own.pending + self.layout.cue, self._encode)
        own.state_key = actor.state_key
        return own

    def __call__(self, live: list[Episode]) -> list[str]:
        views = [self._view(ep) for ep in live]
        fits = [v for v in views if v.length + self.settings.thought_tokens <= self.settings.max_context]
        seed = None if self.params.seed is None else self.params.seed + 7_919 * self._calls
        self._calls += 1
        contexts = [v.prompt_ids + v.token_ids for v in fits]
        outs = self.engine.generate_ids(contexts, replace(self.params, seed=seed)) if contexts else []
        thought_of: dict[int, str] = {}
        for view, out in zip(fits, outs, strict=True):
            start = len(view.token_ids)
            thought = append_sampled(view, out, self.layout, self.tokenizer.eos_token_id)
            view.turns.append(Turn(start, len(view.token_ids), thought, 0.0, view.state_key))
            thought_of[id(view)] = thought
        return [thought_of.get(id(v), "") for v in views]

    def episodes(self, actors: list[Episode]) -> list[Episode]:
        """The strategist's episode of each actor episode (same order): the actor's outcome, and
        each thought rewarded with the score the actor's next action gained."""
        out = []
        for actor in actors:
            own = self._own.get(id(actor)) or Episode(actor.row_index, actor.game_id, [])
            for k, turn in enumerate(own.turns):
                turn.reward = actor.turns[k].reward if k < len(actor.turns) else 0.0
            own.score, own.max_score, own.won, own.lost = actor.score, actor.max_score, actor.won, actor.lost
            own.finish, own.transcript, own.thoughts = actor.finish, actor.transcript, actor.thoughts
            out.append(own)
        return out
