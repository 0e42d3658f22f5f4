"""The multi-turn episode collector: many text-world episodes advance together, and every live
episode's next action comes from one engine ``generate_ids`` call per turn.

Layout: **one token sequence per episode** (the verl / TRL / OpenRLHF / RAGEN convention). The
prompt is the instruction and the first observation; ``token_ids`` then holds, turn after turn,
the action tokens exactly as sampled and the environment's answer tokenised alone and appended
(never re-tokenising the history, which could split text differently from what was sampled).
``loss_mask`` is 1 on action tokens, 0 on environment tokens. Why per episode and not per turn:
the episodes here are short (≤ ~20 turns, a few hundred tokens), so the whole history fits the
context, the trainer scores each token once, and every turn sees what the policy really saw;
per-turn advantages (GiGPO) are laid over the action spans instead of needing per-turn rows.

Text format: ``rollout/layout.py`` (plain ``observation\n> action`` lines, or the tokenizer's chat
template). Actions end at a newline (the ``\n`` stop) or ``action_tokens``; the action is the
first line.

Two hooks serve the planner methods: ``instructions`` gives each row its own instruction
(Retroformer's reflections from earlier trials), and a ``guide`` writes a line into each live
episode's observation before the actor acts (EPO's strategist: ``agents/strategist.py``). Both
are environment text to the actor (mask 0).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from envs.text.base import TextEnv
from envs.text.pools import make_env
from rollout.layout import ACTION_CUE, Layout, first_line, layout_for
from telos.types import Completion, SamplingParams

__all__ = ["ACTION_CUE", "EnvPool", "Episode", "EpisodeSettings", "Turn", "collect_episodes", "play"]

GUIDE_PREFIX = "\nThought: "  # how a guide's line appears in the actor's observation


@dataclass
class EpisodeSettings:
    """How an episode is shown to the actor and when it ends early."""

    instruction: str = ""
    admissible: bool = False  # list the game's valid actions after each observation
    action_tokens: int = 24  # action length cap per turn
    max_context: int = 1024  # tokens; an episode whose next turn would not fit ends (truncated)
    chat: bool = False  # the tokenizer's chat template: system = instruction, user = observations


@dataclass
class Turn:
    """One action: its token span ``[start, end)`` in the episode's ``token_ids``, its text, the
    score it gained, and the state it was taken in (GiGPO's anchor)."""

    start: int
    end: int
    action: str
    reward: float
    state_key: str


@dataclass
class Episode:
    row_index: int
    game_id: str
    prompt_ids: list[int]
    token_ids: list[int] = field(default_factory=list)
    loss_mask: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    turns: list[Turn] = field(default_factory=list)
    transcript: list[str] = field(default_factory=list)  # observation, action, observation, ...
    score: float = 0.0
    max_score: float = 1.0
    won: bool = False
    lost: bool = False
    finish: str = ""  # won | lost | max_steps | context (the next turn would not fit)
    state_key: str = ""  # the state the next action is taken in
    admissible: list[str] = field(default_factory=list)  # the game's valid actions now
    thoughts: list[str] = field(default_factory=list)  # a guide's line before each action
    pending: str = ""  # environment text not yet tokenised (the cue follows once a guide spoke)

    @property
    def length(self) -> int:
        return len(self.prompt_ids) + len(self.token_ids)

    @property
    def done(self) -> bool:
        return bool(self.finish)

    @property
    def normalized_score(self) -> float:
        return self.score / self.max_score if self.max_score else 0.0

    def completion(self, index: int) -> Completion:
        """The episode as one trainable Completion (environment tokens masked out)."""
        return Completion(
            prompt_index=index,
            prompt_token_ids=list(self.prompt_ids),
            token_ids=list(self.token_ids),
            text="\n".join(self.transcript),
            logprobs=list(self.logprobs),
            finish_reason="stop" if self.finish in ("won", "lost") else "length",
            loss_mask=list(self.loss_mask),
        )

    def record(self) -> dict[str, Any]:
        """What a report keeps of the episode (JSON-able)."""
        return {
            "game_id": self.game_id,
            "won": self.won,
            "lost": self.lost,
            "score": self.score,
            "max_score": self.max_score,
            "normalized_score": self.normalized_score,
            "turns": len(self.turns),
            "finish": self.finish,
            "actions": [t.action for t in self.turns],
            **({"thoughts": list(self.thoughts)} if self.thoughts else {}),
            "tokens": len(self.prompt_ids) + len(self.token_ids),
        }


def render_observation(obs: str, info: dict, settings: EpisodeSettings) -> str:
    if settings.admissible and info.get("admissible"):
        return f"{obs}\nValid actions: {', '.join(info['admissible'])}"
    return obs


class EnvPool:
    """Env instances reused across collections (a TextWorldExpress env is a Java process; a
    TextWorld env loads its game file), keyed by game; ``reset`` restarts a game. At most
    ``max_free`` idle envs are kept (the least recently released are closed)."""

    def __init__(self, max_free: int = 128) -> None:
        self.max_free = max_free
        self._free: dict[str, list[TextEnv]] = {}
        self._order: list[tuple[str, TextEnv]] = []  # idle envs, oldest first

    def acquire(self, row: dict) -> TextEnv:
        free = self._free.get(row["game_id"])
        if not free:
            return make_env(row)
        env = free.pop()
        self._order.remove((row["game_id"], env))
        return env

    def release(self, row: dict, env: TextEnv) -> None:
        self._free.setdefault(row["game_id"], []).append(env)
        self._order.append((row["game_id"], env))
        while len(self._order) > self.max_free:
            game, old = self._order.pop(0)
            self._free[game].remove(old)
            old.close()

    def close(self) -> None:
        for _, env in self._order:
            env.close()
        self._free.clear()
        self._order.clear()


Actor = Callable[[list["Episode"]], list[Completion]]
Guide = Callable[[list["Episode"]], list[str]]  # a line per live episode, read before it acts


def collect_episodes(
    engine,
    tokenizer,
    rows: Sequence[dict],
    params: SamplingParams,
    settings: EpisodeSettings,
    per_row: int = 1,
    batched: bool = True,
    pool: EnvPool | None = None,
    on_turn: Callable[[int, int], None] | None = None,
    guide: Guide | None = None,
    instructions: Sequence[str] | None = None,
) -> list[Episode]:
    """Play ``per_row`` episodes of every row's game (grouped: episodes of row i are
    ``result[i·per_row : (i+1)·per_row]``; a group starts from one state, as GRPO and GiGPO
    groups need). Each turn makes one ``generate_ids`` call for all live episodes, or with
    ``batched=False`` one per episode (the unbatched baseline). ``params.n`` is ignored (1 per
    episode); ``params.seed`` is varied per turn. ``on_turn(turn, live)`` reports progress;
    ``guide`` and ``instructions`` are ``play``'s."""
    turn_counter = [0]

    def act(live: list[Episode]) -> list[Completion]:
        seed = None if params.seed is None else params.seed + 7_919 * turn_counter[0]
        turn_params = replace(params, n=1, max_tokens=settings.action_tokens, stop=["\n"], seed=seed)
        turn_counter[0] += 1
        contexts = [ep.prompt_ids + ep.token_ids for ep in live]
        if batched:
            return engine.generate_ids(contexts, turn_params)
        return [engine.generate_ids([c], turn_params)[0] for c in contexts]

    return play(rows, act, tokenizer, settings, per_row, pool, on_turn, guide, instructions)


def scripted_actor(tokenizer, choose: Callable[[Episode], str]) -> Actor:
    """An actor whose action for an episode is ``choose(episode)``, written as the tokens an
    LLM actor would emit (the action and its newline): demonstrations in the exact layout the
    RL loop trains on."""

    def act(live: list[Episode]) -> list[Completion]:
        outs = []
        for ep in live:
            action = choose(ep)
            ids = list(tokenizer(action + "\n", add_special_tokens=False)["input_ids"])
            outs.append(Completion(0, [], ids, action, [0.0] * len(ids), "stop"))
        return outs

    return act


def play(
    rows: Sequence[dict],
    act: Actor,
    tokenizer,
    settings: EpisodeSettings,
    per_row: int = 1,
    pool: EnvPool | None = None,
    on_turn: Callable[[int, int], None] | None = None,
    guide: Guide | None = None,
    instructions: Sequence[str] | None = None,
) -> list[Episode]:
    """The episode loop behind ``collect_episodes``: ``act(live episodes)`` gives each live
    episode's next action as a Completion, then every game steps. ``guide(live episodes)``, if
    given, first writes a line per episode under its latest observation; ``instructions[i]``
    replaces ``settings.instruction`` for row i."""
    own_pool = pool is None
    pool = pool or EnvPool()
    encode = _encoder(tokenizer)
    layouts: dict[str, Layout] = {}

    def layout_of(row_index: int) -> Layout:
        text = instructions[row_index] if instructions is not None else settings.instruction
        if text not in layouts:
            layouts[text] = layout_for(text, settings.chat, tokenizer)
        return layouts[text]

    episodes: list[Episode] = []
    envs: list[TextEnv] = []
    try:
        for i, row in enumerate(rows):
            for _ in range(per_row):
                env = pool.acquire(row)
                envs.append(env)
                obs, info = env.reset()
                text = render_observation(obs, info, settings)
                ep = Episode(
                    i, row["game_id"], [], max_score=info["max_score"], pending=layout_of(i).head + text
                )
                ep.transcript.append(text)
                ep.state_key, ep.admissible = info["state_key"], info["admissible"]
                episodes.append(ep)
        turn = 0
        while True:
            live = [ep for ep in episodes if not ep.done]
            if guide is not None and live:
                for ep, note in zip(live, guide(live), strict=True):
                    ep.thoughts.append(note)
                    ep.pending += GUIDE_PREFIX + note if note else ""
            for ep in live:
                append_env_text(ep, ep.pending + layout_of(ep.row_index).cue, encode)
                if ep.length + settings.action_tokens > settings.max_context:
                    ep.finish = "context"  # the next turn cannot fit
            live = [k for k, ep in enumerate(episodes) if not ep.done]
            if not live:
                break
            if on_turn is not None:
                on_turn(turn, len(live))
            outs = act([episodes[k] for k in live])
            for k, out in zip(live, outs, strict=True):
                ep = episodes[k]
                _advance(ep, envs[k], out, settings, layout_of(ep.row_index), tokenizer.eos_token_id)
                if ep.done:
                    append_env_text(ep, ep.pending, encode)
            turn += 1
    finally:
        for ep, env in zip(episodes, envs, strict=False):
            pool.release(rows[ep.row_index], env)
        if own_pool:
            pool.close()
    return episodes


def _encoder(tokenizer) -> Callable[[str], list[int]]:
    def encode(text: str) -> list[int]:
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])

    return encode


