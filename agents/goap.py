"""GOAP: a goal-observation-action conditioned policy for Crafter (after Optimus-2) and the
controller that runs it (``goap:PATH``).

Inputs at step t, all from the agent's own side (no privileged state):
  - the goal as text ("collect iron"), embedded by ``agents.memory.embed`` (feature-hashed words
    and character trigrams) and a learned projection: a goal is read as words, not an id;
  - the current observation: the 9×7 local view, inventory, vitals, daylight, sleeping, the faced
    cell, and the agent's remembered map (``agents.encoding.encode_map``): the history state
    that keeps what it saw beyond the view;
  - the last K (observation, action) pairs, summarised by the action-guided **behaviour
    encoder**: a few learned queries cross-attend (Q-former / Perceiver style) over the pairs
    and become behaviour tokens. Only past steps are in the window, so it is causal.
A pre-norm transformer runs over [CLS, goal, status, faced cell, view, map patches, compass,
behaviour tokens]; the CLS output gives the action logits. With ``goal_compass`` the compass token
also carries the entry of the goal's own target (``goal_compass_features``); with ``survival`` the
status token carries what the expert's survival reflexes depend on (``agents.readouts``).

Variants (``GOAP_VARIANTS``), one architecture: ``goap``; ``no_behaviour`` (the ablation: no
history tokens); ``goal_only`` (STEVE-1-like: the goal embedding is added to the observation
features instead of being a token, and the history is observations only, without actions).
"""

from __future__ import annotations

from collections import deque
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch
from torch import nn

from agents.cloned import ClonedController
from agents.encoding import (
    ACTIONS,
    GOALS,
    REFLEXES,
    STATUS_DIM,
    VIEW_NAMES,
    encode_compass,
    encode_facing,
    encode_map,
    encode_status,
    encode_view,
)
from agents.navigation import SpatialMap, stations_in_reach
from agents.policy_files import load_weights, read_policy_config, save_policy
from agents.readouts import (
    COMPASS_DIM,
    GOAL_COMPASS_DIM,
    GOAL_TARGETS,
    SURVIVAL_DIM,
    compass_vector,
    goal_compass_features,
    survival_features,
)
from agents.types import AgentView
from telos.errors import UserError
from telos.registry import Registry

VIEW_ROWS, VIEW_COLS = 7, 9
SCALE = 9.0  # Crafter caps every count and vital at 9
NO_ACTION = len(ACTIONS)  # the action id of a padded history slot
HIST_CELL_DIM = 4


@dataclass(frozen=True)
class GOAPVariant:
    behaviour: bool  # history tokens from the behaviour encoder
    history_actions: bool  # the history pairs carry the actions (action-guided) or not
    goal_token: bool  # the goal is its own token (else added to the observation features)


GOAP_VARIANTS: Registry[GOAPVariant] = Registry("goap variant")
GOAP_VARIANTS.register("goap")(GOAPVariant(behaviour=True, history_actions=True, goal_token=True))
GOAP_VARIANTS.register("no_behaviour")(GOAPVariant(behaviour=False, history_actions=False, goal_token=True))
GOAP_VARIANTS.register("goal_only")(GOAPVariant(behaviour=True, history_actions=False, goal_token=False))


@dataclass
class GOAPConfig:
    variant: str = "goap"
    d_model: int = 128
    heads: int = 4
    layers: int = 2
    behaviour_tokens: int = 4
    history: int = 16  # K past (observation, action) pairs
    map_radius: int = 10  # the map window is (2r+1)² cells
    cell_dim: int = 16
    compass: bool = True  # a token for the nearest remembered water, tree, ores, stations, cows
    goal_compass: bool = False  # the compass entry of the goal's own target, read out (needs compass)
    survival: bool = False  # the expert's reflex triggers, water, cow, pocket site (needs compass)
    reflex_mode: bool = False  # predict the expert's reflex mode, then the action given it


def status_vector(inventory: np.ndarray, daylight: np.ndarray, sleeping: np.ndarray) -> np.ndarray:
    """float32 [..., STATUS_DIM]: counts and vitals / 9, daylight / 255, sleeping."""
    return np.concatenate(
        [inventory.astype(np.float32) / SCALE, (daylight.astype(np.float32) / 255.0)[..., None],
         sleeping.astype(np.float32)[..., None]], axis=-1,
    )  # fmt: skip


