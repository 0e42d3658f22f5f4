"""``trainer: sft``: fine-tune on (prompt, worked solution) pairs, greedy held-out accuracy
before and after (the verifier the RL recipes use), atomic ``final/`` for the RL recipe that
follows. The step loop is the one every SFT trainer shares (trainers/common/sft_loop.py)."""

from __future__ import annotations

import time
from pathlib import Path

import torch

from envs.math.prompts import format_prompt
from envs.math.sources import load_rows
from rewards.functions import resolve_reward_function
from rollout.backends import make_engine
from telos.checkpoint import resolve_resume, write_directory_atomically, write_json_atomically
from telos.config import to_dict
from telos.errors import UserError
from telos.models import load_model, load_tokenizer
from telos.plots import plot_metrics
from telos.tracking import read_metrics
from telos.types import SamplingParams
from trainers.common.sft_loop import run_sft_loop
from trainers.common.start_model import start_model_dir
from trainers.sft.recipe import SFTRecipe

PLOT_GROUPS = {"loss": ["loss"], "accuracy": ["eval_accuracy"]}


def greedy_accuracy(model, tokenizer, rows: list[dict], prompts: list[str], verifier: str, max_tokens: int):
    """Share of held-out rows whose greedy answer the verifier scores > 0, and the answers."""
    from eval.math import generate_and_score

    if not rows:
        return float("nan"), []
    engine = make_engine("hf", model, tokenizer)
    params = SamplingParams(n=1, temperature=0.0, max_tokens=max_tokens)
    try:
        outs, scores, _ = generate_and_score(engine, resolve_reward_function(verifier), rows, prompts, params)
    finally:
        engine.close()
    return sum(1 for s in scores if s is not None and s > 0) / len(rows), [o.text for o in outs]


def train_math_sft(recipe: SFTRecipe, raw_config: dict | None = None) -> dict:
    r, d, t = recipe, recipe.data, recipe.train
    run_dir = Path(r.run_dir)
    started = time.perf_counter()
    torch.manual_seed(t.seed)
    name = start_model_dir(r.model.name_or_path)
    tokenizer = load_tokenizer(name)
    resume_from = resolve_resume(r.resume, run_dir)
    model = load_model(name, r.model.dtype, r.model.lora)  # a resume loads its checkpoint into it
    if r.model.gradient_checkpointing:
        model.gradient_checkpointing_enable()

    def prompt_of(row: dict) -> str:
        return format_prompt(row, d.template, tokenizer=tokenizer, chat=d.chat)

    train_rows = load_rows(d.train, limit=d.num_train, seed=t.seed)
    pairs, lengths, dropped = [], [], 0
    for i, row in enumerate(train_rows):
        target = row.get(d.target)
        if not isinstance(target, str):
            raise UserError(
                f"row {i} of {d.train} has no text column {d.target!r} ('data.target'); columns: {', '.join(row)}"
            )
        prompt = prompt_of(row)
        n = len(tokenizer(prompt + target)["input_ids"]) + 1
        if n > t.max_length:
            dropped += 1
            continue
        pairs.append((prompt, target))
        lengths.append(n)
    if not pairs:
        raise UserError(
            f"every example of {d.train} is longer than train.max_length={t.max_length} tokens; raise it"
        )
    test_rows = load_rows(d.test, limit=d.num_test, seed=t.seed) if d.test else []
    test_prompts = [prompt_of(row) for row in test_rows]

    def evaluate() -> tuple[float, list[str]]:
        return greedy_accuracy(model, tokenizer, test_rows, test_prompts, r.verifier, t.eval_max_tokens)

    base_accuracy = None
    if t.eval_before_training and test_rows and resume_from is None:
        model.eval()
        base_accuracy, _ = evaluate()
        print(f"sft {r.name}: held-out greedy accuracy before training {base_accuracy:.3f}", flush=True)

    def final_eval() -> tuple[tuple[float, list[str]], dict[str, float]]:
        acc, texts = evaluate()
        return (acc, texts), {"eval_accuracy": acc}

    result, train_seconds = run_sft_loop(
        model,
        tokenizer,
        pairs,
        lengths,
        t,
        run_dir,
        resume_from,
        config=raw_config if raw_config is not None else to_dict(r),
        report_to=r.report_to,
        progress_keys=["loss", "eval_accuracy"],
        description=f"sft {r.name}",
        final_eval=final_eval,
    )
    if result is None:  # resumed from the final checkpoint: nothing was left to train
        result, _ = final_eval()
    accuracy, texts = result
    final = save_final_model(model, tokenizer, run_dir)
    summary = {
        "name": r.name,
        "trainer": "sft",
        "model": r.model.name_or_path,
        "steps": t.steps,
        "train_examples": len(pairs),
        "dropped_too_long": dropped,
        "mean_example_tokens": round(sum(lengths) / len(lengths), 1),
        "test_examples": len(test_rows),
        "initial_eval_accuracy": base_accuracy,
        "eval_accuracy": accuracy,
        "train_seconds": round(train_seconds, 1),
        "total_seconds": round(time.perf_counter() - started, 1),
        "model_dir": str(final),
    }
    write_json_atomically(run_dir / "summary.json", summary)
    plots = plot_metrics(read_metrics(run_dir), run_dir / "plots", PLOT_GROUPS)
    _write_report(run_dir, summary, test_prompts, texts, plots)
    return summary


def save_final_model(model, tokenizer, run_dir: Path) -> Path:
    """``final/`` = merged weights + tokenizer, written atomically (what the RL recipe loads)."""
    to_save = model.merge_and_unload() if hasattr(model, "merge_and_unload") else model

    def write(tmp: Path) -> None:
        to_save.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)

    return write_directory_atomically(run_dir / "final", write)


def _write_report(
    run_dir: Path, summary: dict, prompts: list[str], texts: list[str], plots: list[Path]
) -> None:
    lines = [f"# SFT: {summary['name']}", "", "| metric | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in summary.items()]
    lines += ["", *[f"![{p.stem}](plots/{p.name})" for p in plots], ""]
    for prompt, text in list(zip(prompts, texts, strict=False))[:3]:
        lines += [
            "### held-out example",
            "```",
            prompt.strip()[-600:],
            "```",
            "model:",
            "```",
            text.strip(),
            "```",
            "",
        ]
    (run_dir / "report.md").write_text("\n".join(lines) + "\n")
