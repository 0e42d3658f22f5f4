"""``telos serve`` through the stock ``openai`` SDK against a live server on localhost: the
session's tiny policy, and a BT RM, a GC-RM and a PRM trained for 2 steps by ``trainer: rm``.

Covers every steering method, streaming (plain and steered), log-probs, seeds, every error
status and the SDK exception it maps to, auth, the extensions (/v1/score, /v1/reward_models,
/health, /metrics), client-disconnect cancellation and a 100-request mixed load test."""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from dataclasses import replace
from pathlib import Path

import httpx
import openai
import pytest
from serve_support import KEY, QUESTIONS, LiveServer, train_tiny_rms


@pytest.fixture(scope="module")
def rm_dirs(tiny_model_dir, tmp_path_factory) -> dict[str, Path]:
    return train_tiny_rms(tiny_model_dir, tmp_path_factory.mktemp("serve-rms"))


@pytest.fixture(scope="module")
def server(tiny_model_dir, rm_dirs):
    argv = ["--policy", str(tiny_model_dir), "--served-model-name", "tiny", "--api-key", KEY,
            "--max-tokens", "256", "--max-prompt-tokens", "200", "--max-body-kb", "64"]  # fmt: skip
    for kind, path in rm_dirs.items():
        argv += ["--rm", f"{kind}={path}"]
    live = LiveServer(argv)
    yield live
    live.stop()


@pytest.fixture(scope="module")
def client(server) -> openai.OpenAI:
    return server.client()


def chat(client, content=QUESTIONS[0], **kw):
    kw.setdefault("max_tokens", 24)
    return client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": content}], **kw)


def steering_of(response) -> dict:
    return response.model_extra["steering"]


# ------------------------------------------------------------------------------ plain OpenAI


def test_models_and_plain_completions(client):
    assert [m.id for m in client.models.list().data] == ["tiny"]
    r = chat(client, n=3, temperature=1.0, seed=7)
    assert len(r.choices) == 3 and [c.index for c in r.choices] == [0, 1, 2]
    assert (
        r.usage.completion_tokens >= 3
        and r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    )
    again = chat(client, n=3, temperature=1.0, seed=7)
    assert [c.message.content for c in again.choices] == [c.message.content for c in r.choices]
    assert "steering" not in (r.model_extra or {})
    c = client.completions.create(model="tiny", prompt=QUESTIONS[1], max_tokens=3, temperature=0, logprobs=2)
    assert c.choices[0].finish_reason in ("stop", "length") and c.usage.completion_tokens <= 3
    lp = c.choices[0].logprobs
    assert len(lp.token_logprobs) == c.usage.completion_tokens and all(v <= 0 for v in lp.token_logprobs)
    assert all(len(top) <= 2 for top in lp.top_logprobs)
    fixed = client.completions.create(
        model="tiny", prompt=QUESTIONS[1], max_tokens=30, extra_body={"ignore_eos": True}
    )
    assert fixed.usage.completion_tokens == 30 and fixed.choices[0].finish_reason == "length"


def test_a_prompt_of_token_ids_is_used_as_given(server, client, tiny_model_dir):
    """OpenAI's array-of-token-ids prompt: the same answer as its text (the tiny tokenizer adds
    no special tokens), counted as given; an id outside the vocabulary is a 400 on ``prompt``."""
    from telos.models import load_tokenizer

    tok = load_tokenizer(str(tiny_model_dir))
    ids = tok(QUESTIONS[1])["input_ids"]
    by_text = client.completions.create(model="tiny", prompt=QUESTIONS[1], max_tokens=8, temperature=0)
    by_ids = client.completions.create(model="tiny", prompt=ids, max_tokens=8, temperature=0)
    assert by_ids.choices[0].text == by_text.choices[0].text and by_ids.usage.prompt_tokens == len(ids)
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model="tiny", prompt=[len(tok) + 5], max_tokens=2)
    assert e.value.body["param"] == "prompt" and "outside the vocabulary" in e.value.body["message"]


