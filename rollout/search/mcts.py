"""MCTS* (ReST-MCTS*) over many questions at once: every round, one engine call expands the
selected leaf of every live tree, and one value-model call scores all the new children.

The official code calls ``generate`` once per child and scores each child alone; the same
search runs that way with ``batched=False`` (``benchmarks/mcts_batching.py`` measures both).

Modes: ``eval`` stops a tree once a finished solution reaches V ≥ ``end_gate`` (the answer);
``data`` runs every round and keeps finished solutions as leaves that are never expanded
(self-training data). Deviation from the official code, on purpose: only *finished* solutions
(an answer, EOS, the step limit) are end nodes; the official code also ends a partial solution
whose V reaches the gate, which in a math task leaves it without an answer to check.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Literal

from rollout.search.steps import StepProposer, StepRequest, ValueFn, batched_values
from rollout.search.tree import (
    Node,
    backup,
    best_child,
    best_terminal,
    best_value_node,
    mix_rollout_value,
    select_leaf,
    terminal_leaves,
)
from telos.schema import number


@dataclass
class MCTSConfig:
    """The search's knobs; defaults are the official data-generation script's (GSM8K)."""

    branch: Annotated[int, number("children sampled per expansion (duplicates dropped)", ge=1)] = 3
    exploration: Annotated[float, number("c in V + c·sqrt(2 ln N / n)", ge=0)] = 0.5
    unvisited_bonus: Annotated[float, number("INF: the score bonus of an unvisited child", ge=0)] = 0.9
    alpha: Annotated[float, number("roll-forward mix: V ← (1 − α)V + α·max V seen", ge=0, le=1)] = 0.5
    end_gate: Annotated[float, number("eval: stop once a finished solution has V ≥ this", ge=0, le=1)] = 0.9
    rounds: Annotated[int, number("select-expand-simulate-backup rounds per tree", ge=1)] = 40
    roll_forward_steps: Annotated[int, number("greedy roll-forward steps after an expansion", ge=0)] = 1
    temperature: Annotated[float, number("sampling temperature of every policy call", ge=0)] = 0.7
    max_step_tokens: Annotated[int, number("tokens per step at most", ge=1)] = 48
    max_steps: Annotated[int, number("a solution ends after this many steps", ge=1)] = 10


@dataclass
class SearchTree:
    """One question's tree and its bookkeeping."""

    prompt: str
    root: Node = field(default_factory=Node)
    tokens: int = 0  # generated tokens: expansions, roll-forwards and a final completion
    rounds: int = 0
    created: int = 0  # nodes added to the tree
    done: bool = False

    def finished(self, end_gate: float, mode: str) -> bool:
        return mode == "eval" and any(n.value >= end_gate for n in terminal_leaves(self.root))


@dataclass
class SearchCounters:
    expanded: int = 0  # nodes created (children added to trees)
    proposal_calls: int = 0
    value_calls: int = 0


