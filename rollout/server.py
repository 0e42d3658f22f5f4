"""``telos rollout-server``: a vLLM engine in its own process (its own GPUs in real use) that
trainer ranks reach by URL. Endpoints (JSON unless noted):

- ``GET  /health``          → {status, model, weight_version}
- ``POST /generate``        {prompt_token_ids: [[int]], sampling: {n, temperature, top_p, top_k,
                            max_tokens, stop, seed}} → {groups: [[{token_ids, logprobs,
                            finish_reason, stop_reason}]], weight_version}
- ``POST /weights/begin``   start a weight update (drops anything staged)
- ``POST /weights/bucket``  body: one safetensors blob (application/octet-stream) of some weights
- ``POST /weights/commit``  load everything staged at once → {weight_version, load_s}

Any number of trainer ranks may call ``/generate``; rank 0 alone pushes weights. The engine is
not thread-safe, so requests are served one at a time.

Security: whoever can POST ``/weights/*`` decides what the trainer's policy samples from, so
the trainer and its servers share a secret (``--api-key`` / ``TELOS_ROLLOUT_KEY``), sent as
``Authorization: Bearer KEY``; every endpoint but ``/health`` answers 401 without it. A server
bound to a non-loopback address refuses to start without a key. Request bodies, the number of
prompts, ``n`` and ``max_tokens`` are capped (413 / 400 with a message), sampling values are
validated (400, not a 500 from vLLM), and ``/weights/commit`` loads only a complete state dict
of the expected names, shapes and floating dtypes — anything else is a 400 and the served
weights stay as they were.
"""

# no `from __future__ import annotations`: FastAPI must resolve the handlers' annotations
# (``Request`` is imported inside ``build_app``) at definition time

import hmac
import ipaddress
import json
import os
import sys
import threading
import time
from dataclasses import dataclass

import torch

from rollout.weights import NamedTensor, bucket_from_bytes
from telos.errors import UserError
from telos.models import check_model_path
from telos.types import SamplingParams

SAMPLING_KEYS = {"n", "temperature", "top_p", "top_k", "max_tokens", "stop", "seed"}
KEY_ENV = "TELOS_ROLLOUT_KEY"
OPEN_PATHS = {"/health"}  # liveness only: no weights, no generation

# name → (shape, dtype) of every tensor a commit must contain
WeightSpec = dict[str, tuple[tuple[int, ...], torch.dtype]]


@dataclass(frozen=True)
class ServerLimits:
    """What one request may ask for. The client's buckets are 256 MiB (rollout/client.py)."""

    max_request_bytes: int = 64 << 20  # a /generate body
    max_bucket_bytes: int = 1 << 30  # one /weights/bucket body
    max_prompts: int = 4096
    max_n: int = 64
    max_tokens: int = 32768


