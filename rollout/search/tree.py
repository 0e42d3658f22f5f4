"""The MCTS* search tree of ReST-MCTS*: nodes are partial solutions, one reasoning step per edge.

Only data structures and pure functions live here (selection, the roll-forward mix, back-up,
value targets, JSON); the batched driver that calls the policy and the value model is
``rollout.search.mcts``. Formulas follow the official code (THUDM/ReST-MCTS ``MCTS/base.py``,
``MCTS/mcts.py``; notes in shared/research/rest_bstar.md):

- UCT:      V_c + c·sqrt(2·ln N_parent / n_c);  an unvisited child scores V_c + INF
- roll-forward mix:  V ← (1 − α)·V + α·max V seen
- back-up:  N += 1 on the path; V(node) = Σ_c V_c·n_c / Σ_c n_c over its children
- targets:  v_k = max(0, v_{k−1} + (1 − v_{k−1})·r_k / m_k)
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

UNKNOWN_DISTANCE = 1024  # the official sentinel for "no correct leaf below"


@dataclass(eq=False)
class Node:
    """A partial solution: the steps from the root to here. ``value`` is V ∈ [0, 1]."""

    step: str = ""  # this edge's step text ("" at the root)
    parent: Node | None = None
    children: dict[str, Node] = field(default_factory=dict)  # keyed by step text: duplicates merge
    value: float = 0.0
    visits: int = 0
    expanded: bool = False
    terminal: bool = False  # the solution ends here (an answer, EOS or the depth limit)
    answer: str | None = None  # the answer a terminal node states
    correct: bool | None = None  # set by the verifier when the tree is graded

    @property
    def depth(self) -> int:
        return 0 if self.parent is None else self.parent.depth + 1

    def steps(self) -> list[str]:
        """The steps from the root to this node, in order."""
        out: list[str] = []
        node: Node | None = self
        while node is not None and node.parent is not None:
            out.append(node.step)
            node = node.parent
        return out[::-1]

    def add_child(self, step: str, value: float) -> Node | None:
        """A new child with its value, or None when a sibling already has this step text."""
        if step in self.children:
            return None
        child = Node(step=step, parent=self, value=value)
        self.children[step] = child
        return child

    def walk(self) -> Iterator[Node]:
        """This node and every descendant, depth first."""
        yield self
        for child in self.children.values():
            yield from child.walk()


def uct(value: float, visits: int, parent_visits: int, c: float, inf: float) -> float:
    """V + c·sqrt(2·ln N_parent / n), or V + INF for an unvisited child (n = 0)."""
    if visits == 0:
        return value + inf
    return value + c * math.sqrt(2.0 * math.log(max(parent_visits, 1)) / visits)


def best_child(node: Node, c: float, inf: float, rng: random.Random) -> Node:
    """The child with the highest UCT score; ties broken at random (as the official code)."""
    children = list(node.children.values())
    scores = [uct(ch.value, ch.visits, node.visits, c, inf) for ch in children]
    top = max(scores)
    return rng.choice([ch for ch, s in zip(children, scores, strict=True) if s == top])


def select_leaf(root: Node, c: float, inf: float, rng: random.Random) -> Node:
    """Descend by UCT while the node is expanded and has children; the leaf reached."""
    node = root
    while node.expanded and node.children:
        node = best_child(node, c, inf, rng)
    return node


def mix_rollout_value(value: float, max_seen: float, alpha: float) -> float:
    """The roll-forward update V ← (1 − α)·V + α·max V seen (α = 0.5 in every official script)."""
    return (1.0 - alpha) * value + alpha * max_seen


def backup(node: Node) -> None:
    """N += 1 for ``node`` and every ancestor; an expanded node's V becomes the visit-weighted
    mean of its children's V (kept when no child has a visit yet)."""
    current: Node | None = node
    while current is not None:
        current.visits += 1
        if current.expanded and current.children:
            total = sum(ch.visits for ch in current.children.values())
            if total > 0:
                current.value = sum(ch.value * ch.visits for ch in current.children.values()) / total
        current = current.parent


def terminal_leaves(root: Node) -> list[Node]:
    return [n for n in root.walk() if n.terminal]


def best_terminal(root: Node) -> Node | None:
    """The terminal node with the highest V (the search's answer), None if none exists."""
    leaves = terminal_leaves(root)
    return max(leaves, key=lambda n: n.value) if leaves else None


