"""The planner-SFT recipe (``trainer: planner_sft``): teach a causal LM to write Crafter plans.

Data are generated from the real game (states of ``CrafterEnv`` episodes) and labelled by the
oracle, so the recipe needs no files; ``model.name_or_path: tiny`` builds a tokenizer and a
small model from ``model.tiny`` on the generated text (offline), anything else is a model
directory or hub id to fine-tune.
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
    Resume,
    RunName,
    SaveEvery,
    WarmupSteps,
    WeightDecay,
)
from trainers.common.model_section import ModelSection


def _probability(description: str):
    return number(description, ge=0, le=1)


@dataclass
class PlannerDataSection:
    suite: Annotated[str, text("tasks: a shipped suite name or a suite .yaml")] = "crafter-techtree"
    num_train: Annotated[int, number("(prompt, plan) training examples", ge=1)] = 12000
    num_test: Annotated[int, number("held-out examples, from other worlds", ge=1)] = 200
    max_copies: Annotated[
        int, number("training examples sharing one (task, inventory, stations) state; 0 = no cap", ge=0)
    ] = 8
    episodes: Annotated[
        int, number("Crafter worlds the training states come from (test: a quarter)", ge=1)
    ] = 8
    states_per_episode: Annotated[int, number("views recorded along a random walk in each world", ge=1)] = 40
    steps_between_states: Annotated[int, number("random actions between recorded views, at most", ge=1)] = 6
    stations_prob: Annotated[
        float, _probability("a station the done part of the plan placed is in reach")
    ] = 0.5
    extra_item_prob: Annotated[
        float, _probability("chance of each further item beyond the plan's progress")
    ] = 0.4
    failure_prob: Annotated[float, _probability("the prompt says why the last plan failed")] = 0.3
    memory_prob: Annotated[float, _probability("the prompt holds 1–2 retrieved plans for the same task")] = (
        0.5
    )
    instructions: Annotated[bool, flag("keep the rules paragraph in the prompt (useful for real LMs)")] = (
        False
    )
    max_memories: Annotated[int, number("retrieved plans in a prompt, at most", ge=0)] = 2
    seed: Annotated[int, number("seeds the worlds and the sampling", ge=0)] = 0


@dataclass
class PlannerTrainSection:
    steps: Annotated[int, number("optimizer steps", ge=1)] = 1100
    batch_size: Annotated[int, number("examples per step", ge=1)] = 32
    lr: LearningRate = 3e-3
    warmup_steps: WarmupSteps = 30
    weight_decay: WeightDecay = 0.0
    max_grad_norm: MaxGradNorm = 1.0
    seed: Annotated[int, number("seeds init and batch order", ge=0)] = 0
    save_every: SaveEvery = 200
    keep_last: KeepLast = 1
    eval_max_tokens: Annotated[int, number("tokens generated per held-out plan", ge=1)] = 96
    eval_batch_size: Annotated[int, number("held-out plans generated at once", ge=1)] = 64


@dataclass
class PlannerSFTRecipe:
    trainer: Literal["planner_sft"]
    model: Annotated[ModelSection, text("tiny (built on the generated text) or a model to fine-tune")] = (
        field(default_factory=lambda: ModelSection(name_or_path="tiny"))
    )
    data: Annotated[PlannerDataSection, text("generated (state, plan) examples")] = field(
        default_factory=PlannerDataSection
    )
    name: RunName = "planner-sft"
    output_dir: OutputDir = None
    resume: Resume = None
    report_to: Annotated[list[str], text("trackers (any accelerate knows), or none")] = field(
        default_factory=list
    )
    train: Annotated[PlannerTrainSection, text("optimization")] = field(default_factory=PlannerTrainSection)

    @property
    def run_dir(self) -> str:
        return self.output_dir or f"runs/{self.name}"


def check_planner_sft(recipe: PlannerSFTRecipe) -> None:
    """The model, the suite (every task one the oracle can label), trackers and resume."""
    from envs.crafter.techtree import RULES, oracle_plan
    from eval.suites import load_suite

    if recipe.model.name_or_path == "tiny" and recipe.model.lora is not None:
        raise UserError("'model.lora' needs a pretrained model; the tiny model is trained in full")
    check_common(recipe)  # a model path or packaged name is checked there
    with about("data.suite"):
        suite = load_suite(recipe.data.suite, RULES().achievements)
        for task in suite.tasks:
            if task.achievement is not None:
                oracle_plan(task.achievement)  # the oracle must be able to label every task
