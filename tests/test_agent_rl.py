"""GRPO, NFT and OREAL on multi-turn TextWorld episodes (``data.train: env:...``), and
``telos eval agent``: real games, the small text actor of conftest, the landed RL loop."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import TELOS, TEXT_GAMES, set_dotted

from telos.tracking import read_metrics
from trainers.rl.loop import train_rl
from trainers.run import load_recipe

POOL = f"{TEXT_GAMES}&games=4&seed=0&max_steps=6"


def _recipe(tmp_path: Path, actor: Path, algo: str = "grpo", **overrides) -> Path:
    data = yaml.safe_load((Path(__file__).parents[1] / "recipes/agents/grpo_textworld_tiny.yaml").read_text())
    data.pop("grpo")
    data.update(trainer=algo, output_dir=str(tmp_path / "run"), name=f"{algo}-env-test")
    data["model"]["name_or_path"] = str(actor)
    data["data"] = {"train": POOL, "test": POOL}
    data["sampling"] = {"num_generations": 4, "temperature": 1.0}
    data["train"] = {
        "steps": 2, "prompts_per_step": 2, "micro_batch_size": 8, "lr": 1e-4, "save_every": 1,
        "eval_before_training": True,
    }  # fmt: skip
    data[algo] = {"dynamic_sampling": False, **({"freeze_policy_steps": 1} if algo == "oreal" else {})}
    for key, value in overrides.items():
        set_dotted(data, key, value)
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.slow
@pytest.mark.parametrize("algo", ["grpo", "nft", "oreal"])
def test_rl_trains_on_episodes(tmp_path, text_actor_dir, algo):
    recipe, raw = load_recipe(str(_recipe(tmp_path, text_actor_dir, algo)))
    summary = train_rl(recipe, raw)
    assert summary["steps"] == 2 and 0.0 <= summary["eval_accuracy"] <= 1.0
    assert "eval_score" in summary and "initial_eval_score" in summary
    rows = read_metrics(tmp_path / "run" / "metrics.jsonl")
    trained = [r for r in rows if r["step"] >= 1]
    assert all(0.0 <= r["success"] <= 1.0 and r["turns"] >= 1 for r in trained)
    assert (tmp_path / "run" / "checkpoints" / "step-2").is_dir() and (tmp_path / "run" / "final").is_dir()


@pytest.mark.slow
def test_gigpo_run_logs_step_groups_and_resumes(tmp_path, text_actor_dir):
    path = _recipe(tmp_path, text_actor_dir, **{"grpo.step_advantage_weight": 1.0, "train.steps": 1})
    recipe, raw = load_recipe(str(path))
    train_rl(recipe, raw)
    (row,) = [r for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if r["step"] == 1]
    assert row["step_groups_mean_size"] >= 1.0 and 0.0 <= row["step_adv_nonzero_frac"] <= 1.0
    recipe, raw = load_recipe(str(path), ["train.steps=2", "resume=latest"])
    assert train_rl(recipe, raw)["steps"] == 2


@pytest.mark.slow
def test_grpo_actor_improves_on_a_small_cooking_pool(tmp_path, text_actor_dir):
    """The cloned actor wastes turns; a few GRPO steps on its four games make it finish them
    more often within 6 steps (evaluated on the same 4 seeded episodes per game at T = 0.7
    before and after)."""
    path = _recipe(
        tmp_path,
        text_actor_dir,
        **{
            "train.steps": 8, "train.prompts_per_step": 4, "train.lr": 2e-4, "train.save_every": 8,
            "sampling.num_generations": 8, "sampling.temperature": 0.7,
            "episodes.eval_temperature": 0.7, "episodes.eval_episodes": 4,
        },
    )  # fmt: skip
    recipe, raw = load_recipe(str(path))
    s = train_rl(recipe, raw)
    before = s["initial_eval_accuracy"] + s["initial_eval_score"]
    after = s["eval_accuracy"] + s["eval_score"]
    assert after > before + 0.1, s


@pytest.mark.slow
def test_eval_agent_cli_writes_the_report(tmp_path, text_actor_dir, subprocess_env):
    out = tmp_path / "eval"
    cmd = [TELOS, "eval", "agent", "--env", POOL, "--actor", str(text_actor_dir), "--episodes", "2",
           "--temperature", "1.0", "--workers", "2", "--out", str(out)]  # fmt: skip
    proc = subprocess.run(cmd, env=subprocess_env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads((out / "results.json").read_text())
    summary = results["summary"]
    assert summary["episodes"] == 8 and len(results["episodes"]) == 8
    lo, hi = summary["success_ci95"]
    assert lo <= summary["success_rate"] <= hi
    assert [e["episode"] for e in results["episodes"]] == [0, 1] * 4  # game order, then episode
    assert "success rate" in (out / "report.md").read_text() and (out / "success.png").stat().st_size > 0
    assert results["episodes"][0]["transcript"][0].startswith("You are hungry!")


@pytest.mark.parametrize(
    "args, message",
    [
        (["--env", "env:nethack", "--actor", "x"], "error: unknown text environment 'nethack'"),
        (["--env", POOL, "--actor", "/no/such/model"], "error: --actor '/no/such/model'"),
        (["--env", POOL, "--actor", "x", "--episodes", "0"], "error: --episodes and --workers must be >= 1"),
    ],
)
def test_eval_agent_errors_are_one_line(tmp_path, subprocess_env, args, message):
    proc = subprocess.run(
        [TELOS, "eval", "agent", *args, "--out", str(tmp_path)],
        env=subprocess_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and proc.stderr.strip().startswith(message), proc.stderr
    assert "Traceback" not in proc.stderr
