"""``telos eval rm``: how good is a reward model, on the data it is meant for.

The data file decides what is measured (first row's fields):

- pairs ``{prompt, chosen, rejected}`` → pairwise accuracy;
- graded samples ``{group, prompt, completion, correct, extracted}`` (``telos data preferences
  --samples-out``) → AUROC of the reward for correctness, partial-generation AUROC (reward of
  the first 0, 10, …, 100 % of the tokens), best-of-n and weighted vote per question; for a
  goal-conditioned RM also the Q-value AUROCs and the goal-filtered majority vote;
- stepwise rows ``{prompt, completions, labels[, hard_labels, group]}`` → step accuracy, and
  best-of-n / weighted vote over solutions of the same question with min/last/prod aggregation.

Writes ``OUT/results.json``, ``OUT/report.md`` (also printed) and PNGs.
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from envs.math.answers import extract_answer
from envs.math.sources import load_rows
from eval.metrics import majority_vote
from eval.report import markdown_table, write_json, write_text
from eval.rm_metrics import (
    DEFAULT_FRACTIONS,
    aggregate_steps,
    best_of_n,
    filtered_majority_vote,
    pairwise_accuracy,
    partial_auroc,
    prefix_lengths,
    step_accuracy,
    summarize_goal_filter,
    weighted_vote,
)
from rewards.reward_model import GOAL_FILE, GoalConditionedRM, ProcessRM, RewardModel
from rewards.rm_losses import hard_step_label
from telos.errors import UserError
from telos.plots import line_chart
from telos.stats import auroc
from telos.tracking import progress

AGGREGATIONS = ("min", "last", "prod")


def data_kind(row: dict) -> str:
    if {"chosen", "rejected"} <= set(row):
        return "pairs"
    if {"completion", "correct"} <= set(row):
        return "samples"
    if {"completions", "labels"} <= set(row):
        return "steps"
    raise UserError(
        f"cannot tell what the data holds (fields: {sorted(row)}); valid: pairs {{prompt, chosen, rejected}}, "
        "graded samples {prompt, completion, correct} or stepwise rows {prompt, completions, labels}"
    )


def _groups(rows: list[dict]) -> dict[Any, list[int]]:
    out: dict[Any, list[int]] = defaultdict(list)
    for i, r in enumerate(rows):
        out[r.get("group", r["prompt"])].append(i)
    return out


def eval_pairs(rm: RewardModel, rows: list[dict]) -> dict[str, Any]:
    from rewards.preferences import pair_texts

    texts = [pair_texts(r, f"row {i}", rm.tokenizer) for i, r in enumerate(rows)]
    chosen = rm.score([t[0] for t in texts], [t[1] for t in texts])
    rejected = rm.score([t[0] for t in texts], [t[2] for t in texts])
    return {"pairs": len(rows), "pairwise_accuracy": pairwise_accuracy(chosen, rejected)}


def eval_samples(rm: RewardModel, rows: list[dict], skip: int, tau: float) -> dict[str, Any]:
    rows = [r for r in rows if r["correct"] is not None]
    prompts, comps = [r["prompt"] for r in rows], [r["completion"] for r in rows]
    correct = [bool(r["correct"]) for r in rows]
    answers = [r.get("extracted", extract_answer(r["completion"])) for r in rows]
    rewards = rm.score(prompts, comps)
    out: dict[str, Any] = {"samples": len(rows), "sample_accuracy": sum(correct) / max(1, len(rows))}
    out["auroc_reward"] = auroc(rewards, correct)

    partial = []
    with progress(len(rows), "partial-generation rewards") as bar:
        for p, c in zip(prompts, comps, strict=True):
            partial.append(rm.score_prefixes(p, c, prefix_lengths(rm.response_length(p, c))))
            bar.advance(1)
    out["partial_auroc_reward"] = partial_auroc(partial, correct, DEFAULT_FRACTIONS)

    groups = _groups(rows)
    out.update(_baselines(answers, correct, groups))
    out["best_of_n_reward"] = _mean(
        best_of_n([rewards[i] for i in g], [correct[i] for i in g]) for g in groups.values()
    )
    out["weighted_vote_reward"] = _mean(
        weighted_vote([answers[i] for i in g], [rewards[i] for i in g], [correct[i] for i in g])
        for g in groups.values()
    )
    if isinstance(rm, GoalConditionedRM):
        q = rm.q_values(prompts, comps)
        out["auroc_q_last"] = auroc([v[-1] for v in q], correct)
        out["auroc_q_mean"] = auroc([sum(v) / len(v) for v in q], correct)
        out["partial_auroc_q"] = partial_auroc(
            [[v[max(k, 1) - 1] for k in prefix_lengths(len(v))] for v in q], correct, DEFAULT_FRACTIONS
        )
        per_question = [
            filtered_majority_vote(
                [answers[i] for i in g], [correct[i] for i in g], [q[i] for i in g], skip, tau
            )
            for g in groups.values()
        ]
        out["goal_filter"] = {"skip": skip, "tau": tau, **summarize_goal_filter(per_question)}
    return out


def eval_steps(prm: ProcessRM, rows: list[dict], how: str) -> dict[str, Any]:
    scores = prm.step_scores([r["prompt"] for r in rows], [r["completions"] for r in rows])
    hard = [r.get("hard_labels") or [hard_step_label(float(v)) for v in r["labels"]] for r in rows]
    flat_pred = [s for row in scores for s in row]
    flat_lab = [float(v) for row in hard for v in row]
    correct = [bool(h[-1]) for h in hard]  # the last step's label: the solution reaches the answer
    answers = [extract_answer("\n".join(r["completions"])) for r in rows]
    out: dict[str, Any] = {
        "solutions": len(rows),
        "steps": len(flat_pred),
        "step_accuracy": step_accuracy(flat_pred, flat_lab),
    }
    groups = _groups(rows)
    for agg in AGGREGATIONS:
        sol = [aggregate_steps(s, agg) for s in scores]
        out[f"auroc_{agg}"] = auroc(sol, correct)
        out[f"best_of_n_{agg}"] = _mean(
            best_of_n([sol[i] for i in g], [correct[i] for i in g]) for g in groups.values()
        )
        out[f"weighted_vote_{agg}"] = _mean(
            weighted_vote([answers[i] for i in g], [sol[i] for i in g], [correct[i] for i in g])
            for g in groups.values()
        )
    out["aggregate"] = how
    out.update(_baselines(answers, correct, groups))
    return out


def _baselines(answers: list, correct: list[bool], groups: dict) -> dict[str, float]:
    """What selection must beat: a random answer, the plain majority vote, and the oracle."""
    return {
        "random_pick_accuracy": _mean(_mean(correct[i] for i in g) for g in groups.values()),
        "majority_vote_accuracy": _mean(
            majority_vote([answers[i] for i in g], [correct[i] for i in g]) for g in groups.values()
        ),
        "oracle_any_correct": _mean(any(correct[i] for i in g) for g in groups.values()),
    }


def _mean(values) -> float:
    vals = [float(v) for v in values]
    return sum(vals) / len(vals) if vals else float("nan")


def run_eval_rm(args: argparse.Namespace) -> dict[str, Any]:
    start = time.perf_counter()
    if args.aggregate not in AGGREGATIONS:
        raise UserError(f"--aggregate {args.aggregate!r} is not valid; valid: {', '.join(AGGREGATIONS)}")
    if args.skip < 0:
        raise UserError(f"--skip must be >= 0, got {args.skip}")
    rows = load_rows(args.data, limit=args.limit, raw=True)
    if not rows:
        raise UserError(f"data {args.data!r} has no rows")
    kind = data_kind(rows[0])
    model_dir = Path(args.model)
    if kind == "steps":
        metrics = eval_steps(ProcessRM.from_pretrained(model_dir), rows, args.aggregate)
    else:
        is_gc = (model_dir / GOAL_FILE).is_file()
        rm = GoalConditionedRM.from_pretrained(model_dir) if is_gc else RewardModel.from_pretrained(model_dir)
        metrics = eval_pairs(rm, rows) if kind == "pairs" else eval_samples(rm, rows, args.skip, args.tau)
        metrics["goal_conditioned"] = is_gc
    metrics["wall_s"] = time.perf_counter() - start
    out = Path(args.out) if args.out else Path("runs") / "eval-rm" / model_dir.parent.name
    config = {"model": str(model_dir), "data": args.data, "kind": kind, "limit": args.limit}
    write_json(out / "results.json", {"config": config, "metrics": metrics})
    table = markdown_table(_table(metrics), ["metric", "value"])
    write_text(out / "report.md", f"# Reward model evaluation\n\n{args.model} on {args.data}\n\n{table}")
    series = {
        name: (list(curve), list(curve.values()))
        for name, curve in (
            ("reward", metrics.get("partial_auroc_reward")),
            ("Q (goal)", metrics.get("partial_auroc_q")),
        )
        if curve
    }
    if series:
        line_chart(
            series,
            out / "partial_auroc.png",
            "AUROC for correctness from partial generations",
            "share of the answer's tokens seen",
            "AUROC",
        )
    print(table, end="")
    print(f"results: {out / 'results.json'}")
    return {"config": config, "metrics": metrics, "out": str(out)}


def _table(metrics: dict[str, Any]) -> list[tuple[str, Any]]:
    rows: list[tuple[str, Any]] = []
    for key, value in metrics.items():
        if isinstance(value, dict):
            rows += [(f"{key}.{k}", v) for k, v in value.items()]
        else:
            rows.append((key, value))
    return rows


def eval_rm_command(args: argparse.Namespace) -> int:
    run_eval_rm(args)
    return 0
