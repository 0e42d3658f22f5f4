"""The ``model:`` recipe section, shared by every trainer that fine-tunes a causal LM."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Literal

from telos.models import LoraConfig, TinyModelConfig
from telos.schema import flag, local_path, text


@dataclass
class ModelSection:
    name_or_path: Annotated[
        str,
        text(
            "a local directory, a hub id (Qwen/Qwen2.5-0.5B-Instruct) or tiny:arith (built locally, cached)"
        ),
        local_path("model"),
    ]
    dtype: Annotated[Literal["float32", "bfloat16", "float16"], text("weights' dtype")] = "float32"
    lora: Annotated[LoraConfig | None, text("train LoRA adapters instead of all weights")] = None
    tiny: Annotated[TinyModelConfig, text("shape of a model built from scratch")] = field(
        default_factory=TinyModelConfig
    )
    gradient_checkpointing: Annotated[bool, flag("recompute activations in backward (less memory)")] = False
