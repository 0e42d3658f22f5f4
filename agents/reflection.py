"""Retroformer (Yao et al., ICLR 2024): a frozen actor plays a game for up to K trials; after a
failed trial a retrospective LM writes a reflection, and the last three reflections ride in the
actor's instruction on the next trial (Reflexion's memory). A reflection's rating is the return
difference it brought, ``G_{i+1} − G_i`` (``reflection_rating``): what the retrospective model
is trained on (``trainers/rl/agent_sources.py``).

The trial loop takes its two models as functions, so the same loop serves the no-reflection
baseline (``reflect=None``: failed games are simply replayed), a fixed-prompt retrospective
model (Reflexion), and a trained one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from rollout.episodes import Episode
from telos.types import Completion, SamplingParams

MEMORY_SIZE = 3  # reflections kept in the actor's instruction (official: memory[-3:])

REFLECTION_TASK = (
    "You will see an attempt at a text game that did not succeed. Say what went wrong and give "
    "a short plan for the next attempt, on one line."
)


def reflection_prompt(episode: Episode, past: Sequence[str]) -> str:
    """What the retrospective model reads: the failed trial, how it ended, the earlier plans,
    then ``New plan:`` (the official prompt's closing cue)."""
    lines = [REFLECTION_TASK, "", *episode.transcript, ""]
    lines.append(
        f"Result: score {episode.score:g} of {episode.max_score:g} after {len(episode.turns)} actions"
        f" ({episode.finish or 'unfinished'})."
    )
    if past:
        lines += ["Plans from past attempts:", *(f"Trial {i + 1}: {p}" for i, p in enumerate(past))]
    lines.append("New plan:")
    return "\n".join(lines)


def memory_instruction(base: str, reflections: Sequence[str]) -> str:
    """The actor's instruction with the last ``MEMORY_SIZE`` reflections appended."""
    kept = [r for r in reflections if r][-MEMORY_SIZE:]
    if not kept:
        return base
    plans = "\n".join(f"- {r}" for r in kept)
    return f"{base}\n\nYour plans from earlier attempts:\n{plans}".lstrip()


def reflection_rating(before: Episode, after: Episode, reward: str = "score") -> float:
    """r = G_{i+1} − G_i: what the reflection bought, G the normalised score (score / max
    score) or, with ``reward="won"``, 1 for a win."""
    if reward == "won":
        return float(after.won) - float(before.won)
    return after.normalized_score - before.normalized_score


def clean_reflection(text: str, max_chars: int = 300) -> str:
    """A reflection as it goes into memory: its first non-empty line, capped."""
    for line in text.strip().splitlines():
        if line.strip():
            return line.strip()[:max_chars]
    return ""


class Reflector:
    """The retrospective model: ``reflector(failed, past, params) -> (completions, reflections)``
    in one ``generate`` call (``params.n`` reflections per failed trial, grouped)."""

    def __init__(self, engine, tokenizer, chat: bool, max_tokens: int, max_context: int) -> None:
        self.engine, self.tokenizer, self.chat = engine, tokenizer, chat
        self.max_tokens, self.max_context = max_tokens, max_context

    def prompt(self, failed: Episode, past: Sequence[str]) -> str:
        """The reflection prompt (in the chat template with ``chat``), its oldest turns dropped
        until it fits the context beside the reflection."""
        room, ep = self.max_context - self.max_tokens, failed
        while True:
            text = reflection_prompt(ep, past)
            if self.chat:
                messages = [{"role": "user", "content": text}]
                text = self.tokenizer.apply_chat_template(
                    messages, tokenize=False, add_generation_prompt=True
                )
            fits = len(self.tokenizer(text, add_special_tokens=False)["input_ids"]) <= room
            if fits or len(ep.transcript) <= 3:
                return text
            ep = replace(ep, transcript=ep.transcript[:1] + ep.transcript[3:])

    def __call__(
        self, failed: Sequence[Episode], past: Sequence[Sequence[str]], params: SamplingParams
    ) -> tuple[list[Completion], list[str]]:
        params = replace(params, max_tokens=self.max_tokens, stop=["\n"])
        outs = self.engine.generate([self.prompt(f, p) for f, p in zip(failed, past, strict=True)], params)
        return outs, [clean_reflection(o.text) for o in outs]


# play(rows, instructions, trial) -> one episode per row; reflect(failed episodes, past reflections) -> texts
PlayFn = Callable[[list[dict], list[str], int], list[Episode]]
ReflectFn = Callable[[list[Episode], list[list[str]]], list[str]]


@dataclass
class TrialResults:
    """Per trial k (0-based): which games are solved by then, the best normalised score so far,
    and every game's episodes and reflections."""

    solved: list[list[bool]] = field(default_factory=list)  # [trial][game]
    best_score: list[list[float]] = field(default_factory=list)
    episodes: list[list[Episode | None]] = field(default_factory=list)  # None: solved earlier
    reflections: list[list[str]] = field(default_factory=list)  # [game] in order

    def success_by_trial(self) -> list[float]:
        return [sum(s) / max(1, len(s)) for s in self.solved]

    def score_by_trial(self) -> list[float]:
        return [sum(s) / max(1, len(s)) for s in self.best_score]


def run_trials(
    rows: Sequence[dict], play: PlayFn, reflect: ReflectFn | None, trials: int, base_instruction: str = ""
) -> TrialResults:
    """Up to ``trials`` trials per game; a game solved in trial k counts as solved after it and
    is not replayed (the official loop skips solved environments)."""
    n = len(rows)
    res = TrialResults(reflections=[[] for _ in range(n)])
    solved, best = [False] * n, [0.0] * n
    last: list[Episode | None] = [None] * n
    for trial in range(trials):
        todo = [i for i in range(n) if not solved[i]]
        if trial > 0 and reflect is not None and todo:
            notes = reflect([last[i] for i in todo], [res.reflections[i] for i in todo])
            for i, note in zip(todo, notes, strict=True):
                res.reflections[i].append(note)
        episodes: list[Episode | None] = [None] * n
        if todo:
            instructions = [memory_instruction(base_instruction, res.reflections[i]) for i in todo]
            for i, ep in zip(todo, play([rows[i] for i in todo], instructions, trial), strict=True):
                episodes[i], last[i] = ep, ep
                solved[i] = solved[i] or ep.won
                best[i] = max(best[i], ep.normalized_score)
        res.solved.append(list(solved))
        res.best_score.append(list(best))
        res.episodes.append(episodes)
    return res
