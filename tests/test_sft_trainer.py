"""``trainer: sft``: worked-solution fine-tuning, its resume, and the from-recipe: hand-off to RL."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from telos.errors import UserError

REPO = Path(__file__).resolve().parent.parent


def _sft_recipe(directory: Path, model: Path, **train) -> Path:
    raw = {
        "trainer": "sft",
        "name": "sft-test",
        "output_dir": str(directory / "run"),
        "model": {"name_or_path": str(model)},
        "data": {
            "train": "procedural:arith?n=64&max_value=30",
            "test": "procedural:arith:test?n=6&max_value=30",
            "num_test": 6,
        },
        "train": {"steps": 4, "batch_size": 4, "lr": 1e-3, "warmup_steps": 0, "save_every": 2, "keep_last": 3}
        | train,
    }
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "sft.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def _train(path: Path, *overrides: str) -> dict:
    from trainers.run import load_recipe
    from trainers.sft.train import train_math_sft

    recipe, raw = load_recipe(str(path), list(overrides))
    return train_math_sft(recipe, raw)


def test_sft_trains_evaluates_and_writes_its_run(tmp_path, tiny_model_dir, weights_of):
    summary = _train(_sft_recipe(tmp_path, tiny_model_dir))
    run = tmp_path / "run"
    for f in ("summary.json", "report.md", "metrics.jsonl", "final/config.json", "plots/loss.png"):
        assert (run / f).is_file(), f
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == [1, 2, 3, 4]
    assert "eval_accuracy" in rows[-1] and 0.0 <= summary["eval_accuracy"] <= 1.0
    assert summary["initial_eval_accuracy"] is not None and summary["train_examples"] == 64
    start, final = weights_of(tiny_model_dir), weights_of(run / "final")
    assert any(not torch.equal(start[k], final[k]) for k in start), "SFT did not move the weights"


def test_sft_resumed_from_a_mid_run_checkpoint_matches_the_uninterrupted_run(
    tmp_path, tiny_model_dir, weights_of, assert_same_weights
):
    _train(_sft_recipe(tmp_path / "a", tiny_model_dir))
    path = _sft_recipe(tmp_path / "b", tiny_model_dir)
    _train(path)
    run = tmp_path / "b" / "run"
    # as if killed right after step 2's checkpoint
    shutil.rmtree(run / "checkpoints" / "step-4")
    shutil.rmtree(run / "final")
    _train(path, "resume=latest")
    assert_same_weights(weights_of(tmp_path / "a" / "run" / "final"), weights_of(run / "final"))


def test_sft_drops_examples_over_max_length_and_says_when_all_are(tmp_path, tiny_model_dir):
    path = _sft_recipe(tmp_path, tiny_model_dir, max_length=8)
    with pytest.raises(UserError, match="max_length"):
        _train(path)


def test_check_names_a_missing_target_column(tmp_path, tiny_model_dir, subprocess_env):
    path = _sft_recipe(tmp_path, tiny_model_dir)
    proc = subprocess.run(
        [sys.executable, "-m", "telos", "check", str(path), "data.target=rationale"],
        cwd=REPO,
        env=subprocess_env,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith("error: 'data.target' 'rationale'") and "solution" in line, line


def test_rl_recipe_starts_from_the_sft_recipes_final(tmp_path, tiny_model_dir, write_recipe):
    from trainers.common.start_model import start_model_dir

    sft = _sft_recipe(tmp_path / "sft", tiny_model_dir, steps=2)
    spec = f"from-recipe:{sft}"
    with pytest.raises(UserError, match="run `telos train .*sft.yaml` first"):
        start_model_dir(spec)
    _train(sft)
    assert start_model_dir(spec) == str(tmp_path / "sft" / "run" / "final")
    rl = write_recipe(tmp_path / "rl", **{"model.name_or_path": spec, "train.steps": 1})
    from trainers.rl.loop import train_rl
    from trainers.run import load_recipe

    recipe, raw = load_recipe(str(rl))
    summary = train_rl(recipe, raw)
    assert summary["steps"] == 1
    cfg = yaml.safe_load((tmp_path / "rl" / "run" / "config.yaml").read_text())
    assert cfg["model"]["name_or_path"] == spec
