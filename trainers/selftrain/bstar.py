"""``trainer: bstar``: B-STaR (Zeng et al., ICLR 2025) — self-training that re-balances
exploration (temperature T) and exploitation (reward threshold τ) every iteration.

Per iteration:
1. on ``dev_queries`` questions, sample k responses at every T of the grid; score each
   ``1[correct] + (2·PRM_min − 1) / prm_scale``; pick the (T, τ) with the best balance score
   mean_i min(n'_i / n*, 1) · n'_i / n_i (trainers/selftrain/balance.py);
2. sample the iteration's questions k times at T*, keep the responses with score > τ*;
3. SFT on them, continuing one optimizer and LR schedule across iterations (online; the
   official code never resets them).
With ``adapt: false`` (T, τ) stay fixed: online rejection fine-tuning (RFT); with τ between 0.2
and 1 and no PRM only correct responses are kept, i.e. ReST-EM-style rejection sampling.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from rewards.selection import aggregate_steps, best_index
from rollout.search.steps import split_steps
from telos.checkpoint import write_json_atomically
from telos.config import to_dict
from telos.tracking import Tracker, progress
from telos.types import SamplingParams
from trainers.common.start_model import start_model_dir
from trainers.selftrain.balance import choose_configuration, exploration_exploitation, sample_score
from trainers.selftrain.phases import (
    finish_run,
    iteration_dir,
    log_iteration,
    policy_phase,
    question_rows,
    run_phase,
    start_run,
    write_jsonl_atomically,
)
from trainers.selftrain.recipe import BStarRecipe

PLOT_GROUPS = {
    "accuracy": ["eval_accuracy", "pass_at_k", "kept_precision", "reward_at_k"],
    "balance": ["balance_score"],
    "configuration": ["temperature", "threshold"],
    "data": ["kept", "distinct_correct"],
}


SAMPLE_CHUNK = 32  # questions per engine call: a progress update every chunk, bounded memory


class Sampler:
    """Samples and grades k responses per question with the current policy (one engine call
    per temperature), and scores them with the PRM when there is one."""

    def __init__(self, recipe: BStarRecipe, policy_dir: str) -> None:
        from rewards.functions import resolve_reward_function
        from rewards.reward_model import ProcessRM
        from rollout.backends import make_engine
        from telos.models import load_model, load_tokenizer

        self.recipe = recipe
        self.tokenizer = load_tokenizer(policy_dir)
        model = load_model(policy_dir, "float32").to("cuda" if torch.cuda.is_available() else "cpu").eval()
        self.engine = make_engine(recipe.bstar.engine, model, self.tokenizer)
        self.reward_fn = resolve_reward_function(recipe.verifier)
        self.prm = (
            ProcessRM.from_pretrained(start_model_dir(recipe.reward_model)) if recipe.reward_model else None
        )

    def sample(self, rows: list[dict], temperature: float, seed: int, on_done=lambda n: None):
        """(texts, correct, scores, prm_best, tokens) per question; ``on_done(n)`` after each
        chunk of ``SAMPLE_CHUNK`` questions (the progress bar)."""
        from envs.math.prompts import format_prompt
        from rewards.functions import score_completions

        r, k = self.recipe, self.recipe.bstar.samples_per_query
        prompts = [
            format_prompt(row, r.data.template, tokenizer=self.tokenizer, chat=r.data.chat) for row in rows
        ]
        params = SamplingParams(n=k, temperature=temperature, max_tokens=r.bstar.max_tokens, seed=seed)
        outs = []
        for c, start in enumerate(range(0, len(prompts), SAMPLE_CHUNK)):
            part = prompts[start : start + SAMPLE_CHUNK]
            outs += self.engine.generate(part, SamplingParams(**{**params.__dict__, "seed": seed * 1009 + c}))
            on_done(len(part))
        flat_prompts = [p for p in prompts for _ in range(k)]
        totals, _ = score_completions(
            [self.reward_fn],
            [1.0],
            flat_prompts,
            [o.text for o in outs],
            {"answer": [row["answer"] for row in rows for _ in range(k)]},
        )
        correct = [t is not None and t > 0 for t in totals]
        prm_min: list[float | None] = [None] * len(outs)
        if self.prm is not None:
            steps = [split_steps(o.text) or [o.text] for o in outs]
            prm_min = [aggregate_steps(s, "min") for s in self.prm.step_scores(flat_prompts, steps, 64)]
        scores = [sample_score(c, p, r.bstar.prm_scale) for c, p in zip(correct, prm_min, strict=True)]
        group = lambda xs: [xs[i * k : (i + 1) * k] for i in range(len(rows))]  # noqa: E731
        prm_best = [best_index(g) for g in group(prm_min)] if self.prm is not None else None
        return (
            group([o.text for o in outs]),
            group(correct),
            group(scores),
            prm_best,
            sum(len(o.token_ids) for o in outs),
        )

    def close(self) -> None:
        self.engine.close()


def sample_phase(recipe: BStarRecipe, out: Path, policy_dir: str, iteration: int) -> dict:
    b = recipe.bstar
    sampler = Sampler(recipe, policy_dir)
    seed = b.seed * 1_000_003 + iteration * 1009
    total = (len(b.temperatures) * b.dev_queries if b.adapt else 0) + b.questions_per_iteration
    with progress(total, f"B-STaR sampling, iteration {iteration}") as bar:
        try:
            table: dict = {}
            if b.adapt:
                dev = question_rows(
                    recipe.data.train, b.dev_queries, iteration, b.seed + 7, recipe.data.num_train
                )
                by_t = {}
                for j, temperature in enumerate(b.temperatures):
                    texts, correct, scores, _, _ = sampler.sample(dev, temperature, seed + j, bar.advance)
                    by_t[temperature] = (texts, correct, scores)
                choice, table = choose_configuration(by_t, b.thresholds, b.n_star)
                temperature, threshold, dev_balance = choice.temperature, choice.threshold, choice.balance
            else:
                temperature, threshold, dev_balance = b.temperature, b.threshold, None
            rows = question_rows(
                recipe.data.train, b.questions_per_iteration, iteration, b.seed, recipe.data.num_train
            )
            texts, correct, scores, prm_best, tokens = sampler.sample(
                rows, temperature, seed + 997, bar.advance
            )
        finally:
            sampler.close()
    from trainers.selftrain.balance import balance_score

    kept = [[s > threshold for s in ss] for ss in scores]
    traces = []
    for row, ts, ks in zip(rows, texts, kept, strict=True):
        for text in sorted({t for t, keep in zip(ts, ks, strict=True) if keep}):  # distinct responses
            traces.append({"prompt": row["prompt"], "answer": row["answer"], "solution": text})
    write_jsonl_atomically(out / "kept.jsonl", traces)
    write_json_atomically(
        out / "selection.json",
        {
            "temperature": temperature,
            "threshold": threshold,
            "grid": [[t, tau, bs] for (t, tau), bs in table.items()],
        },
    )
    return {
        "temperature": temperature,
        "threshold": threshold,
        "dev_balance_score": dev_balance,
        "balance_score": balance_score(texts, correct, scores, threshold, b.n_star),
        **exploration_exploitation(correct, texts, kept, prm_best),
        "kept": len(traces),
        "sample_tokens_per_question": tokens / max(1, len(rows)),
    }


def train_bstar(recipe: BStarRecipe, raw_config: dict | None = None) -> dict:
    r, b = recipe, recipe.bstar
    run_dir, resume, started = start_run("bstar", r, raw_config)
    policy = start_model_dir(r.model.name_or_path)
    tracker = Tracker(
        run_dir,
        total_steps=b.iterations,
        report_to=r.report_to,
        config=to_dict(r),
        progress_keys=["eval_accuracy", "temperature", "threshold", "balance_score"],
        description=f"bstar {r.name}",
    )
    rows_out: list[dict] = []
    initial_accuracy = None
    previous_sft: Path | None = None
    trained_steps = 0
    for it in range(1, b.iterations + 1):
        d = iteration_dir(run_dir, it)
        s = run_phase(
            d / "samples", resume, sample_phase, recipe=r, out=d / "samples", policy_dir=policy, iteration=it
        )
        if s["kept"]:
            online = b.continue_optimizer and previous_sft is not None
            p = policy_phase(
                r,
                d / "policy",
                it,
                policy,
                d / "samples" / "kept.jsonl",
                resume,
                eval_before=b.eval_before_training and it == 1,
                continue_from=previous_sft if online else None,
                step_offset=trained_steps if online else 0,
                schedule_steps=r.sft.steps * b.iterations if b.continue_optimizer else None,
            )
            previous_sft = d / "policy"
            trained_steps = (trained_steps if b.continue_optimizer else 0) + r.sft.steps
        else:
            p = {"eval_accuracy": rows_out[-1]["eval_accuracy"] if rows_out else None, "model_dir": policy}
        if it == 1:
            initial_accuracy = p.get("initial_eval_accuracy")
        policy = p["model_dir"]
        row = {"iteration": it, **s, "eval_accuracy": p.get("eval_accuracy")}
        rows_out.append(row)
        log_iteration(tracker, row)
    tracker.close()
    summary = {
        "name": r.name,
        "trainer": "bstar",
        "adapt": b.adapt,
        "iterations": b.iterations,
        "initial_eval_accuracy": initial_accuracy,
        "eval_accuracy": rows_out[-1]["eval_accuracy"],
        "policy_dir": policy,
        "total_seconds": round(time.perf_counter() - started, 1),
    }
    return finish_run(run_dir, f"B-STaR: {r.name}", summary, rows_out, PLOT_GROUPS)
