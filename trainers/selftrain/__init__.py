"""Self-training of a policy on its own verified solutions: ReST-MCTS* (``trainer: rest_mcts``,
tree search with a value model that is trained too) and B-STaR (``trainer: bstar``, sampling
whose temperature and reward threshold are re-balanced every iteration)."""

from trainers.registry import register_trainer
from trainers.selftrain.recipe import BStarRecipe, RestMCTSRecipe, check_bstar, check_rest_mcts

register_trainer(
    "rest_mcts",
    recipe=RestMCTSRecipe,
    check=check_rest_mcts,
    entry_point="trainers.selftrain.rest_mcts:train_rest_mcts",
    summary="ReST-MCTS*: MCTS* with a value model finds traces; SFT the policy, train V on the tree targets",
)
register_trainer(
    "bstar",
    recipe=BStarRecipe,
    check=check_bstar,
    entry_point="trainers.selftrain.bstar:train_bstar",
    summary="B-STaR: self-training whose (temperature, reward threshold) maximise the balance score each iteration",
)
