"""The planner-SFT recipe (``trainer: planner_sft``): teach a causal LM to write Crafter plans.

Data are generated from the real game (states of ``CrafterEnv`` episodes) and labelled by the
oracle, so the recipe needs no files; ``model.name_or_path: tiny`` builds a tokenizer and a
small model from ``model.tiny`` on the generated text (offline), anything else is a model
directory or hub id to fine-tune.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from telos.errors import UserError
from trainers.common.model_section import ModelSection


@dataclass
class PlannerDataSection:
    suite: str = "crafter-techtree"  # tasks: a shipped suite name or a suite .yaml
    num_train: int = 12000  # (prompt, plan) examples
    num_test: int = 200  # held-out examples, from other worlds (sampled naturally, no cap)
    max_copies: int = 8  # training examples sharing one (task, inventory, stations) state; 0 = no cap
    episodes: int = 8  # Crafter worlds the training states come from (test: a quarter, ≥ 1)
    states_per_episode: int = 40  # views recorded along a random walk in each world
    steps_between_states: int = 6  # random actions between recorded views (at most)
    stations_prob: float = 0.5  # a station the done part of the plan placed is still in reach
    extra_item_prob: float = 0.4  # chance of each further item beyond the plan's progress (noise)
    failure_prob: float = 0.3  # the prompt says why the last plan failed
    memory_prob: float = 0.5  # the prompt holds 1–2 retrieved plans for the same task
    instructions: bool = False  # keep the rules paragraph in the prompt (useful for real LMs)
    max_memories: int = 2
    seed: int = 0


@dataclass
class PlannerTrainSection:
    steps: int = 1100
    batch_size: int = 32
    lr: float = 3e-3
    warmup_steps: int = 30
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    seed: int = 0
    save_every: int = 200
    keep_last: int = 1
    eval_max_tokens: int = 96  # tokens generated per held-out plan
    eval_batch_size: int = 64


@dataclass
class PlannerSFTRecipe:
    trainer: Literal["planner_sft"]
    model: ModelSection = field(default_factory=lambda: ModelSection(name_or_path="tiny"))
    data: PlannerDataSection = field(default_factory=PlannerDataSection)
    name: str = "planner-sft"
    output_dir: str | None = None
    resume: str | None = None  # "latest" or a checkpoint directory
    report_to: list[str] = field(default_factory=list)
    train: PlannerTrainSection = field(default_factory=PlannerTrainSection)

    @property
    def run_dir(self) -> str:
        return self.output_dir or f"runs/{self.name}"


def check_planner_sft(recipe: PlannerSFTRecipe) -> None:
    """Everything checkable before the world is generated: numbers, the suite, the model."""
    from envs.crafter.techtree import RULES, oracle_plan
    from eval.suites import load_suite
    from telos.models import check_model_path
    from trainers.run import _about, _at_least, _check_common

    d, t = recipe.data, recipe.train
    if recipe.model.name_or_path != "tiny":
        with _about("model.name_or_path"):
            check_model_path(recipe.model.name_or_path)
    elif recipe.model.lora is not None:
        raise UserError("'model.lora' needs a pretrained model; the tiny model is trained in full")
    _check_common(recipe)
    positive = {
        "data.num_train": d.num_train,
        "data.num_test": d.num_test,
        "data.episodes": d.episodes,
        "data.states_per_episode": d.states_per_episode,
        "data.steps_between_states": d.steps_between_states,
        "train.steps": t.steps,
        "train.batch_size": t.batch_size,
        "train.save_every": t.save_every,
        "train.keep_last": t.keep_last,
        "train.eval_max_tokens": t.eval_max_tokens,
        "train.eval_batch_size": t.eval_batch_size,
    }
    _at_least(positive, 1)
    non_negative = {"data.max_memories": d.max_memories, "data.max_copies": d.max_copies}
    _at_least({**non_negative, "train.warmup_steps": t.warmup_steps}, 0)
    for key in ("stations_prob", "extra_item_prob", "failure_prob", "memory_prob"):
        value = getattr(d, key)
        if not 0.0 <= value <= 1.0:
            raise UserError(f"'data.{key}' must be in [0, 1], got {value}")
    if t.lr <= 0:
        raise UserError(f"'train.lr' must be > 0, got {t.lr}")
    with _about("data.suite"):
        suite = load_suite(d.suite, RULES().achievements)
        for task in suite.tasks:
            if task.achievement is not None:
                oracle_plan(task.achievement)  # the oracle must be able to label every task
