"""Reading ``telos data crafter-goap`` output and cutting it into GOAP training batches."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from agents.encoding import ACTIONS, COMPASS_TARGETS, GOALS, REFLEXES, VIEW_NAMES
from agents.goap import NO_ACTION, compass_vector, status_vector
from telos.errors import UserError

META = "meta.json"


def goap_data_hint(path: str) -> str:
    return f"make it with `telos data crafter-goap --steps 200000 --out {path}`"


def goap_dir(path: str) -> Path:
    """The data directory for ``path`` (the directory or its meta.json), checked to be complete."""
    p = Path(path).expanduser()
    if p.name == META:
        p = p.parent
    if not (p / META).is_file():
        what = "no directory" if not p.exists() else "no meta.json in (an unfinished or other directory)"
        raise UserError(f"goal-observation-action data: {what} {path}; {goap_data_hint(path)}")
    return p


@dataclass
class GOAPData:
    arrays: dict[str, np.ndarray]  # in memory, one row per step
    status: np.ndarray  # float32 [T, STATUS_DIM]
    start: np.ndarray  # int64 [T]: the first row of each row's episode
    meta: dict

    def __len__(self) -> int:
        return len(self.arrays["actions"])


def load_goap_data(path: str, max_steps: int | None = None) -> GOAPData:
    """The arrays (memory-mapped, then the first ``max_steps`` rows' whole episodes read into
    memory), checked for shape, range and episode order."""
    d = goap_dir(path)
    meta = json.loads((d / META).read_text())
    names = meta.get("arrays", [])
    missing = [n for n in ("views", "inventory", "daylight", "sleeping", "facing", "map", "actions", "goal",
                           "reflex", "noise", "episode") if n not in names or not (d / f"{n}.npy").is_file()]  # fmt: skip
    if missing:
        raise UserError(f"{d} lacks arrays {', '.join(missing)}; {goap_data_hint(path)}")
    mm = {n: np.load(d / f"{n}.npy", mmap_mode="r") for n in names if (d / f"{n}.npy").is_file()}
    t = len(mm["actions"])
    if t == 0 or t != meta.get("steps"):
        raise UserError(f"{d}: {t} steps on disk, meta.json says {meta.get('steps')}; {goap_data_hint(path)}")
    if max_steps is not None and max_steps < t:  # whole episodes: stop where row max_steps-1's ends
        ep = np.asarray(mm["episode"])
        after = np.flatnonzero(ep[max_steps:] != ep[max_steps - 1])
        t = max_steps + (int(after[0]) if len(after) else t - max_steps)
    arrays = {n: np.array(a[:t]) for n, a in mm.items()}  # a copy in memory: batches gather from it
    if "expert" not in arrays:  # data without the expert's own choice: noise steps have no label
        arrays["expert"] = np.where(arrays["noise"], -1, arrays["actions"]).astype(np.int8)
        arrays["learner"] = np.zeros(t, dtype=bool)
    side = 2 * meta["map_radius"] + 1
    shapes = {"views": (t, 7, 9), "inventory": (t, 16), "map": (t, side, side),
              "compass": (t, len(COMPASS_TARGETS), 2)}  # fmt: skip
    for n, a in arrays.items():
        if a.shape != shapes.get(n, (t,)):
            raise UserError(f"{d}: '{n}' has shape {list(a.shape)}, expected {list(shapes.get(n, (t,)))}")
    ranges = {"views": len(VIEW_NAMES), "map": len(VIEW_NAMES), "facing": len(VIEW_NAMES),
              "actions": len(ACTIONS), "reflex": len(REFLEXES), "expert": len(ACTIONS)}  # fmt: skip
    for n, hi in ranges.items():
        a = arrays[n]
        lo = -1 if n == "expert" else 0
        if a.min() < lo or a.max() >= hi:
            raise UserError(f"{d}: '{n}' values must be in [{lo}, {hi - 1}], got {a.min()}..{a.max()}")
    if arrays["goal"].min() < -1 or arrays["goal"].max() >= len(GOALS):
        raise UserError(f"{d}: 'goal' values must be in [-1, {len(GOALS) - 1}]")
    ep = arrays["episode"]
    change = np.flatnonzero(np.diff(ep) != 0) + 1
    if len(np.unique(ep)) != len(change) + 1:
        raise UserError(f"{d}: 'episode' ids must form contiguous runs (steps in time order)")
    starts = np.zeros(t, dtype=np.int64)
    starts[change] = change
    start = np.maximum.accumulate(starts)
    status = status_vector(arrays["inventory"], arrays["daylight"], arrays["sleeping"])
    return GOAPData(arrays, status, start, meta)


def concat(parts: list[GOAPData]) -> GOAPData:
    """Several data directories as one (DAgger's aggregated data): episode ids and starts offset."""
    if len(parts) == 1:
        return parts[0]
    radii = {p.meta["map_radius"] for p in parts}
    if len(radii) > 1:
        raise UserError(f"data directories have different --map-radius values {sorted(radii)}; use one")
    arrays: dict[str, list[np.ndarray]] = {}
    starts, rows, episodes = [], 0, 0
    for p in parts:
        for n, a in p.arrays.items():
            arrays.setdefault(n, []).append(a + episodes if n == "episode" else a)
        starts.append(p.start + rows)
        rows += len(p)
        episodes = int(max(a.max() for a in arrays["episode"])) + 1
    common = set.intersection(*(set(p.arrays) for p in parts))
    meta = {**parts[0].meta, "steps": rows, "parts": [p.meta for p in parts]}
    return GOAPData(
        {n: np.concatenate(v) for n, v in arrays.items() if n in common},
        np.concatenate([p.status for p in parts]),
        np.concatenate(starts),
        meta,
    )


class GOAPBatcher:
    """Rows → (the batch ``GOAPPolicy.forward`` reads, the expert's actions): the current step
    and, right-aligned, its last ``history`` steps of the same episode with the actions that were
    executed (the window the controller keeps at run time).

    ``action_dropout``: in training batches each history action is hidden (``NO_ACTION``) with
    this probability, so the policy cannot lean on "repeat the last action" alone — the copycat
    failure of cloning with action history (it keeps drinking at full drink because the last 16
    actions were ``do``)."""

    def __init__(
        self, data: GOAPData, history: int, with_history: bool, action_dropout: float = 0.0, seed: int = 0,
        with_compass: bool = False,
    ) -> None:  # fmt: skip
        a = data.arrays
        if with_compass and "compass" not in a:
            raise UserError(
                "this data has no compass (made before it); make it again with `telos data crafter-goap` "
                "or train with model.compass=false"
            )
        self.history, self.with_history = history, with_history
        self.action_dropout = action_dropout
        self._generator = torch.Generator().manual_seed(seed)
        self.t = {
            "view": torch.from_numpy(a["views"].astype(np.int64)),
            "status": torch.from_numpy(data.status),
            "facing": torch.from_numpy(a["facing"].astype(np.int64)),
            "map": torch.from_numpy(a["map"]),
            "goal": torch.from_numpy(np.maximum(a["goal"], 0).astype(np.int64)),
            "actions": torch.from_numpy(a["actions"].astype(np.int64)),  # executed: the history
            "labels": torch.from_numpy(np.maximum(a["expert"], 0).astype(np.int64)),  # the expert's choice
            "reflex": torch.from_numpy(a["reflex"].astype(np.int64)),  # the expert's mode: a target only
        }
        if with_compass:
            self.t["compass"] = torch.from_numpy(compass_vector(np.asarray(a["compass"])))
        self.start = torch.from_numpy(data.start)

    def __call__(
        self, rows: np.ndarray, training: bool = False
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        i = torch.from_numpy(np.asarray(rows, dtype=np.int64))
        t = self.t
        batch = {k: t[k][i] for k in ("view", "status", "facing", "goal", "compass", "reflex") if k in t}
        batch["map"] = t["map"][i].long()
        if self.with_history:
            k = self.history
            idx = i[:, None] - k + torch.arange(k)[None]  # [B, K], oldest first
            valid = idx >= self.start[i][:, None]
            idx = idx.clamp(min=0)
            batch["hist_view"] = t["view"][idx]
            batch["hist_status"] = t["status"][idx] * valid[..., None]
            shown = valid
            if training and self.action_dropout > 0:
                shown = valid & (torch.rand(valid.shape, generator=self._generator) >= self.action_dropout)
            batch["hist_action"] = torch.where(shown, t["actions"][idx], NO_ACTION)
            batch["hist_view"] = batch["hist_view"] * valid[..., None, None]
            batch["hist_valid"] = valid
        return batch, t["labels"][i]
