"""Reward-model training: outcome (Bradley–Terry), goal-conditioned contrastive, process."""

from trainers.registry import register_trainer
from trainers.rm.recipe import RMRecipe, check_rm

register_trainer(
    "rm",
    recipe=RMRecipe,
    check=check_rm,
    entry_point="trainers.rm.train:train_rm",
    summary="reward models: bt (outcome), gcrm (goal-conditioned, contrastive), prm (process, per step)",
)
