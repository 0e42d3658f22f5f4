"""benchmarks/algorithms.py: a run ends at its sampled-token budget, writes JSON/PNG/Markdown,
and a rerun after a kill keeps the runs that finished (its partial file)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "benchmarks" / "algorithms.py"


def test_partial_file_survives_a_torn_last_line(tmp_path):
    sys.path.insert(0, str(REPO))
    from benchmarks.common import append_partial, read_partial

    path = tmp_path / "r.partial.jsonl"
    append_partial(path, {"algo": "grpo", "seed": 0})
    with path.open("a") as f:
        f.write('{"algo": "nft", "se')  # killed mid-write
    assert read_partial(path) == [{"algo": "grpo", "seed": 0}]
    assert read_partial(tmp_path / "missing.jsonl") == []


def test_budget_run_then_resume_keeps_finished_runs(tmp_path, tiny_model_dir, subprocess_env):
    out = tmp_path / "algos.json"
    argv = [
        sys.executable,
        str(SCRIPT),
        "--algos",
        "grpo",
        "--seeds",
        "0",
        "--budget",
        "200",
        "--steps",
        "3",
        "--eval-every",
        "100",
        "--num-test",
        "4",
        "--model",
        str(tiny_model_dir),
        "--out",
        str(out),
    ]
    proc = subprocess.run(argv, cwd=tmp_path, env=subprocess_env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    result = json.loads(out.read_text())
    run = result["runs"][0]
    assert run["sampled_tokens"] >= 200 and run["steps"] < 3  # stopped by the budget, not the horizon
    assert out.with_suffix(".png").is_file() and out.with_suffix(".md").is_file()
    assert not out.with_suffix(".partial.jsonl").exists()
    # a killed rerun: its finished run is in the partial file with the same settings
    settings = {
        k: v for k, v in result["settings"].items() if k not in ("seeds", "algos", "model_dir", "command")
    }
    out.with_suffix(".partial.jsonl").write_text(json.dumps(run | {"settings": settings}) + "\n")
    proc = subprocess.run(argv, cwd=tmp_path, env=subprocess_env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "done in an earlier run, kept" in proc.stdout
    assert json.loads(out.read_text())["runs"][0]["final_accuracy"] == run["final_accuracy"]
