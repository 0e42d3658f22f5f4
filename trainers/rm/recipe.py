"""The reward-model recipe (``trainer: rm``): outcome (BT), goal-conditioned (GC-RM) or process RM."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Literal

from telos.errors import UserError
from telos.schema import checked_by, flag, local_path, number, text
from trainers.common.checks import about, check_common
from trainers.common.fields import (
    EvalEvery,
    KeepLast,
    LearningRate,
    LrScheduler,
    MaxGradNorm,
    OutputDir,
    Resume,
    RunName,
    SaveEvery,
    WarmupSteps,
    WeightDecay,
)
from trainers.common.model_section import ModelSection
from trainers.common.recipe_data import is_recipe_data, parse_recipe_data


def _recipe_data_name(value: str | None) -> None:
    """A tiny-data name is checked at `telos check`; the data is built by `telos train`."""
    if is_recipe_data(value):
        parse_recipe_data(value)


_RM_DATA = (
    "preference pairs {prompt, chosen, rejected[, margin]} (bt, gcrm) or stepwise rows {prompt, "
    "completions, labels} (prm): .jsonl/.json/.parquet, hf:REPO[:CONFIG][@SPLIT] or tiny-data:BUILD/FILE (recipe-data:BUILD/FILE)"
)


@dataclass
class RMDataSection:
    train: Annotated[str, text(_RM_DATA), local_path("data"), checked_by(_recipe_data_name)]
    test: Annotated[
        str | None, text("held-out rows, same forms"), local_path("data"), checked_by(_recipe_data_name)
    ] = None
    num_train: Annotated[int | None, number("use the first N training rows (null: all)", ge=1)] = None
    num_test: Annotated[int | None, number("held-out rows evaluated (null: all)", ge=1)] = 500
    max_length: Annotated[
        int | None, number("longer examples are dropped (as TRL does) and counted; null: no cap", ge=2)
    ] = 1024


@dataclass
class RMSection:
    kind: Annotated[
        Literal["bt", "gcrm", "prm"], text("outcome (Bradley–Terry), goal-conditioned, process")
    ] = "bt"
    train_layers: Annotated[
        int | None,
        number("train only the top N transformer layers and the head (embeddings frozen); null = all", ge=1),
    ] = None
    use_margin: Annotated[bool, flag("subtract a row's `margin` inside the BT sigmoid when present")] = True
    center_coef: Annotated[float, number("TRL's center_rewards_coefficient (e.g. 0.01); 0 = off", ge=0)] = 0.0
    contrastive_weight: Annotated[
        float, number("gcrm: β, weight of the contrastive loss added to BT", ge=0)
    ] = 0.5
    position_pairs: Annotated[
        int, number("gcrm: source/goal (and chosen/rejected) positions sampled per pair", ge=1)
    ] = 16
    contrastive_strategy: Annotated[
        Literal["cosine", "cosine_avg"], text("official options; paper: cosine")
    ] = "cosine"
    prm_loss: Annotated[Literal["soft_ce", "hard_ce", "mse"], text("prm: loss on the step labels")] = (
        "soft_ce"
    )
    step_separator: Annotated[str, text("prm: appended to every step; the label sits on its last token")] = (
        "\n"
    )
    goal_examples: Annotated[int, number("gcrm: preferred responses averaged into g (0 = all)", ge=0)] = 0


@dataclass
class RMTrainSection:
    epochs: Annotated[int, number("passes over the data (when steps is 0)", ge=1)] = 1
    steps: Annotated[int, number("optimizer steps; 0 = epochs × (pairs / batch_size)", ge=0)] = 0
    batch_size: Annotated[
        int, number("pairs (or stepwise rows) per optimizer step, across processes", ge=1)
    ] = 16
    micro_batch_size: Annotated[int, number("examples per forward/backward", ge=1)] = 16
    lr: LearningRate = 1e-5
    lr_scheduler: LrScheduler = "linear"
    warmup_steps: WarmupSteps = 0
    weight_decay: WeightDecay = 0.0
    max_grad_norm: MaxGradNorm = 1.0
    seed: Annotated[int, number("seeds data order and the head's init", ge=0)] = 0
    save_every: SaveEvery = 100
    keep_last: KeepLast = 2
    eval_every: EvalEvery = 0


@dataclass
class RMRecipe:
    trainer: Literal["rm"]
    model: Annotated[ModelSection, text("the base LM the head goes on")]
    data: Annotated[RMDataSection, text("pairs or step labels")]
    name: RunName = "rm"
    output_dir: OutputDir = None
    resume: Resume = None
    report_to: Annotated[list[str], text("trackers (any accelerate knows), or none")] = field(
        default_factory=list
    )
    rm: Annotated[RMSection, text("which reward model and its loss")] = field(default_factory=RMSection)
    train: Annotated[RMTrainSection, text("optimization")] = field(default_factory=RMTrainSection)

    @property
    def run_dir(self) -> str:
        return self.output_dir or f"runs/{self.name}"


def check_rm(recipe: RMRecipe) -> None:
    """Math-problem sources hold no preferences; model, trackers and resume as every trainer."""
    from envs.math.sources import parse_spec

    for key in ("train", "test"):
        spec = getattr(recipe.data, key)
        if spec is not None:
            with about(f"data.{key}"):
                if parse_spec(spec).scheme in ("procedural", "reasoning-gym"):
                    raise UserError(
                        f"{spec!r} holds math problems, not preference pairs or step labels; valid: a "
                        ".jsonl/.json/.parquet file or hf:REPO (make one with `telos data preferences`)"
                    )
    check_common(recipe)
