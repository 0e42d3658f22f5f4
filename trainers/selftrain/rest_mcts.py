"""``trainer: rest_mcts``: ReST-MCTS* self-training (Zhang et al., NeurIPS 2024).

Per iteration i (policy π_{i−1}, value model V_{i−1}):
1. MCTS* in data mode on the iteration's training questions, ``rest.search_batch`` trees at a
   time (one engine call per round for all of them; rollout/search/mcts.py);
2. grade every finished solution; policy data = the distinct correct ones with V ≥ ``min_value``;
   value data = the targets v_k of every tree with a correct leaf (rollout/search/tree.py);
3. SFT π_{i−1} on the policy data → π_i (a ``trainer: sft`` run, held-out greedy accuracy);
4. train V_{i−1} on the value data by MSE → V_i (a ``trainer: rm`` run, kind prm).
Before iteration 1, V_0 is trained on ``value.init_data`` when given (the paper's D_V0).
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from rollout.search.mcts import run_mcts
from rollout.search.steps import StepProposer
from rollout.search.tree import grade, target_rows, tree_stats, tree_to_json, value_targets
from telos.config import to_dict
from telos.tracking import Tracker, progress
from trainers.common.start_model import start_model_dir
from trainers.selftrain.phases import (
    finish_run,
    iteration_dir,
    log_iteration,
    policy_phase,
    question_rows,
    read_jsonl,
    run_phase,
    start_run,
    value_training,
    write_jsonl_atomically,
)
from trainers.selftrain.recipe import RestMCTSRecipe

PLOT_GROUPS = {
    "accuracy": ["eval_accuracy", "solved_frac"],
    "search": ["mean_tree_nodes", "mean_search_tokens"],
    "data": ["policy_traces", "value_rows"],
    "value_loss": ["value_loss"],
}


def search_phase(
    recipe: RestMCTSRecipe, out: Path, policy_dir: str, value_dir: str, iteration: int, resume: bool
) -> dict:
    """MCTS* on the iteration's questions; writes trees, traces and value rows; chunk files
    make a killed search resume at the chunk it was in."""
    from envs.math.prompts import format_prompt
    from rewards.functions import resolve_reward_function, score_completions
    from rewards.reward_model import ProcessRM
    from rollout.backends import make_engine
    from telos.models import load_model, load_tokenizer

    r, rest = recipe, recipe.rest
    rows = question_rows(r.data.train, rest.questions_per_iteration, iteration, rest.seed, r.data.num_train)
    tokenizer = load_tokenizer(policy_dir)
    model = load_model(policy_dir, "float32").to("cuda" if torch.cuda.is_available() else "cpu").eval()
    engine = make_engine(rest.engine, model, tokenizer)
    value = ProcessRM.from_pretrained(value_dir)
    proposer = StepProposer(
        engine, tokenizer.eos_token_id, max_step_tokens=r.search.max_step_tokens, max_steps=r.search.max_steps
    )
    reward_fn = resolve_reward_function(r.verifier)
    chunks = out / "chunks"
    started = time.perf_counter()
    expanded = 0
    with progress(len(rows), f"MCTS* iteration {iteration}") as bar:
        for c, begin in enumerate(range(0, len(rows), rest.search_batch)):
            path = chunks / f"chunk-{c:04d}.jsonl"
            part = rows[begin : begin + rest.search_batch]
            if resume and path.is_file():
                bar.advance(len(part))
                continue
            prompts = [
                format_prompt(row, r.data.template, tokenizer=tokenizer, chat=r.data.chat) for row in part
            ]
            trees, counters = run_mcts(
                prompts,
                proposer,
                value.values,
                r.search,
                mode="data",
                seed=rest.seed * 1009 + iteration * 101 + c,
            )
            expanded += counters.expanded
            records = []
            for row, tree in zip(part, trees, strict=True):

                def is_correct(steps: list[str], row=row) -> bool:
                    totals, _ = score_completions(
                        [reward_fn], [1.0], [""], ["\n".join(steps)], {"answer": [row["answer"]]}
                    )
                    return totals[0] is not None and totals[0] > 0

                grade(tree.root, is_correct)
                targets = value_targets(tree.root)
                traces = sorted(
                    {
                        "\n".join(n.steps())
                        for n in tree.root.walk()
                        if n.terminal and n.correct and n.value >= rest.min_value
                    }
                )
                records.append(
                    {
                        "prompt": row["prompt"],
                        "answer": row["answer"],
                        "formatted_prompt": tree.prompt,
                        "tokens": tree.tokens,
                        "stats": tree_stats(tree.root),
                        "traces": traces,
                        "value_rows": target_rows(tree.root, tree.prompt),
                        "tree": tree_to_json(tree.root, targets),
                    }
                )
            write_jsonl_atomically(path, records)
            bar.advance(len(part), nodes_s=expanded / max(time.perf_counter() - started, 1e-9))
    engine.close()
    records = [rec for p in sorted(chunks.glob("chunk-*.jsonl")) for rec in read_jsonl(p)]
    traces = [
        {"prompt": x["prompt"], "answer": x["answer"], "solution": t} for x in records for t in x["traces"]
    ]
    value_rows = [v for x in records for v in x["value_rows"]]
    write_jsonl_atomically(out / "traces.jsonl", traces)
    write_jsonl_atomically(out / "value_rows.jsonl", value_rows)
    write_jsonl_atomically(
        out / "trees.jsonl", [{k: x[k] for k in ("prompt", "answer", "tree")} for x in records]
    )
    n = max(1, len(records))
    return {
        "questions": len(records),
        "solved_frac": sum(x["stats"]["correct_terminal"] > 0 for x in records) / n,
        "mean_tree_nodes": sum(x["stats"]["nodes"] for x in records) / n,
        "mean_search_tokens": sum(x["tokens"] for x in records) / n,
        "policy_traces": len(traces),
        "value_rows": len(value_rows),
        "search_seconds": round(time.perf_counter() - started, 1),
    }


def train_rest_mcts(recipe: RestMCTSRecipe, raw_config: dict | None = None) -> dict:
    r, rest = recipe, recipe.rest
    run_dir, resume, started = start_run("rest_mcts", r, raw_config)
    policy = start_model_dir(r.model.name_or_path)
    value = start_model_dir(r.value.name_or_path)
    if r.value.init_data is not None:
        from trainers.common.recipe_data import resolve_recipe_data

        init_dir = run_dir / "value-init"
        run_phase(
            init_dir,
            resume,
            value_training,
            out=init_dir,
            start=value,
            rows=resolve_recipe_data(r.value.init_data),
            test=resolve_recipe_data(r.value.init_test) if r.value.init_test else None,
            train=r.value.train,
            max_length=r.value.max_length,
            resume=resume,
            name=f"{r.name}-value-init",
        )
        value = str(init_dir / "final")
    tracker = Tracker(
        run_dir,
        total_steps=rest.iterations,
        start_step=0,
        report_to=r.report_to,
        config=to_dict(r),
        progress_keys=["eval_accuracy", "solved_frac", "policy_traces", "value_loss"],
        description=f"rest_mcts {r.name}",
    )
    rows_out: list[dict] = []
    initial_accuracy = None
    for it in range(1, rest.iterations + 1):
        d = iteration_dir(run_dir, it)
        s = run_phase(d / "search", resume, search_phase, recipe=r, out=d / "search", policy_dir=policy,
                      value_dir=value, iteration=it, resume=resume)  # fmt: skip
        p = (
            policy_phase(
                r,
                d / "policy",
                it,
                policy,
                d / "search" / "traces.jsonl",
                resume,
                eval_before=rest.eval_before_training and it == 1,
            )  # fmt: skip
            if s["policy_traces"]
            else {"eval_accuracy": None, "model_dir": policy, "skipped": "no correct traces"}
        )
        v = (
            run_phase(
                d / "value",
                resume,
                value_training,
                out=d / "value",
                start=value,
                rows=str(d / "search" / "value_rows.jsonl"),
                test=None,
                train=r.value.train,
                max_length=r.value.max_length,
                resume=resume,
                name=f"{r.name}-value-{it}",
            )
            if s["value_rows"]
            else {"final_loss": None, "model_dir": value, "skipped": "no value targets"}
        )
        if it == 1:
            initial_accuracy = p.get("initial_eval_accuracy")
        policy, value = p["model_dir"], v["model_dir"]
        row = {
            "iteration": it,
            **s,
            "eval_accuracy": p.get("eval_accuracy"),
            "value_loss": v.get("final_loss"),
        }
        rows_out.append(row)
        log_iteration(tracker, row)
    tracker.close()
    summary = {
        "name": r.name,
        "trainer": "rest_mcts",
        "iterations": rest.iterations,
        "initial_eval_accuracy": initial_accuracy,
        "eval_accuracy": rows_out[-1]["eval_accuracy"],
        "policy_dir": policy,
        "value_dir": value,
        "total_seconds": round(time.perf_counter() - started, 1),
    }
    return finish_run(run_dir, f"ReST-MCTS*: {r.name}", summary, rows_out, PLOT_GROUPS)
