"""A goal-conditioned behaviour-cloning policy for Crafter and the controller that runs it.

``GCBCPolicy`` maps (local view, inventory, goal[, facing]) to logits over Crafter's 17
actions. It is trained by ``trainers/agents/gcbc.py`` on hindsight-relabelled play data and saved as a
directory that describes itself (``config.json`` lists the encodings it was trained with), so
``LearnedController`` can load it without the recipe that made it — the ``learned:PATH``
controller.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch
from torch import nn

from agents.cloned import ClonedController
from agents.encoding import (
    ACTIONS,
    GOALS,
    INVENTORY_KEYS,
    VIEW_NAMES,
    encode_facing,
    encode_inventory,
    encode_view,
)
from agents.policy_files import CONFIG, WEIGHTS, load_weights, read_policy_config, save_policy
from agents.types import AgentView

__all__ = ["ACTIONS", "CONFIG", "WEIGHTS", "GCBCPolicy", "LearnedController", "PolicyConfig", "encode_facing"]
VIEW_ROWS, VIEW_COLS = 7, 9
INVENTORY_SCALE = 9.0  # Crafter caps every count and vital at 9: inputs land in [0, 1]


@dataclass
class PolicyConfig:
    embed_dim: int = 16  # per view cell (and for the facing cell)
    channels: int = 32  # conv width
    hidden: int = 128  # view features and fused MLP width
    goal_dim: int = 32
    inventory_dim: int = 64
    use_facing: bool = False  # true when the play data has a `facing` array


class GCBCPolicy(nn.Module):
    """Cells → embeddings → two 3×3 convs (full resolution: the player is always the centre
    cell, so position in the flattened map *is* direction) → a 1×1 conv that narrows the
    channels before the flatten (keeps the linear layer, the largest, small) ⊕ inventory MLP ⊕
    goal embedding [⊕ facing embedding] → MLP → action logits. About 180k parameters."""

    def __init__(self, config: PolicyConfig | None = None) -> None:
        super().__init__()
        self.config = c = config or PolicyConfig()
        self.cells = nn.Embedding(len(VIEW_NAMES), c.embed_dim)
        self.conv = nn.Sequential(
            nn.Conv2d(c.embed_dim, c.channels, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(c.channels, c.channels, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(c.channels, c.channels // 2, 1),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(c.channels // 2 * VIEW_ROWS * VIEW_COLS, c.hidden),
            nn.ReLU(),
        )
        self.inventory = nn.Sequential(nn.Linear(len(INVENTORY_KEYS), c.inventory_dim), nn.ReLU())
        self.goal = nn.Embedding(len(GOALS), c.goal_dim)
        self.facing = nn.Embedding(len(VIEW_NAMES), c.embed_dim) if c.use_facing else None
        fused = c.hidden + c.inventory_dim + c.goal_dim + (c.embed_dim if c.use_facing else 0)
        self.head = nn.Sequential(nn.Linear(fused, c.hidden), nn.ReLU(), nn.Linear(c.hidden, len(ACTIONS)))

    def forward(
        self,
        views: torch.Tensor,
        inventory: torch.Tensor,
        goals: torch.Tensor,
        facing: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """views int [B, 7, 9] (VIEW_NAMES ids), inventory int/float [B, 16] raw counts, goals int
        [B] (GOALS ids ≥ 0), facing int [B] (VIEW_NAMES id; only with ``use_facing``) → [B, 17]."""
        x = self.cells(views.long()).permute(0, 3, 1, 2)  # [B, E, rows, cols]
        parts = [self.conv(x), self.inventory(inventory.float() / INVENTORY_SCALE), self.goal(goals.long())]
        if self.facing is not None:
            if facing is None:
                raise ValueError("this policy was trained with `facing`; pass it")
            parts.append(self.facing(facing.long()))
        return self.head(torch.cat(parts, dim=-1))

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # ------------------------------------------------------------------ files

    def save(self, directory: str | Path, meta: dict | None = None) -> Path:
        """``model.safetensors`` + ``config.json`` (architecture, the encodings' name lists and
        ``meta``, e.g. how it was trained)."""
        return save_policy(self, directory, "gcbc", asdict(self.config), meta)

    def save_pretrained(self, directory: str | Path, **_kwargs) -> None:
        """The name ``telos.checkpoint.save_checkpoint`` calls (it passes safetensors flags)."""
        self.save(directory)

    @classmethod
    def load(cls, directory: str | Path) -> GCBCPolicy:
        """A policy saved by ``save``; the encodings it was trained with must be today's."""
        config = read_policy_config(
            directory, "gcbc", "train one with `telos train recipes/agents/gcbc_crafter.yaml` (its final/)"
        )
        known = {f.name for f in fields(PolicyConfig)}
        policy = cls(PolicyConfig(**{k: v for k, v in config.get("policy", {}).items() if k in known}))
        load_weights(policy, directory)
        return policy.eval()


class LearnedController(ClonedController):
    """Runs a trained ``GCBCPolicy`` (the ``learned:PATH`` controller): reactive, no memory."""

    name = "learned"

    def __init__(
        self,
        path: str | Path,
        *,
        temperature: float = 0.0,
        seed: int = 0,
        max_steps_without_progress: int = 300,
    ) -> None:
        self.path = str(path)
        self.policy = GCBCPolicy.load(path)
        super().__init__(
            temperature=temperature, seed=seed, max_steps_without_progress=max_steps_without_progress
        )

    @torch.no_grad()
    def logits(self, view: AgentView) -> torch.Tensor:
        views = torch.from_numpy(encode_view(view.local_view).astype(np.int64))[None]
        inventory = torch.from_numpy(encode_inventory(view).astype(np.float32))[None]
        goals = torch.tensor([self._goal])
        facing = torch.tensor([encode_facing(view.facing)])
        return self.policy(views, inventory, goals, facing if self.policy.config.use_facing else None)[0]

    def describe(self) -> dict:
        return {**super().describe(), "path": self.path, "parameters": self.policy.num_parameters()}
