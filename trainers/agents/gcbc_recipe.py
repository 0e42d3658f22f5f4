"""The goal-conditioned behaviour-cloning recipe (``trainer: gcbc``) and its semantic checks."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

from telos.errors import UserError
from telos.schema import flag, number, text
from trainers.common.checks import about, check_run_options
from trainers.common.fields import (
    EvalEvery,
    KeepLast,
    LearningRate,
    MaxGradNorm,
    Resume,
    RunName,
    SaveEvery,
    WeightDecay,
)
from trainers.common.recipe_data import is_recipe_data, parse_recipe_data

# what `telos data crafter-play` writes; `facing` is optional (used as an input when present)
PLAY_ARRAYS = ("views", "inventory", "actions", "commanded", "noise", "events", "episode")


@dataclass
class GCBCDataSection:
    # not a local_path: a missing file should say how to make it, which check_gcbc does
    path: Annotated[
        str, text("play data (.npz from `telos data crafter-play`, or tiny-data:crafter-play/play.npz)")
    ] = "runs/crafter-play/play.npz"
    horizon: Annotated[
        int, number("a step is labelled with the first subgoal reached within N steps", ge=1)
    ] = 32
    val_fraction: Annotated[
        float, number("episodes held out whole (steps of one episode are correlated)", gt=0, lt=1)
    ] = 0.1
    commanded_fallback: Annotated[
        bool, flag("label unreached stretches with the scripted controller's goal")
    ] = True


@dataclass
class GCBCModelSection:
    embed_dim: Annotated[int, number("embedding width of a view cell", ge=1)] = 16
    channels: Annotated[int, number("conv channels (the 1×1 conv halves them)", ge=2)] = 32
    hidden: Annotated[int, number("MLP width", ge=1)] = 128
    goal_dim: Annotated[int, number("goal embedding width", ge=1)] = 32
    inventory_dim: Annotated[int, number("inventory embedding width", ge=1)] = 64


@dataclass
class GCBCTrainSection:
    steps: Annotated[int, number("optimizer steps", ge=1)] = 3000
    batch_size: Annotated[int, number("steps of play per batch", ge=1)] = 256
    lr: LearningRate = 1e-3
    weight_decay: WeightDecay = 1e-4
    max_grad_norm: MaxGradNorm = 1.0
    save_every: SaveEvery = 500
    keep_last: KeepLast = 2
    eval_every: EvalEvery = 500


@dataclass
class GCBCRecipe:
    trainer: Literal["gcbc"]
    run_dir: Annotated[str, text("run directory")] = "runs/gcbc-crafter"
    name: RunName = "gcbc"
    seed: Annotated[int, number("seeds init and batch order", ge=0)] = 0
    data: Annotated[GCBCDataSection, text("play data and its hindsight labels")] = field(
        default_factory=GCBCDataSection
    )
    model: Annotated[GCBCModelSection, text("the conv policy's shape")] = field(
        default_factory=GCBCModelSection
    )
    train: Annotated[GCBCTrainSection, text("optimization")] = field(default_factory=GCBCTrainSection)
    report_to: Annotated[list[str], text("trackers (any accelerate knows), or none")] = field(
        default_factory=list
    )
    resume: Resume = None


def play_data_hint(path: str) -> str:
    return f"make it with `telos data crafter-play --out {path}`"


def check_gcbc(recipe: GCBCRecipe) -> None:
    """The play data exists (or is a known tiny-data build); trackers and resume as every trainer."""
    with about("data.path"):
        if is_recipe_data(recipe.data.path):
            parse_recipe_data(recipe.data.path)  # the name only: the data is built at train time
        else:
            check_play_file(recipe.data.path)
    check_run_options(recipe)


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
