"""Agent trainers: goal-conditioned controllers (GCBC, GOAP) and the planner LM (planner SFT)."""

from trainers.agents.gcbc_recipe import GCBCRecipe, check_gcbc
from trainers.agents.goap_recipe import GOAPRecipe, check_goap
from trainers.agents.planner_sft_recipe import PlannerSFTRecipe, check_planner_sft
from trainers.registry import register_trainer

register_trainer(
    "gcbc",
    recipe=GCBCRecipe,
    check=check_gcbc,
    entry_point="trainers.agents.gcbc:train_gcbc",
    summary="goal-conditioned behaviour cloning of a Crafter controller on play data (hindsight labels)",
)
register_trainer(
    "goap",
    recipe=GOAPRecipe,
    check=check_goap,
    entry_point="trainers.agents.goap:train_goap",
    summary="GOAP (Optimus-2): behaviour tokens + goal text + view and own map → action, cloned from goal-observation-action data",
)
register_trainer(
    "planner_sft",
    recipe=PlannerSFTRecipe,
    check=check_planner_sft,
    entry_point="trainers.agents.planner_sft:train_planner_sft",
    summary="supervised planner LM: writes Crafter plans for oracle-labelled game states",
)
