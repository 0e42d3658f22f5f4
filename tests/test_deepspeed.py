"""DeepSpeed ZeRO-2 / ZeRO-3 for real, on CPU: two gloo processes through ``accelerate launch
--config_file recipes/accelerate/zero{2,3}.yaml`` (DeepSpeed's CPU accelerator).

- GRPO with a KL term (β > 0: the ZeRO-3 reference model is a partitioned engine of its own)
  ends, under ZeRO-2 and ZeRO-3, with the weights 2-process DDP reaches from the same seed;
  ``final/`` is those weights (gathered under ZeRO-3) and loads with plain ``from_pretrained``;
  ``summary.json`` records what ran.
- ZeRO-2 killed with SIGKILL and resumed with ``resume=latest`` ends where the uninterrupted
  ZeRO-2 run does (every rank's optimizer shard is in the checkpoint).
- NFT, OREAL (its token RM refused in one line) and the reward-model trainer run under ZeRO.

Tolerance against DDP: the same math, but DeepSpeed reduces gradients in flat fp32 buckets
(another summation order), and AdamW's m/√v turns those ~1e-7 differences on near-zero
gradient entries into larger ones. Measured here after 3 steps at lr 1e-3: max |ZeRO-2 − DDP|
8.6e-7, max |ZeRO-3 − DDP| 7.3e-6 (17 of 838k entries above 1e-6), while training moves the
weights by 1.9e-3 (median) to 3.0e-3 (max). ``DDP_ATOL`` = 5e-5 sits well between: a run that
stepped once per micro-batch, skipped a step, sampled from stale weights or lost the KL term
is off by ~lr = 1e-3 (the stale-weights bug measured 3.5e-3).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from telos.tracking import read_metrics

pytest.importorskip("deepspeed", reason="the deepspeed extra is not installed")
pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
ACCELERATE = REPO / ".venv" / "bin" / "accelerate"
STEPS = 3
DDP_ATOL = 5e-5
GRPO = {"train.steps": STEPS, "grpo.beta": 0.04, "grpo.dynamic_sampling": False}

# the real CLI under `accelerate launch`, with train_rl wrapped to save each rank's gathered
# weights after the run (the trainer saves rank 0's only)
DRIVER = textwrap.dedent(
    """
    import sys
    from pathlib import Path

    import torch

    import trainers.rl.loop as rl
    from trainers.common.distributed import gathered

    out_dir = Path(sys.argv[2])
    _train_rl = rl.train_rl


    def train_rl_saving_ranks(recipe, raw_config=None, return_context=False):
        summary, ctx = _train_rl(recipe, raw_config, return_context=True)
        acc = ctx.accelerator
        module = acc.unwrap_model(ctx.model)
        with gathered(module):
            state = {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}
        torch.save({"state_dict": state, "model": type(ctx.model).__name__}, out_dir / f"rank{acc.process_index}.pt")
        return (summary, ctx) if return_context else summary


    rl.train_rl = train_rl_saving_ranks

    from telos.cli import main

    sys.exit(main(["train", sys.argv[1], *sys.argv[3:]]))
    """
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _command(layout: str, driver: Path, recipe: Path, out: Path, *overrides: str) -> list[str]:
    cmd = (
        [str(ACCELERATE), "launch"]
        if ACCELERATE.exists()
        else [sys.executable, "-m", "accelerate.commands.launch"]
    )
    if layout == "ddp":
        cmd += ["--multi_gpu"]  # gloo DDP with no GPU visible
    else:
        cmd += ["--config_file", str(REPO / "recipes" / "accelerate" / f"{layout}.yaml")]
    cmd += ["--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no"]
    cmd += ["--dynamo_backend", "no", "--main_process_port", str(_free_port())]
    return [*cmd, str(driver), str(recipe), str(out), *overrides]


@pytest.fixture(scope="module")
def launch(subprocess_env, tmp_path_factory):
    """``launch(layout, recipe, out, *overrides, wait=True)`` → CompletedProcess (or Popen)."""
    driver = tmp_path_factory.mktemp("ds-driver") / "driver.py"
    driver.write_text(DRIVER)
    env = {**subprocess_env, "CUDA_VISIBLE_DEVICES": ""}  # the CPU path, also on a GPU box

    def run(
        layout: str, recipe: Path, out: Path, *overrides: str, wait: bool = True, log: Path | None = None
    ):
        cmd = _command(layout, driver, recipe, out, *overrides)
        if not wait:
            # its own process group: the test kills launcher and workers at once, like a crash
            return subprocess.Popen(
                cmd, env=env, cwd=REPO, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True
            )
        return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900, cwd=REPO)

    return run


@pytest.fixture(scope="module")
def grpo_runs(launch, write_recipe, tmp_path_factory):
    """Lazily, once per layout: the same 3-step GRPO (β > 0) run under ddp, zero2, zero3."""
    done: dict[str, Path] = {}

    def get(layout: str) -> Path:
        if layout not in done:
            d = tmp_path_factory.mktemp(f"grpo-{layout}")
            proc = launch(layout, write_recipe(d, **GRPO), d)
            assert proc.returncode == 0, f"{layout} run failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
            done[layout] = d
        return done[layout]

    return get


def _ranks(d: Path) -> list[dict]:
    return [torch.load(d / f"rank{r}.pt", weights_only=True) for r in (0, 1)]


@pytest.mark.parametrize("stage", [2, 3])
def test_zero_grpo_matches_ddp_and_final_loads(
    stage, grpo_runs, weights_of, assert_same_weights, tiny_model_dir
):
    from transformers import AutoModelForCausalLM

    zero, ddp = grpo_runs(f"zero{stage}"), grpo_runs("ddp")
    summary = json.loads((zero / "run" / "summary.json").read_text())
    assert (summary["distributed_type"], summary["zero_stage"], summary["world_size"]) == (
        "DEEPSPEED",
        stage,
        2,
    )
    assert json.loads((ddp / "run" / "summary.json").read_text())["distributed_type"] == "MULTI_CPU"
    assert [r["step"] for r in read_metrics(zero / "run" / "metrics.jsonl")] == list(range(1, STEPS + 1))

    ranks = _ranks(zero)
    assert {r["model"] for r in ranks} == {"DeepSpeedEngine"}
    assert_same_weights(ranks[0]["state_dict"], ranks[1]["state_dict"], atol=0.0, what="rank 0 vs rank 1")
    gathered = ranks[0]["state_dict"]

    # final/ is the gathered model and loads with plain from_pretrained (no DeepSpeed)
    loaded = AutoModelForCausalLM.from_pretrained(zero / "run" / "final").state_dict()
    assert_same_weights(loaded, gathered, atol=0.0, what="from_pretrained(final/) vs gathered")

    ddp_weights = _ranks(ddp)[0]["state_dict"]
    assert_same_weights(gathered, ddp_weights, atol=DDP_ATOL, what=f"ZeRO-{stage} vs DDP")
    initial = weights_of(tiny_model_dir)
    moved = max((gathered[n] - initial[n]).abs().max().item() for n in initial)
    assert moved > 10 * DDP_ATOL, (
        f"training barely moved the weights ({moved:.2e}): the comparison proves nothing"
    )

    last = zero / "run" / "checkpoints" / f"step-{STEPS}"
    assert (last / "optimizer_rank0.pt").is_file() and (last / "optimizer_rank1.pt").is_file()
    assert not (last / "optimizer.pt").exists()
    kl = [r["kl"] for r in read_metrics(zero / "run" / "metrics.jsonl") if "kl" in r]
    assert kl and kl[-1] > 0, "β > 0 but no KL to the reference was logged"


def test_zero2_resume_after_sigkill(launch, grpo_runs, write_recipe, tmp_path, assert_same_weights):
    steps = STEPS  # the uninterrupted run is the ZeRO-2 run of the test above
    recipe = write_recipe(tmp_path, **GRPO)
    ckpts = tmp_path / "run" / "checkpoints"
    proc = launch("zero2", recipe, tmp_path, wait=False, log=tmp_path / "killed.log")
    try:
        while not (ckpts / "step-2" / "trainer_state.json").is_file():
            assert proc.poll() is None, (
                "run ended before its step-2 checkpoint:\n" + (tmp_path / "killed.log").read_text()[-4000:]
            )
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the launcher and both workers
        proc.wait(timeout=60)
    done = sorted(int(p.name.split("-")[1]) for p in ckpts.glob("step-*"))
    assert done and max(done) < steps, f"killed too late to test anything ({done})"

    resumed = launch("zero2", recipe, tmp_path, "resume=latest")
    assert resumed.returncode == 0, resumed.stderr[-6000:]
    assert [r["step"] for r in read_metrics(tmp_path / "run" / "metrics.jsonl")] == list(range(1, steps + 1))

    straight = grpo_runs("zero2")
    assert_same_weights(
        _ranks(tmp_path)[0]["state_dict"],
        _ranks(straight)[0]["state_dict"],
        atol=1e-6,
        what="resumed vs straight",
    )


@pytest.mark.parametrize(
    ("algo", "layout", "extra"),
    [
        ("nft", "zero3", {}),
        ("oreal", "zero2", {"oreal.token_rm": False, "oreal.freeze_policy_steps": 0}),
    ],
)
def test_other_rl_trainers_run_under_zero(algo, layout, extra, launch, write_recipe, tmp_path):
    over = {"train.steps": 2, f"{algo}.dynamic_sampling": False, **extra}
    proc = launch(layout, write_recipe(tmp_path, algo=algo, **over), tmp_path)
    assert proc.returncode == 0, proc.stderr[-6000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert (summary["distributed_type"], summary["zero_stage"]) == ("DEEPSPEED", int(layout[-1]))
    assert (tmp_path / "run" / "final" / "model.safetensors").is_file()


def test_oreal_token_rm_refused_in_one_line(launch, write_recipe, tmp_path):
    proc = launch(
        "zero2",
        write_recipe(tmp_path, algo="oreal", **{"oreal.token_rm": True, "oreal.freeze_policy_steps": 1}),
        tmp_path,
    )
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors and "oreal.token_rm" in errors[0] and "DeepSpeed" in errors[0], proc.stderr[-3000:]
    # the workers exit 2 without a traceback (torchrun's own report of a failed child follows)
    assert "exitcode: 2" in proc.stderr and "]: Traceback" not in proc.stderr, proc.stderr[-3000:]


def test_reward_model_under_zero3(launch, tiny_model_dir, tmp_path):
    from transformers import AutoModelForSequenceClassification

    pairs = [
        {"prompt": f"{a}+{b}=", "chosen": f" {a + b}", "rejected": f" {a + b + 1}"}
        for a in range(4)
        for b in range(3)
    ]
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(p) + "\n" for p in pairs))
    out = tmp_path / "run"
    over = [
        f"model.name_or_path={tiny_model_dir}",
        f"data.train={data}",
        "data.test=null",
        f"output_dir={out}",
    ]
    over += ["train.steps=2", "train.batch_size=4", "train.micro_batch_size=2", "train.save_every=1"]
    proc = launch("zero3", REPO / "recipes" / "rm" / "bt_tiny.yaml", tmp_path, *over)
    assert proc.returncode == 0, proc.stderr[-6000:]
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["trainer"], summary["distributed_type"], summary["zero_stage"]) == ("rm", "DEEPSPEED", 3)
    model = AutoModelForSequenceClassification.from_pretrained(out / "final")
    assert all(p.numel() > 0 for p in model.parameters())  # gathered, not the empty ZeRO-3 shards
    assert (out / "checkpoints" / "step-2" / "optimizer_rank1.pt").is_file()


# rank 0 holds 3 sequences, rank 1 none: under ZeRO-3 each model call gathers parameters, so
# the rank without data must make the same calls (log-prob chunks, micro-batches) or both hang
UNEQUAL = textwrap.dedent(
    """
    import sys
    from pathlib import Path

    import torch

    from telos.models import load_model
    from telos.types import Completion
    from trainers.common.batching import accumulate, chunked_logps, completion_logits, pack_completions, token_logps
    from trainers.common.distributed import make_accelerator, optimizer_step

    acc = make_accelerator(micro_batch_size=2, max_grad_norm=1.0)
    model = load_model(sys.argv[1], "float32", None)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model, optimizer = acc.prepare(model, optimizer)
    n = 3 if acc.process_index == 0 else 0
    packed = pack_completions([Completion(0, [5, 6, 7], [8, 9], "", [], "stop")] * n, 0).to(acc.device) if n else None
    with torch.no_grad():
        old = chunked_logps(acc, model, packed, 2, 0.7)
    assert (old is None) == (n == 0) and (old is None or old.shape == (3, 2))


    def loss_of(idx, num_micro):
        sub = packed.select(idx)
        return -token_logps(completion_logits(model, sub), sub.completion_ids, 0.7).sum() / num_micro


    assert accumulate(acc, model, n, 2, loss_of) == 2
    optimizer_step(acc, model, optimizer, 1.0)
    # a file per rank: two ranks printing at once interleave their lines
    (Path(sys.argv[2]) / f"finished-{acc.process_index}").touch()
    """
)


def test_zero3_ranks_with_unequal_data_make_the_same_model_calls(subprocess_env, tiny_model_dir, tmp_path):
    script = tmp_path / "unequal.py"
    script.write_text(UNEQUAL)
    cmd = _command("zero3", script, tiny_model_dir, tmp_path)  # the script takes the model and a directory
    env = {**subprocess_env, "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.Popen(
        cmd,
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"ranks with unequal data hung under ZeRO-3:\n{out[-3000:]}")
    assert proc.returncode == 0, out[-6000:]
    assert (tmp_path / "finished-0").exists() and (tmp_path / "finished-1").exists(), out[-3000:]
