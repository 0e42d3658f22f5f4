"""RL trainers on one loop: GRPO (and its loss family), NFT, OREAL, EPO."""

from trainers.registry import register_trainer
from trainers.rl.checks import check_rl
from trainers.rl.recipe import RECIPES

_SUMMARIES = {
    "grpo": "GRPO family (grpo, dapo, bnpo, dr_grpo losses; group or leave-one-out baselines), verifier rewards",
    "nft": "NFT, negative-aware fine-tuning: a likelihood loss on correct and wrong answers",
    "oreal": "OREAL: behaviour cloning on correct answers, reweighted REINFORCE on wrong ones, token RM",
    "epo": "EPO: reward-weighted fine-tuning of a strategist (or actor) on process-rewarded turns, self-play",
}
for _name, _recipe in RECIPES.items():
    register_trainer(
        _name,
        recipe=_recipe,
        check=check_rl,
        entry_point="trainers.rl.loop:train_rl",
        summary=_SUMMARIES[_name],
    )
