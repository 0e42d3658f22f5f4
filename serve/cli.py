"""``telos serve``: load the policy and reward models, start the OpenAI-compatible server."""

from __future__ import annotations

import argparse
import os
import sys

from rollout.server import is_loopback
from serve.protocol import Limits
from telos.errors import UserError

KEY_ENV = "TELOS_SERVE_KEY"


def resolve_policy(name: str) -> str:
    """``tiny:arith`` (built once per machine), a packaged model (``smollm2:135m-instruct``), a
    directory or a hub id → something ``from_pretrained`` loads."""
    from telos.models import check_model_path
    from telos.pretrained import resolve_model

    if name.startswith("tiny:"):
        # the tiny model is built by the trainers' SFT warm-up; serving only reads its directory
        from trainers.common.tiny import resolve_tiny

        return str(resolve_tiny(name))
    check_model_path(name)
    return resolve_model(name)


def build_state(args: argparse.Namespace):
    from serve.app import ServerState
    from serve.engines import SERVE_ENGINES
    from serve.rms import RMPool, check_rm_paths, parse_rm_flags
    from telos.models import load_model, load_tokenizer

    rms = parse_rm_flags(args.rm or [])
    check_rm_paths(rms)
    engine_cls = SERVE_ENGINES.get(args.engine)
    model_dir = resolve_policy(args.policy)
    tokenizer = load_tokenizer(model_dir)
    model = load_model(model_dir) if args.engine == "hf" else None
    engine = engine_cls(model, tokenizer, model_dir=model_dir, max_batch_size=args.max_batch_size,
                        max_model_len=args.max_model_len)  # fmt: skip
    limits = Limits(
        max_body_bytes=args.max_body_kb << 10,
        max_n=args.max_n,
        max_tokens=args.max_tokens,
        max_prompt_tokens=args.max_prompt_tokens,
        max_queue=args.max_queue,
        default_max_tokens=min(args.default_max_tokens, args.max_tokens),
    )
    key = args.api_key or os.environ.get(KEY_ENV) or None
    name = args.served_model_name or args.policy
    return ServerState(engine, RMPool(rms), name, args.engine, limits, key)


def require_serving_packages() -> None:
    import importlib.util

    missing = [m for m in ("fastapi", "uvicorn", "prometheus_client") if importlib.util.find_spec(m) is None]
    if missing:
        raise UserError(f"telos serve needs {', '.join(missing)}: pip install 'telos-rl[serve]'")


def serve_command(args: argparse.Namespace) -> int:
    require_serving_packages()
    import uvicorn

    for flag in ("max_n", "max_tokens", "max_prompt_tokens", "max_queue", "max_body_kb", "max_batch_size"):
        if getattr(args, flag) < 1:
            raise UserError(f"--{flag.replace('_', '-')} must be >= 1, got {getattr(args, flag)}")
    if not 0 < args.port < 65536:
        raise UserError(f"--port must be in 1..65535, got {args.port}")
    key = args.api_key or os.environ.get(KEY_ENV)
    if not is_loopback(args.host) and not key:
        print(
            f"warning: serving on {args.host} without --api-key: anyone who reaches it can use it",
            file=sys.stderr,
        )
    from serve.app import build_app

    state = build_state(args)
    rms = ", ".join(f"{r.name} ({r.kind})" for r in state.pool.rms.values()) or "none"
    print(
        f"serving {state.model_id} on http://{args.host}:{args.port}/v1 (engine {args.engine}; reward models: {rms})",
        flush=True,
    )
    uvicorn.run(build_app(state), host=args.host, port=args.port, log_level="warning", access_log=False)
    return 0
