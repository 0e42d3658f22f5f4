"""The generation ``Engine`` interface every backend implements, and the backend registry
(``rollout.backends.make_engine`` builds one; this module imports no backend)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

from telos.registry import Registry
from telos.types import Completion, SamplingParams

ENGINES: Registry[type[Engine]] = Registry("engine backend")


class Engine(ABC):
    """Generates ``params.n`` completions per prompt, returned grouped: the completions of
    prompt i are ``result[i * n : (i + 1) * n]``.

    ``generate_ids`` is the token-in/token-out form that multi-turn rollouts use: an episode's
    context grows by appending token ids, never by re-tokenising its text (re-tokenised text can
    split differently from what was sampled, and the trainer would then score other tokens)."""

    tokenizer: object

    def generate(self, prompts: Sequence[str], params: SamplingParams) -> list[Completion]:
        ids = self.tokenizer(list(prompts), add_special_tokens=True)["input_ids"]
        return self.generate_ids(ids, params)

    @abstractmethod
    def generate_ids(
        self, prompt_ids: Sequence[Sequence[int]], params: SamplingParams
    ) -> list[Completion]: ...

    def sync_weights(self, model) -> None:  # noqa: B027 - in-process engines share the model
        """Make the engine sample from ``model``'s current weights."""

    # True when every trainer rank talks to one engine: ranks wait for rank 0's weight push
    shared_across_ranks = False

    def sync_metrics(self) -> dict[str, float]:
        """Seconds per phase of the last ``sync_weights`` (``sync/gather_s``, ...), for logging."""
        return {}

    def close(self) -> None:  # noqa: B027
        """Release processes or memory the engine holds."""
