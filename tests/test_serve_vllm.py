"""``telos serve --engine vllm``: the same API over vLLM's async engine (one engine request per
sample). Greedy answers equal the hf engine's, a GC-RM prunes samples online (each pruned sample
is aborted by its request id) and a client that disconnects leaves nothing running."""

from __future__ import annotations

import time

import httpx
import pytest
from serve_support import KEY, QUESTIONS, LiveServer, train_tiny_rms

pytestmark = [pytest.mark.slow, pytest.mark.vllm]


@pytest.fixture(scope="module")
def servers(tiny_model_dir, tmp_path_factory):
    rms = train_tiny_rms(tiny_model_dir, tmp_path_factory.mktemp("serve-vllm-rms"))
    common = ["--policy", str(tiny_model_dir), "--served-model-name", "tiny", "--api-key", KEY,
              "--rm", f"gcrm={rms['gcrm']}"]  # fmt: skip
    vllm = LiveServer([*common, "--engine", "vllm", "--max-model-len", "512"], start_timeout=600)
    hf = LiveServer(common)
    yield vllm, hf
    vllm.stop()
    hf.stop()


def test_greedy_answers_equal_the_hf_engine(servers):
    vllm, hf = servers
    for q in QUESTIONS[:4]:
        a, b = (
            s.client().completions.create(model="tiny", prompt=q, max_tokens=24, temperature=0, logprobs=1)
            for s in (vllm, hf)
        )
        assert a.choices[0].text == b.choices[0].text
        assert a.usage.completion_tokens == b.usage.completion_tokens
        for x, y in zip(
            a.choices[0].logprobs.token_logprobs, b.choices[0].logprobs.token_logprobs, strict=True
        ):
            assert x == pytest.approx(y, abs=1e-3)


def test_gcrm_prune_aborts_samples_in_vllm(servers):
    vllm, _ = servers
    steering = {"method": "gcrm_prune", "n": 4, "rm": "gcrm", "threshold": 1.0, "skip": 2, "check_every": 2,
                "return": {"candidates": True}}  # fmt: skip
    r = vllm.client().chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": QUESTIONS[2]}], max_tokens=200, temperature=1.0,
        extra_body={"steering": steering},
    )  # fmt: skip
    s = r.model_extra["steering"]
    assert s["kept"] == 1 and s["pruned"] == 3
    assert all(c["tokens"] < 200 for c in s["candidates"] if c["status"] == "pruned")
    assert r.usage.completion_tokens == s["tokens_generated"]


def test_disconnect_aborts_vllm_requests(servers):
    vllm, _ = servers
    body = {
        "model": "tiny",
        "prompt": QUESTIONS[4],
        "max_tokens": 300,
        "temperature": 2.0,
        "n": 4,
        "stream": True,
    }
    with httpx.stream("POST", f"{vllm.url}/v1/completions", json=body, headers={"Authorization": f"Bearer {KEY}"},
                      timeout=60) as resp:  # fmt: skip
        next(resp.iter_lines())
    deadline = time.monotonic() + 30
    while httpx.get(f"{vllm.url}/health").json()["running"]:
        assert time.monotonic() < deadline, "vLLM requests still running after the client left"
        time.sleep(0.05)
