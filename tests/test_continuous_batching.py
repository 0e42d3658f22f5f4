"""The serving engine's continuous batcher (rollout/continuous.py): streams that join the decode
batch at different steps, leave it early or are aborted decode exactly what the batch engine
decodes for the same prompt alone (greedy), so splicing rows into the shared KV cache (left
shift, growth, trimming) loses nothing; seeded streams repeat; stop strings, max_tokens and
log-probs follow OpenAI's meaning."""

from __future__ import annotations

import threading

import pytest
import torch

from envs.math.procedural import generate
from rollout.continuous import GROW, ContinuousBatcher, FinishEvent, Stream, StreamParams, TokenEvent
from rollout.hf import HFEngine
from telos.errors import UserError
from telos.models import TinyModelConfig, build_tiny_model, build_tokenizer
from telos.types import SamplingParams

PROMPTS = [
    "Tom has 3 apples. How many apples does Tom have now?\n",
    "Ana has 12 pens.\n",
    "Hi\n",
    "What is 7 + 8? Think step by step and write the answer at the end of it all.\n",
]


@pytest.fixture(scope="module")
def model_and_tok():
    rows = generate("arith", "train", 300, max_value=30)
    tok = build_tokenizer([r["prompt"] + "\n" + r["solution"] for r in rows], 300)
    cfg = TinyModelConfig(arch="llama", hidden_size=64, num_layers=2, num_heads=2, num_kv_heads=1)
    model = build_tiny_model(cfg, tok, seed=1)
    with torch.no_grad():  # sharper distributions: a wrong cache column shows in the ids
        for p in model.parameters():
            p.mul_(3.0)
    return model.eval(), tok


class Collector:
    """Sinks that record every stream's events; ``wait`` blocks until all have finished."""

    def __init__(self) -> None:
        self.events: dict[int, list] = {}
        self.done = threading.Semaphore(0)

    def sink(self, key: int):
        self.events[key] = []

        def push(event) -> None:
            self.events[key].append(event)
            if isinstance(event, FinishEvent):
                self.done.release()

        return push

    def wait(self, count: int) -> None:
        for _ in range(count):
            assert self.done.acquire(timeout=60), "a stream never finished"

    def tokens(self, key: int) -> list[int]:
        return [e.token_id for e in self.events[key] if isinstance(e, TokenEvent)]

    def finish(self, key: int) -> FinishEvent:
        return self.events[key][-1]


def reference(model, tok, prompt: str, max_tokens: int) -> list[int]:
    out = HFEngine(model, tok).generate([prompt], SamplingParams(temperature=0.0, max_tokens=max_tokens))
    return out[0].token_ids


def test_staggered_greedy_streams_match_the_batch_engine(model_and_tok):
    model, tok = model_and_tok
    batcher = ContinuousBatcher(model, tok, max_batch_size=3)  # a 4th stream waits for a slot
    got = Collector()
    lengths = [40, 5, 90, 30]  # 90 > GROW: the cache must grow; early leavers force trims
    try:
        for i, (prompt, n) in enumerate(zip(PROMPTS, lengths, strict=True)):
            ids = tok(prompt)["input_ids"]
            batcher.submit(Stream(ids, StreamParams(temperature=0.0, max_tokens=n), got.sink(i)))
            if i == 1:
                got.wait(1)  # the short one has left before the long prompt joins
        got.wait(len(PROMPTS) - 1)
    finally:
        batcher.close()
    assert lengths[2] > GROW
    for i, (prompt, n) in enumerate(zip(PROMPTS, lengths, strict=True)):
        want = reference(model, tok, prompt, n)
        assert got.tokens(i) == want, f"stream {i}"
        assert got.finish(i).reason == ("stop" if want[-1] == tok.eos_token_id else "length")


def test_seeded_streams_repeat_and_differ_by_seed(model_and_tok):
    model, tok = model_and_tok
    batcher = ContinuousBatcher(model, tok)
    got = Collector()
    ids = tok(PROMPTS[0])["input_ids"]
    try:
        for key, seed in enumerate([11, 11, 12]):
            batcher.submit(
                Stream(ids, StreamParams(temperature=1.0, max_tokens=30, seed=seed), got.sink(key))
            )
        got.wait(3)
    finally:
        batcher.close()
    assert got.tokens(0) == got.tokens(1)
    assert got.tokens(0) != got.tokens(2)


def test_abort_stop_string_and_logprobs(model_and_tok):
    model, tok = model_and_tok
    batcher = ContinuousBatcher(model, tok)
    got = Collector()
    ids = tok(PROMPTS[3])["input_ids"]
    want = reference(model, tok, PROMPTS[3], 60)
    stop = tok.decode(want[8:10])
    try:
        aborted = batcher.submit(Stream(ids, StreamParams(temperature=1.0, max_tokens=400), got.sink(0)))
        batcher.submit(Stream(ids, StreamParams(temperature=0.0, max_tokens=60, stop=(stop,)), got.sink(1)))
        batcher.submit(Stream(ids, StreamParams(temperature=0.0, max_tokens=6, logprobs=3), got.sink(2)))
        batcher.abort(aborted)
        got.wait(3)
    finally:
        batcher.close()
    assert got.finish(0).reason == "abort" and len(got.tokens(0)) < 400
    assert got.finish(1).reason == "stop" and got.finish(1).stop_string == stop
    assert stop in tok.decode(got.tokens(1)) and len(got.tokens(1)) <= 10
    events = [e for e in got.events[2] if isinstance(e, TokenEvent)]
    with torch.no_grad():  # the model's own log-probs of the greedy tokens, position by position
        full = torch.tensor([ids + want[:6]])
        logp = model(full).logits[0, len(ids) - 1 : len(ids) + 5].log_softmax(-1)
    for t, e in enumerate(events):
        assert e.token_id == want[t]
        assert e.logprob == pytest.approx(float(logp[t, want[t]]), abs=1e-4)
        assert e.top[0][0] == want[t] and len(e.top) == 3  # greedy picks the top token


def test_prompt_beyond_the_context_is_refused(model_and_tok):
    model, tok = model_and_tok
    batcher = ContinuousBatcher(model, tok)
    try:
        too_long = [1] * batcher.max_context
        with pytest.raises(UserError, match="context"):
            batcher.submit(Stream(too_long, StreamParams(max_tokens=8), lambda e: None))
    finally:
        batcher.close()


def test_waiting_streams_take_finished_rows_slots(model_and_tok):
    """Two slots, six streams: every stream after the first two is written into a finished
    row's slot in place; each still decodes exactly what it decodes alone."""
    model, tok = model_and_tok
    batcher = ContinuousBatcher(model, tok, max_batch_size=2)
    got = Collector()
    prompts = [*PROMPTS, PROMPTS[0] + "And then?\n", "Go\n"]
    lengths = [7, 30, 12, 3, 25, 9]
    try:
        for i, (prompt, n) in enumerate(zip(prompts, lengths, strict=True)):
            batcher.submit(
                Stream(tok(prompt)["input_ids"], StreamParams(temperature=0.0, max_tokens=n), got.sink(i))
            )
        got.wait(len(prompts))
    finally:
        batcher.close()
    for i, (prompt, n) in enumerate(zip(prompts, lengths, strict=True)):
        assert got.tokens(i) == reference(model, tok, prompt, n), f"stream {i}"