class BadRequest(ValueError):
    """A request the server refuses, with the HTTP status to answer."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return (isinstance(v, (int, float)) and not isinstance(v, bool)) and v == v  # not NaN


def sampling_from_json(data, limits: ServerLimits = ServerLimits()) -> SamplingParams:
    """A ``/generate`` request's ``sampling`` object → ``SamplingParams``; each bad value is a
    ``BadRequest`` naming the key and what is valid."""
    if not isinstance(data, dict):
        raise BadRequest(f"sampling must be an object with keys {sorted(SAMPLING_KEYS)}")
    unknown = set(data) - SAMPLING_KEYS
    if unknown:
        raise BadRequest(f"unknown sampling keys {sorted(unknown)}; valid: {sorted(SAMPLING_KEYS)}")
    p = SamplingParams(**data)
    checks = [
        ("n", _is_int(p.n) and 1 <= p.n <= limits.max_n, f"an integer in 1..{limits.max_n}"),
        ("temperature", _is_number(p.temperature) and 0 <= p.temperature <= 100, "a number in [0, 100]"),
        ("top_p", _is_number(p.top_p) and 0 < p.top_p <= 1, "a number in (0, 1]"),
        ("top_k", _is_int(p.top_k) and (p.top_k >= 0 or p.top_k == -1), "an integer >= 0 (0 or -1 = off)"),
        (
            "max_tokens",
            _is_int(p.max_tokens) and 1 <= p.max_tokens <= limits.max_tokens,
            f"an integer in 1..{limits.max_tokens}",
        ),
        (
            "stop",
            isinstance(p.stop, list) and len(p.stop) <= 16 and all(isinstance(x, str) and x for x in p.stop),
            "a list of at most 16 non-empty strings",
        ),
        (
            "seed",
            p.seed is None or (_is_int(p.seed) and 0 <= p.seed < 2**63),
            "null or an integer in 0..2^63-1",
        ),
    ]
    for key, ok, valid in checks:
        if not ok:
            raise BadRequest(f"sampling.{key} is {getattr(p, key)!r}; valid: {valid}")
    return p


def prompts_from_json(
    ids, limits: ServerLimits = ServerLimits(), vocab_size: int | None = None
) -> list[list[int]]:
    if not isinstance(ids, list) or not all(
        isinstance(p, list) and p and all(_is_int(t) and t >= 0 for t in p) for p in ids
    ):
        raise BadRequest("prompt_token_ids must be a list of non-empty lists of token ids (integers >= 0)")
    if not 1 <= len(ids) <= limits.max_prompts:
        raise BadRequest(
            f"prompt_token_ids has {len(ids)} prompts; valid: 1..{limits.max_prompts} per request"
        )
    if vocab_size is not None:
        top = max(max(p) for p in ids)
        if top >= vocab_size:
            raise BadRequest(f"token id {top} is out of vocabulary; valid: 0..{vocab_size - 1}")
    return ids


def check_bucket(tensors: list[NamedTensor], spec: WeightSpec) -> None:
    """Every tensor of a bucket is a known weight of the right shape and a floating dtype (the
    engine casts floats to its own dtype; an integer or boolean tensor is never a weight)."""
    for name, t in tensors:
        if name not in spec:
            raise BadRequest(f"unknown weight {name!r}: this server serves a model without it")
        shape, _ = spec[name]
        if tuple(t.shape) != shape:
            raise BadRequest(f"weight {name!r} has shape {list(t.shape)}; this model's is {list(shape)}")
        if not t.dtype.is_floating_point:
            raise BadRequest(f"weight {name!r} has dtype {t.dtype}; valid: a floating-point dtype")


def missing_weights(staged: dict, spec: WeightSpec) -> list[str]:
    return [name for name in spec if name not in staged]


def expected_weights(model_dir: str) -> WeightSpec:
    """The Hugging Face state dict a complete weight push must hold, from the model's config
    alone (built on the meta device: no memory, no weights read)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(model_dir)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return {name: (tuple(t.shape), t.dtype) for name, t in model.state_dict().items()}


def _authorized(header: str | None, api_key: str) -> bool:
    scheme, _, token = (header or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), api_key.encode())


