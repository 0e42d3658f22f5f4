"""Recipes of the self-training trainers: ``trainer: rest_mcts`` (ReST-MCTS*) and
``trainer: bstar`` (B-STaR, and online RFT / ReST-EM with ``bstar.adapt: false``).

Both iterate: find solutions of the training questions with the current policy → keep the good
ones → SFT the policy on them (``sft:``, the ``trainer: sft`` step settings) → repeat. ReST-MCTS*
also trains its value model each iteration (``value:``, the ``trainer: rm`` step settings).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Literal

from rollout.search.mcts import MCTSConfig
from telos.errors import UserError
from telos.schema import flag, local_path, number, text
from trainers.common.checks import about, check_common, check_model_name
from trainers.common.fields import OutputDir, ReportTo, Resume, RunName
from trainers.common.math_data import DataSection, check_math_data
from trainers.common.model_section import ModelSection
from trainers.rm.recipe import RMTrainSection
from trainers.sft.recipe import SFTTrainSection


@dataclass
class SelfTrainSection:
    iterations: Annotated[int, number("search → keep → SFT iterations", ge=1)] = 2
    questions_per_iteration: Annotated[int, number("training questions searched per iteration", ge=1)] = 128
    eval_before_training: Annotated[bool, flag("greedy held-out accuracy of the start policy too")] = True
    seed: Annotated[int, number("seeds question order and sampling", ge=0)] = 0
    engine: Annotated[
        Literal["hf", "vllm"], text("generation backend of the search / sampling (vllm: colocated)")
    ] = "hf"


def _sft_default() -> SFTTrainSection:
    return SFTTrainSection(steps=60, batch_size=16, lr=5e-5, warmup_steps=5, save_every=30)


@dataclass
class ValueSection:
    name_or_path: Annotated[
        str,
        text("the value model's start: a process-RM directory (rm.kind prm, prm_loss mse) or a base LM"),
        local_path("model"),
    ]
    init_data: Annotated[
        str | None,
        text("step labels {prompt, completions, labels} the value model is trained on before iteration 1 "
             "(the paper's D_V0; tiny-data:steps-train/steps.jsonl); null: name_or_path is trained already"),
        local_path("data"),
    ] = None  # fmt: skip
    init_test: Annotated[
        str | None, text("held-out step labels for the initial training"), local_path("data")
    ] = None
    max_length: Annotated[int, number("value examples longer than this many tokens are dropped", ge=8)] = 256
    train: Annotated[RMTrainSection, text("value-model training per iteration (MSE on the targets)")] = field(
        default_factory=lambda: RMTrainSection(
            epochs=2, batch_size=32, micro_batch_size=32, lr=2e-4, save_every=50
        )
    )


@dataclass
class RestMCTSSection(SelfTrainSection):
    min_value: Annotated[
        float, number("policy traces kept: correct and V ≥ this (official 0.2)", ge=0, le=1)
    ] = 0.2
    search_batch: Annotated[int, number("trees searched together (one engine call per round)", ge=1)] = 64


@dataclass
class RestMCTSRecipe:
    trainer: Literal["rest_mcts"]
    model: Annotated[ModelSection, text("the policy")]
    value: Annotated[ValueSection, text("the value model V(q, steps) ∈ [0, 1]")]
    data: Annotated[DataSection, text("training questions (with answers) and held-out ones")]
    verifier: Annotated[str, text("grades finished solutions (registered or module:function)")] = "numeric"
    name: RunName = "rest-mcts"
    output_dir: OutputDir = None
    resume: Resume = None
    report_to: ReportTo = field(default_factory=list)
    search: Annotated[MCTSConfig, text("MCTS* (data generation: every round runs)")] = field(
        default_factory=MCTSConfig
    )
    rest: Annotated[RestMCTSSection, text("the self-training loop")] = field(default_factory=RestMCTSSection)
    sft: Annotated[SFTTrainSection, text("policy SFT per iteration (from the previous policy)")] = field(
        default_factory=_sft_default
    )

    @property
    def run_dir(self) -> str:
        return self.output_dir or f"runs/{self.name}"


@dataclass
class BStarSection(SelfTrainSection):
    samples_per_query: Annotated[int, number("k: responses sampled per query", ge=1)] = 8
    dev_queries: Annotated[int, number("queries the (T, τ) grid is scored on each iteration", ge=1)] = 64
    temperatures: Annotated[list[float], text("temperature grid (paper: 0.5–1.2)")] = field(
        default_factory=lambda: [0.5, 0.7, 0.9, 1.1]
    )
    thresholds: Annotated[list[float], text("reward-threshold grid τ: responses with score > τ are kept")] = (
        field(default_factory=lambda: [-0.2, 0.0, 0.5, 0.9, 1.0, 1.1])
    )
    n_star: Annotated[
        int, number("n*: distinct correct responses per query that count fully (paper ⌈N/M⌉ = 6)", ge=1)
    ] = 4
    prm_scale: Annotated[float, number("score = 1[correct] + (2·PRM_min − 1) / prm_scale", gt=0)] = 5.0
    adapt: Annotated[
        bool, flag("choose (T, τ) by the balance score each iteration; false: fixed (online RFT)")
    ] = True
    temperature: Annotated[float, number("the fixed temperature when adapt is false", ge=0)] = 1.0
    threshold: Annotated[float, number("the fixed threshold when adapt is false", ge=-2, le=2)] = 0.0
    continue_optimizer: Annotated[
        bool, flag("one optimizer and LR schedule across iterations (online); false: fresh each iteration")
    ] = True
    max_tokens: Annotated[int, number("tokens per sampled response", ge=1)] = 96


@dataclass
class BStarRecipe:
    trainer: Literal["bstar"]
    model: Annotated[ModelSection, text("the policy")]
    data: Annotated[DataSection, text("training questions (with answers) and held-out ones")]
    reward_model: Annotated[
        str | None,
        text(
            "a process RM scoring responses (min step score): a directory or from-recipe:RECIPE; null: answer only"
        ),
        local_path("model"),
    ] = None
    verifier: Annotated[str, text("grades responses (registered or module:function)")] = "numeric"
    name: RunName = "bstar"
    output_dir: OutputDir = None
    resume: Resume = None
    report_to: ReportTo = field(default_factory=list)
    bstar: Annotated[BStarSection, text("the self-training loop and its balance-score selection")] = field(
        default_factory=BStarSection
    )
    sft: Annotated[SFTTrainSection, text("policy SFT steps per iteration")] = field(
        default_factory=_sft_default
    )

    @property
    def run_dir(self) -> str:
        return self.output_dir or f"runs/{self.name}"


def _check_loop(recipe, data: DataSection) -> None:
    from rewards.functions import resolve_reward_function

    check_math_data(data)
    if data.test is None:
        raise UserError(
            "'data.test': self-training reports held-out accuracy per iteration; give held-out problems"
        )
    with about("verifier"):
        resolve_reward_function(recipe.verifier)
    check_common(recipe)


def check_rest_mcts(recipe: RestMCTSRecipe) -> None:
    from trainers.common.recipe_data import is_recipe_data, parse_recipe_data

    _check_loop(recipe, recipe.data)
    with about("value"):
        check_model_name(recipe.value.name_or_path)
        for key in ("init_data", "init_test"):
            spec = getattr(recipe.value, key)
            if is_recipe_data(spec):
                parse_recipe_data(spec)


def check_bstar(recipe: BStarRecipe) -> None:
    from telos.models import check_model_path
    from trainers.common.start_model import FROM_RECIPE, recipe_final_dir

    _check_loop(recipe, recipe.data)
    b = recipe.bstar
    if not b.temperatures or not b.thresholds:
        raise UserError("'bstar.temperatures' and 'bstar.thresholds' need at least one value each")
    if any(t < 0 for t in b.temperatures):
        raise UserError(f"'bstar.temperatures' must be >= 0, got {b.temperatures}")
    if recipe.reward_model is not None:
        with about("reward_model"):
            if recipe.reward_model.startswith(FROM_RECIPE):
                recipe_final_dir(recipe.reward_model)  # its run may not exist yet: `telos train` says so
            else:
                check_model_path(recipe.reward_model)
