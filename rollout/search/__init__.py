"""Step-level search over a policy and a value model: the MCTS* tree (pure functions), the
batched step proposer and the batched MCTS* driver."""
