"""Steering methods: draw n samples as separate streams, score them with a reward model while
or after they are generated, and select one original sample.

- ``majority``: the answer most samples give (``rewards.selection.vote_winner``).
- ``best_of_n``: argmax of the RM's score (a PRM's per-step scores aggregated by ``aggregate``).
- ``weighted_vote``: the answer with the largest Σ w_i, w_i = σ(reward) for an outcome RM (a
  probability, so a negative reward never counts against its answer) or the PRM's aggregate.
- ``gcrm_prune``: the goal filter online. Every ``check_every`` tokens after ``skip``, the GC-RM
  scores the sample's prefix; at the first Q_t < τ (t ≥ skip) the sample is aborted and never
  generates again. A sample that finishes gets a last check over its whole answer (EOS
  included, as ``telos eval rm`` counts it). Survivors vote by ``aggregate`` (majority,
  weighted by σ(reward), or max reward).
- ``prm_beam``: step-level beam search. n partial solutions each generate one step (up to
  ``beam.step_delimiter``); the PRM scores every prefix, the best n / width are kept and each is
  expanded ``width`` times; finished solutions are collected until n are done or
  ``beam.iterations`` rounds ran; the best finished one by aggregated PRM score is returned.
"""

from __future__ import annotations

import asyncio
import math
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any

from envs.math.answers import extract_answer, extract_answer_is, extract_boxed, extract_hash_answer
from rewards.preferences import appends_eos
from rewards.selection import aggregate_steps, best_index, goal_filter, vote_tally, vote_winner
from rollout.continuous import FinishEvent, StreamParams, TokenEvent
from rollout.search.steps import split_steps as solution_steps
from serve.engines import ServeEngine
from serve.protocol import APIError, SteeringSpec
from serve.rms import LoadedRM, QState, RMPool
from telos.registry import Registry

EXTRACTORS: dict[str, Callable[[str], str | None]] = {
    "default": extract_answer,
    "boxed": extract_boxed,
    "hash": extract_hash_answer,
    "answer_is": extract_answer_is,
}


def extract(text: str, extractor: str) -> str | None:
    """The final answer a sample states, by the request's ``answer_extractor``; ``regex:P``
    takes the last match of P (its first group if it has one)."""
    if extractor.startswith("regex:"):
        matches = list(re.finditer(extractor[6:], text))
        if not matches:
            return None
        m = matches[-1]
        return (m.group(1) if m.groups() else m.group(0)).strip() or None
    return EXTRACTORS[extractor](text)


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


@dataclass
class Candidate:
    """One sample: its tokens as generated, and what steering decided about it."""

    index: int
    token_ids: list[int] = field(default_factory=list)
    token_events: list[TokenEvent] = field(default_factory=list)
    text: str = ""
    status: str = "running"  # finished | pruned | filtered | budget | aborted | error
    finish_reason: str | None = None
    stop_string: str | None = None
    pruned_at_token: int | None = None
    min_q: float | None = None
    q_trace: list[float] | None = None
    score: float | None = None
    answer: str | None = None
    kept_last: bool = False

    def report(self, q_trace: bool, text: bool) -> dict[str, Any]:
        out = {
            "index": self.index,
            "status": self.status,
            "pruned_at_token": self.pruned_at_token,
            "min_q": self.min_q,
            "score": self.score,
            "answer": self.answer,
            "tokens": len(self.token_ids),
        }
        if text:
            out["text"] = self.text
        if q_trace:
            out["q_trace"] = self.q_trace
        return out


@dataclass
class Run:
    """One request's steering: the engine, the RMs, the prompt, the counters."""

    engine: ServeEngine
    pool: RMPool
    prompt_text: str
    prompt_ids: list[int]
    params: StreamParams
    spec: SteeringSpec
    on_progress: Callable[[str], None] | None = None
    tokens_generated: int = 0
    rm_calls: int = 0
    score_s: float = 0.0
    candidates: list[Candidate] = field(default_factory=list)
    streams: list = field(default_factory=list)

    def decode(self, ids: list[int]) -> str:
        return self.engine.tokenizer.decode(ids, skip_special_tokens=True)

    def over_budget(self) -> bool:
        cap = self.spec.max_total_tokens
        return cap is not None and self.tokens_generated >= cap

    def progress(self) -> None:
        if self.on_progress is not None:
            counts: dict[str, int] = {}
            for c in self.candidates:
                counts[c.status] = counts.get(c.status, 0) + 1
            self.on_progress(" ".join(f"{k}={v}" for k, v in sorted(counts.items())))

    async def timed(self, coro: Awaitable):
        start = time.perf_counter()
        try:
            return await coro
        finally:
            self.score_s += time.perf_counter() - start
            self.rm_calls += 1


