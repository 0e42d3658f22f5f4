"""``telos rollout-server``: the shared key, request limits, sampling validation and complete
weight commits, tested against the real FastAPI app (``rollout.server.build_app``).

Most tests serve a small transformers model through ``HFRunner`` below — the same three members
as ``VLLMRunner`` (``generate`` from token ids, ``load_weights``, ``weight_version``) — so the
handler code runs for real in seconds. One test (marked vllm, slow) checks the same refusals in
front of a real CPU vLLM engine, where a bad value used to reach vLLM and come back as a 500.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, Qwen2Config

from rollout.client import VLLMServerEngine
from rollout.server import ServerLimits, build_app, resolve_api_key
from rollout.weights import bucket_to_bytes, exported_weights
from telos.errors import UserError

fastapi = pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

KEY = "s3cret-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
REPO = Path(__file__).resolve().parents[1]


class HFRunner:
    """A transformers model behind the runner interface the server expects (greedy only)."""

    def __init__(self, model) -> None:
        self.model, self.weight_version = model.eval(), 0
        self.vocab_size = model.config.vocab_size

    @torch.no_grad()
    def generate(self, prompt_ids, params) -> list[list[dict]]:
        out = []
        for ids in prompt_ids:
            seq = self.model.generate(
                torch.tensor([ids]), max_new_tokens=params.max_tokens, do_sample=False, pad_token_id=0
            )[0, len(ids) :].tolist()
            out.append([{"token_ids": seq, "logprobs": [0.0] * len(seq), "finish_reason": "length",
                         "stop_reason": None}] * params.n)  # fmt: skip
        return out

    def load_weights(self, named) -> None:
        self.model.load_state_dict(dict(named), strict=True)
        self.weight_version += 1


def tiny_model(seed: int = 0):
    torch.manual_seed(seed)
    cfg = Qwen2Config(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64,
    )  # fmt: skip
    return AutoModelForCausalLM.from_config(cfg)


def spec_of(model) -> dict:
    return {n: (tuple(t.shape), t.dtype) for n, t in model.state_dict().items()}


@pytest.fixture
def served():
    """(client, runner) for an app with the key set and small limits."""
    model = tiny_model()
    runner = HFRunner(model)
    limits = ServerLimits(
        max_request_bytes=4096, max_bucket_bytes=1 << 20, max_prompts=4, max_n=8, max_tokens=16
    )
    app = build_app(runner, "tiny", weight_spec=spec_of(model), api_key=KEY, limits=limits)
    return TestClient(app), runner


def gen_body(**sampling) -> dict:
    return {"prompt_token_ids": [[1, 2, 3]], "sampling": {"temperature": 0.0, "max_tokens": 4, **sampling}}


def test_every_endpoint_but_health_needs_the_key(served):
    client, runner = served
    blob = bucket_to_bytes(exported_weights(tiny_model(seed=1)))
    calls = [
        ("post", "/generate", {"json": gen_body()}),
        ("post", "/weights/begin", {"json": {}}),
        (
            "post",
            "/weights/bucket",
            {"content": blob, "headers": {"Content-Type": "application/octet-stream"}},
        ),
        ("post", "/weights/commit", {"json": {}}),
    ]
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}):
        for method, path, kw in calls:
            kw = {**kw, "headers": {**kw.get("headers", {}), **headers}}
            r = getattr(client, method)(path, **kw)
            assert r.status_code == 401, (path, headers, r.text)
            assert "TELOS_ROLLOUT_KEY" in r.json()["detail"]
    assert runner.weight_version == 0  # nobody's weights were taken
    assert client.get("/health").status_code == 200
    r = client.post("/generate", json=gen_body(), headers=AUTH)
    assert r.status_code == 200 and len(r.json()["groups"][0][0]["token_ids"]) == 4


@pytest.mark.parametrize(
    ("sampling", "key"),
    [
        ({"temperature": -1.0}, "temperature"),
        ({"temperature": float("nan")}, "temperature"),
        ({"top_p": 0.0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
        ({"top_k": -3}, "top_k"),
        ({"n": 0}, "n"),
        ({"n": "2"}, "n"),
        ({"n": True}, "n"),
        ({"stop": "\n"}, "stop"),
        ({"seed": -1}, "seed"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_tokens": 17}, "max_tokens"),  # over the limit
        ({"n": 9}, "n"),  # over the limit
        ({"best_of": 2}, "unknown sampling keys"),
    ],
)
def test_bad_sampling_values_are_a_400_naming_the_key(served, sampling, key):
    client, _ = served
    body = json.dumps(gen_body(**sampling), allow_nan=True)
    r = client.post("/generate", content=body, headers={**AUTH, "Content-Type": "application/json"})
    assert r.status_code == 400, r.text
    assert key in r.json()["detail"]


def test_request_size_and_prompt_count_limits(served):
    client, _ = served
    r = client.post("/generate", json={"prompt_token_ids": [[1]] * 5, "sampling": {}}, headers=AUTH)
    assert r.status_code == 400 and "5 prompts" in r.json()["detail"] and "1..4" in r.json()["detail"]
    r = client.post("/generate", json={"prompt_token_ids": [[1] * 3000], "sampling": {}}, headers=AUTH)
    assert r.status_code == 413 and "limit of 4096" in r.json()["detail"]
    r = client.post("/generate", json={"prompt_token_ids": [[-1]], "sampling": {}}, headers=AUTH)
    assert r.status_code == 400 and "integers >= 0" in r.json()["detail"]
    r = client.post("/generate", json={"prompt_token_ids": [[1, 64]], "sampling": {}}, headers=AUTH)
    assert r.status_code == 400 and "token id 64 is out of vocabulary; valid: 0..63" in r.json()["detail"]
    big = b"\0" * ((1 << 20) + 1)
    r = client.post(
        "/weights/bucket", content=big, headers={**AUTH, "Content-Type": "application/octet-stream"}
    )
    assert r.status_code == 413
    r = client.post("/generate", content=b"{not json", headers={**AUTH, "Content-Type": "application/json"})
    assert r.status_code == 400 and "not JSON" in r.json()["detail"]


def _push(client, named) -> None:
    assert client.post("/weights/begin", json={}, headers=AUTH).status_code == 200
    r = client.post(
        "/weights/bucket",
        content=bucket_to_bytes(named),
        headers={**AUTH, "Content-Type": "application/octet-stream"},
    )
    assert r.status_code == 200, r.text


def test_commit_loads_only_a_complete_state_dict_of_the_right_shapes(served):
    client, runner = served
    before = {k: v.clone() for k, v in runner.model.state_dict().items()}
    new = exported_weights(tiny_model(seed=1))

    _push(client, new[:-1])  # one tensor short
    r = client.post("/weights/commit", json={}, headers=AUTH)
    assert r.status_code == 400 and "1 of" in r.json()["detail"] and "unchanged" in r.json()["detail"]
    assert runner.weight_version == 0
    assert all(torch.equal(before[k], v) for k, v in runner.model.state_dict().items())

    name, t = new[0]
    for bad, message in (
        ([(name, t[:1].clone())], "shape"),
        ([(name, t.to(torch.int64))], "dtype"),
        ([("model.evil.weight", t.clone())], "unknown weight"),
    ):
        r = client.post(
            "/weights/bucket",
            content=bucket_to_bytes(bad),
            headers={**AUTH, "Content-Type": "application/octet-stream"},
        )
        assert r.status_code == 400 and message in r.json()["detail"], r.text
    r = client.post(
        "/weights/bucket", content=b"junk", headers={**AUTH, "Content-Type": "application/octet-stream"}
    )
    assert r.status_code == 400 and "safetensors" in r.json()["detail"]

    _push(client, new)  # complete: loads
    r = client.post("/weights/commit", json={}, headers=AUTH)
    assert r.status_code == 200 and r.json()["weight_version"] == 1
    assert all(torch.equal(dict(new)[k], v) for k, v in runner.model.state_dict().items())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_trainer_engine_sends_the_key_from_the_environment(monkeypatch):
    """The real client against the real app over HTTP (uvicorn in a thread)."""
    import uvicorn

    model = tiny_model()
    runner = HFRunner(tiny_model(seed=1))
    app = build_app(runner, "tiny", weight_spec=spec_of(model), api_key=KEY)
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{port}"
        monkeypatch.delenv("TELOS_ROLLOUT_KEY", raising=False)
        with pytest.raises(UserError, match="refused the API key; set TELOS_ROLLOUT_KEY"):
            VLLMServerEngine(model, None, url=url, connect_timeout_s=30)
        assert runner.weight_version == 0
        monkeypatch.setenv("TELOS_ROLLOUT_KEY", KEY)
        VLLMServerEngine(model, None, url=url, connect_timeout_s=30)  # pushes the full weights
        assert runner.weight_version == 1
        assert all(torch.equal(model.state_dict()[k], v) for k, v in runner.model.state_dict().items())
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_a_server_reachable_from_other_machines_needs_a_key(monkeypatch, capsys):
    monkeypatch.delenv("TELOS_ROLLOUT_KEY", raising=False)
    with pytest.raises(UserError, match="--api-key KEY or TELOS_ROLLOUT_KEY"):
        resolve_api_key(None, "0.0.0.0")
    assert resolve_api_key("k", "0.0.0.0") == "k"
    assert resolve_api_key(None, "127.0.0.1") is None
    assert "warning: no API key" in capsys.readouterr().err
    monkeypatch.setenv("TELOS_ROLLOUT_KEY", "from-env")
    assert resolve_api_key(None, "10.0.0.5") == "from-env"


VLLM_DRIVER = textwrap.dedent(
    """
    import json, sys
    from fastapi.testclient import TestClient
    from rollout.server import build_app, expected_weights
    from rollout.vllm import VLLMRunner

    model_dir = sys.argv[1]
    runner = VLLMRunner(model_dir, dtype="float32", max_model_len=128)
    client = TestClient(build_app(runner, model_dir, weight_spec=expected_weights(model_dir), api_key="k"))
    auth = {"Authorization": "Bearer k"}
    out = {}
    for name, sampling in {"top_p": {"top_p": 0.0}, "temperature": {"temperature": -1.0},
                           "n": {"n": 0}, "seed": {"seed": -5}}.items():
        r = client.post("/generate", json={"prompt_token_ids": [[1, 2]], "sampling": sampling}, headers=auth)
        out[name] = r.status_code
    r = client.post("/generate", json={"prompt_token_ids": [[10**9]], "sampling": {"max_tokens": 2}}, headers=auth)
    out["out_of_vocab"] = r.status_code
    r = client.post("/generate", json={"prompt_token_ids": [[1] * 200], "sampling": {"max_tokens": 2}}, headers=auth)
    out["too_long"] = r.status_code
    r = client.post("/generate", json={"prompt_token_ids": [[1, 2]], "sampling": {"max_tokens": 2}}, headers=auth)
    out["still_serves"] = r.status_code
    client.post("/weights/begin", json={}, headers=auth)
    out["empty_commit"] = client.post("/weights/commit", json={}, headers=auth).status_code
    out["version"] = runner.weight_version
    print("RESULT " + json.dumps(out))
    """
)


@pytest.mark.slow
@pytest.mark.vllm
def test_bad_requests_never_reach_vllm(tiny_model_dir, subprocess_env):
    proc = subprocess.run(
        [sys.executable, "-c", VLLM_DRIVER, str(tiny_model_dir)],
        env=subprocess_env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(proc.stdout.split("RESULT ")[1])
    assert result == {"top_p": 400, "temperature": 400, "n": 400, "seed": 400, "out_of_vocab": 400,
                      "too_long": 400, "still_serves": 200, "empty_commit": 400, "version": 0}  # fmt: skip


@pytest.mark.parametrize("ci", ["true", ""])
def test_a_broken_vllm_fails_vllm_tests_under_ci_and_skips_them_elsewhere(tmp_path, subprocess_env, ci):
    """conftest.py's vLLM gate, run on the vllm-marked test above with a vLLM whose import raises
    (as a wheel built for another torch does); the gate runs before any fixture is built."""
    broken = tmp_path / "site" / "vllm"
    broken.mkdir(parents=True)
    (broken / "__init__.py").write_text("raise OSError('libcudart.so.12: cannot open shared object file')\n")
    env = {**subprocess_env, "CI": ci, "PYTHONPATH": f"{broken.parent}:{subprocess_env['PYTHONPATH']}"}
    test_id = f"{Path(__file__).name}::test_bad_requests_never_reach_vllm"
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs", test_id],
        env=env, cwd=Path(__file__).parent, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    out = proc.stdout + proc.stderr
    if ci:
        assert proc.returncode == 1 and "1 error" in out, out[-3000:]  # an error at setup fails the run
        assert "CI=true but vLLM cannot be imported (OSError: libcudart.so.12" in out
    else:
        assert proc.returncode == 0 and "1 skipped" in out, out[-3000:]
        assert "vLLM cannot be imported (OSError" in out
