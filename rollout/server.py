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
"""

# no `from __future__ import annotations`: FastAPI must resolve the handlers' annotations
# (``Request`` is imported inside ``build_app``) at definition time

import threading
import time

from rollout.weights import NamedTensor, bucket_from_bytes
from telos.errors import UserError
from telos.models import check_model_path
from telos.types import SamplingParams

SAMPLING_KEYS = {"n", "temperature", "top_p", "top_k", "max_tokens", "stop", "seed"}


def sampling_from_json(data: dict) -> SamplingParams:
    unknown = set(data) - SAMPLING_KEYS
    if unknown:
        raise ValueError(f"unknown sampling keys {sorted(unknown)}; valid: {sorted(SAMPLING_KEYS)}")
    return SamplingParams(**data)


def build_app(runner, model_name: str):
    """The FastAPI app around a ``VLLMRunner`` (or anything with its three methods)."""
    from fastapi import FastAPI, HTTPException, Request

    app = FastAPI(title="telos rollout server")
    lock = threading.Lock()
    staged: list[NamedTensor] = []

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok", "model": model_name, "weight_version": runner.weight_version}

    @app.post("/generate")
    def generate(body: dict) -> dict:
        try:
            ids = body["prompt_token_ids"]
            params = sampling_from_json(body.get("sampling", {}))
            if not isinstance(ids, list) or not all(
                isinstance(p, list) and p and all(isinstance(t, int) for t in p) for p in ids
            ):
                raise ValueError("prompt_token_ids must be a list of non-empty lists of token ids")
        except (KeyError, TypeError, ValueError) as e:
            raise HTTPException(status_code=400, detail=f"bad /generate request: {e}") from e
        with lock:
            groups = runner.generate(ids, params)
            return {"groups": groups, "weight_version": runner.weight_version}

    @app.post("/weights/begin")
    def begin() -> dict:
        with lock:
            staged.clear()
        return {"ok": True}

    @app.post("/weights/bucket")
    async def bucket(request: Request) -> dict:
        blob = await request.body()
        try:
            tensors = bucket_from_bytes(blob)
        except Exception as e:  # a corrupt blob is the client's error, not the server's
            raise HTTPException(status_code=400, detail=f"not a safetensors blob: {e}") from e
        with lock:
            staged.extend(tensors)
        return {"staged": len(staged)}

    @app.post("/weights/commit")
    def commit() -> dict:
        with lock:
            if not staged:
                raise HTTPException(status_code=400, detail="no weights staged: POST /weights/bucket first")
            t0 = time.perf_counter()
            runner.load_weights(list(staged))
            staged.clear()
            return {"weight_version": runner.weight_version, "load_s": time.perf_counter() - t0}

    return app


def rollout_server_command(args) -> None:
    """Start vLLM on ``--model`` and serve it until interrupted."""
    import uvicorn

    from rollout.vllm import VLLMRunner, require_vllm

    require_vllm()
    check_model_path(args.model)
    if not 0 < args.port < 65536:
        raise UserError(f"--port must be in 1..65535, got {args.port}")

    runner = VLLMRunner(
        args.model,
        dtype=args.dtype,
        max_model_len=args.max_model_len,
        gpu_memory_utilization=args.gpu_memory_utilization,
        kv_cache_bytes=int(args.kv_cache_gb * 2**30) if args.kv_cache_gb else None,
        seed=args.seed,
    )
    print(f"telos rollout-server: {args.model} on http://{args.host}:{args.port}", flush=True)
    uvicorn.run(build_app(runner, args.model), host=args.host, port=args.port, log_level="warning")
