"""GRPO with a LoRA adapter: only adapter weights train, and the run saves the adapter."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_grpo_with_lora_trains_and_saves_adapter(tmp_path, write_recipe, subprocess_env):
    recipe = write_recipe(
        tmp_path,
        **{"model.lora": {"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]}, "train.steps": 2},
    )
    proc = subprocess.run(
        [sys.executable, "-m", "telos", "train", str(recipe)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
        env=subprocess_env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = tmp_path / "run"
    assert (run / "final" / "adapter_config.json").exists()
    assert (run / "checkpoints" / "step-2" / "adapter_config.json").exists()
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in lines if m["step"] > 0] == [1, 2]
    assert all(m["grad_norm"] >= 0 for m in lines if m["step"] > 0)
