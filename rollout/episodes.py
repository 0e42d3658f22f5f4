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

Text format (plain, so tiny and chat models read the same)::

    {instruction}\\n\\n{observation 0}\\n> {action 0}\\n{observation 1}\\n> {action 1}\\n...

Actions end at a newline (the ``\\n`` stop) or ``action_tokens``; the action is the first line.

With ``chat`` the episode is a chat instead: the instruction is the system message, each
observation a user message and each action an assistant message, in the tokenizer's own chat
template (what an instruct model was tuned on). The template is rendered once around
placeholders to learn the text between turns, so the history is still only ever appended to.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from envs.text.base import TextEnv
from envs.text.pools import make_env
from telos.types import Completion, SamplingParams

ACTION_CUE = "\n> "


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
            "tokens": len(self.prompt_ids) + len(self.token_ids),
        }


def render_observation(obs: str, info: dict, settings: EpisodeSettings) -> str:
    if settings.admissible and info.get("admissible"):
        return f"{obs}\nValid actions: {', '.join(info['admissible'])}"
    return obs


@dataclass(frozen=True)
class Layout:
    """The text around observations and actions: ``opening(obs)`` is the prompt, and
    ``between(obs, ended_line, last)`` follows an action (the environment's tokens)."""

    head: str  # before the first observation
    cue: str  # after an observation: where the model's action starts
    close: str  # after an action, before the next observation
    chat: bool = False
    eos_text: str = ""  # the chat template's end of turn when it is the EOS token

    def opening(self, obs: str) -> str:
        return self.head + obs + self.cue

    def closing(self, stopped: bool, on_eos: bool) -> str:
        """What still has to follow the sampled action tokens. Plain: a newline, unless the
        ``\\n`` stop already wrote it. Chat: the end of the assistant turn, less the EOS token
        when the model closed its turn with it."""
        if not self.chat:
            return "" if stopped and not on_eos else self.close
        if on_eos and self.eos_text and self.close.startswith(self.eos_text):
            return self.close[len(self.eos_text) :]
        return self.close

    def between(self, obs: str, closing: str, last: bool) -> str:
        return closing + obs + ("" if last else self.cue)


_U, _A = "\x00OBSERVATION\x00", "\x00ACTION\x00"


def layout_for(settings: EpisodeSettings, tokenizer) -> Layout:
    """The plain layout, or the pieces of the tokenizer's chat template (rendered once around
    placeholder turns: a 2-turn chat vs a 1-turn chat gives the text between turns)."""
    if not settings.chat:
        head = f"{settings.instruction}\n\n" if settings.instruction else ""
        return Layout(head, ACTION_CUE, "\n")
    system = [{"role": "system", "content": settings.instruction}] if settings.instruction else []
    one = tokenizer.apply_chat_template(
        [*system, {"role": "user", "content": _U}], tokenize=False, add_generation_prompt=True
    )
    two = tokenizer.apply_chat_template(
        [
            *system,
            {"role": "user", "content": _U},
            {"role": "assistant", "content": _A},
            {"role": "user", "content": _U},
        ],
        tokenize=False,
        add_generation_prompt=True,
    )
    head, cue = one.split(_U)
    after_action = two.split(_A, 1)[1]
    close, rest = after_action.split(_U, 1)
    if rest != cue or not two.startswith(head):
        raise ValueError("the chat template does not append turns; use episodes.chat: false")
    eos = tokenizer.eos_token_id
    return Layout(head, cue, close, chat=True, eos_text=tokenizer.decode([eos]) if eos is not None else "")


def first_action_line(text: str) -> str:
    return text.strip().split("\n", 1)[0].strip()


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
) -> list[Episode]:
    """Play ``per_row`` episodes of every row's game (grouped: episodes of row i are
    ``result[i·per_row : (i+1)·per_row]``; a group starts from one state, as GRPO and GiGPO
    groups need). Each turn makes one ``generate_ids`` call for all live episodes, or with
    ``batched=False`` one per episode (the unbatched baseline). ``params.n`` is ignored (1 per
    episode); ``params.seed`` is varied per turn. ``on_turn(turn, live)`` reports progress."""
    turn_counter = [0]

    def act(live: list[Episode]) -> list[Completion]:
        seed = None if params.seed is None else params.seed + 7_919 * turn_counter[0]
        turn_params = replace(params, n=1, max_tokens=settings.action_tokens, stop=["\n"], seed=seed)
        turn_counter[0] += 1
        contexts = [ep.prompt_ids + ep.token_ids for ep in live]
        if batched:
            return engine.generate_ids(contexts, turn_params)
        return [engine.generate_ids([c], turn_params)[0] for c in contexts]

    return play(rows, act, tokenizer, settings, per_row, pool, on_turn)


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
) -> list[Episode]:
    """The episode loop behind ``collect_episodes``: ``act(live episodes)`` gives each live
    episode's next action as a Completion, then every game steps."""
    own_pool = pool is None
    pool = pool or EnvPool()
    encode = _encoder(tokenizer)
    layout = layout_for(settings, tokenizer)
    episodes: list[Episode] = []
    envs: list[TextEnv] = []
    try:
        for i, row in enumerate(rows):
            for _ in range(per_row):
                env = pool.acquire(row)
                envs.append(env)
                obs, info = env.reset()
                text = render_observation(obs, info, settings)
                ep = Episode(i, row["game_id"], encode(layout.opening(text)), max_score=info["max_score"])
                ep.transcript.append(text)
                ep.state_key, ep.admissible = info["state_key"], info["admissible"]
                episodes.append(ep)
        turn = 0
        while True:
            for ep in episodes:  # end what the next turn cannot fit into
                if not ep.done and ep.length + settings.action_tokens > settings.max_context:
                    ep.finish = "context"
            live = [k for k, ep in enumerate(episodes) if not ep.done]
            if not live:
                break
            if on_turn is not None:
                on_turn(turn, len(live))
            outs = act([episodes[k] for k in live])
            for k, out in zip(live, outs, strict=True):
                _advance(episodes[k], envs[k], out, encode, settings, layout, tokenizer.eos_token_id)
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


def _advance(
    ep: Episode,
    env: TextEnv,
    out: Completion,
    encode,
    settings: EpisodeSettings,
    layout: Layout,
    eos: int | None,
) -> None:
    """Append the sampled action, step the game, append its answer (masked)."""
    action = first_action_line(out.text)
    start = len(ep.token_ids)
    ep.token_ids += out.token_ids
    ep.loss_mask += [1] * len(out.token_ids)
    ep.logprobs += list(out.logprobs)
    obs, reward, terminated, truncated, info = env.step(action)
    ep.turns.append(Turn(start, len(ep.token_ids), action, reward, ep.state_key))
    ep.state_key, ep.admissible = info["state_key"], info["admissible"]
    ep.score, ep.won, ep.lost = info["score"], info["won"], info["lost"]
    text = render_observation(obs, info, settings)
    ep.transcript += [f"> {action}", text]
    stopped_on_eos = bool(out.token_ids) and out.token_ids[-1] == eos
    ended = terminated or truncated
    chunk = layout.between(text, layout.closing(out.finish_reason == "stop", stopped_on_eos), ended)
    env_ids = encode(chunk)
    ep.token_ids += env_ids
    ep.loss_mask += [0] * len(env_ids)
    ep.logprobs += [0.0] * len(env_ids)
    if ended:
        ep.finish = "won" if info["won"] else "lost" if info["lost"] else "max_steps"