Monitor = Callable[[Candidate], Awaitable[bool]]


async def sample(
    run: Run, cand: Candidate, prompt_ids: list[int], params: StreamParams, monitor=None
) -> Candidate:
    """Generate one candidate to its end; ``monitor(cand)`` (awaited every ``check_every``
    tokens after ``skip``) returning True prunes it: the stream is aborted at once and the
    tokens that were already in flight are still counted as generated."""
    spec = run.spec
    stream = run.engine.open(prompt_ids, params)
    run.streams.append(stream)
    pruning = False
    try:
        async for event in stream.events():
            if isinstance(event, TokenEvent):
                cand.token_ids.append(event.token_id)
                if params.logprobs is not None:
                    cand.token_events.append(event)
                run.tokens_generated += 1
                if pruning or cand.status != "running":
                    continue
                if run.over_budget():
                    cand.status = "budget"
                    stream.abort()
                    continue
                n = len(cand.token_ids)
                due = monitor is not None and n > spec.skip and (n - spec.skip) % spec.check_every == 0
                if due and await monitor(cand):
                    pruning = True
                    cand.status, cand.pruned_at_token = "pruned", n
                    stream.abort()
                    run.progress()
            else:
                assert isinstance(event, FinishEvent)
                cand.finish_reason, cand.stop_string = event.reason, event.stop_string
                if event.reason == "error":
                    raise APIError(503, f"the generation backend failed: {event.message}")
    except BaseException:
        stream.abort()
        raise
    text = run.decode(cand.token_ids)
    if cand.stop_string and cand.stop_string in text:
        text = text[: text.find(cand.stop_string)]
    cand.text = text
    if cand.status == "running":
        cand.status = "finished" if cand.finish_reason in ("stop", "length") else "aborted"
    return cand


STEERING_METHODS: Registry[Callable[[Run], Awaitable[Selection]]] = Registry("steering method")


@dataclass
class Selection:
    selected: int | None  # index into run.candidates
    vote: dict[str, float] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


def seeded_params(params: StreamParams, i: int) -> StreamParams:
    """Sample i of n: its own seed (seed + i), so seeded requests repeat and samples differ."""
    return replace(params, seed=None if params.seed is None else params.seed + i)


async def sample_n(run: Run, monitor=None) -> list[Candidate]:
    run.candidates = [Candidate(i) for i in range(run.spec.n)]
    tasks = [
        sample(run, c, run.prompt_ids, seeded_params(run.params, c.index), monitor) for c in run.candidates
    ]
    await asyncio.gather(*tasks)
    run.progress()
    for c in run.candidates:
        c.answer = extract(c.text, run.spec.answer_extractor)
    return run.candidates


async def rm_scores(run: Run, rm: LoadedRM, cands: list[Candidate]) -> list[float]:
    """Each candidate's score: the outcome reward, or a PRM's aggregated step scores."""
    if rm.kind == "prm":
        agg = run.spec.aggregate or "min"
        steps = [split_steps(c.text, rm.model.separator) for c in cands]
        raw = await run.timed(asyncio.gather(*(run.pool.step_scores(rm, run.prompt_text, s) for s in steps)))
        scores = [aggregate_steps(s, agg) if s else 0.0 for s in raw]
    else:
        scores = await run.timed(
            asyncio.gather(*(run.pool.score(rm, run.prompt_text, c.text) for c in cands))
        )
    for c, s in zip(cands, scores, strict=True):
        c.score = float(s)
    return [float(s) for s in scores]


def split_steps(text: str, separator: str) -> list[str]:
    return solution_steps(text, separator) or [text]  # a PRM scores at least one step


