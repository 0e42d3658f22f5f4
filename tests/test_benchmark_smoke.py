"""The telos-vs-TRL GRPO benchmark runs end to end (one step per side) and writes its JSON.

Only the shape of the result is checked; timings on a shared CI machine say nothing, so no
ratio is asserted.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("trl")

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "benchmarks" / "grpo_vs_trl.py"


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    from trainers.common.sft import SFTConfig
    from trainers.common.tiny import TinyTaskConfig, build_sft_model

    out = tmp_path_factory.mktemp("bench") / "model"
    build_sft_model(TinyTaskConfig(num_train=500, sft=SFTConfig(steps=10, batch_size=16)), out)
    return out


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_benchmark_runs_and_writes_json(tiny_model: Path, tmp_path: Path) -> None:
    out = tmp_path / "result.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--steps",
            "1",
            "--repeats",
            "1",
            "--model",
            str(tiny_model),
            "--out",
            str(out),
        ],
        cwd=tmp_path,  # nothing may be written into the repo
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(out.read_text())

    for key in (
        "telos_tokens_per_s",
        "trl_tokens_per_s",
        "ratio",
        "steps",
        "telos_final_reward_mean",
        "trl_final_reward_mean",
        "telos_mfu",
        "trl_mfu",
        "peak_flops_per_s",
        "per_repeat",
        "settings",
        "machine",
    ):
        assert key in result, key
    assert result["steps"] == 1
    assert result["telos_tokens_per_s"] > 0
    assert result["trl_tokens_per_s"] > 0
    assert result["peak_flops_per_s"] > 0
    assert 0 <= result["telos_final_reward_mean"] <= 1
    assert 0 <= result["trl_final_reward_mean"] <= 1
    for key in ("cpu_count", "torch_version", "trl_version"):
        assert result["machine"][key], key

    [rep] = result["per_repeat"]
    for side in ("telos", "trl"):
        per_step = rep[side]["per_step"]
        assert len(per_step["step_seconds"]) == 1
        assert per_step["generated_tokens"][0] > 0
        assert per_step["prompt_tokens"][0] > 0
    # both sides saw the same prompts: the same prompt-token count for the step
    assert rep["telos"]["per_step"]["prompt_tokens"] == rep["trl"]["per_step"]["prompt_tokens"]

    s = result["settings"]
    assert s["num_generations"] == 8 and s["prompts_per_step"] == 16
    assert s["max_completion_tokens"] == 48 and s["dynamic_sampling"] is False
    assert s["trl"]["per_device_train_batch_size"] == 128 and s["trl"]["loss_type"] == "dapo"
