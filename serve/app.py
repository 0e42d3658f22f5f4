"""The FastAPI application of ``telos serve``.

Routes: ``POST /v1/chat/completions``, ``POST /v1/completions``, ``GET /v1/models`` (OpenAI),
``GET /v1/reward_models``, ``POST /v1/score``, ``GET /health``, ``GET /metrics`` (extensions).
With an API key every route but ``/health`` needs ``Authorization: Bearer KEY``. Requests over
``Limits.max_queue`` in flight get 429 with ``Retry-After``; a client that disconnects cancels
its request, which aborts every sample it still generates.
"""

# no `from __future__ import annotations`: FastAPI resolves the handlers' annotations at import

import asyncio
import hmac
import json
import time
from dataclasses import dataclass, field

from envs.math.prompts import render_messages
from rollout.continuous import TokenEvent
from serve.engines import ServeEngine
from serve.metrics import ServerMetrics
from serve.protocol import (
    APIError,
    GenerationRequest,
    Limits,
    SteeringSpec,
    bad,
    parse_messages,
    parse_request,
)
from serve.responses import (
    EventStream,
    choice,
    chunk,
    completion_object,
    finish_reason,
    logprobs_object,
    new_id,
    sse,
    steering_report,
    usage,
    usage_chunk,
)
from serve.rms import RMPool
from serve.steering import STEERING_METHODS, Candidate, Run, sample, seeded_params, split_steps

OPEN_PATHS = {"/health"}
DISCONNECT_POLL_S = 0.2


@dataclass
class ServerState:
    engine: ServeEngine
    pool: RMPool
    model_id: str
    engine_name: str = "hf"
    limits: Limits = field(default_factory=Limits)
    api_key: str | None = None
    inflight: int = 0
    metrics: ServerMetrics = field(default_factory=ServerMetrics)


