"""Random-weight models of growing size for throughput benchmarks, built locally from a config
(no download) with the tiny arithmetic model's tokenizer, and cached.

Sizes follow familiar shapes: ``30m`` and ``120m`` are GPT-2-small-like Qwen2 stacks, ``500m``
is Qwen2.5-0.5B's shape (24 layers, hidden 896, 14 query / 2 kv heads, MLP 4864). The
vocabulary is the tokenizer's 384 entries unless ``vocab`` is given (``151936`` gives
Qwen2.5-0.5B's full embedding and lm_head; sampled ids beyond the tokenizer decode to "").
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

from telos.models import TinyModelConfig

SIZES: dict[str, TinyModelConfig] = {
    "tiny": TinyModelConfig(
        hidden_size=128, num_layers=4, num_heads=4, num_kv_heads=2, intermediate_size=384
    ),
    "30m": TinyModelConfig(
        hidden_size=512, num_layers=8, num_heads=8, num_kv_heads=8, intermediate_size=1536
    ),
    "120m": TinyModelConfig(
        hidden_size=768, num_layers=12, num_heads=12, num_kv_heads=12, intermediate_size=3072
    ),
    "500m": TinyModelConfig(
        hidden_size=896, num_layers=24, num_heads=14, num_kv_heads=2, intermediate_size=4864
    ),
}


def random_model_dir(
    size: str, vocab: int | None = None, seed: int = 0, tokenizer_from: str | None = None
) -> str:
    """Directory of a random ``size`` model (built once into the telos cache), with the
    tokenizer of ``tokenizer_from`` (default: the tiny arithmetic model's)."""
    from telos.cache import build_cached, cache_dir
    from telos.models import build_tiny_model, load_tokenizer
    from trainers.common.tiny import resolve_tiny

    if size not in SIZES:
        raise SystemExit(f"error: unknown model size {size!r}; valid: {', '.join(SIZES)}")
    tokenizer = load_tokenizer(tokenizer_from or resolve_tiny("tiny:arith"))
    vocab = vocab or len(tokenizer)
    tag = (
        ""
        if tokenizer_from is None
        else "-" + hashlib.sha1(str(Path(tokenizer_from).resolve()).encode()).hexdigest()[:8]
    )
    out = Path(cache_dir()) / f"bench-random-{size}-v{vocab}-s{seed}{tag}"

    def build(tmp: Path) -> None:
        shape = dataclasses.replace(SIZES[size], max_position_embeddings=2048)
        model = build_tiny_model(shape, tokenizer, seed=seed, vocab_size=vocab)
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)

    # locked, and renamed into place when complete: concurrent benchmarks build it once
    build_cached(out, build, ready=lambda p: (p / "config.json").exists(), what=f"the random {size} model")
    return str(out)