def append_env_text(ep: Episode, text: str, encode: Callable[[str], list[int]]) -> None:
    """Environment text, tokenised alone: the prompt until the first sampled turn, then
    masked tokens with log-prob placeholders."""
    ep.pending = ""
    ids = encode(text) if text else []
    if not ep.token_ids:
        ep.prompt_ids += ids
        return
    ep.token_ids += ids
    ep.loss_mask += [0] * len(ids)
    ep.logprobs += [0.0] * len(ids)


def append_sampled(ep: Episode, out: Completion, layout: Layout, eos: int | None) -> str:
    """The sampled tokens as they are (mask 1); returns the turn's text (its first line) and
    leaves the turn's closing text pending."""
    ep.token_ids += out.token_ids
    ep.loss_mask += [1] * len(out.token_ids)
    ep.logprobs += list(out.logprobs)
    stopped_on_eos = bool(out.token_ids) and out.token_ids[-1] == eos
    ep.pending = layout.closing(out.finish_reason == "stop", stopped_on_eos)
    return first_line(out.text)


def _advance(
    ep: Episode, env: TextEnv, out: Completion, settings: EpisodeSettings, layout: Layout, eos
) -> None:
    """Append the sampled action, step the game, leave its answer pending (masked later)."""
    start = len(ep.token_ids)
    action = append_sampled(ep, out, layout, eos)
    obs, reward, terminated, truncated, info = env.step(action)
    ep.turns.append(Turn(start, len(ep.token_ids), action, reward, ep.state_key))
    ep.state_key, ep.admissible = info["state_key"], info["admissible"]
    ep.score, ep.won, ep.lost = info["score"], info["won"], info["lost"]
    text = render_observation(obs, info, settings)
    ep.transcript += [f"> {action}", text]
    ep.pending += text
    if terminated or truncated:
        ep.finish = "won" if info["won"] else "lost" if info["lost"] else "max_steps"
