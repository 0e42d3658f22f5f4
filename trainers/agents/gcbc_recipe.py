"""The goal-conditioned behaviour-cloning recipe (``trainer: gcbc``) and its semantic checks."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from telos.errors import UserError
from trainers.common.recipe_data import is_recipe_data, parse_recipe_data

# what `telos data crafter-play` writes; `facing` is optional (used as an input when present)
PLAY_ARRAYS = ("views", "inventory", "actions", "commanded", "noise", "events", "episode")


@dataclass
class GCBCDataSection:
    # not a path_field: a missing file should say how to make it, which check_gcbc does;
    # tiny-data:crafter-play/play.npz is built on first use by `telos train` (trainers/common/recipe_data.py)
    path: str = "runs/crafter-play/play.npz"
    horizon: int = 32  # a step is labelled with the first subgoal reached within this many steps
    val_fraction: float = 0.1  # of episodes, held out whole (steps of one episode are correlated)
    commanded_fallback: bool = True  # label unreached stretches with the scripted controller's goal


@dataclass
class GCBCModelSection:
    embed_dim: int = 16
    channels: int = 32
    hidden: int = 128
    goal_dim: int = 32
    inventory_dim: int = 64


@dataclass
class GCBCTrainSection:
    steps: int = 3000
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 1e-4
    max_grad_norm: float = 1.0
    save_every: int = 500
    keep_last: int = 2
    eval_every: int = 500  # 0 = only at the end


@dataclass
class GCBCRecipe:
    trainer: Literal["gcbc"]
    run_dir: str = "runs/gcbc-crafter"
    name: str = "gcbc"
    seed: int = 0
    data: GCBCDataSection = field(default_factory=GCBCDataSection)
    model: GCBCModelSection = field(default_factory=GCBCModelSection)
    train: GCBCTrainSection = field(default_factory=GCBCTrainSection)
    report_to: list[str] = field(default_factory=list)
    resume: str | None = None  # "latest" or a checkpoint directory


def play_data_hint(path: str) -> str:
    return f"make it with `telos data crafter-play --out {path}`"


def check_gcbc(recipe: GCBCRecipe) -> None:
    """Checks a type system cannot express, made before any data is loaded."""
    # lazy: trainers.run imports trainers.rl.recipe, which imports this module
    from telos.checkpoint import resolve_resume
    from telos.tracking import normalize_report_to
    from trainers.run import _about, _at_least

    d, m, t = recipe.data, recipe.model, recipe.train
    positive = {
        "data.horizon": d.horizon,
        "model.embed_dim": m.embed_dim,
        "model.hidden": m.hidden,
        "model.goal_dim": m.goal_dim,
        "model.inventory_dim": m.inventory_dim,
        "train.steps": t.steps,
        "train.batch_size": t.batch_size,
        "train.save_every": t.save_every,
        "train.keep_last": t.keep_last,
    }
    _at_least(positive, 1)
    _at_least({"model.channels": m.channels}, 2)  # the 1×1 conv halves it
    _at_least({"train.eval_every": t.eval_every, "train.weight_decay": t.weight_decay}, 0)
    if not t.lr > 0:
        raise UserError(f"'train.lr' must be > 0, got {t.lr}")
    if not t.max_grad_norm > 0:
        raise UserError(f"'train.max_grad_norm' must be > 0, got {t.max_grad_norm}")
    if not 0.0 < d.val_fraction < 1.0:
        raise UserError(f"'data.val_fraction' must be in (0, 1), got {d.val_fraction}")
    with _about("data.path"):
        if is_recipe_data(d.path):
            parse_recipe_data(d.path)  # the name only: the data is built at train time
        else:
            check_play_file(d.path)
    with _about("report_to"):
        normalize_report_to(recipe.report_to)
    with _about("resume"):
        resolve_resume(recipe.resume, Path(recipe.run_dir))


def check_play_file(path: str) -> None:
    """The file exists and is an .npz holding the play arrays (reads only the archive's index)."""
    import zipfile

    import numpy as np

    p = Path(path).expanduser()
    if not p.is_file():
        raise UserError(f"play data not found: {path}; {play_data_hint(path)}")
    try:
        loaded = np.load(p)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise UserError(f"{path} is not an .npz archive ({e}); {play_data_hint(path)}") from None
    if not hasattr(loaded, "files"):  # a plain .npy array
        raise UserError(f"{path} is a single array, not an .npz archive; {play_data_hint(path)}")
    names = set(loaded.files)
    loaded.close()
    missing = [a for a in PLAY_ARRAYS if a not in names]
    if missing:
        raise UserError(f"{path} lacks arrays {', '.join(missing)}; {play_data_hint(path)}")
