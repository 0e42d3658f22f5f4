"""Test-time search at a fixed budget of generated tokens per question (``telos eval math
--search METHOD --budget TOKENS``), so that methods compare at equal cost.

Every method is *anytime*: it spends its budget in units (a round of samples, a whole beam
search, an MCTS* round) and starts a new unit only while the question's generated tokens are
under the budget, so a question overshoots by at most one unit; the report gives the tokens
really spent. All questions advance together: one engine call per unit for every live question.

- ``greedy``: one greedy solution (ignores the budget).
- ``majority``: samples until the budget, majority vote (self-consistency).
- ``best_of_n`` / ``weighted_vote``: the same samples, the PRM's best (min step score) or the
  PRM-weighted vote.
- ``prm_beam``: step-level beam search (``beams`` kept, each expanded ``expand`` ways, ranked by
  the aggregated step score), restarted while budget remains; the best finished beam wins.
- ``mcts``: MCTS* (rollout/search/mcts.py) with the value model until the budget or the end gate.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from envs.math.answers import extract_answer
from rewards.selection import aggregate_steps, best_index, vote_winner
from rollout.engine import Engine
from rollout.search.mcts import MCTSConfig, chosen_node, run_mcts, unfinished_best
from rollout.search.steps import StepProposer, StepRequest, split_steps
from rollout.search.tree import tree_to_json
from telos.errors import UserError
from telos.registry import Registry
from telos.types import SamplingParams


@dataclass
class SearchSettings:
    budget: int = 256  # generated tokens per question
    temperature: float = 0.7
    max_tokens: int = 96  # one whole solution (sampling methods, greedy completion)
    batch: int = 4  # samples per question per round (majority, best_of_n, weighted_vote)
    beams: int = 4
    expand: int = 4
    aggregate: str = "min"
    seed: int = 0
    mcts: MCTSConfig = field(default_factory=lambda: MCTSConfig(rounds=500))  # the budget decides


@dataclass
class SearchOutcome:
    text: str  # the chosen solution
    answer: str | None
    tokens: int  # generated tokens spent on the question
    candidates: int  # finished solutions the method chose among
    tree: dict | None = None


@dataclass
class SearchContext:
    engine: Engine
    proposer: StepProposer
    prm: Any | None  # a rewards.reward_model.ProcessRM (step_scores, values) or None
    settings: SearchSettings
    on_progress: Callable[[int], None] = lambda done: None  # questions finished so far


@dataclass(frozen=True)
class SearchMethod:
    run: Callable[[SearchContext, Sequence[str]], list[SearchOutcome]]
    needs_value: bool
    summary: str


SEARCH_METHODS: Registry[SearchMethod] = Registry("search method")


def register(name: str, needs_value: bool, summary: str):
    def deco(fn):
        SEARCH_METHODS.register(name)(SearchMethod(fn, needs_value, summary))
        return fn

    return deco


def check_search(method: str, has_value: bool) -> SearchMethod:
    spec = SEARCH_METHODS.get(method)
    if spec.needs_value and not has_value:
        raise UserError(
            f"--search {method} needs a value model / PRM: --value PATH (a `rm.kind: prm` final/)"
        )
    return spec


def _solution_scores(ctx: SearchContext, prompts: Sequence[str], texts: Sequence[str]) -> list[float]:
    steps = [split_steps(t) or [t] for t in texts]
    per_step = ctx.prm.step_scores(list(prompts), steps, 64)
    return [aggregate_steps(s, ctx.settings.aggregate) for s in per_step]


@register("greedy", False, "one greedy solution")
def greedy(ctx: SearchContext, prompts: Sequence[str]) -> list[SearchOutcome]:
    s = ctx.settings
    outs = ctx.engine.generate(list(prompts), SamplingParams(temperature=0.0, max_tokens=s.max_tokens))
    ctx.on_progress(len(prompts))
    return [SearchOutcome(o.text, extract_answer(o.text), len(o.token_ids), 1) for o in outs]


def sample_until_budget(ctx: SearchContext, prompts: Sequence[str]) -> list[list[tuple[str, int]]]:
    """Rounds of ``batch`` samples per question while the question's tokens plus one more
    round at its mean sample length stay within the budget (the first round always runs)."""
    s = ctx.settings
    samples: list[list[tuple[str, int]]] = [[] for _ in prompts]
    spent = [0] * len(prompts)
    live = list(range(len(prompts)))
    round_index = 0
    while live:
        params = SamplingParams(
            n=s.batch,
            temperature=s.temperature,
            max_tokens=s.max_tokens,
            seed=s.seed * 1_000_003 + round_index,
        )
        outs = ctx.engine.generate([prompts[q] for q in live], params)
        for j, q in enumerate(live):
            for o in outs[j * s.batch : (j + 1) * s.batch]:
                samples[q].append((o.text, len(o.token_ids)))
                spent[q] += len(o.token_ids)
        still = []
        for q in live:
            mean = spent[q] / len(samples[q])
            if spent[q] + s.batch * max(mean, 1.0) <= s.budget:
                still.append(q)
        ctx.on_progress(len(prompts) - len(still))
        live, round_index = still, round_index + 1
    return samples


def _pick(samples: list[tuple[str, int]], index: int | None) -> SearchOutcome:
    tokens = sum(n for _, n in samples)
    text = samples[index][0] if index is not None else samples[0][0]
    return SearchOutcome(text, extract_answer(text), tokens, len(samples))


@register("majority", False, "self-consistency: sample to the budget, majority vote")
def majority(ctx: SearchContext, prompts: Sequence[str]) -> list[SearchOutcome]:
    out = []
    for group in sample_until_budget(ctx, prompts):
        out.append(_pick(group, vote_winner([extract_answer(t) for t, _ in group])))
    return out


def _scored_samples(ctx, prompts):
    groups = sample_until_budget(ctx, prompts)
    flat_p = [prompts[q] for q, g in enumerate(groups) for _ in g]
    scores = _solution_scores(ctx, flat_p, [t for g in groups for t, _ in g])
    out, k = [], 0
    for g in groups:
        out.append((g, scores[k : k + len(g)]))
        k += len(g)
    return out


@register("best_of_n", True, "samples to the budget, the PRM's best (aggregated step score)")
def best_of_n(ctx: SearchContext, prompts: Sequence[str]) -> list[SearchOutcome]:
    return [_pick(g, best_index(sc)) for g, sc in _scored_samples(ctx, prompts)]


@register("weighted_vote", True, "samples to the budget, vote weighted by the PRM score")
def weighted_vote(ctx: SearchContext, prompts: Sequence[str]) -> list[SearchOutcome]:
    return [
        _pick(g, vote_winner([extract_answer(t) for t, _ in g], sc))
        for g, sc in _scored_samples(ctx, prompts)
    ]


def complete_greedily(ctx: SearchContext, items: list[tuple[str, list[str]]]) -> list[tuple[str, int]]:
    """Finish partial solutions with one greedy call: (full text, tokens generated)."""
    if not items:
        return []
    contexts = [ctx.proposer.context(p, steps) for p, steps in items]
    outs = ctx.engine.generate(contexts, SamplingParams(temperature=0.0, max_tokens=ctx.settings.max_tokens))
    sep = ctx.proposer.separator
    return [
        ("".join(s + sep for s in steps) + o.text, len(o.token_ids))
        for (_, steps), o in zip(items, outs, strict=True)
    ]


@dataclass
class _Beam:
    steps: tuple[str, ...]
    scores: tuple[float, ...]
    terminal: bool = False


@register("prm_beam", True, "step-level beam search ranked by the PRM, restarted while budget remains")
def prm_beam(ctx: SearchContext, prompts: Sequence[str]) -> list[SearchOutcome]:
    s, proposer = ctx.settings, ctx.proposer
    spent = [0] * len(prompts)
    finished: list[list[_Beam]] = [[] for _ in prompts]
    live_q = set(range(len(prompts)))
    restart = 0
    leftovers: dict[int, _Beam] = {}
    while live_q:
        before = sum(spent)
        beams = {q: [_Beam((), ())] for q in live_q}
        for depth in range(proposer.max_steps):
            active = [(q, b) for q, bs in beams.items() for b in bs]
            if not active:
                break
            seed = (s.seed * 1_000_003 + restart) * 1009 + depth
            props = proposer.propose(
                [StepRequest(prompts[q], b.steps, s.expand) for q, b in active], s.temperature, seed
            )
            cands: list[tuple[int, _Beam, bool]] = []
            for (q, b), ps in zip(active, props, strict=True):
                seen = set()
                for p in ps:
                    spent[q] += p.tokens
                    if p.step and p.step not in seen:
                        seen.add(p.step)
                        cands.append((q, _Beam((*b.steps, p.step), b.scores), p.terminal))
            values = ctx.prm.values([prompts[q] for q, _, _ in cands], [b.steps for _, b, _ in cands])
            ranked: dict[int, list[_Beam]] = {}
            for (q, b, terminal), v in zip(cands, values, strict=True):
                ranked.setdefault(q, []).append(_Beam(b.steps, (*b.scores, v), terminal))
            beams = {}
            for q, bs in ranked.items():
                bs.sort(key=lambda b: aggregate_steps(b.scores, s.aggregate), reverse=True)
                top = bs[: s.beams]
                finished[q] += [b for b in top if b.terminal]
                rest = [b for b in top if not b.terminal]
                if spent[q] >= s.budget:
                    if rest:
                        leftovers.setdefault(q, rest[0])
                    continue
                beams[q] = rest
            if not beams:
                break
        live_q = {q for q in live_q if spent[q] < s.budget} if sum(spent) > before else set()
        ctx.on_progress(len(prompts) - len(live_q))
        restart += 1
    # a question whose budget ran out before any beam finished: complete its best beam greedily
    todo = [q for q in range(len(prompts)) if not finished[q]]
    for q, (text, n) in zip(
        todo,
        complete_greedily(
            ctx, [(prompts[q], list(leftovers[q].steps) if q in leftovers else []) for q in todo]
        ),
        strict=True,
    ):
        spent[q] += n
        finished[q].append(_Beam(tuple(split_steps(text)), (0.0,), True))
    out = []
    for q, fin in enumerate(finished):
        best = max(fin, key=lambda b: aggregate_steps(b.scores, s.aggregate))
        text = "".join(st + proposer.separator for st in best.steps).rstrip("\n")
        out.append(SearchOutcome(text, extract_answer(text), spent[q], len(fin)))
    return out


@register(
    "mcts", True, "MCTS* with the value model (ReST-MCTS*), restarted while budget remains; V-weighted vote"
)
def mcts(ctx: SearchContext, prompts: Sequence[str]) -> list[SearchOutcome]:
    """One search per question runs until the end gate, the budget, or until every branch has
    ended (a low-entropy policy exhausts a small tree early); while budget remains a new search
    starts (another seed). Each search casts one ballot — its highest-V finished solution,
    weight V — and the answer with the largest summed V wins (one search: its own choice)."""
    s = ctx.settings
    n = len(prompts)
    spent = [0] * n
    ballots: list[list[tuple[str, float]]] = [[] for _ in range(n)]
    first_tree: list[dict | None] = [None] * n
    live, restart = list(range(n)), 0
    while live:
        trees, _ = run_mcts(
            [prompts[q] for q in live], ctx.proposer, ctx.prm.values, s.mcts, mode="eval",
            budget=[s.budget - spent[q] for q in live], seed=s.seed * 1_000_003 + restart,
        )  # fmt: skip
        picks = [chosen_node(t) for t in trees]
        todo = [i for i, node in enumerate(picks) if node is None or node.answer is None]
        done = complete_greedily(ctx, [(trees[i].prompt, unfinished_best(trees[i]).steps()) for i in todo])
        completed = dict(zip(todo, done, strict=True))
        before = sum(spent)
        for i, (q, tree) in enumerate(zip(live, trees, strict=True)):
            spent[q] += tree.tokens
            if first_tree[q] is None:
                first_tree[q] = tree_to_json(tree.root)
            if i in completed:
                text, extra = completed[i]
                spent[q] += extra
                ballots[q].append((text, 0.0))
            else:
                ballots[q].append((ctx.proposer.separator.join(picks[i].steps()), picks[i].value))
        live = [q for q in live if spent[q] < s.budget] if sum(spent) > before else []
        ctx.on_progress(n - len(live))
        restart += 1
    out = []
    for q in range(n):
        texts = [t for t, _ in ballots[q]]
        weights = [max(v, 1e-6) for _, v in ballots[q]]
        winner = vote_winner([extract_answer(t) for t in texts], weights)
        text = texts[winner if winner is not None else 0]
        out.append(SearchOutcome(text, extract_answer(text), spent[q], len(texts), first_tree[q]))
    return out
