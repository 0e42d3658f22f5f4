"""The ``model:`` recipe section, shared by every trainer (RL and reward models)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from telos.config import path_field
from telos.models import LoraConfig, TinyModelConfig


@dataclass
class ModelSection:
    """``name_or_path``: a local directory, a hub id (``Qwen/Qwen2.5-0.5B-Instruct``), or
    ``tiny:arith`` — the tiny model SFT-warmed on procedural arithmetic, built locally and cached."""

    name_or_path: str = path_field(kind="model")
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    lora: LoraConfig | None = None
    tiny: TinyModelConfig = field(default_factory=TinyModelConfig)
    gradient_checkpointing: bool = False
