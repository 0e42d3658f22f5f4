"""The wire format: OpenAI request bodies → validated requests, and OpenAI's error shape.

Every malformed field is an ``APIError`` naming the field (``param``: ``max_tokens``,
``steering.threshold``) with the status the OpenAI SDK maps to its exception classes (400
BadRequestError, 401 AuthenticationError, 404 NotFoundError, 413, 422, 429 RateLimitError,
503/504 InternalServerError), never a 500.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

from rollout.continuous import StreamParams

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    413: "request_too_large",
    422: "unprocessable_entity",
    429: "rate_limit_error",
    503: "service_unavailable",
    504: "timeout",
}
METHODS = ("none", "majority", "best_of_n", "weighted_vote", "gcrm_prune", "prm_beam")
VOTE_RULES = ("majority", "weighted", "max")
STEP_AGGREGATIONS = ("min", "last", "prod")
ALL_PRUNED = ("keep_last", "best_min_q", "error")
EXTRACTORS = ("default", "boxed", "hash", "answer_is")
MAX_STOP = 4
MAX_LOGPROBS = 20


class APIError(Exception):
    """An error answered in OpenAI's shape ``{"error": {message, type, param, code}}``."""

    def __init__(
        self,
        status: int,
        message: str,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": ERROR_TYPES.get(self.status, "server_error"),
                "param": self.param,
                "code": self.code or str(self.status),
            }
        }


def bad(param: str, message: str) -> APIError:
    return APIError(400, f"{param}: {message}", param=param)


@dataclass(frozen=True)
class Limits:
    """What one request may ask for (``telos serve`` flags)."""

    max_body_bytes: int = 1 << 20
    max_n: int = 64
    max_tokens: int = 4096
    max_prompt_tokens: int = 8192
    max_queue: int = 256
    default_max_tokens: int = 256


# ------------------------------------------------------------------------------ field readers


def _int(body: dict, key: str, default: int | None, lo: int, hi: int | None, where: str = "") -> int | None:
    v = body.get(key, default)
    name = f"{where}{key}"
    if v is None:
        return None
    if not isinstance(v, int) or isinstance(v, bool):
        raise bad(name, f"must be an integer, got {v!r}")
    if v < lo or (hi is not None and v > hi):
        raise bad(name, f"must be in [{lo}, {hi if hi is not None else '∞'}], got {v}")
    return v


def _float(
    body: dict, key: str, default: float | None, lo: float, hi: float, where: str = ""
) -> float | None:
    v = body.get(key, default)
    name = f"{where}{key}"
    if v is None:
        return None
    if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
        raise bad(name, f"must be a number, got {v!r}")
    if not lo <= v <= hi:
        raise bad(name, f"must be in [{lo}, {hi}], got {v}")
    return float(v)


def _bool(body: dict, key: str, default: bool, where: str = "") -> bool:
    v = body.get(key, default)
    if v is None:
        return default
    if not isinstance(v, bool):
        raise bad(f"{where}{key}", f"must be true or false, got {v!r}")
    return v


def _choice(body: dict, key: str, default: str | None, valid: tuple[str, ...], where: str = "") -> str | None:
    v = body.get(key, default)
    if v is None:
        return None
    if v not in valid:
        raise bad(f"{where}{key}", f"{v!r} is not valid; valid: {', '.join(valid)}")
    return v


def _object(body: dict, key: str, where: str = "") -> dict:
    v = body.get(key)
    if v is None:
        return {}
    if not isinstance(v, dict):
        raise bad(f"{where}{key}", f"must be an object, got {type(v).__name__}")
    return v


def _unknown(body: dict, valid: set[str], where: str) -> None:
    extra = sorted(set(body) - valid)
    if extra:
        raise bad(f"{where}{extra[0]}", f"unknown field; valid: {', '.join(sorted(valid))}")


# ------------------------------------------------------------------------------ steering


@dataclass(frozen=True)
class BeamSpec:
    width: int = 2
    iterations: int = 8
    step_delimiter: str = "\n"
    agg: str = "min"
    step_max_tokens: int = 48


@dataclass(frozen=True)
class SteeringSpec:
    """``extra_body={"steering": {...}}``, validated. ``n`` samples are drawn; one is returned."""

    method: str = "none"
    n: int = 4
    rm: str | None = None
    threshold: float = 0.0
    skip: int = 5
    check_every: int = 8
    on_all_pruned: str = "keep_last"
    aggregate: str | None = None  # vote rule (gcrm_prune) or step aggregation (a PRM)
    answer_extractor: str = "default"
    beam: BeamSpec = field(default_factory=BeamSpec)
    max_total_tokens: int | None = None
    timeout_s: float | None = None
    return_candidates: bool = True
    return_q_trace: bool = False


STEERING_KEYS = {
    "method", "n", "rm", "threshold", "skip", "check_every", "on_all_pruned", "aggregate",
    "answer_extractor", "beam", "budget", "return", "goal",
}  # fmt: skip


