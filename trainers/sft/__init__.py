"""Supervised fine-tuning of a policy on worked solutions (``trainer: sft``), e.g. before RL."""

from trainers.registry import register_trainer
from trainers.sft.recipe import SFTRecipe, check_sft

register_trainer(
    "sft",
    recipe=SFTRecipe,
    check=check_sft,
    entry_point="trainers.sft.train:train_math_sft",
    summary="supervised fine-tuning on worked solutions (loss on the solution), greedy eval before and after",
)