def test_chat_logprobs_stop_and_streaming_equal_the_plain_answer(client):
    full = chat(client, temperature=0, max_tokens=20, logprobs=True, top_logprobs=2)
    text = full.choices[0].message.content
    content = full.choices[0].logprobs.content
    assert len(content) == full.usage.completion_tokens
    assert all(len(t.top_logprobs) == 2 and t.logprob <= t.top_logprobs[0].logprob + 1e-6 for t in content)
    parts, usage, reasons = [], None, []
    for ch in chat(client, temperature=0, max_tokens=20, stream=True, stream_options={"include_usage": True}):
        if ch.usage is not None:
            usage = ch.usage
        for c in ch.choices:
            parts.append(c.delta.content or "")
            reasons.append(c.finish_reason)
    assert "".join(parts) == text
    assert (
        usage.completion_tokens == full.usage.completion_tokens
        and reasons[-1] == full.choices[0].finish_reason
    )
    if len(text) > 3:  # a stop string cuts the text before it, as vLLM does
        cut = chat(client, temperature=0, max_tokens=20, stop=[text[2:4]])
        assert cut.choices[0].message.content == text[: text.find(text[2:4])]
        assert cut.choices[0].finish_reason == "stop"


# ------------------------------------------------------------------------------ steering


@pytest.mark.parametrize(
    "steering",
    [
        {"method": "majority", "n": 4},
        {"method": "best_of_n", "n": 4, "rm": "bt"},
        {"method": "best_of_n", "n": 3, "rm": "prm", "aggregate": "prod"},
        {"method": "weighted_vote", "n": 4, "rm": "gcrm"},
        {"method": "gcrm_prune", "n": 4, "rm": "gcrm", "threshold": -1.0, "aggregate": "weighted"},
        {"method": "prm_beam", "n": 4, "rm": "prm", "beam": {"width": 2, "iterations": 3}},
    ],
    ids=lambda s: f"{s['method']}-{s.get('rm', '')}",
)
def test_every_method_returns_an_original_candidate(client, steering):
    r = chat(
        client, max_tokens=32, seed=3, extra_body={"steering": {**steering, "return": {"candidates": True}}}
    )
    s = steering_of(r)
    assert s["method"] == steering["method"] and len(r.choices) == 1
    cands = s["candidates"]
    chosen = cands[s["selected_index"]]
    assert r.choices[0].message.content == chosen["text"]
    assert r.usage.completion_tokens == s["tokens_generated"] >= sum(c["tokens"] for c in cands) > 0
    if steering.get("rm"):
        assert s["rm_calls"] >= 1 and all(c["score"] is not None for c in cands if c["status"] == "finished")
    if steering["method"] == "gcrm_prune":  # τ = −1 never prunes: the plain vote over all
        assert s["kept"] == 4 and s["pruned"] == 0


def test_gcrm_prune_stops_samples_online(client):
    """τ = 1 prunes every sample at its first check (cos < 1); the last one standing is kept.
    Pruned samples stop generating: their token counts stay far below max_tokens."""
    steering = {"method": "gcrm_prune", "n": 6, "rm": "gcrm", "threshold": 1.0, "skip": 2, "check_every": 2,
                "return": {"candidates": True, "q_trace": True}}  # fmt: skip
    r = chat(client, QUESTIONS[2], max_tokens=200, temperature=1.0, seed=1, extra_body={"steering": steering})
    s = steering_of(r)
    cands = s["candidates"]
    pruned = [c for c in cands if c["status"] == "pruned"]
    assert s["kept"] == 1 and s["pruned"] == 5 and not s["all_pruned"]
    assert cands[s["selected_index"]]["status"] == "finished"
    for c in pruned:
        assert c["pruned_at_token"] == 4 and c["min_q"] < 1.0 and len(c["q_trace"]) >= 3
        assert c["tokens"] < 200  # tokens still in flight when the abort landed are counted, not hidden
    assert s["tokens_generated"] == r.usage.completion_tokens == sum(c["tokens"] for c in cands)
    with pytest.raises(openai.UnprocessableEntityError, match="pruned"):
        chat(client, max_tokens=40, extra_body={"steering": {**steering, "on_all_pruned": "error"}})
    best = chat(client, max_tokens=40, extra_body={"steering": {**steering, "on_all_pruned": "best_min_q"}})
    assert steering_of(best)["all_pruned"] and steering_of(best)["kept"] == 0