def run_mcts(
    prompts: Sequence[str],
    proposer: StepProposer,
    value_fn: ValueFn,
    cfg: MCTSConfig,
    *,
    mode: Literal["eval", "data"] = "eval",
    budget: int | Sequence[int] | None = None,
    seed: int = 0,
    on_round: Callable[[list[SearchTree]], None] | None = None,
) -> tuple[list[SearchTree], SearchCounters]:
    """Grow one tree per prompt for ``cfg.rounds`` rounds (or until ``budget`` generated tokens
    per question — one number, or one per prompt —, or — eval — a finished solution reaches the
    end gate, or every branch has ended)."""
    rng = random.Random(seed)
    trees = [SearchTree(p) for p in prompts]
    budgets = [budget] * len(trees) if budget is None or isinstance(budget, int) else list(budget)
    counters = SearchCounters()
    batched = proposer.batched

    def values(nodes: list[tuple[SearchTree, list[str]]]) -> list[float]:
        counters.value_calls += 1 if batched else len(nodes)
        return batched_values(value_fn, [t.prompt for t, _ in nodes], [s for _, s in nodes], batched)

    for round_index in range(cfg.rounds):
        live = [t for t in trees if not t.done]
        if not live:
            break
        call_seed = seed * 1_000_003 + round_index * 97
        # selection; a selected end node is only visited (it is never expanded)
        to_expand: list[tuple[SearchTree, Node]] = []
        for t in live:
            leaf = select_leaf(t.root, cfg.exploration, cfg.unvisited_bonus, rng)
            if leaf.terminal:
                backup(leaf)
                if not any(not n.expanded and not n.terminal for n in t.root.walk()):
                    t.done = True  # every branch has ended: nothing left to expand
            else:
                to_expand.append((t, leaf))
        # expansion: all selected leaves in one call, all new children in one value call
        proposals = proposer.propose(
            [StepRequest(t.prompt, tuple(leaf.steps()), cfg.branch) for t, leaf in to_expand],
            cfg.temperature,
            call_seed,
        )
        counters.proposal_calls = proposer.calls
        born: list[tuple[SearchTree, Node]] = []
        for (t, leaf), props in zip(to_expand, proposals, strict=True):
            leaf.expanded = True
            for p in props:
                t.tokens += p.tokens
                child = leaf.add_child(p.step, 0.0) if p.step else None
                if child is not None:
                    child.terminal, child.answer = p.terminal, p.answer
                    born.append((t, child))
            if not leaf.children:  # nothing but empty steps: a dead end
                leaf.terminal = True
        for (t, child), v in zip(born, values([(t, c.steps()) for t, c in born]), strict=True):
            child.value = v
            t.created += 1
        counters.expanded += len(born)
        # simulation: a short roll-forward from each expanded leaf's best child
        rolls = [
            (t, leaf, best_child(leaf, cfg.exploration, cfg.unvisited_bonus, rng))
            for t, leaf in to_expand
            if leaf.children
        ]
        _roll_forward(rolls, proposer, values, cfg, call_seed + 1)
        for _, leaf in to_expand:  # a dead end is visited too, so selection moves on
            backup(leaf)
        live_ids = {id(t) for t in live}
        for i, t in enumerate(trees):
            if t.done or id(t) not in live_ids:
                continue
            t.rounds += 1
            if t.finished(cfg.end_gate, mode) or (budgets[i] is not None and t.tokens >= budgets[i]):
                t.done = True
        counters.proposal_calls = proposer.calls
        if on_round is not None:
            on_round(trees)
    return trees, counters


def _roll_forward(rolls, proposer: StepProposer, values, cfg: MCTSConfig, seed: int) -> None:
    """``roll_forward_steps`` sampled steps beyond each roll node (not added to the tree), then
    V_roll ← (1 − α)·V_roll + α·max V seen; the roll node is visited once. As the official
    code, max V starts at 0 and a finished roll node keeps its V."""
    states = {id(roll): list(roll.steps()) for _, _, roll in rolls if not roll.terminal}
    best = dict.fromkeys(states, 0.0)
    active = [(t, roll) for t, _, roll in rolls if not roll.terminal]
    for k in range(cfg.roll_forward_steps):
        if not active:
            break
        props = proposer.propose(
            [StepRequest(t.prompt, tuple(states[id(r)]), 1) for t, r in active], cfg.temperature, seed + k
        )
        scored: list[tuple[SearchTree, Node, bool]] = []
        for (t, roll), ps in zip(active, props, strict=True):
            t.tokens += ps[0].tokens
            if not ps[0].step:
                continue
            states[id(roll)].append(ps[0].step)
            scored.append((t, roll, ps[0].terminal))
        vs = values([(t, states[id(r)]) for t, r, _ in scored])
        active = []
        for (t, roll, terminal), v in zip(scored, vs, strict=True):
            best[id(roll)] = max(best[id(roll)], v)
            if not terminal:
                active.append((t, roll))
    for _, _, roll in rolls:
        if not roll.terminal and cfg.roll_forward_steps > 0:
            roll.value = mix_rollout_value(roll.value, best[id(roll)], cfg.alpha)
        roll.visits += 1


def chosen_node(tree: SearchTree) -> Node | None:
    """The eval answer: the highest-V finished solution that states an answer (else the
    highest-V finished one); None when no solution finished."""
    leaves = [n for n in terminal_leaves(tree.root) if n.answer is not None]
    return max(leaves, key=lambda n: n.value) if leaves else best_terminal(tree.root)


def unfinished_best(tree: SearchTree) -> Node:
    """The highest-V node of the tree (``getBestV``): what to complete when nothing finished."""
    return best_value_node(tree.root)