def as_weights(rm: LoadedRM, scores: list[float]) -> list[float]:
    return scores if rm.kind == "prm" else [sigmoid(s) for s in scores]


def _fallback(cands: list[Candidate]) -> int | None:
    return next((c.index for c in cands if c.status == "finished"), cands[0].index if cands else None)


@STEERING_METHODS.register("majority")
async def majority(run: Run) -> Selection:
    cands = await sample_n(run)
    answers = [c.answer for c in cands]
    winner = vote_winner(answers)
    return Selection(winner if winner is not None else _fallback(cands), vote_tally(answers))


@STEERING_METHODS.register("best_of_n")
async def best_of_n(run: Run) -> Selection:
    rm = run.pool.get(run.spec.rm, ("bt", "gcrm", "prm"))
    cands = await sample_n(run)
    scores = await rm_scores(run, rm, cands)
    return Selection(best_index(scores), vote_tally([c.answer for c in cands]))


@STEERING_METHODS.register("weighted_vote")
async def weighted_vote(run: Run) -> Selection:
    rm = run.pool.get(run.spec.rm, ("bt", "gcrm", "prm"))
    cands = await sample_n(run)
    weights = as_weights(rm, await rm_scores(run, rm, cands))
    answers = [c.answer for c in cands]
    winner = vote_winner(answers, weights)
    return Selection(winner if winner is not None else best_index(weights), vote_tally(answers, weights))


@STEERING_METHODS.register("gcrm_prune")
async def gcrm_prune(run: Run) -> Selection:
    spec = run.spec
    rm = run.pool.get(spec.rm, ("gcrm",))

    def last_standing(cand: Candidate) -> bool:
        # keep_last: the one sample every other was pruned before is never pruned itself
        others = [c for c in run.candidates if c is not cand]
        return spec.on_all_pruned == "keep_last" and all(c.status in ("pruned", "filtered") for c in others)

    def judge(cand: Candidate, q: list[float]) -> bool:
        cand.q_trace = q
        tail = q[spec.skip :]
        cand.min_q = min(tail) if tail else None
        if cand.kept_last or goal_filter(q, spec.skip, spec.threshold) is None:
            return False
        if last_standing(cand):
            cand.kept_last = True
            return False
        return True

    tok = run.engine.tokenizer
    same_ids = run.pool.shares_tokenizer(rm, tok)
    eos = rm.model.tokenizer.eos_token_id if appends_eos(rm.model.tokenizer) else None
    states = {c: QState() for c in range(spec.n)}

    async def prefix_q(cand: Candidate, final: bool) -> list[float]:
        if not same_ids:  # decode and let the RM tokenize, as it was trained
            if final:
                return await run.pool.full_q(rm, run.prompt_text, cand.text)
            return await run.pool.prefix_q(rm, run.prompt_text, run.decode(cand.token_ids))
        body = cand.token_ids
        if final:  # the finished answer ends with EOS, as the RM saw answers in training
            body = body[:-1] if body and body[-1] == tok.eos_token_id else body
            body = body + ([eos] if eos is not None else [])
        ids = run.prompt_ids + body
        return await run.pool.q_incremental(rm, states[cand.index], ids, len(run.prompt_ids))

    async def monitor(cand: Candidate) -> bool:
        return judge(cand, await run.timed(prefix_q(cand, final=False)))

    async def sample_and_check(cand: Candidate) -> None:
        try:
            await sample(run, cand, run.prompt_ids, seeded_params(run.params, cand.index), monitor)
            # a finished answer gets its last check: the tokens after the last one, EOS included
            if cand.status == "finished" and judge(cand, await run.timed(prefix_q(cand, final=True))):
                cand.status = "filtered"
                run.progress()
        finally:
            states.pop(cand.index, None)  # frees the RM's KV cache of this sample

    run.candidates = [Candidate(i) for i in range(spec.n)]
    await asyncio.gather(*(sample_and_check(c) for c in run.candidates))
    run.progress()
    for c in run.candidates:
        c.answer = extract(c.text, spec.answer_extractor)
    survivors = [c for c in run.candidates if c.status == "finished"]
    extra = {"all_pruned": not survivors}
    if not survivors:
        if spec.on_all_pruned == "error":
            raise APIError(
                422,
                f"steering: all {spec.n} samples were pruned at threshold {spec.threshold}; "
                "lower steering.threshold or set steering.on_all_pruned to keep_last or best_min_q",
                "steering.threshold",
                "all_pruned",
            )
        pruned = [c for c in run.candidates if c.min_q is not None]
        pick = max(pruned, key=lambda c: c.min_q).index if pruned else _fallback(run.candidates)
        return Selection(pick, {}, extra)
    rule = spec.aggregate or "majority"
    answers = [c.answer for c in survivors]
    if rule == "majority":
        winner = vote_winner(answers)
        return Selection(
            survivors[winner].index if winner is not None else survivors[0].index, vote_tally(answers), extra
        )
    weights = as_weights(rm, await rm_scores(run, rm, survivors))
    if rule == "max":
        return Selection(survivors[best_index(weights)].index, vote_tally(answers, weights), extra)
    winner = vote_winner(answers, weights)
    pick = survivors[winner if winner is not None else best_index(weights)].index
    return Selection(pick, vote_tally(answers, weights), extra)