def build_app(state: ServerState):
    from contextlib import asynccontextmanager

    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, PlainTextResponse
    from starlette.exceptions import HTTPException as StarletteHTTPException

    @asynccontextmanager
    async def lifespan(app):
        await state.engine.start()
        yield
        await state.engine.close()
        state.pool.close()

    app = FastAPI(title="telos serve", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    tok = state.engine.tokenizer

    def error_response(e: APIError) -> JSONResponse:
        return JSONResponse(e.body(), status_code=e.status, headers=e.headers)

    @app.exception_handler(APIError)
    async def on_api_error(request: Request, e: APIError):
        return error_response(e)

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(request: Request, e: StarletteHTTPException):
        return error_response(APIError(e.status_code, f"{request.method} {request.url.path}: {e.detail}"))

    @app.exception_handler(Exception)
    async def on_crash(request: Request, e: Exception):  # a bug, never a bad request: say so
        return JSONResponse(APIError(500, f"internal error: {type(e).__name__}: {e}").body(), status_code=500)

    async def guard(scope, receive, send):
        """Auth, body size and metrics as a plain ASGI wrapper: Starlette's BaseHTTPMiddleware
        would hide the client's disconnect from the handlers, so cancellation would never fire."""
        if scope["type"] != "http":
            return await inner(scope, receive, send)
        start = time.perf_counter()
        path = scope["path"]
        status = [500]

        async def send_and_note(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        headers = {k.decode().lower(): v.decode(errors="replace") for k, v in scope["headers"]}
        try:
            if state.api_key is not None and path not in OPEN_PATHS:
                header = headers.get("authorization", "")
                given = header[7:] if header.lower().startswith("bearer ") else ""
                if not hmac.compare_digest(given.encode(), state.api_key.encode()):
                    raise APIError(
                        401,
                        "invalid or missing API key (send Authorization: Bearer KEY)",
                        code="invalid_api_key",
                    )
            length = headers.get("content-length")
            if length is not None and length.isdigit() and int(length) > state.limits.max_body_bytes:
                raise APIError(
                    413, f"request body is {length} bytes; the limit is {state.limits.max_body_bytes}"
                )
        except APIError as e:
            await error_response(e)(scope, receive, send_and_note)
        else:
            await inner(scope, receive, send_and_note)
        state.metrics.observe(path, status[0], time.perf_counter() - start)

    async def read_json(request: Request):
        raw = await request.body()
        if len(raw) > state.limits.max_body_bytes:
            raise APIError(
                413, f"request body is {len(raw)} bytes; the limit is {state.limits.max_body_bytes}"
            )
        try:
            return json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise APIError(400, f"the request body is not valid JSON: {e}") from None

    def check_backend() -> None:
        if not state.engine.alive:
            raise APIError(503, "the generation backend is down", code="backend_down")

    @app.get("/health")
    async def health():
        body = {"status": "ok" if state.engine.alive else "down", "model": state.model_id,
                "engine": state.engine_name, "requests": state.inflight, **state.engine.load()}  # fmt: skip
        return JSONResponse(body, status_code=200 if state.engine.alive else 503)

    @app.get("/metrics")
    async def metrics():
        return PlainTextResponse(state.metrics.render(state), media_type="text/plain; version=0.0.4")

    @app.get("/v1/models")
    async def models():
        created = int(time.time())
        return {
            "object": "list",
            "data": [{"id": state.model_id, "object": "model", "created": created, "owned_by": "telos"}],
        }

    @app.get("/v1/reward_models")
    async def reward_models():
        return {"object": "list", "data": [rm.describe() for rm in state.pool.rms.values()]}

    @app.post("/v1/score")
    async def score(request: Request):
        body = await read_json(request)
        if not isinstance(body, dict):
            raise APIError(400, "the request body must be a JSON object")
        rm = state.pool.get(body.get("rm"), ("bt", "gcrm", "prm"), "rm")
        prompt = body.get("prompt")
        if isinstance(body.get("messages"), list):
            prompt = render_messages(_messages_for_score(body["messages"]), rm.model.tokenizer)
        response = body.get("response")
        if not isinstance(prompt, str):
            raise bad("prompt", "must be a string (or give messages)")
        if not isinstance(response, str):
            raise bad("response", "must be a string")
        out = {"object": "score", "rm": rm.name, "kind": rm.kind}
        if rm.kind == "prm":
            steps = split_steps(response, rm.model.separator)
            out.update(steps=steps, step_scores=await state.pool.step_scores(rm, prompt, steps))
        else:
            out["score"] = await state.pool.score(rm, prompt, response)
            if rm.kind == "gcrm":
                out["q"] = await state.pool.full_q(rm, prompt, response)
        return out

    async def generation(request: Request, kind: str):
        if state.inflight >= state.limits.max_queue:
            raise APIError(429, f"{state.inflight} requests in flight (limit {state.limits.max_queue}); retry shortly",
                           code="queue_full", headers={"Retry-After": "1"})  # fmt: skip
        check_backend()
        req = parse_request(await read_json(request), kind, state.limits)
        if req.model != state.model_id:
            raise APIError(
                404, f"model {req.model!r} not found; served: {state.model_id}", "model", "model_not_found"
            )
        param = "messages" if kind == "chat" else "prompt"
        if req.prompt_ids is not None:  # token ids in the model's vocabulary, sent as sampled
            vocab = len(tok)
            bad_id = next((t for t in req.prompt_ids if not 0 <= t < vocab), None)
            if bad_id is not None:
                raise bad("prompt", f"token id {bad_id} is outside the vocabulary [0, {vocab})")
            prompt_ids, prompt_text = list(req.prompt_ids), tok.decode(req.prompt_ids)
        else:
            prompt_text = render_messages(req.messages, tok) if kind == "chat" else req.prompt
            prompt_ids = tok(prompt_text)["input_ids"]
        if len(prompt_ids) > state.limits.max_prompt_tokens:
            raise APIError(
                413,
                f"{param}: {len(prompt_ids)} tokens; the limit is {state.limits.max_prompt_tokens}",
                param,
            )
        if not prompt_ids:
            raise bad(param, "is empty")
        if len(prompt_ids) + req.params.max_tokens > state.engine.max_context:
            raise bad("max_tokens", f"prompt ({len(prompt_ids)} tokens) + max_tokens ({req.params.max_tokens}) "
                      f"exceeds the model's context of {state.engine.max_context}")  # fmt: skip
        if req.steering is not None:
            _check_rm(state.pool, req.steering)
        spec = req.steering or SteeringSpec(method="none", n=req.n)
        run = Run(state.engine, state.pool, prompt_text, prompt_ids, req.params, spec)
        rid = new_id(kind)
        if req.stream:
            gen = stream_steered(run, req, rid) if req.steering else stream_plain(run, req, rid)
            return EventStream(_counted(gen))
        state.inflight += 1
        try:
            task = asyncio.ensure_future(respond(run, req, rid))
            while True:
                done, _ = await asyncio.wait({task}, timeout=DISCONNECT_POLL_S)
                if done:
                    return task.result()
                if await request.is_disconnected():
                    task.cancel()
                    state.metrics.cancelled_total.inc()
                    return JSONResponse(APIError(499, "client disconnected").body(), status_code=499)
        finally:
            state.inflight -= 1

    async def _counted(gen):
        state.inflight += 1
        finished = False
        try:
            async for part in gen:
                yield part
            finished = True
        finally:  # a client that leaves mid-stream closes or cancels this generator
            state.inflight -= 1
            if not finished:
                state.metrics.cancelled_total.inc()
            await gen.aclose()

    async def run_steering(run: Run):
        method = STEERING_METHODS.get(run.spec.method)
        if run.spec.timeout_s is None:
            return await method(run)
        try:
            return await asyncio.wait_for(method(run), run.spec.timeout_s)
        except TimeoutError:
            raise APIError(504, f"steering.budget.timeout_s ({run.spec.timeout_s} s) ran out",
                           "steering.budget.timeout_s", "timeout", headers={"x-should-retry": "false"}) from None  # fmt: skip

    async def respond(run: Run, req: GenerationRequest, rid: str):
        start = time.perf_counter()
        top = req.params.logprobs or 0
        if req.steering is None:
            run.candidates = [Candidate(i) for i in range(req.n)]
            await asyncio.gather(
                *(sample(run, c, run.prompt_ids, seeded_params(req.params, c.index)) for c in run.candidates)
            )
            choices = [choice(req.kind, c.index, c, _logprobs(req, c, top)) for c in run.candidates]
            state.metrics.account(run, None)
            return completion_object(
                req.kind, rid, state.model_id, choices, usage(len(run.prompt_ids), run.tokens_generated)
            )
        selection = await run_steering(run)
        report = steering_report(run, selection, time.perf_counter() - start)
        state.metrics.account(run, report)
        cand = run.candidates[selection.selected]
        choices = [choice(req.kind, 0, cand, _logprobs(req, cand, top))]
        return completion_object(
            req.kind, rid, state.model_id, choices, usage(len(run.prompt_ids), run.tokens_generated), report
        )

    def _logprobs(req: GenerationRequest, cand: Candidate, top: int):
        if req.params.logprobs is None:
            return None
        return logprobs_object(req.kind, tok, cand.token_events, top)

    async def stream_plain(run: Run, req: GenerationRequest, rid: str):
        """Tokens as they are sampled, one chunk per token per choice (stop strings held back)."""
        streams = [state.engine.open(run.prompt_ids, seeded_params(req.params, i)) for i in range(req.n)]
        merged: asyncio.Queue = asyncio.Queue()

        async def pump(i, s):
            async for e in s.events():
                await merged.put((i, e))

        pumps = [asyncio.ensure_future(pump(i, s)) for i, s in enumerate(streams)]
        ids: list[list[int]] = [[] for _ in streams]
        sent = [""] * req.n
        hold = max((len(s) for s in req.params.stop), default=1) - 1
        top = req.params.logprobs or 0
        try:
            for i in range(req.n):
                yield sse(
                    chunk(
                        req.kind, rid, state.model_id, i, "" if req.kind == "chat" else None, None, first=True
                    )
                )
            open_streams = req.n
            while open_streams:
                i, e = await merged.get()
                if isinstance(e, TokenEvent):
                    ids[i].append(e.token_id)
                    run.tokens_generated += 1
                    text = tok.decode(ids[i], skip_special_tokens=True)
                    safe = text[: max(len(sent[i]), len(text) - hold)] if hold else text
                    if len(safe) > len(sent[i]) or req.params.logprobs is not None:
                        lp = (
                            logprobs_object(req.kind, tok, [e], top)
                            if req.params.logprobs is not None
                            else None
                        )
                        yield sse(
                            chunk(req.kind, rid, state.model_id, i, safe[len(sent[i]) :], None, logprobs=lp)
                        )
                        sent[i] = safe
                    continue
                open_streams -= 1
                text = tok.decode(ids[i], skip_special_tokens=True)
                if e.stop_string and e.stop_string in text:
                    text = text[: text.find(e.stop_string)]
                if len(text) > len(sent[i]):
                    yield sse(chunk(req.kind, rid, state.model_id, i, text[len(sent[i]) :], None))
                yield sse(
                    chunk(
                        req.kind,
                        rid,
                        state.model_id,
                        i,
                        None if req.kind == "chat" else "",
                        finish_reason(e.reason),
                    )
                )
            state.metrics.account(run, None)
            for part in stream_end(run, req, rid):
                yield part
        finally:
            for s in streams:
                s.abort()
            for p in pumps:
                p.cancel()

    def stream_end(run: Run, req: GenerationRequest, rid: str) -> list[bytes]:
        """The usage chunk (when asked for) and ``[DONE]``."""
        use = usage(len(run.prompt_ids), run.tokens_generated)
        head = [sse(usage_chunk(req.kind, rid, state.model_id, use))] if req.include_usage else []
        return [*head, sse("[DONE]")]

    async def stream_steered(run: Run, req: GenerationRequest, rid: str):
        """Progress comments while the samples are drawn, then the selected answer as chunks,
        a final chunk carrying ``steering``, the usage chunk, ``[DONE]``."""
        progress: asyncio.Queue = asyncio.Queue()
        run.on_progress = progress.put_nowait
        start = time.perf_counter()
        task = asyncio.ensure_future(run_steering(run))
        try:
            while not task.done():
                getter = asyncio.ensure_future(progress.get())
                done, _ = await asyncio.wait({task, getter}, timeout=1.0, return_when=asyncio.FIRST_COMPLETED)
                if getter in done:
                    yield f": progress {getter.result()}\n\n".encode()
                else:
                    getter.cancel()
                    if not done:
                        yield b": progress waiting\n\n"
            try:
                selection = task.result()
            except APIError as e:
                yield sse(e.body())
                yield sse("[DONE]")
                return
            report = steering_report(run, selection, time.perf_counter() - start)
            state.metrics.account(run, report)
            cand = run.candidates[selection.selected]
            yield sse(
                chunk(req.kind, rid, state.model_id, 0, "" if req.kind == "chat" else None, None, first=True)
            )
            for piece in _pieces(cand):
                yield sse(chunk(req.kind, rid, state.model_id, 0, piece, None))
            yield sse(chunk(req.kind, rid, state.model_id, 0, None if req.kind == "chat" else "",
                            finish_reason(cand.finish_reason), steering=report))  # fmt: skip
            for part in stream_end(run, req, rid):
                yield part
        finally:
            if not task.done():
                task.cancel()

    def _pieces(cand: Candidate) -> list[str]:
        """The selected text cut where its tokens end (the text itself, when beams assembled it)."""
        out, sent = [], ""
        for k in range(1, len(cand.token_ids) + 1):
            text = tok.decode(cand.token_ids[:k], skip_special_tokens=True)
            if len(text) > len(sent) and cand.text.startswith(text):
                out.append(text[len(sent) :])
                sent = text
        if sent != cand.text:
            out.append(cand.text[len(sent) :] if cand.text.startswith(sent) else cand.text)
        return [p for p in out if p]

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        return await generation(request, "chat")

    @app.post("/v1/completions")
    async def completions(request: Request):
        return await generation(request, "completion")

    inner = app
    return guard


def _messages_for_score(messages: list) -> list[dict[str, str]]:
    return parse_messages({"messages": messages})


def _check_rm(pool: RMPool, spec: SteeringSpec) -> None:
    """Fail before sampling when the method's reward model is missing or of the wrong kind."""
    kinds = {"best_of_n": ("bt", "gcrm", "prm"), "weighted_vote": ("bt", "gcrm", "prm"),
             "gcrm_prune": ("gcrm",), "prm_beam": ("prm",)}.get(spec.method)  # fmt: skip
    if kinds is not None:
        pool.get(spec.rm, kinds)
