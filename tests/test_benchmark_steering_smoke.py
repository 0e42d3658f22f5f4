"""``benchmarks/steering.py`` end to end on the tiny policy and 2-step RMs: it starts ``telos
serve``, runs every method through the SDK and writes JSON, Markdown and a PNG; the false-prune
rate is read from the majority run with the same seeds."""

from __future__ import annotations

import json

import pytest
from serve_support import train_tiny_rms

pytestmark = pytest.mark.slow


def test_steering_benchmark_runs_every_method(tiny_model_dir, tmp_path):
    from benchmarks.steering import main

    rms = train_tiny_rms(tiny_model_dir, tmp_path / "rms")
    out = tmp_path / "steering.json"
    main(["--setting", "tiny", "--policy", str(tiny_model_dir), "--rm", f"gcrm={rms['gcrm']}",
          "--rm", f"prm={rms['prm']}", "--ns", "2", "--seeds", "0", "--limit", "3", "--out", str(out)])  # fmt: skip
    result = json.loads(out.read_text())
    labels = {s["label"] for s in result["summary"]}
    assert labels == {
        "plain",
        "majority",
        "best_of_n gcrm",
        "weighted_vote gcrm",
        "gcrm_prune τ=0.5",
        "prm_beam",
    }
    for s in result["summary"]:
        assert 0.0 <= s["accuracy"] <= 1.0 and s["tokens_per_question"] > 0
    prune = next(s for s in result["summary"] if s["label"].startswith("gcrm_prune"))
    assert 0.0 <= prune["false_prune_rate"] <= 1.0 and "pruned_share" in prune
    assert out.with_suffix(".png").is_file() and "| majority | 2 |" in out.with_suffix(".md").read_text()
    assert not out.with_suffix(".partial.jsonl").exists()