@STEERING_METHODS.register("prm_beam")
async def prm_beam(run: Run) -> Selection:
    spec, beam = run.spec, run.spec.beam
    rm = run.pool.get(spec.rm, ("prm",))
    tok = run.engine.tokenizer
    keep = spec.n // beam.width
    agg = spec.aggregate or beam.agg
    active: list[tuple[str, list[int]]] = [("", [])] * spec.n  # (text so far, tokens so far)
    finished: list[Candidate] = []
    open_beams: list[tuple[float, str, list[int]]] = []
    rounds = 0
    for rounds in range(1, beam.iterations + 1):  # noqa: B007 - reported below
        if not active or run.over_budget():
            break
        steps = []
        for i, (text, ids) in enumerate(active):
            left = run.params.max_tokens - len(ids)
            params = replace(
                run.params,
                stop=(beam.step_delimiter,),
                max_tokens=max(1, min(beam.step_max_tokens, left)),
                seed=None if run.params.seed is None else run.params.seed + rounds * spec.n + i,
            )
            cand = Candidate(len(run.candidates))
            run.candidates.append(cand)
            prompt = (
                run.prompt_ids + tok(text, add_special_tokens=False)["input_ids"] if text else run.prompt_ids
            )
            steps.append(sample(run, cand, prompt, params))
        done = await asyncio.gather(*steps)
        grown = []
        for (text, ids), step in zip(active, done, strict=True):
            ended = step.finish_reason == "stop" and step.stop_string is None
            total = ids + step.token_ids
            full = text + step.text + ("" if ended else beam.step_delimiter)
            grown.append((full, total, ended or len(total) >= run.params.max_tokens or not step.token_ids))
        scored = await run.timed(
            asyncio.gather(
                *(
                    run.pool.step_scores(rm, run.prompt_text, split_steps(t, rm.model.separator))
                    for t, _, _ in grown
                )
            )
        )
        scores = [aggregate_steps(s, agg) if s else 0.0 for s in scored]
        open_beams = []
        for (text, ids, ended), score in zip(grown, scores, strict=True):
            if ended:
                c = Candidate(len(finished), token_ids=ids, text=text, status="finished", score=score)
                c.answer = extract(text, spec.answer_extractor)
                finished.append(c)
            else:
                open_beams.append((score, text, ids))
        if len(finished) >= spec.n:
            break
        open_beams.sort(key=lambda b: -b[0])
        active = [(t, i) for _, t, i in open_beams[:keep] for _ in range(beam.width)]
    if not finished:  # out of rounds: the best open beam is the answer so far
        for score, text, ids in sorted(open_beams, key=lambda b: -b[0])[:1]:
            finished.append(
                Candidate(0, token_ids=ids, text=text, status="finished", score=score, finish_reason="length")
            )
    step_cands = run.candidates
    run.candidates = finished
    best = best_index([c.score for c in finished])
    for c in finished:
        c.finish_reason = c.finish_reason or "stop"
    return Selection(
        best, vote_tally([c.answer for c in finished]), {"rounds": rounds, "step_samples": len(step_cands)}
    )
