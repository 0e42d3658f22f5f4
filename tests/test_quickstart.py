"""The quickstart pipeline end to end at a reduced size (the full size is what README reports)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


@pytest.mark.slow
@pytest.mark.parametrize("algo", ["grpo", "nft", "oreal"])
def test_quickstart_small(tmp_path, algo):
    out = tmp_path / "qs"
    proc = subprocess.run(
        [sys.executable, "-m", "telos", "quickstart", "--out", str(out), "--scale", "0.05", "--algo", algo],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    for key in ("sft_accuracy", "rl_accuracy", "wall_seconds", "improvement", "num_test"):
        assert key in summary
    assert 0.0 <= summary["sft_accuracy"] <= 1.0 and 0.0 <= summary["rl_accuracy"] <= 1.0
    assert summary["improvement"] == pytest.approx(summary["rl_accuracy"] - summary["sft_accuracy"])
    assert len(summary["sft_weights_sha256"]) == 64 and len(summary["rl_weights_sha256"]) == 64
    assert summary["numerics"]["torch_threads"] >= 1
    pngs = {p.name for p in (out / "plots").glob("*.png")}
    assert {"reward.png", "accuracy.png", "sft_vs_rl.png"} <= pngs
    assert summary["algo"] == algo
    assert (out / algo / "final" / "config.json").exists()
    assert "SFT accuracy" in proc.stdout  # the printed table


def test_quickstart_unknown_algo(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "telos", "quickstart", "--out", str(tmp_path), "--algo", "nope"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "grpo" in lines[0]
