"""benchmarks/rollout.py runs end to end on the smallest size and writes its JSON and PNG.
Only the shape of the result is checked (timings on a shared CI machine say nothing)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_rollout_benchmark_writes_json_and_png(tmp_path, tiny_model_dir, subprocess_env):
    out = tmp_path / "rollout.json"
    cmd = [
        sys.executable,
        str(REPO / "benchmarks" / "rollout.py"),
        "--sizes",
        "tiny",
        "--engines",
        "hf,hf-plain",
    ]
    cmd += [
        "--prompts",
        "2",
        "--n",
        "2",
        "--max-tokens",
        "8",
        "--tokenizer",
        str(tiny_model_dir),
        "--out",
        str(out),
    ]
    proc = subprocess.run(cmd, cwd=tmp_path, env=subprocess_env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert out.with_suffix(".png").stat().st_size > 0
    rows = {r["engine"]: r for r in result["results"]}
    assert set(rows) == {"hf", "hf-plain"}
    for r in rows.values():
        assert r["size"] == "tiny" and r["completions"] == 4
        assert 0 < r["generated_tokens"] <= 4 * 8 and r["tokens_per_s"] > 0
    assert "over_hf" in rows["hf-plain"]