async def _read_capped(request, limit: int) -> bytes:
    """The request body, refused (413) once it passes ``limit`` bytes — checked against the
    declared length first, and while streaming for a body sent without one."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise BadRequest(f"request body of {declared} bytes is over this server's limit of {limit}", 413)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BadRequest(f"request body is over this server's limit of {limit} bytes", 413)
        chunks.append(chunk)
    return b"".join(chunks)


def build_app(
    runner,
    model_name: str,
    *,
    weight_spec: WeightSpec,
    api_key: str | None = None,
    limits: ServerLimits = ServerLimits(),
):
    """The FastAPI app around a ``VLLMRunner`` (or anything with its ``generate``,
    ``load_weights`` and ``weight_version``). ``weight_spec``: what a commit must contain."""
    from fastapi import FastAPI, HTTPException, Request
    from fastapi.responses import JSONResponse
    from starlette.concurrency import run_in_threadpool

    app = FastAPI(title="telos rollout server")
    lock = threading.Lock()
    staged: dict[str, torch.Tensor] = {}

    @app.middleware("http")
    async def require_key(request: Request, call_next):
        # before any body is read: an unauthenticated client cannot make the server buffer anything
        path, header = request.url.path, request.headers.get("authorization")
        if api_key and path not in OPEN_PATHS and not _authorized(header, api_key):
            return JSONResponse(
                {"detail": f"missing or wrong API key: send 'Authorization: Bearer KEY' ({KEY_ENV})"},
                status_code=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
        return await call_next(request)

    def refuse(e: BadRequest):
        return HTTPException(status_code=e.status, detail=str(e))

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok", "model": model_name, "weight_version": runner.weight_version}

    @app.post("/generate")
    async def generate(request: Request) -> dict:
        try:
            raw = await _read_capped(request, limits.max_request_bytes)
            try:
                body = json.loads(raw)
            except (UnicodeDecodeError, json.JSONDecodeError) as e:
                raise BadRequest(f"body is not JSON: {e}") from None
            if not isinstance(body, dict) or "prompt_token_ids" not in body:
                raise BadRequest("body must be an object with prompt_token_ids (and sampling)")
            ids = prompts_from_json(body["prompt_token_ids"], limits, getattr(runner, "vocab_size", None))
            params = sampling_from_json(body.get("sampling", {}), limits)
        except TypeError as e:  # e.g. a list where a number belongs
            raise HTTPException(status_code=400, detail=f"bad /generate request: {e}") from None
        except BadRequest as e:
            raise refuse(e) from None

        def run() -> dict:
            with lock:
                return {"groups": runner.generate(ids, params), "weight_version": runner.weight_version}

        try:
            return await run_in_threadpool(run)
        except ValueError as e:  # the engine's own input checks (a prompt too long, an id out of vocabulary)
            raise HTTPException(status_code=400, detail=f"bad /generate request: {e}") from None

    @app.post("/weights/begin")
    def begin() -> dict:
        with lock:
            staged.clear()
        return {"ok": True}

    @app.post("/weights/bucket")
    async def bucket(request: Request) -> dict:
        try:
            blob = await _read_capped(request, limits.max_bucket_bytes)
            try:
                tensors = bucket_from_bytes(blob)
            except Exception as e:  # a corrupt blob is the client's error, not the server's
                raise BadRequest(f"not a safetensors blob: {e}") from None
            check_bucket(tensors, weight_spec)
        except BadRequest as e:
            raise refuse(e) from None
        with lock:
            staged.update(tensors)  # keyed by name: a resent tensor replaces, never accumulates
            return {"staged": len(staged)}

    @app.post("/weights/commit")
    def commit() -> dict:
        with lock:
            if not staged:
                raise HTTPException(status_code=400, detail="no weights staged: POST /weights/bucket first")
            missing = missing_weights(staged, weight_spec)
            if missing:
                raise HTTPException(
                    status_code=400,
                    detail=f"incomplete state dict: {len(missing)} of {len(weight_spec)} weights missing "
                    f"(first: {missing[0]!r}); nothing loaded, the served weights are unchanged",
                )
            t0 = time.perf_counter()
            runner.load_weights([(name, staged[name]) for name in weight_spec])
            staged.clear()
            return {"weight_version": runner.weight_version, "load_s": time.perf_counter() - t0}

    return app


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: assume it is reachable from elsewhere


def resolve_api_key(flag: str | None, host: str) -> str | None:
    """``--api-key`` or ``$TELOS_ROLLOUT_KEY``; required unless the server listens on loopback only."""
    key = flag or os.environ.get(KEY_ENV) or None
    if key is None and not is_loopback(host):
        raise UserError(
            f"--host {host} is reachable from other machines: set a shared secret with --api-key KEY or "
            f"{KEY_ENV}=KEY (the trainer sends the same {KEY_ENV}), or use --host 127.0.0.1"
        )
    if key is None:
        print(
            f"warning: no API key ({KEY_ENV} / --api-key): any process on this machine can replace the weights",
            file=sys.stderr,
            flush=True,
        )
    return key


def rollout_server_command(args) -> None:
    """Start vLLM on ``--model`` and serve it until interrupted."""
    import uvicorn

    from rollout.vllm import VLLMRunner, require_vllm
    from telos.pretrained import resolve_model

    require_vllm()
    check_model_path(args.model)
    if not 0 < args.port < 65536:
        raise UserError(f"--port must be in 1..65535, got {args.port}")
    for flag in ("max_prompts", "max_n", "max_tokens", "max_request_mb", "max_bucket_mb"):
        if getattr(args, flag) < 1:
            raise UserError(f"--{flag.replace('_', '-')} must be >= 1, got {getattr(args, flag)}")
    api_key = resolve_api_key(args.api_key, args.host)
    limits = ServerLimits(
        max_request_bytes=args.max_request_mb << 20,
        max_bucket_bytes=args.max_bucket_mb << 20,
        max_prompts=args.max_prompts,
        max_n=args.max_n,
        max_tokens=args.max_tokens,
    )
    model = resolve_model(args.model)  # a packaged model's converted directory
    spec = expected_weights(model)

    runner = VLLMRunner(
        model,
        dtype=args.dtype,
        max_model_len=args.max_model_len,
        gpu_memory_utilization=args.gpu_memory_utilization,
        kv_cache_bytes=int(args.kv_cache_gb * 2**30) if args.kv_cache_gb else None,
        seed=args.seed,
    )
    print(f"telos rollout-server: {args.model} on http://{args.host}:{args.port}", flush=True)
    app = build_app(runner, model, weight_spec=spec, api_key=api_key, limits=limits)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