def best_value_node(root: Node) -> Node:
    """The node with the highest V in the tree, internal nodes included (``getBestV``)."""
    return max((n for n in root.walk() if n is not root), key=lambda n: n.value, default=root)


def _distances_to_correct(root: Node) -> dict[Node, int]:
    """m for every node with a correct terminal descendant (a correct leaf has 1, its parent 2,
    …), then for every node on a wrong leaf's path below the nearest such ancestor, that
    ancestor's m (the official ``min_steps_to_correct``)."""
    m: dict[Node, int] = {}

    def correct_distance(node: Node) -> int:
        best = 1 if node.terminal and node.correct else UNKNOWN_DISTANCE
        for child in node.children.values():
            best = min(best, correct_distance(child) + 1)
        if best < UNKNOWN_DISTANCE:
            m[node] = best
        return best

    correct_distance(root)
    for leaf in terminal_leaves(root):
        if leaf in m:
            continue
        path: list[Node] = []
        node: Node | None = leaf
        while node is not None and node not in m:
            path.append(node)
            node = node.parent
        if node is None:  # no ancestor has a correct descendant: no targets on this branch
            continue
        for n in path:
            m.setdefault(n, m[node])
    return m


def value_targets(root: Node) -> dict[Node, float]:
    """ReST-MCTS* value targets of a graded tree (terminal nodes carry ``correct``).

        v_0 = 0 (the root),  v_k = max(0, v_{k−1} + (1 − v_{k−1})·r_k / m_k)

    r_k = +1 when node k has a correct terminal descendant (itself included) else −1; m_k is
    its distance to the nearest correct leaf counting the leaf, and on a wrong branch the m of
    the nearest ancestor that has a correct descendant. A tree with no correct leaf gives {}.
    A correct 4-step chain gives 0.25, 0.5, 0.75, 1.0; a wrong child of its depth-1 node
    max(0, 0.25 − 0.75/4) = 0.0625, and a wrong grandchild below that 0."""
    m = _distances_to_correct(root)
    if root not in m:
        return {}
    on_correct_path = {n for n in m if _has_correct(n)}
    targets: dict[Node, float] = {}

    def visit(node: Node, v_parent: float) -> None:
        for child in node.children.values():
            if child not in m:
                continue
            r = 1.0 if child in on_correct_path else -1.0
            v = max(0.0, v_parent + (1.0 - v_parent) * r / m[child])
            targets[child] = v
            visit(child, v)

    visit(root, 0.0)
    return targets


def _has_correct(node: Node) -> bool:
    return any(n.terminal and n.correct for n in node.walk())


def target_rows(root: Node, prompt: str) -> list[dict]:
    """The value targets as step-labelled rows ``{prompt, completions, labels}`` (the PRM data
    format of ``telos data process-labels``): one row per target node that has no target child,
    labelled on every step of its path."""
    targets = value_targets(root)
    rows = []
    for node in targets:
        if any(ch in targets for ch in node.children.values()):
            continue
        path: list[Node] = []
        n: Node | None = node
        while n is not None and n.parent is not None:
            path.append(n)
            n = n.parent
        path.reverse()
        rows.append(
            {"prompt": prompt, "completions": [p.step for p in path], "labels": [targets[p] for p in path]}
        )
    return rows


def tree_to_json(root: Node, targets: dict[Node, float] | None = None) -> dict:
    """A nested dict of the tree (for ``--save-trees`` and the trainers' trees.jsonl)."""

    def encode(node: Node) -> dict:
        out: dict = {"step": node.step, "value": round(node.value, 6), "visits": node.visits}
        if node.terminal:
            out.update(terminal=True, answer=node.answer, correct=node.correct)
        if targets is not None and node in targets:
            out["target"] = round(targets[node], 6)
        if node.children:
            out["children"] = [encode(ch) for ch in node.children.values()]
        return out

    return encode(root)


def tree_stats(root: Node) -> dict[str, float]:
    nodes = list(root.walk())
    leaves = terminal_leaves(root)
    return {
        "nodes": len(nodes) - 1,
        "depth": max(n.depth for n in nodes),
        "terminal": len(leaves),
        "correct_terminal": sum(1 for n in leaves if n.correct),
    }


def grade(root: Node, is_correct: Callable[[list[str]], bool]) -> None:
    """Set ``correct`` on every terminal node from its steps."""
    for leaf in terminal_leaves(root):
        leaf.correct = bool(is_correct(leaf.steps()))
