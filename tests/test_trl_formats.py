"""TRL's two dataset formats, tried as a new user would: a JSONL file whose rows are
``{"prompt": [{"role": "user", "content": ...}], "answer": ...}`` (conversational) with
TRL-signature reward functions loaded from a file. ``telos check`` reads the first rows of a
local file (a bad row fails before any model is built); reward functions get message lists
for conversational rows, as TRL's GRPOTrainer hands them."""

from __future__ import annotations

import json
from pathlib import Path

from envs.math.prompts import format_prompt
from envs.math.sources import load_rows
from rewards.functions import resolve_reward_function
from rollout.backends import make_engine
from telos.models import TinyModelConfig, build_tiny_model, build_tokenizer
from telos.types import SamplingParams
from trainers.rl.rollout_batch import generate_scored_groups

TINY = Path(__file__).resolve().parents[1] / "recipes" / "math" / "grpo_tiny.yaml"

# What a TRL user writes (TRL's docs: completions[i][0]["content"] for conversational data).
TRL_REWARDS = """
SEEN = []

def contains_answer(prompts, completions, answer, **kwargs):
    SEEN.append((prompts, completions))
    return [float(a in c[0]["content"]) for c, a in zip(completions, answer)]
"""


def _rows(n: int) -> list[dict]:
    return [{"prompt": [{"role": "user", "content": f"{i} + 1 ="}], "answer": str(i + 1)} for i in range(n)]


def _jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _check(capsys, *args: str) -> tuple[int, str]:
    from telos.cli import main

    code = main(["check", str(TINY), *args])
    out = capsys.readouterr()
    return code, out.err.strip()


def test_check_accepts_conversational_rows_and_rejects_a_bad_row(tmp_path, capsys):
    rewards = tmp_path / "my_rewards.py"
    rewards.write_text(TRL_REWARDS)
    good = _jsonl(tmp_path / "conv.jsonl", _rows(3))
    reward_override = f"rewards=[{{name: '{rewards}:contains_answer', weight: 1.0}}]"
    code, err = _check(capsys, f"data.train={good}", reward_override)
    assert code == 0, err
    bad = _jsonl(tmp_path / "bad.jsonl", [*_rows(1), {"prompt": 5, "answer": "1"}])
    code, err = _check(capsys, f"data.train={bad}", reward_override)
    assert code == 2
    assert err.startswith("error: 'data.train': row 1 of ") and "'prompt' must be a string" in err
    assert len(err.splitlines()) == 1


def test_conversational_rollout_hands_reward_functions_trl_shapes(tmp_path):
    rewards = tmp_path / "my_rewards.py"
    rewards.write_text(TRL_REWARDS)
    fn = resolve_reward_function(f"{rewards}:contains_answer")
    rows = load_rows(str(_jsonl(tmp_path / "conv.jsonl", _rows(2))))
    tok = build_tokenizer(["0 + 1 = 1", "1 + 1 = 2"], 64)
    cfg = TinyModelConfig(hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1, intermediate_size=64)
    engine = make_engine("hf", build_tiny_model(cfg, tok), tok)
    prompts = [format_prompt(r, tokenizer=tok) for r in rows]
    assert prompts == ["0 + 1 =\n", "1 + 1 =\n"]  # no chat template: the plain prompt
    accuracy = resolve_reward_function("accuracy")
    groups = generate_scored_groups(
        engine,
        rows,
        [0, 1],
        prompts,
        SamplingParams(n=2, max_tokens=4, seed=0),
        [fn, accuracy],
        [1.0, 1.0],
        None,
    )
    assert len(groups.rewards) == 4 and all(r is not None for r in groups.rewards)
    seen_prompts, seen_completions = fn.__globals__["SEEN"][-1]
    assert seen_prompts == [rows[0]["prompt"]] * 2 + [rows[1]["prompt"]] * 2  # the messages
    for c, completion in zip(groups.completions, seen_completions, strict=True):
        assert completion == [{"role": "assistant", "content": c.text}]


def test_train_on_conversational_jsonl_with_file_rewards(tmp_path, write_recipe):
    rewards = tmp_path / "my_rewards.py"
    rewards.write_text(TRL_REWARDS)
    data = _jsonl(tmp_path / "conv.jsonl", _rows(8))
    recipe = write_recipe(
        tmp_path,
        **{
            "data.train": str(data),
            "data.test": str(data),
            "data.num_test": 2,
            "rewards": [{"name": f"{rewards}:contains_answer", "weight": 1.0}],
            "train.steps": 1,
            "sampling.max_tokens": 8,
        },
    )
    from telos.cli import main

    assert main(["train", str(recipe)]) == 0  # the held-out eval calls the same function
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["steps"] == 1 and 0.0 <= summary["eval_accuracy"] <= 1.0