def _goal_text_features() -> torch.Tensor:
    from agents.memory import embed

    return torch.from_numpy(np.stack([embed(f"{verb} {target}") for verb, target in GOALS]))


class BehaviourEncoder(nn.Module):
    """K history pairs → N behaviour tokens: learned queries cross-attend over the pairs (and a
    learned null slot, so an empty history at an episode's start is well defined), then an MLP."""

    def __init__(self, d: int, heads: int, tokens: int) -> None:
        super().__init__()
        self.queries = nn.Parameter(torch.randn(tokens, d) * 0.02)
        self.null = nn.Parameter(torch.zeros(1, 1, d))
        self.norm_q, self.norm_kv = nn.LayerNorm(d), nn.LayerNorm(d)
        self.attn = nn.MultiheadAttention(d, heads, batch_first=True)
        self.mlp = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d))

    def forward(self, pairs: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        b = pairs.shape[0]
        kv = self.norm_kv(torch.cat([self.null.expand(b, 1, -1), pairs], dim=1))
        pad = torch.cat([torch.zeros(b, 1, dtype=torch.bool, device=valid.device), ~valid], dim=1)
        q = self.norm_q(self.queries).unsqueeze(0).expand(b, -1, -1)
        x = q + self.attn(q, kv, kv, key_padding_mask=pad, need_weights=False)[0]
        return x + self.mlp(x)


class GOAPPolicy(nn.Module):
    def __init__(self, config: GOAPConfig | None = None) -> None:
        super().__init__()
        self.config = c = config or GOAPConfig()
        self.variant = GOAP_VARIANTS.get(c.variant)
        d = c.d_model
        self.cells = nn.Embedding(len(VIEW_NAMES), c.cell_dim)
        self.view = nn.Sequential(
            nn.Conv2d(c.cell_dim, 32, 3, padding=1), nn.ReLU(),
            nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(),
            nn.Conv2d(32, 16, 1), nn.ReLU(), nn.Flatten(),
            nn.Linear(16 * VIEW_ROWS * VIEW_COLS, d),
        )  # fmt: skip
        side = 2 * c.map_radius + 1
        self.map = nn.Sequential(
            nn.Conv2d(c.cell_dim, 16, 3, padding=1), nn.ReLU(),
            nn.Conv2d(16, 32, 3, stride=3), nn.ReLU(),
            nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.ReLU(),
        )  # fmt: skip
        patches = self.map(torch.zeros(1, c.cell_dim, side, side)).shape
        self.map_proj = nn.Linear(64, d)
        self.map_pos = nn.Parameter(torch.randn(patches[2] * patches[3], d) * 0.02)
        self.status = nn.Linear(STATUS_DIM, d)
        self.compass = nn.Linear(COMPASS_DIM, d) if c.compass else None
        if c.goal_compass and not c.compass:
            raise UserError("model.goal_compass reads the compass: set model.compass: true as well")
        self.goal_compass = nn.Linear(GOAL_COMPASS_DIM, d) if c.goal_compass else None
        if c.survival and not c.compass:
            raise UserError("model.survival reads the compass: set model.compass: true as well")
        self.survival = nn.Linear(SURVIVAL_DIM, d) if c.survival else None
        self.register_buffer("goal_targets", torch.tensor(GOAL_TARGETS), persistent=False)
        self.facing = nn.Linear(c.cell_dim, d)
        self.register_buffer("goal_text", _goal_text_features(), persistent=False)
        self.goal = nn.Linear(self.goal_text.shape[1], d)
        self.cls = nn.Parameter(torch.zeros(1, 1, d))
        self.kinds = nn.Embedding(
            8, d
        )  # which input a token is (cls, goal, status, facing, view, map, behaviour)
        if self.variant.behaviour:
            # a narrow embedding of its own: K views per step are the bulk of the input
            self.hist_cells = nn.Embedding(len(VIEW_NAMES), HIST_CELL_DIM)
            self.hist_view = nn.Linear(HIST_CELL_DIM * VIEW_ROWS * VIEW_COLS, d)
            self.hist_status = nn.Linear(STATUS_DIM, d)
            self.hist_action = nn.Embedding(len(ACTIONS) + 1, d) if self.variant.history_actions else None
            self.hist_pos = nn.Parameter(torch.randn(c.history, d) * 0.02)
            self.hist_norm = nn.LayerNorm(d)
            self.behaviour = BehaviourEncoder(d, c.heads, c.behaviour_tokens)
        layer = nn.TransformerEncoderLayer(d, c.heads, 2 * d, dropout=0.0, batch_first=True, norm_first=True)
        self.trunk = nn.TransformerEncoder(layer, c.layers, enable_nested_tensor=False)
        self.head = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, len(ACTIONS)))
        if c.reflex_mode:
            self.mode_head = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, len(REFLEXES)))
            self.mode_embed = nn.Embedding(len(REFLEXES), d)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The action logits [B, 17] (see ``forward_with_mode``)."""
        return self.forward_with_mode(batch)[0]

    def forward_with_mode(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(action logits [B, 17], reflex-mode logits [B, len(REFLEXES)] or None).

        With ``reflex_mode`` the policy factorises p(a | s) into p(m | s) · p(a | s, m), m the
        scripted expert's hidden mode (working on the subgoal, or which survival reflex acts):
        the action head reads h + E[m] with m = ``batch["mode"]`` when given (teacher forcing in
        training) and m = argmax p(m | s) otherwise. Cloning the marginal instead mixes a
        reflex and the subgoal wherever the expert's choice between them was hysteresis the
        observation does not show, and sampling from that mixture dithers between the two.

        batch: view int [B,7,9], status float [B,STATUS_DIM], facing int [B], map int [B,S,S],
        goal int [B]; with behaviour tokens also hist_view int [B,K,7,9], hist_status float
        [B,K,STATUS_DIM], hist_action int [B,K] (``NO_ACTION`` where padded), hist_valid bool
        [B,K]; with the compass also compass float [B, COMPASS_DIM]. → logits [B, 17]."""
        b = batch["view"].shape[0]
        goal = self.goal(self.goal_text[batch["goal"].long()])  # [B, d]
        add = 0 if self.variant.goal_token else goal
        view = self.view(self.cells(batch["view"].long()).permute(0, 3, 1, 2)) + add
        status = self.status(batch["status"].float()) + add
        if self.survival is not None:  # from the map window, status and compass the batch already has
            status = status + self.survival(
                survival_features(batch["map"], batch["status"], batch["compass"])
            )
        facing = self.facing(self.cells(batch["facing"].long()))
        m = self.map(self.cells(batch["map"].long()).permute(0, 3, 1, 2))  # [B, 64, h, w]
        patches = self.map_proj(m.flatten(2).transpose(1, 2)) + self.map_pos
        tokens = [self.cls.expand(b, 1, -1)]
        kinds = [0]
        if self.variant.goal_token:
            tokens.append(goal[:, None])
            kinds.append(1)
        tokens += [status[:, None], facing[:, None], view[:, None], patches]
        kinds += [2, 3, 4] + [5] * patches.shape[1]
        if self.compass is not None:
            compass = self.compass(batch["compass"].float()) + add
            if self.goal_compass is not None:
                target = self.goal_targets[batch["goal"].long()]
                compass = compass + self.goal_compass(goal_compass_features(batch["compass"].float(), target))
            tokens.append(compass[:, None])
            kinds.append(7)
        if self.variant.behaviour:
            hv = self.hist_cells(batch["hist_view"].long()).flatten(2)  # [B, K, 63·E]
            pairs = self.hist_view(hv) + self.hist_status(batch["hist_status"].float()) + self.hist_pos
            if self.hist_action is not None:
                pairs = pairs + self.hist_action(batch["hist_action"].long())
            pairs = self.hist_norm(pairs + (add[:, None] if torch.is_tensor(add) else 0))
            behaviour = self.behaviour(pairs, batch["hist_valid"].bool())
            tokens.append(behaviour)
            kinds += [6] * behaviour.shape[1]
        x = torch.cat(tokens, dim=1) + self.kinds(torch.tensor(kinds, device=goal.device))
        h = self.trunk(x)[:, 0]
        if not self.config.reflex_mode:
            return self.head(h), None
        mode_logits = self.mode_head(h)
        mode = batch["mode"].long() if "mode" in batch else mode_logits.argmax(-1)
        return self.head(h + self.mode_embed(mode)), mode_logits

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def save(self, directory: str | Path, meta: dict | None = None) -> Path:
        return save_policy(self, directory, "goap", asdict(self.config), meta)

    def save_pretrained(self, directory: str | Path, **_kwargs) -> None:
        """The name ``telos.checkpoint.save_checkpoint`` calls."""
        self.save(directory)

    @classmethod
    def load(cls, directory: str | Path) -> GOAPPolicy:
        config = read_policy_config(
            directory, "goap", "train one with `telos train recipes/agents/goap_crafter.yaml` (its final/)"
        )
        known = {f.name for f in fields(GOAPConfig)}
        saved = {"compass": False, **config.get("policy", {})}  # policies saved before the compass had none
        policy = cls(GOAPConfig(**{k: v for k, v in saved.items() if k in known}))
        load_weights(policy, directory)
        return policy.eval()


