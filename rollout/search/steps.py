"""Step-wise generation for tree and beam search: one engine call proposes the next step of
many partial solutions at once.

A step is the text up to the step separator (a newline: the tiny model's ``12+5=17`` lines and
the line-per-step format ``telos data process-labels`` labels); a step is *terminal* when it
states an answer, the model emitted EOS, or the solution reached ``max_steps`` steps.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from envs.math.answers import extract_answer
from rollout.engine import Engine
from telos.types import SamplingParams

# (prompts, step lists) -> the value of each partial solution (its last step's score), in [0, 1]
ValueFn = Callable[[Sequence[str], Sequence[Sequence[str]]], list[float]]


def split_steps(text: str, separator: str = "\n") -> list[str]:
    """A solution's steps: its non-empty pieces between separators (lines by default)."""
    return [s for s in text.split(separator) if s.strip()]


@dataclass(frozen=True)
class Proposal:
    step: str
    tokens: int  # generated tokens, the separator or EOS included
    terminal: bool
    answer: str | None


@dataclass(frozen=True)
class StepRequest:
    prompt: str
    steps: tuple[str, ...]
    n: int  # proposals wanted


class StepProposer:
    """Proposes next steps with ``engine``; ``batched=False`` makes one engine call per sample
    (the official ReST-MCTS* design, kept to measure what batching buys)."""

    def __init__(
        self,
        engine: Engine,
        eos_token_id: int | None,
        *,
        separator: str = "\n",
        max_step_tokens: int = 48,
        max_steps: int = 12,
        batched: bool = True,
    ) -> None:
        self.engine, self.eos_token_id, self.separator = engine, eos_token_id, separator
        self.max_step_tokens, self.max_steps, self.batched = max_step_tokens, max_steps, batched
        self.calls = 0

    def context(self, prompt: str, steps: Sequence[str]) -> str:
        """The policy's input for the next step: the prompt, then each step and its separator."""
        return prompt + "".join(s + self.separator for s in steps)

    def propose(
        self, requests: Sequence[StepRequest], temperature: float, seed: int | None
    ) -> list[list[Proposal]]:
        """``n`` proposals per request; an empty step comes back with ``step == ""`` (its tokens
        were spent) and is no node."""
        if not requests:
            return []
        params = SamplingParams(
            temperature=temperature, max_tokens=self.max_step_tokens, stop=[self.separator], seed=seed
        )
        if self.batched:  # requests share one call when they want the same n (the usual case)
            out: list[list[Proposal]] = [[] for _ in requests]
            by_n: dict[int, list[int]] = {}
            for i, r in enumerate(requests):
                by_n.setdefault(r.n, []).append(i)
            for n, idx in by_n.items():
                self.calls += 1
                comps = self.engine.generate(
                    [self.context(requests[i].prompt, requests[i].steps) for i in idx],
                    SamplingParams(**{**params.__dict__, "n": n}),
                )
                for j, i in enumerate(idx):
                    out[i] = self._parse(requests[i], comps[j * n : (j + 1) * n])
            return out
        out = []
        for k, r in enumerate(requests):
            comps = []
            for s in range(r.n):
                self.calls += 1
                one_seed = None if seed is None else seed + 7919 * k + s
                comps += self.engine.generate(
                    [self.context(r.prompt, r.steps)], SamplingParams(**{**params.__dict__, "seed": one_seed})
                )
            out.append(self._parse(r, comps))
        return out

    def _parse(self, request: StepRequest, comps) -> list[Proposal]:
        proposals = []
        for c in comps:
            step = c.text.strip()
            ended = bool(c.token_ids) and c.token_ids[-1] == self.eos_token_id
            answer = extract_answer(step)
            terminal = bool(step) and (
                ended or answer is not None or len(request.steps) + 1 >= self.max_steps
            )
            proposals.append(Proposal(step, len(c.token_ids), terminal, answer))
        return proposals


def batched_values(
    value_fn: ValueFn, prompts: Sequence[str], steps: Sequence[Sequence[str]], batched: bool
) -> list[float]:
    """``value_fn`` over all partial solutions in one call, or one call each (unbatched)."""
    if not prompts:
        return []
    if batched:
        return list(value_fn(prompts, steps))
    return [value_fn([p], [s])[0] for p, s in zip(prompts, steps, strict=True)]