def parse_steering(raw: Any, limits: Limits) -> SteeringSpec | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise bad("steering", f"must be an object, got {type(raw).__name__}")
    w = "steering."
    _unknown(raw, STEERING_KEYS, w)
    method = _choice(raw, "method", "none", METHODS, w)
    if method == "none":
        return None
    goal = raw.get("goal", "correct")
    if goal != "correct":
        raise bad(f"{w}goal", f"{goal!r} is not valid; valid: correct (the goal the GC-RM was trained for)")
    rm = raw.get("rm")
    if rm is not None and not isinstance(rm, str):
        raise bad(f"{w}rm", f"must be a reward model name, got {rm!r}")
    if method in ("best_of_n", "weighted_vote", "gcrm_prune"):
        agg_valid = VOTE_RULES if method == "gcrm_prune" else (*STEP_AGGREGATIONS,)
    else:
        agg_valid = STEP_AGGREGATIONS
    extractor = raw.get("answer_extractor", "default")
    if not isinstance(extractor, str) or not (extractor in EXTRACTORS or extractor.startswith("regex:")):
        raise bad(
            f"{w}answer_extractor",
            f"{extractor!r} is not valid; valid: {', '.join(EXTRACTORS)}, regex:PATTERN",
        )
    if extractor.startswith("regex:"):
        try:
            re.compile(extractor[6:])
        except re.error as e:
            raise bad(f"{w}answer_extractor", f"bad regular expression: {e}") from None
    b = _object(raw, "beam", w)
    _unknown(b, {"width", "iterations", "step_delimiter", "agg", "step_max_tokens"}, f"{w}beam.")
    delimiter = b.get("step_delimiter", "\n")
    if not isinstance(delimiter, str) or not delimiter:
        raise bad(f"{w}beam.step_delimiter", f"must be a non-empty string, got {delimiter!r}")
    beam = BeamSpec(
        width=_int(b, "width", 2, 1, limits.max_n, f"{w}beam."),
        iterations=_int(b, "iterations", 8, 1, 100, f"{w}beam."),
        step_delimiter=delimiter,
        agg=_choice(b, "agg", "min", STEP_AGGREGATIONS, f"{w}beam."),
        step_max_tokens=_int(b, "step_max_tokens", 48, 1, limits.max_tokens, f"{w}beam."),
    )
    budget = _object(raw, "budget", w)
    _unknown(budget, {"max_total_tokens", "timeout_s"}, f"{w}budget.")
    ret = _object(raw, "return", w)
    _unknown(ret, {"candidates", "q_trace"}, f"{w}return.")
    n = _int(raw, "n", 4, 1, limits.max_n, w)
    if method == "prm_beam" and n % beam.width:
        raise bad(f"{w}beam.width", f"must divide steering.n ({n}), got {beam.width}")
    return SteeringSpec(
        method=method,
        n=n,
        rm=rm,
        threshold=_float(raw, "threshold", 0.0, -1.0, 1.0, w),
        skip=_int(raw, "skip", 5, 0, None, w),
        check_every=_int(raw, "check_every", 8, 1, None, w),
        on_all_pruned=_choice(raw, "on_all_pruned", "keep_last", ALL_PRUNED, w),
        aggregate=_choice(raw, "aggregate", None, agg_valid, w),
        answer_extractor=extractor,
        beam=beam,
        max_total_tokens=_int(budget, "max_total_tokens", None, 1, None, f"{w}budget."),
        timeout_s=_float(budget, "timeout_s", None, 0.001, 3600.0, f"{w}budget."),
        return_candidates=_bool(ret, "candidates", True, f"{w}return."),
        return_q_trace=_bool(ret, "q_trace", False, f"{w}return."),
    )


# ------------------------------------------------------------------------------ requests


@dataclass
class GenerationRequest:
    kind: str  # "chat" | "completion"
    model: str
    messages: list[dict[str, str]] | None
    prompt: str | None
    n: int
    params: StreamParams
    stream: bool
    include_usage: bool
    steering: SteeringSpec | None
    prompt_ids: list[int] | None = None  # a completion prompt given as token ids (OpenAI's array form)


CHAT_KEYS = {
    "model", "messages", "n", "temperature", "top_p", "top_k", "max_tokens", "max_completion_tokens",
    "stop", "seed", "logprobs", "top_logprobs", "stream", "stream_options", "steering", "user",
    "presence_penalty", "frequency_penalty", "logit_bias", "response_format", "tools", "tool_choice",
    "parallel_tool_calls", "metadata", "store", "service_tier", "modalities", "reasoning_effort",
    "ignore_eos",
}  # fmt: skip
COMPLETION_KEYS = {
    "model", "prompt", "n", "temperature", "top_p", "top_k", "max_tokens", "stop", "seed", "logprobs",
    "stream", "stream_options", "steering", "user", "presence_penalty", "frequency_penalty", "echo",
    "logit_bias", "best_of", "suffix", "ignore_eos",
}  # fmt: skip
UNSUPPORTED = {"tools": None, "tool_choice": None, "response_format": None, "suffix": None, "best_of": 1}