class GOAPController(ClonedController):
    """Runs a ``GOAPPolicy``: keeps the agent's own map and the last K (observation, action)
    pairs exactly as ``telos data crafter-goap`` recorded them, and reports the stations it
    remembers to the planner, as the scripted controller does."""

    name = "goap"

    def __init__(
        self,
        path: str | Path | None = None,
        *,
        policy: GOAPPolicy | None = None,
        temperature: float = 0.0,
        seed: int = 0,
        max_steps_without_progress: int = 300,
    ) -> None:
        if (path is None) == (policy is None):
            raise UserError("GOAPController needs a policy directory or a policy")
        self.path = str(path) if path is not None else "<in memory>"
        self.policy = GOAPPolicy.load(path) if policy is None else policy
        super().__init__(
            temperature=temperature, seed=seed, max_steps_without_progress=max_steps_without_progress
        )

    def reset(self) -> None:
        super().reset()
        self.map = SpatialMap()
        self.history: deque[tuple[np.ndarray, np.ndarray, int]] = deque(maxlen=self.policy.config.history)

    def known_stations(self) -> frozenset[str]:
        return stations_in_reach(self.map)

    def remember(self, before: AgentView | None, action: int | None, after: AgentView) -> None:
        if before is not None and action is not None:
            inv, daylight, sleeping = encode_status(before)
            status = status_vector(inv, np.array(daylight), np.array(sleeping))
            self.history.append((encode_view(before.local_view), status, int(action)))
            self.map.apply(before, ACTIONS[int(action)])
        self.map.observe(after)

    def inputs(self, view: AgentView) -> dict[str, torch.Tensor]:
        """The batch of one the policy reads for ``view`` (public: tests compare it with the data)."""
        c = self.policy.config
        inv, daylight, sleeping = encode_status(view)
        batch = {
            "view": torch.from_numpy(encode_view(view.local_view).astype(np.int64))[None],
            "status": torch.from_numpy(status_vector(inv, np.array(daylight), np.array(sleeping)))[None],
            "facing": torch.tensor([encode_facing(view.facing)]),
            "map": torch.from_numpy(encode_map(self.map, c.map_radius).astype(np.int64))[None],
            "goal": torch.tensor([self._goal]),
        }
        if c.compass:
            batch["compass"] = torch.from_numpy(compass_vector(encode_compass(self.map)))[None]
        if self.policy.variant.behaviour:
            k, n = c.history, len(self.history)
            hv = np.zeros((k, VIEW_ROWS, VIEW_COLS), dtype=np.int64)
            hs = np.zeros((k, STATUS_DIM), dtype=np.float32)
            ha = np.full(k, NO_ACTION, dtype=np.int64)
            valid = np.zeros(k, dtype=bool)
            for i, (v, s, a) in enumerate(self.history):  # oldest first, right-aligned
                j = k - n + i
                hv[j], hs[j], ha[j], valid[j] = v, s, a, True
            batch.update(
                hist_view=torch.from_numpy(hv)[None], hist_status=torch.from_numpy(hs)[None],
                hist_action=torch.from_numpy(ha)[None], hist_valid=torch.from_numpy(valid)[None],
            )  # fmt: skip
        return batch

    @torch.no_grad()
    def logits(self, view: AgentView) -> torch.Tensor:
        return self.policy(self.inputs(view))[0]

    def describe(self) -> dict:
        return {
            **super().describe(),
            "path": self.path,
            "variant": self.policy.config.variant,
            "parameters": self.policy.num_parameters(),
        }
