"""Types shared by every package: sampling parameters and completions."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class SamplingParams:
    """What to sample; mirrors vLLM's ``SamplingParams`` names so recipes read the same."""

    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0 = off
    max_tokens: int = 64
    stop: list[str] = field(default_factory=list)
    seed: int | None = None

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


@dataclass
class Completion:
    """One sampled answer. ``logprobs[i]`` is the sampler's log-prob of ``token_ids[i]``
    (after temperature / top-k / top-p, i.e. of the distribution actually sampled from).

    A multi-turn episode is one Completion too: ``token_ids`` holds every turn's action tokens
    and the environment's text between them, and ``loss_mask[i]`` is 1 where the model wrote
    ``token_ids[i]`` and 0 on environment tokens (their ``logprobs`` are 0.0 placeholders).
    None: every token is the model's."""

    prompt_index: int
    prompt_token_ids: list[int]
    token_ids: list[int]
    text: str
    logprobs: list[float]
    finish_reason: str  # "stop" (EOS or stop string) | "length"
    loss_mask: list[int] | None = None
