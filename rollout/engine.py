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
    prompt i are ``result[i * n : (i + 1) * n]``."""

    @abstractmethod
    def generate(self, prompts: Sequence[str], params: SamplingParams) -> list[Completion]: ...

    def sync_weights(self, model) -> None:  # noqa: B027 - in-process engines share the model
        """Make the engine sample from ``model``'s current weights."""

    # True when every trainer rank talks to one engine: ranks wait for rank 0's weight push
    shared_across_ranks = False

    def sync_metrics(self) -> dict[str, float]:
        """Seconds per phase of the last ``sync_weights`` (``sync/gather_s``, ...), for logging."""
        return {}

    def close(self) -> None:  # noqa: B027
        """Release processes or memory the engine holds."""
