"""A goal-conditioned behaviour-cloning policy for Crafter and the controller that runs it.

``GCBCPolicy`` maps (local view, inventory, goal[, facing]) to logits over Crafter's 17
actions. It is trained by ``trainers/agents/gcbc.py`` on hindsight-relabelled play data and saved as a
directory that describes itself (``config.json`` lists the encodings it was trained with), so
``LearnedController`` can load it without the recipe that made it — the ``learned:PATH``
controller.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch
from torch import nn

from agents.encoding import GOALS, INVENTORY_KEYS, VIEW_NAMES, encode_inventory, encode_view, goal_index
from agents.navigation import lava_shield
from agents.progress import SubgoalTracker
from agents.types import AgentView, Controller, SubgoalStatus
from envs.crafter.techtree import Subgoal
from telos.errors import UserError

WEIGHTS = "model.safetensors"
CONFIG = "config.json"
# Crafter's action names in id order; stored in every model so a saved policy never needs the game
# installed to name the action it chose (and a reordering in a future Crafter is detected).
ACTIONS = (
    "noop", "move_left", "move_right", "move_up", "move_down", "do", "sleep", "place_stone",
    "place_table", "place_furnace", "place_plant", "make_wood_pickaxe", "make_stone_pickaxe",
    "make_iron_pickaxe", "make_wood_sword", "make_stone_sword", "make_iron_sword",
)  # fmt: skip
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
        from safetensors.torch import save_file

        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        save_file(
            {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}, str(out / WEIGHTS)
        )
        config = {
            "kind": "gcbc",
            "policy": asdict(self.config),
            "view_names": list(VIEW_NAMES),
            "inventory_keys": list(INVENTORY_KEYS),
            "goals": [list(g) for g in GOALS],
            "actions": list(ACTIONS),
            "meta": meta or {},
        }
        (out / CONFIG).write_text(json.dumps(config, indent=2))
        return out

    def save_pretrained(self, directory: str | Path, **_kwargs) -> None:
        """The name ``telos.checkpoint.save_checkpoint`` calls (it passes safetensors flags)."""
        self.save(directory)

    @classmethod
    def load(cls, directory: str | Path) -> GCBCPolicy:
        """A policy saved by ``save``; the encodings it was trained with must be today's."""
        from safetensors.torch import load_file

        d = Path(directory)
        if not (d / CONFIG).is_file() or not (d / WEIGHTS).is_file():
            raise UserError(
                f"not a GCBC policy directory (needs {CONFIG} and {WEIGHTS}): {directory}; "
                "train one with `telos train recipes/agents/gcbc_crafter.yaml` (its final/)"
            )
        config = json.loads((d / CONFIG).read_text())
        expected = {
            "view_names": list(VIEW_NAMES),
            "inventory_keys": list(INVENTORY_KEYS),
            "goals": [list(g) for g in GOALS],
            "actions": list(ACTIONS),
        }
        for key, value in expected.items():
            if config.get(key) != value:
                raise UserError(
                    f"{d / CONFIG}: '{key}' differs from this version's encoding; retrain the policy"
                )
        known = {f.name for f in fields(PolicyConfig)}
        policy = cls(PolicyConfig(**{k: v for k, v in config.get("policy", {}).items() if k in known}))
        try:
            policy.load_state_dict(load_file(str(d / WEIGHTS)))
        except RuntimeError as e:
            raise UserError(f"{d / WEIGHTS} does not match {d / CONFIG}: {str(e).splitlines()[0]}") from None
        return policy.eval()


def encode_facing(facing: str | None) -> int:
    """VIEW_NAMES id of the cell the player faces (as ``encode_view`` encodes a cell)."""
    return int(encode_view([[facing]])[0, 0])


class LearnedController(Controller):
    """Runs a trained ``GCBCPolicy`` on one subgoal at a time.

    Done when the subgoal's events (``agents.progress``) reach its count; failed after
    ``max_steps_without_progress`` steps without one of them — a cloned policy has no other way
    to know it is stuck, and the planner can then re-plan.
    """

    name = "learned"

    def __init__(
        self,
        path: str | Path,
        *,
        temperature: float = 0.0,
        seed: int = 0,
        max_steps_without_progress: int = 300,
    ) -> None:
        if temperature < 0:
            raise UserError(f"temperature must be ≥ 0, got {temperature}")
        if max_steps_without_progress < 1:
            raise UserError(f"max_steps_without_progress must be ≥ 1, got {max_steps_without_progress}")
        self.path = str(path)
        self.policy = GCBCPolicy.load(path)
        self.temperature = temperature  # 0 = argmax
        self.seed = seed
        self.max_steps_without_progress = max_steps_without_progress
        # a private generator: sampling is reproducible and leaves the global RNG alone
        self._generator = torch.Generator().manual_seed(seed)
        self.reset()

    def reset(self) -> None:
        self._subgoal: Subgoal | None = None
        self._goal = -1
        self._tracker: SubgoalTracker | None = None
        self._last_view: AgentView | None = None
        self._stalled = 0

    def start(self, subgoal: Subgoal, view: AgentView) -> None:
        try:
            self._goal = goal_index(subgoal)
        except KeyError:
            valid = ", ".join(f"{v} {t}" for v, t in GOALS)
            raise UserError(f"the learned controller has no goal {subgoal}; valid: {valid}") from None
        self._subgoal = subgoal
        self._tracker = SubgoalTracker(subgoal)
        self._last_view = view
        self._stalled = 0

    @torch.no_grad()
    def logits(self, view: AgentView) -> torch.Tensor:
        """The policy's action logits [17] for ``view`` and the current goal."""
        if self._goal < 0:
            raise RuntimeError("LearnedController.act before start()")
        views = torch.from_numpy(encode_view(view.local_view).astype(np.int64))[None]
        inventory = torch.from_numpy(encode_inventory(view).astype(np.float32))[None]
        goals = torch.tensor([self._goal])
        facing = torch.tensor([encode_facing(view.facing)])
        return self.policy(views, inventory, goals, facing if self.policy.config.use_facing else None)[0]

    def act(self, view: AgentView) -> int:
        logits = self.logits(view)
        if self.temperature == 0:
            action = int(logits.argmax())
        else:
            probs = torch.softmax(logits / self.temperature, dim=-1)
            action = int(torch.multinomial(probs, 1, generator=self._generator))
        return ACTIONS.index(lava_shield(view, ACTIONS[action]))

    def observe(self, view: AgentView, action: int) -> None:
        if self._tracker is None or self._last_view is None:
            return
        before = self._tracker.progress
        self._tracker.update(self._last_view, ACTIONS[int(action)], view)
        self._stalled = 0 if self._tracker.progress > before else self._stalled + 1
        self._last_view = view

    def status(self, view: AgentView) -> SubgoalStatus:
        if self._tracker is None:
            return SubgoalStatus("failed", "no subgoal started")
        if self._tracker.met:
            return SubgoalStatus("done")
        if self._stalled >= self.max_steps_without_progress:
            return SubgoalStatus(
                "failed",
                f"no progress on {self._subgoal} in {self._stalled} steps "
                f"({self._tracker.progress}/{self._tracker.subgoal.count} done)",
            )
        return SubgoalStatus("running")

    def describe(self) -> dict:
        return {
            "name": self.name,
            "path": self.path,
            "temperature": self.temperature,
            "seed": self.seed,
            "max_steps_without_progress": self.max_steps_without_progress,
            "parameters": self.policy.num_parameters(),
        }
