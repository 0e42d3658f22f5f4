"""Rollout throughput: telos's ``hf`` engine vs its ``vllm`` engine on random-weight models of
growing size (benchmarks/models.py), the GRPO shape: P prompts × n answers, up to 128 new
tokens at temperature 1.

Per (size, engine): one warm-up call (vLLM compiles and allocates on its first), then ``--calls``
timed calls on fresh prompts; tokens/s = generated tokens / seconds, MFU = 2·N·tokens / s / peak
(the prompt prefill left out). Writes JSON and a PNG of tokens/s against parameters.

On a CPU the larger sizes get fewer prompts (``--prompts-per-size``), else one 500M call at
64 × 8 × 128 tokens would take ~15 minutes on 2 cores; the engines always see the same batch.

    python benchmarks/rollout.py                                   # CPU defaults
    python benchmarks/rollout.py --sizes 500m --prompts 64 --dtype bfloat16 --vocab 151936   # a GPU
    python benchmarks/rollout.py --sizes smollm2 --out benchmarks/results/rollout_cpu_smollm2.json
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import format_table, machine_info, measure_matmul_peak, mfu, set_offline, write_json  # noqa: E402

set_offline()

CPU_PROMPTS = {"tiny": 64, "30m": 64, "120m": 8, "500m": 2, "smollm2": 8}
REAL_MODELS = {"smollm2": "smollm2:135m-instruct"}  # real weights (telos/pretrained.py), not random
DEFAULT_OUT = "benchmarks/results/rollout.json"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--sizes",
        default="tiny,30m,120m,500m",
        help="comma-separated: tiny, 30m, 120m, 500m (random weights), smollm2 (SmolLM2-135M-Instruct)",
    )
    p.add_argument(
        "--engines",
        default="hf,hf-plain,vllm",
        help="hf (lean decoder), hf-plain (transformers forward), vllm",
    )
    p.add_argument(
        "--prompts", type=int, default=None, help="prompts per call for every size (default: per size)"
    )
    p.add_argument("--n", type=int, default=8, help="answers per prompt")
    p.add_argument("--max-tokens", type=int, default=128)
    p.add_argument("--calls", type=int, default=1, help="timed calls per (size, engine)")
    p.add_argument("--dtype", default="float32", help="float32 (CPU) | bfloat16 (GPU)")
    p.add_argument("--vocab", type=int, default=None, help="model vocabulary (default: the tokenizer's 384)")
    p.add_argument("--device", default=None, help="cpu | cuda (default: cuda when available)")
    p.add_argument(
        "--tokenizer", default=None, help="model directory whose tokenizer to use (default: tiny:arith)"
    )
    p.add_argument("--out", default=DEFAULT_OUT)
    return p.parse_args(argv)


def prompts_for(count: int, offset: int) -> list[str]:
    from envs.math.procedural import generate

    rows = generate("arith", "train", count + offset, max_value=50, max_operand=9)
    return [r["prompt"] for r in rows[offset:]]


def run_engine(name: str, model_dir: str, args, prompts: int, device: str) -> dict[str, Any]:
    import torch

    from rollout.backends import make_engine
    from telos.models import count_parameters, load_model, load_tokenizer
    from telos.types import SamplingParams

    model = load_model(model_dir, args.dtype).to(device).eval()
    tok = load_tokenizer(model_dir)
    t0 = time.perf_counter()
    cfg = model.config
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    per_token = 2 * cfg.num_hidden_layers * cfg.num_key_value_heads * head_dim * model.dtype.itemsize
    # room for every sequence at full length, so vLLM never preempts (its CPU default is 1 GiB)
    kv_bytes = int(1.25 * prompts * args.n * (64 + args.max_tokens) * per_token) + (256 << 20)
    backend, lean = ("hf", False) if name == "hf-plain" else (name, True)
    engine = make_engine(
        backend, model, tok, max_batch_size=prompts * args.n, kv_cache_bytes=kv_bytes, lean=lean
    )
    setup_s = time.perf_counter() - t0
    params = SamplingParams(n=args.n, max_tokens=args.max_tokens, temperature=1.0, seed=0)
    t0 = time.perf_counter()  # first-call costs (allocation, vLLM's warm-up) stay out of the timing
    engine.generate(prompts_for(2, 0), SamplingParams(n=2, max_tokens=8, seed=0))
    warmup_s = time.perf_counter() - t0
    seconds, tokens = 0.0, 0
    for call in range(args.calls):
        batch = prompts_for(prompts, 2 + call * prompts)
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = engine.generate(batch, params)
        if device == "cuda":
            torch.cuda.synchronize()
        seconds += time.perf_counter() - t0
        tokens += sum(len(c.token_ids) for c in out)
    result = {
        "engine": name,
        "params": count_parameters(model),
        "prompts": prompts,
        "completions": prompts * args.n * args.calls,
        "generated_tokens": tokens,
        "seconds": seconds,
        "tokens_per_s": tokens / seconds,
        "setup_s": setup_s,
        "warmup_s": warmup_s,
    }
    engine.close()
    del engine, model
    gc.collect()
    return result


def plot(results: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for engine in sorted({r["engine"] for r in results}):
        rows = sorted((r for r in results if r["engine"] == engine), key=lambda r: r["params"])
        ax.plot([r["params"] / 1e6 for r in rows], [r["tokens_per_s"] for r in rows], "o-", label=engine)
        for r in rows:
            ax.annotate(
                f"{r['prompts']}×{r['completions'] // max(r['prompts'], 1)}",
                (r["params"] / 1e6, r["tokens_per_s"]),
                fontsize=7,
                textcoords="offset points",
                xytext=(3, 3),
            )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("parameters (M)")
    ax.set_ylabel("generated tokens / s")
    ax.set_title(title, fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    import torch

    from benchmarks.models import random_model_dir
    from rollout.vllm import vllm_available

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    engines = [e for e in args.engines.split(",") if e]
    skipped = {}
    if "vllm" in engines and not vllm_available():
        engines.remove("vllm")
        skipped["vllm"] = "vLLM is not installed"
    peak = (
        measure_matmul_peak(seconds=1.0, dtype=args.dtype if device == "cpu" else "float32")
        if device == "cpu"
        else None
    )
    results = []
    for size in [s for s in args.sizes.split(",") if s]:
        if size in REAL_MODELS:
            from telos.pretrained import resolve_model

            model_dir = resolve_model(REAL_MODELS[size])
        else:
            model_dir = random_model_dir(size, vocab=args.vocab, tokenizer_from=args.tokenizer)
        prompts = args.prompts or (CPU_PROMPTS[size] if device == "cpu" else 64)
        for engine in engines:
            print(
                f"=== {size}: {engine}, {prompts} prompts × {args.n}, {args.max_tokens} tokens ===",
                flush=True,
            )
            r = run_engine(engine, model_dir, args, prompts, device)
            r["size"] = size
            if peak is not None:
                r["mfu"] = mfu(2.0 * r["params"] * r["generated_tokens"], r["seconds"], peak["flops_per_s"])
            results.append(r)
            print(
                f"    {r['tokens_per_s']:.1f} tokens/s ({r['generated_tokens']} tokens in {r['seconds']:.1f} s)",
                flush=True,
            )
    for size in {r["size"] for r in results}:
        by = {r["engine"]: r for r in results if r["size"] == size}
        for name in ("hf-plain", "vllm"):
            if "hf" in by and name in by:
                by[name]["over_hf"] = by[name]["tokens_per_s"] / by["hf"]["tokens_per_s"]
    out = Path(args.out)
    result = {
        "benchmark": "rollout",
        "device": device,
        "dtype": args.dtype,
        "n": args.n,
        "max_tokens": args.max_tokens,
        "calls": args.calls,
        "vocab": args.vocab,
        "skipped": skipped,
        "peak_matmul": peak,
        "results": results,
        "machine": machine_info(),
    }
    write_json(out, result)
    plot(
        results,
        out.with_suffix(".png"),
        f"rollout tokens/s, {device} {args.dtype}, n={args.n}, {args.max_tokens} tokens",
    )
    print()
    print(
        format_table(
            ["size", "params", "engine", "batch", "tokens/s", "÷ hf", "MFU"],
            [
                [
                    r["size"],
                    f"{r['params'] / 1e6:.1f}M",
                    r["engine"],
                    f"{r['prompts']}×{args.n}",
                    r["tokens_per_s"],
                    f"{r['over_hf']:.2f}×" if "over_hf" in r else "",
                    f"{100 * r['mfu']:.1f}%" if "mfu" in r else "",
                ]
                for r in results
            ],
        )
    )
    print(f"wrote {out} and {out.with_suffix('.png')}")
    return result


if __name__ == "__main__":
    main()
