"""``telos train`` resumes exactly: after a SIGKILL mid-run, and when a finished short run is
continued to more steps. The resumed run must log each step once, start right after the last
checkpoint, and end with the same weights as a run that was never stopped (which needs the
step counter, optimizer, scheduler, RNG states and data cursor all restored)."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest

from telos.checkpoint import latest_checkpoint
from telos.tracking import read_metrics

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
TELOS = str(REPO / ".venv" / "bin" / "telos") if (REPO / ".venv" / "bin" / "telos").exists() else "telos"

STEPS = 5
# Per-step numbers that depend only on the weights, the data and the seeds (not on timing):
# equal in two runs iff the runs saw the same prompts, samples and updates.
DETERMINISTIC_KEYS = ("reward_mean", "loss", "grad_norm", "lr", "completion_length_mean", "groups_kept")
RUN_TIMEOUT_S = 900


def _train(recipe: Path, env: dict, *overrides: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [TELOS, "train", str(recipe), *overrides],
        env=env,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
    )
    assert proc.returncode == 0, f"telos train failed ({proc.returncode}):\n{proc.stderr[-4000:]}"
    return proc


def _checkpoint_step(run_dir: Path) -> int:
    ckpt = latest_checkpoint(run_dir)
    return int(ckpt.name.split("-")[1]) if ckpt is not None else 0


def _assert_each_step_once(run_dir: Path, steps: int) -> list[dict]:
    rows = read_metrics(run_dir / "metrics.jsonl")
    logged = [r["step"] for r in rows]
    assert logged == list(range(1, steps + 1)), f"metrics.jsonl steps: {logged}"
    return rows


def _assert_same_metrics(a: list[dict], b: list[dict]) -> None:
    for ra, rb in zip(a, b, strict=True):
        for k in DETERMINISTIC_KEYS:
            assert rb[k] == pytest.approx(ra[k], rel=1e-4, abs=1e-6), (
                f"step {ra['step']}: {k} {rb[k]} != {ra[k]} (uninterrupted run)"
            )


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, write_recipe, subprocess_env) -> Path:
    """The reference: a run of STEPS steps that was never stopped; returns its run dir."""
    root = tmp_path_factory.mktemp("uninterrupted")
    _train(write_recipe(root, **{"train.steps": STEPS}), subprocess_env)
    return root / "run"


def test_resume_after_sigkill(
    tmp_path, write_recipe, subprocess_env, uninterrupted, weights_of, assert_same_weights
):
    t0 = time.perf_counter()
    recipe = write_recipe(tmp_path, **{"train.steps": STEPS})
    run_dir = tmp_path / "run"
    log = (tmp_path / "killed.log").open("w")
    proc = subprocess.Popen(
        [TELOS, "train", str(recipe)], env=subprocess_env, stdout=log, stderr=subprocess.STDOUT
    )
    try:
        while _checkpoint_step(run_dir) < 2:
            if proc.poll() is not None:
                pytest.fail(
                    f"run exited ({proc.returncode}) before checkpoint 2:\n"
                    + (tmp_path / "killed.log").read_text()[-4000:]
                )
            if time.perf_counter() - t0 > RUN_TIMEOUT_S:
                pytest.fail("no checkpoint step-2 within the timeout")
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
    assert proc.returncode == -signal.SIGKILL
    last = _checkpoint_step(run_dir)
    assert 2 <= last < STEPS, f"killed too late to test anything (last checkpoint {last})"
    assert not (run_dir / "final").exists()
    before = {r["step"]: r for r in read_metrics(run_dir / "metrics.jsonl")}
    assert set(range(1, last + 1)) <= set(before), f"killed run logged {sorted(before)}"

    resumed = _train(recipe, subprocess_env, "resume=latest")

    # finished at the final step, every step logged exactly once, no gaps
    rows = _assert_each_step_once(run_dir, STEPS)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["steps"] == STEPS
    assert _checkpoint_step(run_dir) == STEPS
    assert (run_dir / "final" / "model.safetensors").is_file()
    # the resumed run started right after the last checkpoint: its progress says so, and the
    # rows up to that checkpoint are the killed run's own, untouched
    assert f"starting at {last}/{STEPS}" in resumed.stderr, resumed.stderr[-2000:]
    for r in rows[:last]:
        assert r == before[r["step"]], f"step {r['step']} of the killed run was rewritten"
    # the cumulative token counter came back from the checkpoint and kept counting
    tokens = [r["generated_tokens"] for r in rows]
    assert all(b > a for a, b in zip(tokens, tokens[1:], strict=False)), tokens
    for prev, r in zip(rows, rows[1:], strict=False):
        step_tokens = r["tokens_per_s"] * r["step_time"]
        assert r["generated_tokens"] - prev["generated_tokens"] == pytest.approx(step_tokens, rel=1e-3)

    # and the result is the run that was never killed
    _assert_same_metrics(_assert_each_step_once(uninterrupted, STEPS), rows)
    assert_same_weights(
        weights_of(uninterrupted / "final"),
        weights_of(run_dir / "final"),
        what="killed+resumed vs uninterrupted",
    )


def test_continue_finished_run_matches_uninterrupted(
    tmp_path, write_recipe, subprocess_env, uninterrupted, tiny_model_dir, weights_of, assert_same_weights
):
    """Stop at step k (a finished run with steps=k), continue to STEPS with resume=latest in the
    same output_dir: same metrics and same final weights as the uninterrupted run."""
    k = 2
    recipe = write_recipe(tmp_path, **{"train.steps": STEPS})
    run_dir = tmp_path / "run"
    _train(recipe, subprocess_env, f"train.steps={k}")
    assert _checkpoint_step(run_dir) == k
    _assert_each_step_once(run_dir, k)

    resumed = _train(recipe, subprocess_env, "resume=latest")
    assert f"starting at {k}/{STEPS}" in resumed.stderr, resumed.stderr[-2000:]
    rows = _assert_each_step_once(run_dir, STEPS)
    _assert_same_metrics(_assert_each_step_once(uninterrupted, STEPS), rows)

    reference = weights_of(uninterrupted / "final")
    assert_same_weights(reference, weights_of(run_dir / "final"), what="stopped+continued vs uninterrupted")
    # not vacuous: training moved the weights away from the SFT model
    initial = weights_of(tiny_model_dir)
    moved = max((reference[n] - initial[n]).abs().max().item() for n in initial)
    assert moved > 1e-4, f"RL did not change the weights (max change {moved:.2e})"
