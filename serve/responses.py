"""OpenAI response objects: completions, chat completions, their stream chunks, log-probs and
the ``steering`` report."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from starlette.responses import Response

from rollout.continuous import TokenEvent
from serve.steering import Candidate, Run, Selection


def new_id(kind: str) -> str:
    return f"{'chatcmpl' if kind == 'chat' else 'cmpl'}-{uuid.uuid4().hex[:24]}"


def finish_reason(reason: str | None) -> str:
    return reason if reason in ("stop", "length") else "stop"


def logprobs_object(kind: str, tokenizer, events: list[TokenEvent], top: int) -> dict[str, Any] | None:
    """Chat: ``{"content": [{token, logprob, bytes, top_logprobs}]}``; completions: the legacy
    ``{tokens, token_logprobs, top_logprobs, text_offset}``."""
    if not events:
        return None if kind == "completion" else {"content": []}

    def piece(token_id: int) -> str:
        return tokenizer.decode([token_id])

    if kind == "chat":
        content = []
        for e in events:
            t = piece(e.token_id)
            content.append(
                {
                    "token": t,
                    "logprob": e.logprob,
                    "bytes": list(t.encode()),
                    "top_logprobs": [
                        {"token": piece(i), "logprob": lp, "bytes": list(piece(i).encode())}
                        for i, lp in (e.top or [])[:top]
                    ],
                }
            )
        return {"content": content}
    tokens = [piece(e.token_id) for e in events]
    offsets, at = [], 0
    for t in tokens:
        offsets.append(at)
        at += len(t)
    return {
        "tokens": tokens,
        "token_logprobs": [e.logprob for e in events],
        "top_logprobs": [{piece(i): lp for i, lp in (e.top or [])} or None for e in events],
        "text_offset": offsets,
    }


def choice(kind: str, index: int, cand: Candidate, logprobs: dict | None, finish: str | None = None) -> dict:
    reason = finish or finish_reason(cand.finish_reason)
    if kind == "chat":
        message = {"role": "assistant", "content": cand.text}
        return {"index": index, "message": message, "logprobs": logprobs, "finish_reason": reason}
    return {"index": index, "text": cand.text, "logprobs": logprobs, "finish_reason": reason}


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def completion_object(kind: str, rid: str, model: str, choices: list[dict], use: dict, steering=None) -> dict:
    out = {
        "id": rid,
        "object": "chat.completion" if kind == "chat" else "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": choices,
        "usage": use,
    }
    if steering is not None:
        out["steering"] = steering
    return out


def chunk(kind: str, rid: str, model: str, index: int, text: str | None, reason: str | None, **extra) -> dict:
    first = extra.pop("first", False)
    if kind == "chat":
        delta: dict[str, Any] = {} if text is None else {"content": text}
        if first:
            delta["role"] = "assistant"
        ch = {
            "index": index,
            "delta": delta,
            "logprobs": extra.pop("logprobs", None),
            "finish_reason": reason,
        }
    else:
        ch = {
            "index": index,
            "text": text or "",
            "logprobs": extra.pop("logprobs", None),
            "finish_reason": reason,
        }
    out = {
        "id": rid,
        "object": "chat.completion.chunk" if kind == "chat" else "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": [ch],
        "usage": None,
    }
    out.update(extra)
    return out


def usage_chunk(kind: str, rid: str, model: str, use: dict) -> dict:
    return {
        "id": rid,
        "object": "chat.completion.chunk" if kind == "chat" else "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": [],
        "usage": use,
    }


def sse(data: dict | str) -> bytes:
    return f"data: {data if isinstance(data, str) else json.dumps(data)}\n\n".encode()


def steering_report(run: Run, selection: Selection, total_s: float) -> dict[str, Any]:
    """The top-level ``steering`` object of a steered response."""
    spec, cands = run.spec, run.candidates
    finished = [c for c in cands if c.status == "finished"]
    pruned = [c for c in cands if c.status == "pruned"]
    full = sum(len(c.token_ids) for c in finished) / len(finished) if finished else run.params.max_tokens
    saved = sum(max(0.0, full - len(c.token_ids)) for c in pruned)
    out: dict[str, Any] = {
        "method": spec.method,
        "n": spec.n,
        "kept": len(finished),
        "pruned": sum(c.status in ("pruned", "filtered") for c in cands),
        "all_pruned": bool(selection.extra.get("all_pruned", False)),
        "selected_index": selection.selected,
        "vote": selection.vote,
        "tokens_generated": run.tokens_generated,
        "tokens_saved_estimated": round(saved),
        "rm_calls": run.rm_calls,
        "timings_ms": {
            "total": round(total_s * 1000, 1),
            "score": round(run.score_s * 1000, 1),
            "generate": round(max(0.0, total_s - run.score_s) * 1000, 1),
        },
    }
    out.update({k: v for k, v in selection.extra.items() if k != "all_pruned"})
    if spec.return_candidates or spec.return_q_trace:
        out["candidates"] = [c.report(spec.return_q_trace, spec.return_candidates) for c in cands]
    return out


class EventStream(Response):
    """An SSE response that notices a client leaving while it waits for the next event.

    Starlette's StreamingResponse, under an ASGI 2.4 server (uvicorn), only learns of a
    disconnect when a write fails, and then leaves the generator to the garbage collector, so
    the samples behind it would keep generating. Here a listener waits for ``http.disconnect``
    beside the writer; whichever ends first, the body generator is closed at once (its
    ``finally`` aborts the samples)."""

    def __init__(self, body) -> None:  # noqa: D107 - Response's own init would render a body
        self.body = body
        self.background = None

    async def __call__(self, scope, receive, send) -> None:
        import asyncio

        async def write() -> None:
            headers = [
                (b"content-type", b"text/event-stream; charset=utf-8"),
                (b"cache-control", b"no-cache"),
            ]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            async for part in self.body:
                await send({"type": "http.response.body", "body": part, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})

        async def listen() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass

        writer, listener = asyncio.ensure_future(write()), asyncio.ensure_future(listen())
        try:
            done, _ = await asyncio.wait({writer, listener}, return_when=asyncio.FIRST_COMPLETED)
            if writer in done and not writer.cancelled():
                exc = writer.exception()
                if exc is not None and not isinstance(exc, OSError):  # OSError: the client went away
                    raise exc
        finally:
            for task in (writer, listener):
                task.cancel()
            await asyncio.gather(writer, listener, return_exceptions=True)
            await self.body.aclose()
