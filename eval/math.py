"""``telos eval math``: pass@1, unbiased pass@k and maj@k of a model on a math data set.

    telos eval math --model runs/quickstart/rl/final --data procedural:arith:test?n=200
    telos eval math --model Qwen/Qwen2.5-0.5B-Instruct --data hf:openai/gsm8k:main@test \\
        --chat --template cot --samples 8

Steps: load the rows, format the prompts, generate ``--samples`` completions per problem in
chunks (progress bar with ETA on stderr), score them with the reward function, then write
``OUT/results.json`` (config + metrics), ``OUT/report.md`` (the table printed to stdout),
``OUT/samples.jsonl`` (every completion with its score and extracted answer) and
``OUT/pass_at_k.png``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from envs.math.answers import extract_answer
from envs.math.prompts import format_prompt
from envs.math.sources import load_rows
from eval.metrics import default_ks, summarize
from eval.report import markdown_table, write_json, write_text
from rewards.functions import resolve_reward_function, score_completions
from telos.errors import UserError
from telos.types import Completion, SamplingParams

__all__ = ["eval_math_command", "run_eval_math"]

# Sequences per engine call: big enough to batch well, small enough for a frequent progress
# update and bounded KV-cache memory.
CHUNK_SEQUENCES = 256


def default_out_dir(model: str) -> Path:
    """``runs/eval-math/<model dir name>`` (for a hub id ``org/name``: ``name``)."""
    name = Path(model.rstrip("/\\")).name or "model"
    return Path("runs") / "eval-math" / name


def _check_args(args: argparse.Namespace) -> float:
    """Validate the numeric options; return the temperature to use."""
    if args.samples < 1:
        raise UserError(f"--samples must be >= 1, got {args.samples}")
    if args.max_tokens < 1:
        raise UserError(f"--max-tokens must be >= 1, got {args.max_tokens}")
    if not 0.0 < args.top_p <= 1.0:
        raise UserError(f"--top-p must be in (0, 1], got {args.top_p}")
    if args.limit is not None and args.limit < 1:
        raise UserError(f"--limit must be >= 1, got {args.limit}")
    temperature = args.temperature
    if temperature is None:
        temperature = 0.0 if args.samples == 1 else 1.0
    if temperature < 0:
        raise UserError(f"--temperature must be >= 0, got {temperature}")
    return float(temperature)


def _columns(rows: list[dict[str, Any]], repeat: int) -> dict[str, list[Any]]:
    """Data columns for the reward function (TRL passes every column but the prompt), each
    value repeated once per sample. Rows from files may lack some columns: those are None."""
    keys: dict[str, None] = {}
    for r in rows:
        keys.update(dict.fromkeys(r))
    keys.pop("prompt", None)
    return {k: [r.get(k) for r in rows for _ in range(repeat)] for k in keys}


def load_generation_model(path: str):
    import torch

    from telos.models import load_model

    # fp32 on CPU: its bf16 matmuls are ~75x slower there (see DESIGN.md, Machines).
    on_gpu = torch.cuda.is_available()
    model = load_model(path, "bfloat16" if on_gpu else "float32")
    return model.to("cuda") if on_gpu else model


def generate_and_score(
    engine, reward_fn, rows, prompts, params: SamplingParams
) -> tuple[list[Completion], list[float | None], float]:
    """All completions (grouped per problem) and their scores; the seconds spent generating."""
    from telos.tracking import progress

    k = params.n
    chunk = max(1, CHUNK_SEQUENCES // k)
    completions: list[Completion] = []
    scores: list[float | None] = []
    gen_s, tokens, correct, scored = 0.0, 0, 0, 0
    with progress(len(prompts), "eval math") as bar:
        for c, start in enumerate(range(0, len(prompts), chunk)):
            part_rows, part_prompts = rows[start : start + chunk], prompts[start : start + chunk]
            # A different seed per chunk, so chunks do not replay the same random stream.
            seed = None if params.seed is None else params.seed * 1_000_003 + c
            t0 = time.perf_counter()
            outs = engine.generate(part_prompts, replace(params, seed=seed))
            gen_s += time.perf_counter() - t0
            if len(outs) != len(part_prompts) * k:
                raise RuntimeError(f"engine returned {len(outs)} completions for {len(part_prompts)}x{k}")
            totals, _ = score_completions(
                [reward_fn],
                [1.0],
                [p for p in part_prompts for _ in range(k)],
                [o.text for o in outs],
                _columns(part_rows, k),
            )
            completions.extend(outs)
            scores.extend(totals)
            tokens += sum(len(o.token_ids) for o in outs)
            scored += sum(s is not None for s in totals)
            correct += sum(s is not None and s > 0 for s in totals)
            bar.advance(
                len(part_prompts),
                pass1=correct / scored if scored else float("nan"),
                tok_s=tokens / gen_s if gen_s > 0 else 0.0,
            )
    return completions, scores, gen_s


def run_eval_math(args: argparse.Namespace) -> dict[str, Any]:
    """Run the evaluation described by ``args`` (the ``telos eval math`` options) and write the
    reports; returns ``{"config", "metrics", "table"}``."""
    t_start = time.perf_counter()
    temperature = _check_args(args)
    k = args.samples
    reward_fn = resolve_reward_function(args.reward)  # a bad name fails before any loading

    from telos.models import check_model_path

    check_model_path(args.model)
    rows = load_rows(args.data, limit=args.limit, seed=args.seed)
    if not rows:
        raise UserError(f"data {args.data!r} has no problems")

    from rollout.backends import make_engine
    from telos.models import load_tokenizer

    tokenizer = load_tokenizer(args.model)
    prompts = [format_prompt(r, args.template, tokenizer=tokenizer, chat=args.chat) for r in rows]
    model = load_generation_model(args.model)
    engine = make_engine(args.engine, model, tokenizer)
    if temperature == 0.0 and k > 1:
        print(f"note: temperature 0 with --samples {k}: every sample is the greedy one", file=sys.stderr)

    params = SamplingParams(
        n=k, temperature=temperature, top_p=args.top_p, max_tokens=args.max_tokens, seed=args.seed
    )
    try:
        completions, scores, gen_s = generate_and_score(engine, reward_fn, rows, prompts, params)
    finally:
        engine.close()

    answers = [extract_answer(o.text) for o in completions]
    groups = range(len(rows))
    metrics: dict[str, Any] = summarize(
        [scores[i * k : (i + 1) * k] for i in groups],
        [answers[i * k : (i + 1) * k] for i in groups],
        ks=default_ks(k),
    )
    n_tokens = sum(len(o.token_ids) for o in completions)
    metrics.update(
        {
            "mean_completion_tokens": n_tokens / len(completions),
            "truncated_frac": sum(o.finish_reason == "length" for o in completions) / len(completions),
            "generated_tokens": n_tokens,
            "tokens_per_s": n_tokens / gen_s if gen_s > 0 else None,
            "generation_s": gen_s,
            "wall_s": time.perf_counter() - t_start,
        }
    )
    config = {
        "model": args.model,
        "data": args.data,
        "samples": k,
        "temperature": temperature,
        "top_p": args.top_p,
        "max_tokens": args.max_tokens,
        "limit": args.limit,
        "seed": args.seed,
        "template": args.template,
        "chat": args.chat,
        "reward": args.reward,
        "engine": args.engine,
    }
    out = Path(args.out) if args.out else default_out_dir(args.model)
    table = _write_reports(out, config, metrics, rows, prompts, completions, scores, answers)
    return {"config": config, "metrics": metrics, "table": table, "out": str(out)}


def _table_rows(config: dict[str, Any], metrics: dict[str, Any]) -> list[tuple[str, Any]]:
    k = config["samples"]
    rows: list[tuple[str, Any]] = [
        ("model", config["model"]),
        ("data", config["data"]),
        ("problems", metrics["num_problems"]),
        ("samples / problem", k),
        ("temperature", config["temperature"]),
    ]
    ks = default_ks(k)
    rows += [(f"pass@{j}", metrics[f"pass@{j}"]) for j in ks]
    rows += [(f"maj@{j}", metrics[f"maj@{j}"]) for j in ks if j > 1]
    rows += [
        ("mean reward", metrics["reward_mean"]),
        ("unscorable samples", metrics["unscorable_samples"]),
        ("unscorable problems", metrics["unscorable_problems"]),
        ("mean completion tokens", metrics["mean_completion_tokens"]),
        ("truncated", metrics["truncated_frac"]),
        ("tokens / s", metrics["tokens_per_s"]),
        ("wall time (s)", metrics["wall_s"]),
    ]
    return rows


def _write_reports(out, config, metrics, rows, prompts, completions, scores, answers) -> str:
    from telos.plots import bar_chart

    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "results.json", {"config": config, "metrics": metrics})
    table = markdown_table(_table_rows(config, metrics), headers=["metric", "value"])
    title = f"# telos eval math\n\n`{config['model']}` on `{config['data']}`\n\n"
    write_text(out / "report.md", title + table)

    k = config["samples"]
    lines = []
    for i, row in enumerate(rows):
        group = range(i * k, (i + 1) * k)
        sample = {
            "index": i,
            "prompt": prompts[i],
            "answer": row.get("answer"),
            "completions": [completions[j].text for j in group],
            "extracted": [answers[j] for j in group],
            "scores": [scores[j] for j in group],
            "finish_reasons": [completions[j].finish_reason for j in group],
        }
        lines.append(json.dumps(sample) + "\n")
    write_text(out / "samples.jsonl", "".join(lines))

    bars = {
        name: metrics[name]
        for j in default_ks(k)
        for name in (f"pass@{j}", f"maj@{j}")
        if metrics.get(name) is not None and not (name == f"maj@{j}" and j == 1)
    }
    if bars:
        bar_chart(bars, out / "pass_at_k.png", title=f"{Path(config['model']).name}", ylabel="accuracy")
    return table


def eval_math_command(args: argparse.Namespace) -> int:
    result = run_eval_math(args)
    print(result["table"], end="")
    print(f"wrote {result['out']}/results.json and report.md", file=sys.stderr)
    return 0
