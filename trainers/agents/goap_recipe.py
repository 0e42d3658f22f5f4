"""The GOAP controller recipe (``trainer: goap``) and its semantic checks."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Literal

from telos.schema import flag, number, text
from trainers.agents.gcbc_recipe import GCBCTrainSection
from trainers.common.checks import about, check_run_options
from trainers.common.fields import (
    LearningRate,
    Resume,
    RunName,
)
from trainers.common.recipe_data import is_recipe_data, parse_recipe_data


@dataclass
class GOAPDataSection:
    path: Annotated[str, text("a `telos data crafter-goap` directory, or tiny-data:crafter-goap/data")] = (
        "runs/crafter-goap"
    )
    extra_paths: Annotated[
        list[str], text("more crafter-goap directories trained on with it (DAgger rounds: --policy data)")
    ] = field(default_factory=list)
    max_steps: Annotated[
        int | None, number("train on the first N steps only (whole episodes): data-scaling runs", ge=1)
    ] = None
    val_fraction: Annotated[
        float, number("episodes held out whole (steps of one episode are correlated)", gt=0, lt=1)
    ] = 0.05
    relabel_crafts: Annotated[
        bool,
        flag("train a crafting step toward the item it makes (the expert makes swords under pickaxe goals "
             "from wood it banked beyond the plan)"),
    ] = True  # fmt: skip


@dataclass
class GOAPModelSection:
    variant: Annotated[
        Literal["goap", "no_behaviour", "goal_only"],
        text("goap; no_behaviour (ablation: no history tokens); goal_only (STEVE-1-like: goal added "
             "to the observation, observation-only history)"),
    ] = "goap"  # fmt: skip
    d_model: Annotated[int, number("transformer width", ge=8)] = 128
    heads: Annotated[int, number("attention heads (divide d_model)", ge=1)] = 4
    layers: Annotated[int, number("transformer layers over the tokens", ge=1)] = 2
    behaviour_tokens: Annotated[int, number("behaviour tokens from the history", ge=1)] = 4
    history: Annotated[int, number("K past (observation, action) pairs", ge=1)] = 16
    cell_dim: Annotated[int, number("embedding width of a view or map cell", ge=1)] = 16
    compass: Annotated[
        bool, flag("a token pointing to the nearest remembered water, tree, ores, table, furnace, cow")
    ] = True
    goal_compass: Annotated[
        bool,
        flag("the compass also reads out the goal's own target (its material, or the table / furnace it "
             "is made at) with a within-reach flag; needs compass"),
    ] = True  # fmt: skip
    survival: Annotated[
        bool,
        flag("the status token also reads what the expert's survival reflexes depend on: their triggers "
             "(dark with a pickaxe, tired, hurt, thirsty, hungry), the water and cow compass entries, and the "
             "nearest site on the map window to dig a sealed pocket in (agents.readouts); needs compass"),
    ] = True  # fmt: skip
    reflex_mode: Annotated[
        bool,
        flag("predict the expert's reflex mode (subgoal, fight, sleep, drink, eat), then the action given "
             "it (teacher-forced in training, argmax when acting)"),
    ] = False  # fmt: skip


@dataclass
class GOAPTrainSection(GCBCTrainSection):
    """GCBC's optimization fields; the transformer trains longer at a lower rate."""

    steps: Annotated[int, number("optimizer steps", ge=1)] = 4000
    lr: LearningRate = 5e-4
    history_action_dropout: Annotated[
        float,
        number(
            "hide each history action with this probability in training (against copycat loops)", ge=0, lt=1
        ),
    ] = 0.0
    mode_loss_weight: Annotated[
        float, number("weight of the reflex-mode cross-entropy (with model.reflex_mode)", ge=0)
    ] = 1.0
    night_routine_repeat: Annotated[
        int,
        number("list each step of the expert's night routine (sleep reflex, not noop: walk to a pocket "
               "site, dig, seal, sleep) this many times per epoch", ge=1),
    ] = 1  # fmt: skip


@dataclass
class GOAPRolloutSection:
    every: Annotated[
        int, number("play episodes with the policy every N steps (and at the end); 0 = never", ge=0)
    ] = 0
    task: Annotated[str, text("crafter-techtree task whose subgoals are reported")] = "make_iron_pickaxe"
    episodes: Annotated[int, number("episodes per rollout (seeds 10_000…)", ge=1)] = 2
    budget: Annotated[int, number("steps per rollout episode", ge=1)] = 1500


@dataclass
class GOAPRecipe:
    trainer: Literal["goap"]
    run_dir: Annotated[str, text("run directory")] = "runs/goap-crafter"
    name: RunName = "goap"
    seed: Annotated[int, number("seeds init and batch order", ge=0)] = 0
    data: Annotated[GOAPDataSection, text("goal-observation-action data")] = field(
        default_factory=GOAPDataSection
    )
    model: Annotated[GOAPModelSection, text("the GOAP policy's shape")] = field(
        default_factory=GOAPModelSection
    )
    train: Annotated[GOAPTrainSection, text("optimization")] = field(default_factory=GOAPTrainSection)
    rollout: Annotated[GOAPRolloutSection, text("per-subgoal success during training")] = field(
        default_factory=GOAPRolloutSection
    )
    report_to: Annotated[list[str], text("trackers (any accelerate knows), or none")] = field(
        default_factory=list
    )
    resume: Resume = None


def check_goap(recipe: GOAPRecipe) -> None:
    """The data exists (or is a known tiny-data build), the heads divide the width, the goal compass
    has a compass to read, the rollout task is in the tech-tree suite; trackers and resume as
    every trainer."""
    from telos.errors import UserError
    from trainers.agents.goap_data import goap_dir

    with about("data.path"):
        if is_recipe_data(recipe.data.path):
            parse_recipe_data(recipe.data.path)
        else:
            goap_dir(recipe.data.path)
    for i, path in enumerate(recipe.data.extra_paths):
        with about(f"data.extra_paths[{i}]"):
            goap_dir(path)
    with about("model.heads"):
        if recipe.model.d_model % recipe.model.heads:
            raise UserError(f"{recipe.model.heads} heads do not divide d_model {recipe.model.d_model}")
    with about("model.goal_compass"):
        if recipe.model.goal_compass and not recipe.model.compass:
            raise UserError("reads the compass: set model.compass: true as well (or goal_compass: false)")
    with about("model.survival"):
        if recipe.model.survival and not recipe.model.compass:
            raise UserError(
                "reads the compass's water and cow: set model.compass: true as well (or survival: false)"
            )
    with about("rollout.task"):
        tasks = _techtree_tasks()
        if recipe.rollout.task not in tasks:
            raise UserError(f"unknown task {recipe.rollout.task!r}; valid: {', '.join(tasks)}")
    check_run_options(recipe)


def _techtree_tasks() -> list[str]:
    from envs.crafter.techtree import RULES
    from eval.suites import load_suite

    return [t.id for t in load_suite("crafter-techtree", RULES().achievements).tasks]
