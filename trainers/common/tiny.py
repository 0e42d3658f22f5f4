"""``tiny:<task>``: a tiny causal LM built locally and SFT-warmed on a procedural task.

Used by the quickstart and by ``model.name_or_path: tiny:arith`` in recipes, so every recipe
runs offline. The result is cached (keyed by all settings) and built once per machine.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from envs.math.procedural import generate
from envs.math.prompts import format_prompt
from telos.cache import atomic_path, build_cached, cache_dir
from telos.errors import UserError
from telos.models import TinyModelConfig, build_tiny_model, build_tokenizer, count_parameters
from trainers.common.sft import SFTConfig, train_sft


@dataclass
class TinyTaskConfig:
    task: str = "arith"
    task_kwargs: dict = field(default_factory=lambda: dict(TINY_ARITH))
    num_train: int = 20000
    model: TinyModelConfig = field(default_factory=TinyModelConfig)
    sft: SFTConfig = field(
        default_factory=lambda: SFTConfig(steps=1000, batch_size=32, lr=1e-3, warmup_steps=50)
    )
    # Half the SFT solutions state only the answer, as real SFT corpora mix worked solutions
    # with bare answers. The tiny model is far more accurate when it works step by step; RL
    # has to discover that from the verifier's reward alone — what the quickstart shows.
    sft_direct_frac: float = 0.5


TINY_TASKS = ("arith", "textworld-cooking", "textworld-guided")
# the problem distribution of the tiny model and its recipes (recipes/math/*_tiny.yaml)
TINY_ARITH = {"max_value": 50, "max_operand": 9, "min_ops": 2, "max_ops": 3}


def train_rows(cfg: TinyTaskConfig, seed: int = 0) -> list[dict]:
    return generate(cfg.task, "train", cfg.num_train, seed=seed, **cfg.task_kwargs)


def build_sft_model(
    cfg: TinyTaskConfig, out_dir: Path, seed: int = 0, on_step: Callable | None = None
) -> dict:
    """Build tokenizer + model, SFT on worked solutions, save to ``out_dir`` (atomically)."""
    rows = generate(
        cfg.task, "train", cfg.num_train, seed=seed, direct_frac=cfg.sft_direct_frac, **cfg.task_kwargs
    )
    corpus = [format_prompt(r) + r["solution"] for r in rows[:5000]]
    tokenizer = build_tokenizer(corpus, cfg.model.vocab_size)
    model = build_tiny_model(cfg.model, tokenizer, seed=seed)
    pairs = [(format_prompt(r), r["solution"]) for r in rows]
    losses = train_sft(model, tokenizer, pairs, cfg.sft, on_step=on_step)
    # a private temporary directory: a concurrent build of the same directory is never touched
    with atomic_path(Path(out_dir)) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "telos_tiny.json").write_text(json.dumps(asdict(cfg), indent=1))
    return {"parameters": count_parameters(model), "sft_final_loss": losses[-1]}


def resolve_tiny(spec: str, is_main: bool = True, wait: Callable[[], None] = lambda: None) -> str:
    """Map ``tiny:<task>`` to a cached local model directory, building it if needed.
    Only the main process builds; the others ``wait`` (a barrier) and then read it. Other
    processes on the machine that resolve it at the same time wait on the cache lock and reuse
    the first one's build."""
    task = spec.split(":", 1)[1] or "arith"
    if task not in TINY_TASKS:
        raise UserError(
            f"model {spec!r}: tiny models exist for: {', '.join('tiny:' + t for t in TINY_TASKS)}"
        )
    if task == "arith":
        cfg = TinyTaskConfig(task=task)
        builder, minutes = build_sft_model, 2
    else:
        from trainers.common.tiny_actor import TinyActorConfig, build_text_actor

        guided = {"hint_rate": 0.5, "plan_rate": 0.3} if task == "textworld-guided" else {}
        cfg, builder, minutes = TinyActorConfig(**guided), build_text_actor, 4
    key = hashlib.sha1(json.dumps(asdict(cfg), sort_keys=True).encode()).hexdigest()[:10]
    out = cache_dir() / f"tiny-{task}-{key}"
    if is_main:

        def build(tmp: Path) -> None:
            print(f"building the tiny {task} model once (SFT warm-up, ~{minutes} min) → {out}", flush=True)
            builder(cfg, tmp)

        build_cached(out, build, ready=lambda p: (p / "config.json").exists(), what=f"tiny:{task}")
    wait()
    return str(out)