def test_budget_caps_generated_tokens(client):
    steering = {"method": "majority", "n": 8, "budget": {"max_total_tokens": 20}}
    s = steering_of(chat(client, max_tokens=100, extra_body={"steering": steering}))
    assert s["tokens_generated"] <= 20 + 8  # each live sample may have one token in flight


def test_steered_stream_sends_progress_then_the_selected_answer(server, client):
    steering = {"method": "gcrm_prune", "n": 4, "rm": "gcrm", "threshold": 1.0, "skip": 1, "check_every": 1}
    body = {"model": "tiny", "messages": [{"role": "user", "content": QUESTIONS[3]}], "max_tokens": 40,
            "stream": True, "stream_options": {"include_usage": True}, "steering": steering}  # fmt: skip
    with httpx.stream("POST", f"{server.url}/v1/chat/completions", json=body,
                      headers={"Authorization": f"Bearer {KEY}"}, timeout=60) as resp:  # fmt: skip
        lines = [line for line in resp.iter_lines() if line]
    assert any(line.startswith(": progress") for line in lines)
    data = [line[6:] for line in lines if line.startswith("data: ")]
    assert data[-1] == "[DONE]"
    chunks = [json.loads(d) for d in data[:-1]]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] > 0
    final = chunks[-2]
    assert final["choices"][0]["finish_reason"] in ("stop", "length") and "steering" in final
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks[:-1])
    selected = final["steering"]["candidates"][final["steering"]["selected_index"]]
    assert text == selected["text"]
    # the SDK reads the same stream
    sdk = list(chat(client, max_tokens=40, stream=True, extra_body={"steering": steering}))
    assert "steering" in sdk[-1].model_extra


# ------------------------------------------------------------------------------ extensions


def test_score_reward_models_health_metrics(server, client):
    listed = client.get("/reward_models", cast_to=object)
    assert {m["id"]: m["kind"] for m in listed["data"]} == {"bt": "bt", "gcrm": "gcrm", "prm": "prm"}
    bt = client.post("/score", body={"rm": "bt", "prompt": QUESTIONS[0], "response": "12"}, cast_to=object)
    assert isinstance(bt["score"], float)
    gc = client.post(
        "/score", body={"rm": "gcrm", "prompt": QUESTIONS[0], "response": "1+2=3"}, cast_to=object
    )
    assert len(gc["q"]) >= 2 and all(-1.0 <= q <= 1.0 for q in gc["q"])
    prm = client.post(
        "/score", body={"rm": "prm", "prompt": QUESTIONS[0], "response": "1+2=3\n3+4=7"}, cast_to=object
    )
    assert prm["steps"] == ["1+2=3", "3+4=7"] and len(prm["step_scores"]) == 2
    health = httpx.get(f"{server.url}/health")  # open without the key
    assert health.status_code == 200 and health.json()["status"] == "ok"
    metrics = httpx.get(f"{server.url}/metrics", headers={"Authorization": f"Bearer {KEY}"}).text
    assert "telos_requests_total" in metrics and "telos_tokens_generated_total" in metrics
    assert "telos_request_latency_seconds_bucket" in metrics


# ------------------------------------------------------------------------------ errors


