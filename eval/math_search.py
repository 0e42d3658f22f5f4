"""``telos eval math --search METHOD --budget TOKENS [--value PRM]``: accuracy of a test-time
search method at a fixed generated-token budget per question.

    telos eval math --model tiny:arith --data "procedural:arith:test?n=100" \\
        --search mcts --value runs/value-tiny/final --budget 256 --save-trees runs/trees

Writes ``OUT/results.json``, ``OUT/report.md``, ``OUT/samples.jsonl`` (each question's chosen
solution, answer, tokens and score) and, with ``--save-trees DIR``, one JSON tree per question
(mcts). Every option is checked before a model loads.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

from eval.report import markdown_table, write_json, write_text
from eval.search import SearchContext, SearchSettings, check_search
from rollout.search.mcts import MCTSConfig
from telos.errors import UserError

# questions searched together: one engine call per unit covers them all
CHUNK_QUESTIONS = 64


def parse_search_options(options: list[str] | None, settings: SearchSettings) -> SearchSettings:
    """``KEY=VALUE`` overrides of SearchSettings (``beams=8``) and MCTSConfig (``mcts.branch=4``)."""
    top = {f.name: f for f in fields(SearchSettings) if f.name != "mcts"}
    tree = {f.name: f for f in fields(MCTSConfig)}
    mcts = settings.mcts
    for item in options or []:
        key, sep, raw = item.partition("=")
        if not sep:
            raise UserError(f"--search-option {item!r}: expected KEY=VALUE")
        target, name = (tree, key[5:]) if key.startswith("mcts.") else (top, key)
        if name not in target:
            valid = sorted(top) + [f"mcts.{k}" for k in sorted(tree)]
            raise UserError(f"--search-option {key!r} is not an option; valid: {', '.join(valid)}")
        kind = type(getattr(mcts if target is tree else settings, name))
        try:
            value = kind(raw)
        except ValueError:
            raise UserError(f"--search-option {key}: {raw!r} is not a {kind.__name__}") from None
        if target is tree:
            mcts = replace(mcts, **{name: value})
        else:
            settings = replace(settings, **{name: value})
    return replace(settings, mcts=mcts)


def _settings(args: argparse.Namespace) -> SearchSettings:
    settings = SearchSettings(
        budget=args.budget,
        temperature=0.7 if args.temperature is None else args.temperature,
        max_tokens=args.max_tokens,
        seed=args.seed,
    )
    settings = parse_search_options(args.search_option, settings)
    for name in ("budget", "batch", "beams", "expand", "max_tokens"):
        if getattr(settings, name) < 1:
            raise UserError(f"search option {name} must be >= 1, got {getattr(settings, name)}")
    if settings.aggregate not in ("min", "last", "prod"):
        raise UserError(f"search option aggregate {settings.aggregate!r}; valid: min, last, prod")
    return settings


def run_search_eval(args: argparse.Namespace) -> dict[str, Any]:
    from envs.math.prompts import format_prompt
    from envs.math.sources import load_rows
    from eval.math import _columns, default_out_dir, load_generation_model
    from rewards.functions import resolve_reward_function, score_completions
    from rewards.reward_model import ProcessRM
    from rollout.backends import make_engine
    from rollout.search.steps import StepProposer
    from telos.models import check_model_path, load_tokenizer
    from telos.tracking import progress

    t_start = time.perf_counter()
    if args.budget is None or args.budget < 1:
        raise UserError("--search needs --budget TOKENS (generated tokens per question, >= 1)")
    method = check_search(args.search, args.value is not None)
    settings = _settings(args)
    reward_fn = resolve_reward_function(args.reward)
    if not args.model.startswith("tiny:"):
        check_model_path(args.model)
    if args.value is not None:
        check_model_path(args.value)
    rows = load_rows(args.data, limit=args.limit, seed=args.seed)
    if not rows:
        raise UserError(f"data {args.data!r} has no problems")
    from trainers.common.start_model import start_model_dir  # builds tiny:arith once per machine

    model_dir = start_model_dir(args.model)
    tokenizer = load_tokenizer(model_dir)
    prompts = [format_prompt(r, args.template, tokenizer=tokenizer, chat=args.chat) for r in rows]
    engine = make_engine(args.engine, load_generation_model(model_dir), tokenizer)
    prm = ProcessRM.from_pretrained(args.value) if args.value is not None else None
    proposer = StepProposer(
        engine,
        tokenizer.eos_token_id,
        max_step_tokens=settings.mcts.max_step_tokens,
        max_steps=settings.mcts.max_steps,
    )
    outcomes = []
    try:
        with progress(len(prompts), f"search {args.search}") as bar:
            for start in range(0, len(prompts), CHUNK_QUESTIONS):
                part = prompts[start : start + CHUNK_QUESTIONS]
                shown = [0]

                def on_progress(done: int, shown=shown) -> None:
                    if done > shown[0]:
                        bar.advance(done - shown[0])
                        shown[0] = done

                ctx = SearchContext(engine, proposer, prm, settings, on_progress)
                outcomes += method.run(ctx, part)
                on_progress(len(part))
    finally:
        engine.close()
    scores, _ = score_completions([reward_fn], [1.0], prompts, [o.text for o in outcomes], _columns(rows, 1))
    correct = [s is not None and s > 0 for s in scores]
    n = len(rows)
    metrics = {
        "num_problems": n,
        "accuracy": sum(correct) / n,
        "mean_tokens_per_question": sum(o.tokens for o in outcomes) / n,
        "max_tokens_per_question": max(o.tokens for o in outcomes),
        "mean_candidates": sum(o.candidates for o in outcomes) / n,
        "no_answer": sum(o.answer is None for o in outcomes) / n,
        "engine_calls": proposer.calls,
        "wall_s": time.perf_counter() - t_start,
    }
    config = {
        "model": args.model,
        "data": args.data,
        "search": args.search,
        "value": args.value,
        "budget": settings.budget,
        "settings": {k: v for k, v in settings.__dict__.items() if k != "mcts"}
        | {"mcts": settings.mcts.__dict__},
        "limit": args.limit,
        "template": args.template,
        "chat": args.chat,
        "reward": args.reward,
        "engine": args.engine,
    }
    out = (
        Path(args.out)
        if args.out
        else default_out_dir(args.model).with_name(f"{default_out_dir(args.model).name}-{args.search}")
    )
    table = _write(out, config, metrics, rows, prompts, outcomes, scores, args.save_trees)
    return {"config": config, "metrics": metrics, "table": table, "out": str(out)}


def _write(out: Path, config, metrics, rows, prompts, outcomes, scores, trees_dir) -> str:
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "results.json", {"config": config, "metrics": metrics})
    table = markdown_table(
        [
            ("model", config["model"]),
            ("data", config["data"]),
            ("search", config["search"]),
            ("value model", config["value"]),
            ("budget (tokens / question)", config["budget"]),
            ("problems", metrics["num_problems"]),
            ("accuracy", metrics["accuracy"]),
            ("mean tokens / question", metrics["mean_tokens_per_question"]),
            ("max tokens / question", metrics["max_tokens_per_question"]),
            ("mean finished candidates", metrics["mean_candidates"]),
            ("no answer", metrics["no_answer"]),
            ("wall time (s)", metrics["wall_s"]),
        ],
        headers=["metric", "value"],
    )
    write_text(out / "report.md", f"# telos eval math --search {config['search']}\n\n{table}")
    lines = [
        json.dumps(
            {
                "index": i,
                "prompt": prompts[i],
                "answer": row.get("answer"),
                "solution": o.text,
                "extracted": o.answer,
                "score": scores[i],
                "tokens": o.tokens,
            }
        )
        + "\n"
        for i, (row, o) in enumerate(zip(rows, outcomes, strict=True))
    ]
    write_text(out / "samples.jsonl", "".join(lines))
    if trees_dir:
        directory = Path(trees_dir)
        directory.mkdir(parents=True, exist_ok=True)
        for i, o in enumerate(outcomes):
            if o.tree is not None:
                write_json(
                    directory / f"tree-{i:05d}.json",
                    {"prompt": prompts[i], "answer": rows[i].get("answer"), "tree": o.tree},
                )
    return table


def eval_math_or_search_command(args: argparse.Namespace) -> int:
    """``telos eval math``: with ``--search``, the search evaluation; else pass@k / maj@k."""
    import sys

    from eval.math import eval_math_command

    if not args.search:
        return eval_math_command(args)
    result = run_search_eval(args)
    print(result["table"], end="")
    print(f"wrote {result['out']}/results.json and report.md", file=sys.stderr)
    return 0
