"""Building a rollout engine by name: importing the backends registers them in ``ENGINES``;
none imports vLLM until an engine is built."""

from __future__ import annotations

import rollout.client  # noqa: F401  # registers "vllm-server"
import rollout.hf  # noqa: F401  # registers "hf"
import rollout.openai_engine  # noqa: F401  # registers "openai" (a frozen model behind a server)
import rollout.vllm  # noqa: F401  # registers "vllm"
from rollout.engine import ENGINES, Engine


def make_engine(backend: str, model, tokenizer, mode: str = "colocated", **options) -> Engine:
    """Build a registered backend; ``mode="server"`` picks the backend's remote client."""
    name = backend if mode == "colocated" else f"{backend}-{mode}"
    return ENGINES.get(name)(model, tokenizer, **options)
