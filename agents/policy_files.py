"""Saving and loading a learned Crafter policy as a directory that describes itself.

``model.safetensors`` + ``config.json``: the kind of policy, its architecture, the encodings'
name lists it was trained with (so a policy trained under another encoding is refused rather
than silently misread) and ``meta`` (how it was trained). Shared by GCBC and GOAP.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from torch import nn

from agents.encoding import ACTIONS, GOALS, INVENTORY_KEYS, VIEW_NAMES
from telos.errors import UserError

WEIGHTS = "model.safetensors"
CONFIG = "config.json"


def encodings() -> dict[str, list]:
    return {
        "view_names": list(VIEW_NAMES),
        "inventory_keys": list(INVENTORY_KEYS),
        "goals": [list(g) for g in GOALS],
        "actions": list(ACTIONS),
    }


def save_policy(module: nn.Module, directory: str | Path, kind: str, policy: dict, meta: dict | None) -> Path:
    """Weights, then config.json (each written to a temporary name and renamed into place)."""
    from safetensors.torch import save_file

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f".{WEIGHTS}.{os.getpid()}.tmp"
    save_file({k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}, str(tmp))
    os.replace(tmp, out / WEIGHTS)
    config = {"kind": kind, "policy": policy, **encodings(), "meta": meta or {}}
    tmp = out / f".{CONFIG}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(config, indent=2))
    os.replace(tmp, out / CONFIG)
    return out


def read_policy_config(directory: str | Path, kind: str, hint: str) -> dict:
    """config.json of a ``kind`` policy directory, its encodings checked against today's."""
    d = Path(directory)
    if not (d / CONFIG).is_file() or not (d / WEIGHTS).is_file():
        raise UserError(
            f"not a {kind.upper()} policy directory (needs {CONFIG} and {WEIGHTS}): {directory}; {hint}"
        )
    config = json.loads((d / CONFIG).read_text())
    found = config.get("kind", "gcbc")
    if found != kind:
        raise UserError(f"{d} holds a {found} policy, not {kind}; load it as {found}:{directory}")
    for key, value in encodings().items():
        if config.get(key) != value:
            raise UserError(f"{d / CONFIG}: '{key}' differs from this version's encoding; retrain the policy")
    return config


def load_weights(module: nn.Module, directory: str | Path) -> None:
    from safetensors.torch import load_file

    d = Path(directory)
    try:
        module.load_state_dict(load_file(str(d / WEIGHTS)))
    except RuntimeError as e:
        raise UserError(f"{d / WEIGHTS} does not match {d / CONFIG}: {str(e).splitlines()[0]}") from None
