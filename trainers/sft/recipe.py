"""The SFT recipe (``trainer: sft``): fine-tune a causal LM on (prompt, worked solution) pairs.

The prompt is built exactly as the RL recipes build it (same ``data:`` keys: template, chat),
so an SFT run followed by an RL run on the same data trains and is evaluated on one prompt
form. The target is a row column, ``solution`` by default: GSM8K's worked answer, MATH's
solution (a ``#### answer`` line appended), reasoning-gym ``gsm_symbolic``'s ``answer_cot``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Literal

from telos.errors import UserError
from telos.schema import flag, number, text
from trainers.common.checks import about, check_common
from trainers.common.fields import (
    KeepLast,
    LearningRate,
    MaxGradNorm,
    OutputDir,
    ReportTo,
    Resume,
    RunName,
    SaveEvery,
    WarmupSteps,
    WeightDecay,
)
from trainers.common.math_data import DataSection, check_math_data
from trainers.common.model_section import ModelSection


@dataclass
class SFTDataSection(DataSection):
    target: Annotated[str, text("the row column trained on (after the prompt)")] = "solution"


@dataclass
class SFTTrainSection:
    steps: Annotated[int, number("optimizer steps", ge=1)] = 200
    batch_size: Annotated[int, number("examples per step", ge=1)] = 8
    lr: LearningRate = 1e-5
    warmup_steps: WarmupSteps = 10
    weight_decay: WeightDecay = 0.0
    max_grad_norm: MaxGradNorm = 1.0
    seed: Annotated[int, number("seeds the batch order and the data generators", ge=0)] = 0
    save_every: SaveEvery = 50
    keep_last: KeepLast = 1
    max_length: Annotated[int, number("examples longer than this many tokens are dropped", ge=8)] = 512
    eval_before_training: Annotated[bool, flag("greedy held-out accuracy of the start model too")] = True
    eval_max_tokens: Annotated[int, number("tokens generated per held-out answer", ge=1)] = 256
    schedule_steps: Annotated[
        int | None,
        number("steps the warmup + cosine LR schedule spans (null: steps); set by self-training runs "
               "whose iterations continue one optimizer", ge=1),
    ] = None  # fmt: skip


@dataclass
class SFTRecipe:
    trainer: Literal["sft"]
    model: Annotated[ModelSection, text("the model to fine-tune")]
    data: Annotated[SFTDataSection, text("problems with worked solutions")]
    verifier: Annotated[
        str, text("reward function grading held-out answers (registered or module:function)")
    ] = "numeric"
    name: RunName = "sft"
    output_dir: OutputDir = None
    resume: Resume = None
    report_to: ReportTo = field(default_factory=list)
    train: Annotated[SFTTrainSection, text("optimization")] = field(default_factory=SFTTrainSection)

    @property
    def run_dir(self) -> str:
        return self.output_dir or f"runs/{self.name}"


def check_sft(recipe: SFTRecipe) -> None:
    """Data specs and template, the target column on the first rows, the verifier, the model."""
    from envs.math.sources import load_rows
    from rewards.functions import resolve_reward_function

    check_math_data(recipe.data)
    with about("verifier"):
        resolve_reward_function(recipe.verifier)
    spec = recipe.data.train
    if not spec.startswith(("hf:", "tiny-data:")):  # a hub dataset is not read by a check
        with about("data.train"):
            rows = load_rows(spec, limit=4, seed=recipe.train.seed)
        missing = [i for i, r in enumerate(rows) if not isinstance(r.get(recipe.data.target), str)]
        if missing:
            raise UserError(
                f"'data.target' {recipe.data.target!r}: row {missing[0]} of {spec} has no such text column; "
                f"columns: {', '.join(rows[missing[0]])}"
            )
    check_common(recipe)
