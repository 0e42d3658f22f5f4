"""Reward-model training data built offline from a policy and a verifier.

``telos data preferences``: sample the policy K times per problem, grade every answer, and
write correct-vs-wrong pairs for the same prompt (``{prompt, chosen, rejected, answer}``) —
plus, with ``--samples-out``, every graded sample (``{prompt, completion, correct, answer,
extracted, group}``), which ``telos eval rm`` uses for AUROC and filtered majority votes.

``telos data process-labels``: Math-Shepherd-style step labels. Sample solutions, split them
into steps (one per line), and from each step prefix let the policy complete N times: the hard
label is whether any completion reaches the gold answer, the soft label the share that do.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from envs.math.answers import extract_answer
from envs.math.prompts import format_prompt
from envs.math.sources import load_rows
from eval.math import generate_and_score, load_generation_model
from rewards.functions import resolve_reward_function, score_completions
from rewards.rm_losses import hard_step_label
from rollout.search.steps import split_steps
from telos.errors import UserError
from telos.tracking import progress
from telos.types import SamplingParams


def _prepare(args: argparse.Namespace):
    """What both commands start from: the verifier, the problems, an engine and the prompts.
    Every argument is checked before the model loads."""
    from rollout.backends import make_engine
    from telos.models import check_model_path, load_tokenizer

    reward_fn = resolve_reward_function(args.reward)
    rows = load_rows(args.data, limit=args.limit, seed=args.seed)
    if not rows:
        raise UserError(f"data {args.data!r} has no problems")
    check_model_path(args.model)
    tokenizer = load_tokenizer(args.model)
    engine = make_engine("hf", load_generation_model(args.model), tokenizer)
    prompts = [format_prompt(r, args.template, tokenizer=tokenizer, chat=args.chat) for r in rows]
    return reward_fn, rows, engine, prompts


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tmp.replace(path)


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if value < 1:
            raise UserError(f"--{name.replace('_', '-')} must be >= 1, got {value}")


def make_pairs(
    texts: list[str], correct: list[bool], max_pairs: int, rng: random.Random
) -> list[tuple[str, str]]:
    """Up to ``max_pairs`` (correct, wrong) text pairs from one prompt's samples, each answer
    used at most once per side; distinct texts only (a duplicate pair teaches nothing new)."""
    right = list(dict.fromkeys(t for t, c in zip(texts, correct, strict=True) if c))
    wrong = list(dict.fromkeys(t for t, c in zip(texts, correct, strict=True) if not c))
    rng.shuffle(right)
    rng.shuffle(wrong)
    return list(zip(right, wrong, strict=False))[:max_pairs]


def preferences_command(args: argparse.Namespace) -> int:
    _check_positive(samples=args.samples, pairs_per_prompt=args.pairs_per_prompt, max_tokens=args.max_tokens)
    reward_fn, rows, engine, prompts = _prepare(args)
    params = SamplingParams(
        n=args.samples, temperature=args.temperature, max_tokens=args.max_tokens, seed=args.seed
    )
    try:
        completions, scores, _ = generate_and_score(engine, reward_fn, rows, prompts, params)
    finally:
        engine.close()
    k, rng = args.samples, random.Random(args.seed)
    pairs, samples = [], []
    for g, (row, prompt) in enumerate(zip(rows, prompts, strict=True)):
        outs, sc = completions[g * k : (g + 1) * k], scores[g * k : (g + 1) * k]
        texts, right = [o.text for o in outs], [s is not None and s > 0 for s in sc]
        for chosen, rejected in make_pairs(texts, right, args.pairs_per_prompt, rng):
            pairs.append({"prompt": prompt, "chosen": chosen, "rejected": rejected, "answer": row["answer"]})
        for o, s, c in zip(outs, sc, right, strict=True):
            samples.append(
                {
                    "group": g,
                    "prompt": prompt,
                    "completion": o.text,
                    "correct": c if s is not None else None,
                    "answer": row["answer"],
                    "extracted": extract_answer(o.text),
                    "num_tokens": len(o.token_ids),
                }
            )
    _write_jsonl(Path(args.out), pairs)
    if args.samples_out:
        _write_jsonl(Path(args.samples_out), samples)
    accuracy = sum(s["correct"] is True for s in samples) / max(1, len(samples))
    print(
        f"wrote {len(pairs)} pairs from {len(rows)} problems × {k} samples (sample accuracy {accuracy:.3f}) "
        f"→ {args.out}"
        + (f"; {len(samples)} graded samples → {args.samples_out}" if args.samples_out else "")
    )
    return 0


def step_soft_labels(
    engine, reward_fn, roll: SamplingParams, prompt: str, steps: list[str], answer: str
) -> list[float]:
    """Per step prefix, the share of ``roll.n`` completions from it that reach ``answer``. A
    prefix that already states an answer is finished: its label is that answer's correctness
    (completing it would grade whatever the policy writes *after* the answer)."""
    texts = ["\n".join(steps[: j + 1]) for j in range(len(steps))]
    open_steps = [j for j, t in enumerate(texts) if extract_answer(t) is None]
    n = roll.n
    # the completion from each open step prefix; the prefix carries its newline
    prefixes = [prompt + texts[j] + "\n" for j in open_steps]
    outs = engine.generate(prefixes, roll) if prefixes else []
    graded_prompts = [prefixes[k // n] for k in range(len(outs))]
    graded = [texts[open_steps[k // n]] + "\n" + o.text for k, o in enumerate(outs)]
    finished = [j for j in range(len(steps)) if j not in set(open_steps)]
    scores, _ = score_completions(
        [reward_fn],
        [1.0],
        graded_prompts + [prompt] * len(finished),
        graded + [texts[j] for j in finished],
        {"answer": [answer] * (len(graded) + len(finished))},
    )
    right = [s is not None and s > 0 for s in scores]
    soft = [0.0] * len(steps)
    for k, j in enumerate(open_steps):
        soft[j] = sum(right[k * n : (k + 1) * n]) / n
    for k, j in enumerate(finished):
        soft[j] = float(right[len(graded) + k])
    return soft


def process_labels_command(args: argparse.Namespace) -> int:
    _check_positive(solutions=args.solutions, rollouts=args.rollouts, max_tokens=args.max_tokens)
    reward_fn, rows, engine, prompts = _prepare(args)
    out_rows = []
    try:
        sol_params = SamplingParams(
            n=args.solutions, temperature=1.0, max_tokens=args.max_tokens, seed=args.seed
        )
        solutions, _, _ = generate_and_score(engine, reward_fn, rows, prompts, sol_params)
        roll = SamplingParams(
            n=args.rollouts, temperature=1.0, max_tokens=args.max_tokens, seed=args.seed + 1
        )
        with progress(len(solutions), "process labels") as bar:
            for i, sol in enumerate(solutions):
                g = i // args.solutions
                row, prompt = rows[g], prompts[g]
                steps = split_steps(sol.text)
                if not steps:
                    bar.advance(1)
                    continue
                soft = step_soft_labels(engine, reward_fn, roll, prompt, steps, row["answer"])
                hard = [hard_step_label(s) for s in soft]  # Math-Shepherd: some completion gets there
                out_rows.append(
                    {
                        "prompt": prompt,
                        "completions": steps,
                        "labels": soft if args.label == "soft" else hard,
                        "soft_labels": soft,
                        "hard_labels": hard,
                        "answer": row["answer"],
                        "group": g,
                    }
                )
                bar.advance(1)
    finally:
        engine.close()
    _write_jsonl(Path(args.out), out_rows)
    steps_total = sum(len(r["completions"]) for r in out_rows)
    print(
        f"wrote {len(out_rows)} labelled solutions ({steps_total} steps, {args.rollouts} rollouts each) → {args.out}"
    )
    return 0