@pytest.mark.parametrize(
    "kwargs,param",
    [
        (
            {"extra_body": {"steering": {"method": "gcrm_prune", "rm": "gcrm", "threshold": 3}}},
            "steering.threshold",
        ),
        ({"extra_body": {"steering": {"method": "vote"}}}, "steering.method"),
        ({"extra_body": {"steering": {"method": "majority", "n": 0}}}, "steering.n"),
        (
            {"extra_body": {"steering": {"method": "prm_beam", "rm": "prm", "n": 3, "beam": {"width": 2}}}},
            "steering.beam.width",
        ),
        ({"extra_body": {"steering": {"method": "gcrm_prune", "rm": "bt"}}}, "steering.rm"),
        ({"extra_body": {"steering": {"method": "majority", "bogus": 1}}}, "steering.bogus"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_tokens": 10_000}, "max_tokens"),
        ({"temperature": -1}, "temperature"),
        ({"top_p": 0}, "top_p"),
        ({"n": 2, "extra_body": {"steering": {"method": "majority"}}}, "n"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
    ],
)
def test_bad_parameters_are_400_naming_the_field(client, kwargs, param):
    with pytest.raises(openai.BadRequestError) as e:
        chat(client, **kwargs)
    assert e.value.body["param"] == param and e.value.body["type"] == "invalid_request_error"


def test_error_statuses_map_to_sdk_exceptions(server, client):
    with pytest.raises(openai.AuthenticationError):
        chat(server.client(key="wrong"))
    assert httpx.get(f"{server.url}/v1/models").status_code == 401  # no Authorization header at all
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="gpt-4", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.NotFoundError, match="not found"):
        chat(client, extra_body={"steering": {"method": "best_of_n", "rm": "nope"}})
    with pytest.raises(openai.APIStatusError) as e:  # prompt over --max-prompt-tokens
        chat(client, content="1 + 2 " * 400)
    assert e.value.status_code == 413
    with pytest.raises(openai.APIStatusError) as e:  # body over --max-body-kb
        chat(client, content="x" * 70_000)
    assert e.value.status_code == 413
    limits = server.state.limits
    server.state.limits = replace(limits, max_queue=0)
    try:
        with pytest.raises(openai.RateLimitError) as e:
            chat(client)
        assert e.value.response.headers["retry-after"] == "1"
    finally:
        server.state.limits = limits


def test_malformed_requests_never_get_a_500(server):
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    bodies = [b"{not json", b"[]", b'"x"', b"null", b'{"model": "tiny"}', b'{"model": 3, "messages": []}',
              b'{"model": "tiny", "messages": [{"role": "robot", "content": "x"}]}',
              b'{"model": "tiny", "messages": [{"role": "user", "content": 5}]}',
              b'{"model": "tiny", "messages": [{"role": "user", "content": "x"}], "steering": 3}',
              b'{"model": "tiny", "messages": [{"role": "user", "content": "x"}], "n": "two"}',
              b'{"model": "tiny", "messages": [{"role": "user", "content": "x"}], "seed": 1.5}',
              b'{"model": "tiny", "messages": [{"role": "user", "content": "x"}], "stream_options": []}',
              b'{"model": "tiny", "prompt": ["a", "b"]}', b'\xff\xfe']  # fmt: skip
    for path in ("/v1/chat/completions", "/v1/completions", "/v1/score"):
        for body in bodies:
            r = httpx.post(f"{server.url}{path}", content=body, headers=headers)
            assert 400 <= r.status_code < 500, (path, body, r.text)
            assert set(r.json()["error"]) == {"message", "type", "param", "code"}
    assert httpx.get(f"{server.url}/v1/nothing", headers=headers).status_code == 404


def test_backend_down_is_503(tiny_model_dir):
    live = LiveServer(["--policy", str(tiny_model_dir), "--served-model-name", "tiny"])
    try:
        live.state.engine.batcher.close()
        with pytest.raises(openai.InternalServerError) as e:
            chat(live.client())
        assert e.value.status_code == 503
        assert httpx.get(f"{live.url}/health").status_code == 503
    finally:
        live.stop()


# ------------------------------------------------------------------------------ cancellation, load


def _wait_idle(server, timeout: float = 20.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        h = httpx.get(f"{server.url}/health").json()
        if h["running"] == 0 and h["waiting"] == 0:
            return h
        assert time.monotonic() < deadline, f"samples still generating after the client left: {h}"
        time.sleep(0.05)


def _cancelled(server) -> float:
    metrics = httpx.get(f"{server.url}/metrics", headers={"Authorization": f"Bearer {KEY}"}).text
    line = next(x for x in metrics.splitlines() if x.startswith("telos_requests_cancelled_total"))
    return float(line.split()[-1])


def test_client_disconnect_aborts_its_samples(server):
    """A streaming client that closes, and a waiting client that times out, cancel their
    requests (16 samples × 250 tokens each, EOS ignored, would run for seconds): the counter moves and the
    engine empties."""
    headers = {"Authorization": f"Bearer {KEY}"}
    body = {"model": "tiny", "prompt": QUESTIONS[4], "max_tokens": 250, "n": 16, "ignore_eos": True}
    before = _cancelled(server)
    with httpx.stream("POST", f"{server.url}/v1/completions", json={**body, "stream": True}, headers=headers,
                      timeout=60) as resp:  # fmt: skip
        assert resp.status_code == 200
        next(resp.iter_lines())  # dropping the line iterator closes the connection
    _wait_idle(server)
    assert _cancelled(server) == before + 1
    steered = {**body, "n": 1, "steering": {"method": "majority", "n": 16}}
    with pytest.raises(httpx.ReadTimeout):  # the client gives up: the server drops the request
        httpx.post(f"{server.url}/v1/completions", json=steered, headers=headers, timeout=0.3)
    _wait_idle(server)
    assert _cancelled(server) == before + 2


def test_load_100_concurrent_mixed_requests(server, capsys):
    async def main() -> list[tuple[float, int]]:
        client = openai.AsyncOpenAI(base_url=f"{server.url}/v1", api_key=KEY, max_retries=0, timeout=300)

        async def one(i: int) -> tuple[float, int]:
            start = time.perf_counter()
            extra = (
                {"steering": {"method": "gcrm_prune", "n": 4, "rm": "gcrm", "threshold": 0.0}}
                if i % 3 == 0
                else {}
            )
            await client.chat.completions.create(
                model="tiny", messages=[{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}],
                max_tokens=24, extra_body=extra,
            )  # fmt: skip
            return time.perf_counter() - start, 200

        try:
            return await asyncio.gather(*(one(i) for i in range(100)))
        finally:
            await client.close()

    results = asyncio.run(main())  # any 4xx/5xx raises inside gather and fails the test
    latencies = sorted(t for t, _ in results)
    p50, p95 = statistics.median(latencies), latencies[94]
    with capsys.disabled():
        print(f"\n100 concurrent requests (1/3 gcrm_prune n=4): p50 {p50:.2f} s, p95 {p95:.2f} s")
    assert len(results) == 100
    _wait_idle(server)


def test_incremental_gcrm_q_equals_the_full_forward(rm_dirs):
    """gcrm_prune's incremental Q (the RM trunk's KV cache, a few new tokens per check) is the
    Q the full forward of ``GoalConditionedRM.q_values`` gives, position by position."""
    from rewards.preferences import response_ids
    from rewards.reward_model import GoalConditionedRM
    from serve.rms import QState, incremental_q, incremental_q_batch

    rm = GoalConditionedRM.from_pretrained(rm_dirs["gcrm"], device="cpu")
    prompt, answer = QUESTIONS[0], "12+5=17\n17+3=20\n#### 20"
    full = rm.q_values([prompt], [answer])[0]
    ids, start = response_ids(rm.tokenizer, prompt, answer)
    state = QState()
    for cut in (start + 2, start + 5, len(ids) - 1, len(ids)):  # checks at growing prefixes
        got = incremental_q(rm, state, ids[:cut], start)
        assert got == pytest.approx(full[: cut - start], abs=1e-5)
    # three samples checked together: their caches are stacked into one forward
    other = "12+5=18\n18+3=21\n#### 21"
    full_other = rm.q_values([prompt], [other])[0]
    ids_other, _ = response_ids(rm.tokenizer, prompt, other)
    states = [QState(), QState(), QState()]
    for cut in (start + 3, start + 7, len(ids)):
        batch = [
            (states[0], ids[:cut], start),
            (states[1], ids_other[:cut], start),
            (states[2], ids[:cut], start),
        ]
        got = incremental_q_batch(rm, batch)
        assert got[0] == pytest.approx(full[: cut - start], abs=1e-5) and got[2] == got[0]
        assert got[1] == pytest.approx(full_other[: cut - start], abs=1e-5)
