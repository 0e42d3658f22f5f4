"""The reward-model recipe (``trainer: rm``): outcome (BT), goal-conditioned (GC-RM) or process RM."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from telos.config import path_field
from telos.errors import UserError
from trainers.common.model_section import ModelSection
from trainers.common.recipe_data import is_recipe_data, parse_recipe_data


@dataclass
class RMDataSection:
    # preference pairs {prompt, chosen, rejected[, margin]} (bt, gcrm) or stepwise rows
    # {prompt, completions, labels} (prm): a .jsonl/.json/.parquet file, hf:REPO[:CONFIG][@SPLIT],
    # or tiny-data:BUILD/FILE (built on first use at train time: trainers/common/recipe_data.py)
    train: str = path_field(kind="data")
    test: str | None = path_field(None, kind="data")
    num_train: int | None = None
    num_test: int | None = 500
    max_length: int | None = 1024  # longer examples are dropped (as TRL does) and counted

    def __post_init__(self) -> None:
        # a tiny-data name is checked here, at `telos check`; the data is built by `telos train`
        for key in ("train", "test"):
            value = getattr(self, key)
            if is_recipe_data(value):
                try:
                    parse_recipe_data(value)
                except UserError as e:
                    raise UserError(f"'data.{key}': {e}") from None


@dataclass
class RMSection:
    kind: Literal["bt", "gcrm", "prm"] = "bt"
    use_margin: bool = True  # subtract a row's `margin` inside the BT sigmoid when present
    center_coef: float = 0.0  # TRL's center_rewards_coefficient (e.g. 0.01); 0 = off
    contrastive_weight: float = 0.5  # gcrm: β, the weight of the contrastive loss added to BT
    position_pairs: int = 16  # gcrm: source/goal (and chosen/rejected) positions sampled per pair
    contrastive_strategy: Literal["cosine", "cosine_avg"] = "cosine"  # official options; paper: cosine
    prm_loss: Literal["soft_ce", "hard_ce", "mse"] = "soft_ce"
    step_separator: str = "\n"  # prm: appended to every step; the label sits on its last token
    goal_examples: int = 0  # gcrm: preferred training responses averaged into g (0 = all)


@dataclass
class RMTrainSection:
    epochs: int = 1
    steps: int = 0  # 0 = epochs × (pairs / batch_size)
    batch_size: int = 16  # pairs (or stepwise rows) per optimizer step, across processes
    micro_batch_size: int = 16
    lr: float = 1e-5
    lr_scheduler: Literal["constant", "cosine", "linear"] = "linear"
    warmup_steps: int = 0
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    seed: int = 0
    save_every: int = 100
    keep_last: int = 2
    eval_every: int = 0  # 0 = only at the end


@dataclass
class RMRecipe:
    trainer: Literal["rm"]
    model: ModelSection
    data: RMDataSection
    name: str = "rm"
    output_dir: str | None = None
    resume: str | None = None
    report_to: list[str] = field(default_factory=list)
    rm: RMSection = field(default_factory=RMSection)
    train: RMTrainSection = field(default_factory=RMTrainSection)

    @property
    def run_dir(self) -> str:
        return self.output_dir or f"runs/{self.name}"
