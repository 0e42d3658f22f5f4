"""``tiny:<task>``: a tiny causal LM built locally and SFT-warmed on a procedural task.

Used by the quickstart and by ``model.name_or_path: tiny:arith`` in recipes, so every recipe
runs offline. The result is cached (keyed by all settings) and built once per machine.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from envs.math.procedural import generate
from envs.math.prompts import format_prompt
from telos.errors import UserError
from telos.models import TinyModelConfig, build_tiny_model, build_tokenizer, count_parameters
from trainers.sft import SFTConfig, train_sft


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


TINY_TASKS = ("arith",)
# the problem distribution of the tiny model and its recipes (recipes/math/*_tiny.yaml)
TINY_ARITH = {"max_value": 50, "max_operand": 9, "min_ops": 2, "max_ops": 3}


def cache_dir() -> Path:
    return Path(os.environ.get("TELOS_CACHE", Path.home() / ".cache" / "telos"))


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
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    (tmp / "telos_tiny.json").write_text(json.dumps(asdict(cfg), indent=1))
    shutil.rmtree(out_dir, ignore_errors=True)
    os.replace(tmp, out_dir)
    return {"parameters": count_parameters(model), "sft_final_loss": losses[-1]}


def resolve_tiny(spec: str, is_main: bool = True, wait: Callable[[], None] = lambda: None) -> str:
    """Map ``tiny:<task>`` to a cached local model directory, building it if needed.
    Only the main process builds; the others ``wait`` (a barrier) and then read it."""
    task = spec.split(":", 1)[1] or "arith"
    cfg = TinyTaskConfig(task=task)
    if task not in TINY_TASKS:
        raise UserError(
            f"model {spec!r}: tiny models exist for: {', '.join('tiny:' + t for t in TINY_TASKS)}"
        )
    key = hashlib.sha1(json.dumps(asdict(cfg), sort_keys=True).encode()).hexdigest()[:10]
    out = cache_dir() / f"tiny-{task}-{key}"
    if is_main and not (out / "config.json").exists():
        print(f"building the tiny {task} model once (SFT warm-up, ~2 min) → {out}", flush=True)
        out.parent.mkdir(parents=True, exist_ok=True)
        build_sft_model(cfg, out)
    wait()
    return str(out)
