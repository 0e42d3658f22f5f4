"""The telos-vs-TRL reward-model benchmark runs end to end (two steps per side) and writes its JSON.

Only the shape of the result and the parity of the two runs are checked (same tokens per step,
same step-1 loss); timings on a shared CI machine say nothing, so no ratio is asserted.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("trl")

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "benchmarks" / "rm_vs_trl.py"


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    from trainers.common.sft import SFTConfig
    from trainers.common.tiny import TinyTaskConfig, build_sft_model

    out = tmp_path_factory.mktemp("bench-rm") / "model"
    build_sft_model(TinyTaskConfig(num_train=200, sft=SFTConfig(steps=2, batch_size=8)), out)
    return out


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_rm_benchmark_runs_and_writes_json(tiny_model: Path, tmp_path: Path) -> None:
    pairs = tmp_path / "pairs.jsonl"
    rows = [
        {"prompt": f"{a}+{b}=", "chosen": f"{a + b}\n#### {a + b}", "rejected": f"#### {a + b + 1}"}
        for a in range(1, 9)
        for b in range(1, 5)
    ]
    pairs.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "result.json"
    args = ["--steps", "2", "--repeats", "1", "--batch-size", "4", "--model", str(tiny_model)]
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), *args, "--data", str(pairs), "--out", str(out)],
        cwd=tmp_path,  # nothing may be written into the repo
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(out.read_text())

    for key in ("ratio", "peak_flops_per_s", "num_params", "per_repeat", "settings", "machine"):
        assert key in result, key
    for side in ("telos", "trl"):
        assert result[f"{side}_tokens_per_s"] > 0
        assert result[f"{side}_mfu"] > 0
        assert 0 <= result[f"{side}_final_accuracy"] <= 1
    assert result["steps"] == 2 and result["batch_size"] == 4
    [rep] = result["per_repeat"]
    telos, trl = rep["telos"]["per_step"], rep["trl"]["per_step"]
    assert telos["tokens"] == trl["tokens"] and len(telos["tokens"]) == 2
    # same starting weights, same batch: the first step's BT loss agrees to float precision
    assert result["first_step_loss_max_abs_diff"] < 1e-5
    assert telos["loss"][0] == pytest.approx(trl["loss"][0], abs=1e-5)
    s = result["settings"]["trl"]
    assert s["train_sampling_strategy"] == "sequential" and s["per_device_train_batch_size"] == 4
    assert s["max_length"] is None and s["lr_scheduler_type"] == "constant"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pairs.jsonl", "result.json"]
