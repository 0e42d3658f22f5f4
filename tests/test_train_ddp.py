"""Two-process DDP on CPU through ``accelerate launch``: the ranks end with identical weights,
rank 0's ``final/`` is that model, and the run reports world_size 2.

Launched with ``--multi_gpu --num_processes 2`` and no GPU visible, which accelerate turns into
two gloo (MULTI_CPU) processes. ``--cpu --num_processes 2`` does NOT: accelerate 1.x's simple
launcher then starts a single process (multi-CPU needs MPI there), silently.

A small driver runs the real CLI (``telos.cli.main(["train", RECIPE])``) under ``accelerate
launch``, with ``trainers.rl.loop.train_rl`` wrapped to also save each rank's own state dict:
the trainer itself only saves rank 0's model, so without this the ranks cannot be compared.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from telos.tracking import read_metrics

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
ACCELERATE = REPO / ".venv" / "bin" / "accelerate"
STEPS = 3

DRIVER = textwrap.dedent(
    """
    import sys
    from pathlib import Path

    import torch

    import trainers.rl.loop as rl

    recipe_path, out_dir = sys.argv[1], Path(sys.argv[2])
    _train_rl = rl.train_rl


    def train_rl_saving_ranks(recipe, raw_config=None, return_context=False):
        summary, ctx = _train_rl(recipe, raw_config, return_context=True)
        acc = ctx.accelerator
        state = {k: v.detach().cpu().clone() for k, v in acc.unwrap_model(ctx.model).state_dict().items()}
        torch.save(
            {"state_dict": state, "world_size": acc.num_processes, "summary": summary},
            out_dir / f"rank{acc.process_index}.pt",
        )
        return (summary, ctx) if return_context else summary


    rl.train_rl = train_rl_saving_ranks  # trainers.run looks it up at call time

    from telos.cli import main

    sys.exit(main(["train", recipe_path]))
    """
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("algo", ["grpo", "oreal"])  # OREAL: a second DDP model, the token RM
def test_ddp_two_processes_identical_weights(
    algo, tmp_path, write_recipe, subprocess_env, tiny_model_dir, weights_of, assert_same_weights
):
    extra = {"oreal.freeze_policy_steps": 1} if algo == "oreal" else {}
    recipe = write_recipe(tmp_path, algo=algo, **{"train.steps": STEPS, **extra})
    run_dir = tmp_path / "run"
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    if ACCELERATE.exists():
        cmd = [str(ACCELERATE), "launch"]
    else:
        cmd = [sys.executable, "-m", "accelerate.commands.launch"]
    cmd += [
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--multi_gpu",  # with no GPU visible this is gloo DDP on CPU; `--cpu` would run ONE process
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        str(_free_port()),
        str(driver),
        str(recipe),
        str(tmp_path),
    ]
    env = {**subprocess_env, "CUDA_VISIBLE_DEVICES": ""}  # CPU DDP even on a GPU box
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1200, cwd=REPO)
    assert proc.returncode == 0, f"accelerate launch failed ({proc.returncode}):\n{proc.stderr[-6000:]}"

    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2]
    # DDP all-reduces gradients: both ranks must hold exactly the same model
    assert_same_weights(ranks[0]["state_dict"], ranks[1]["state_dict"], atol=0.0, what="rank 0 vs rank 1")

    # rank 0's final/ is that model (tied duplicates are not in the file, hence the subset)
    final = weights_of(run_dir / "final")
    assert_same_weights(final, {k: ranks[0]["state_dict"][k] for k in final}, what="final/ vs rank 0")
    initial = weights_of(tiny_model_dir)
    moved = max((final[n] - initial[n]).abs().max().item() for n in initial)
    assert moved > 1e-4, f"DDP training did not change the weights (max change {moved:.2e})"

    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["world_size"] == 2
    assert summary["steps"] == STEPS
    assert [r["step"] for r in read_metrics(run_dir / "metrics.jsonl")] == list(range(1, STEPS + 1))
    # every rank saved its RNG state into the last checkpoint
    last = run_dir / "checkpoints" / f"step-{STEPS}"
    assert (last / "rng_rank0.pt").is_file() and (last / "rng_rank1.pt").is_file()
    if algo == "oreal":
        assert (last / "token_rm" / "token_rm_head.safetensors").is_file()