def parse_messages(body: dict) -> list[dict[str, str]]:
    msgs = body.get("messages")
    if not isinstance(msgs, list) or not msgs:
        raise bad("messages", "must be a non-empty list of {role, content} objects")
    out = []
    for i, m in enumerate(msgs):
        if not isinstance(m, dict) or m.get("role") not in ("system", "user", "assistant", "developer"):
            raise bad(f"messages[{i}]", "needs a role of system, developer, user or assistant")
        content = m.get("content")
        if isinstance(content, list):  # content parts: text only
            texts = [p.get("text") for p in content if isinstance(p, dict) and p.get("type") == "text"]
            if len(texts) != len(content) or not all(isinstance(t, str) for t in texts):
                raise bad(f"messages[{i}].content", "only text content parts are supported")
            content = "".join(texts)
        if not isinstance(content, str):
            raise bad(f"messages[{i}].content", "must be a string or a list of text parts")
        role = "system" if m["role"] == "developer" else m["role"]
        out.append({"role": role, "content": content})
    return out


def _stop(body: dict) -> tuple[str, ...]:
    stop = body.get("stop")
    if stop is None:
        return ()
    if isinstance(stop, str):
        stop = [stop]
    if not isinstance(stop, list) or not all(isinstance(s, str) and s for s in stop) or len(stop) > MAX_STOP:
        raise bad("stop", f"must be a non-empty string or a list of up to {MAX_STOP} of them")
    return tuple(stop)


def parse_request(body: Any, kind: str, limits: Limits) -> GenerationRequest:
    """A /v1/chat/completions or /v1/completions body → a validated request."""
    if not isinstance(body, dict):
        raise APIError(400, "the request body must be a JSON object")
    _unknown(body, CHAT_KEYS if kind == "chat" else COMPLETION_KEYS, "")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise bad("model", "is required (GET /v1/models lists the served model)")
    for key, neutral in UNSUPPORTED.items():
        if body.get(key) not in (None, neutral):
            raise bad(key, "is not supported by telos serve")
    for key in ("presence_penalty", "frequency_penalty"):
        if _float(body, key, 0.0, -2.0, 2.0) != 0.0:
            raise bad(key, "is not supported by telos serve (use 0)")
    if body.get("echo"):
        raise bad("echo", "is not supported by telos serve")
    messages = prompt = prompt_ids = None
    if kind == "chat":
        messages = parse_messages(body)
        if body.get("logprobs"):
            logprobs = _int(body, "top_logprobs", 0, 0, MAX_LOGPROBS)
        else:
            if body.get("top_logprobs") is not None and body.get("top_logprobs") != 0:
                raise bad("top_logprobs", "needs logprobs: true")
            _bool(body, "logprobs", False)
            logprobs = None
        max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
        max_key = "max_completion_tokens" if "max_completion_tokens" in body else "max_tokens"
    else:
        prompt = body.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], (str, list)):
            prompt = prompt[0]
        if isinstance(prompt, list) and prompt and all(type(t) is int for t in prompt):
            prompt_ids = list(prompt)  # token ids: used as given, never re-tokenised
            prompt = None
        elif not isinstance(prompt, str):
            raise bad("prompt", "must be a string or a non-empty array of token ids (one prompt per request)")
        logprobs = _int(body, "logprobs", None, 0, MAX_LOGPROBS)
        max_tokens = body.get("max_tokens")
        max_key = "max_tokens"
    max_tokens = _int({max_key: max_tokens}, max_key, limits.default_max_tokens, 1, limits.max_tokens)
    temperature = _float(body, "temperature", 1.0, 0.0, 2.0)
    params = StreamParams(
        temperature=temperature,
        top_p=_float(body, "top_p", 1.0, 1e-6, 1.0),
        top_k=_int(body, "top_k", 0, -1, None) if body.get("top_k") != -1 else 0,
        max_tokens=max_tokens,
        stop=_stop(body),
        seed=_int(body, "seed", None, -(2**63), 2**63 - 1),
        logprobs=logprobs,
        ignore_eos=_bool(body, "ignore_eos", False),
    )
    n = _int(body, "n", 1, 1, limits.max_n)
    options = _object(body, "stream_options")
    steering = parse_steering(body.get("steering"), limits)
    if steering is not None and n != 1:
        raise bad("n", "must be 1 with steering (steering.n sets how many samples are drawn)")
    return GenerationRequest(
        kind=kind,
        model=model,
        messages=messages,
        prompt=prompt,
        prompt_ids=prompt_ids,
        n=n,
        params=params,
        stream=_bool(body, "stream", False),
        include_usage=_bool(options, "include_usage", False, "stream_options."),
        steering=steering,
    )
