"""Checkpoints: round trips (plain, tied embeddings, peft), discovery, pruning, resume
resolution, multi-rank ordering, and atomicity under SIGKILL."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from telos.checkpoint import latest_checkpoint, load_checkpoint, resolve_resume, save_checkpoint
from telos.errors import UserError

REPO = Path(__file__).resolve().parents[1]


def tiny_llama(seed: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        intermediate_size=64,
        vocab_size=100,
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(cfg)


def make_opt(model):
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-2)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 / (1 + s))
    return opt, sched


def train_step(model, opt, sched):
    ids = torch.randint(0, 100, (2, 8))
    model(input_ids=ids, labels=ids).loss.backward()
    opt.step()
    sched.step()
    opt.zero_grad()


def state_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_round_trip_restores_weights_optimizer_scheduler_rng(tmp_path):
    model = tiny_llama(0)
    opt, sched = make_opt(model)
    train_step(model, opt, sched)
    state = {"step": 1, "cursor": {"epoch": 0, "index": 8}}
    ckpt = save_checkpoint(tmp_path, 1, model=model, optimizer=opt, scheduler=sched, trainer_state=state)
    assert ckpt == tmp_path / "checkpoints" / "step-1"
    names = {p.name for p in ckpt.iterdir()}
    assert {"model.safetensors", "optimizer.pt", "scheduler.pt", "trainer_state.json"} <= names
    assert "rng_rank0.pt" in names
    expected = (torch.rand(4), random.random(), np.random.rand())

    other = tiny_llama(123)  # different init: everything must come from the checkpoint
    opt2, sched2 = make_opt(other)
    assert not state_equal(model.state_dict(), other.state_dict())
    loaded = load_checkpoint(ckpt, model=other, optimizer=opt2, scheduler=sched2)

    assert loaded == state
    assert state_equal(model.state_dict(), other.state_dict())
    # tied embeddings stay tied (lm_head is not in the file; it must alias the embeddings)
    assert other.lm_head.weight is other.model.embed_tokens.weight
    s1, s2 = opt.state_dict(), opt2.state_dict()
    assert s1["param_groups"] == s2["param_groups"]
    for k, v in s1["state"].items():
        assert state_equal(v, s2["state"][k])
    assert sched2.state_dict()["last_epoch"] == sched.state_dict()["last_epoch"] == 1
    assert sched2.get_last_lr() == sched.get_last_lr()
    after = (torch.rand(4), random.random(), np.random.rand())
    assert torch.equal(expected[0], after[0]) and expected[1:] == after[1:]

    # both continue identically
    torch.manual_seed(7)
    train_step(model, opt, sched)
    torch.manual_seed(7)
    train_step(other, opt2, sched2)
    assert state_equal(model.state_dict(), other.state_dict())


def test_mismatched_model_is_a_user_error(tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    model = tiny_llama(0)
    ckpt = save_checkpoint(
        tmp_path, 1, model=model, optimizer=None, scheduler=None, trainer_state={"step": 1}
    )
    untied = LlamaForCausalLM(
        LlamaConfig(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            vocab_size=100,
            tie_word_embeddings=False,
        )
    )
    with pytest.raises(UserError, match="missing keys lm_head.weight"):
        load_checkpoint(ckpt, model=untied, optimizer=None, scheduler=None)


def test_latest_ignores_temp_dirs_and_next_save_cleans_them(tmp_path):
    model = tiny_llama(0)
    opt, sched = make_opt(model)
    assert latest_checkpoint(tmp_path) is None
    for step in (1, 2):
        save_checkpoint(
            tmp_path, step, model=model, optimizer=opt, scheduler=sched, trainer_state={"step": step}
        )
    half = tmp_path / "checkpoints" / ".tmp-step-9"
    half.mkdir()
    (half / "trainer_state.json").write_text('{"step": 9}')
    (half / "model.safetensors").write_bytes(b"garbage")
    # a step-N directory without trainer_state.json is not a checkpoint either
    (tmp_path / "checkpoints" / "step-7").mkdir()
    assert latest_checkpoint(tmp_path) == tmp_path / "checkpoints" / "step-2"

    save_checkpoint(tmp_path, 3, model=model, optimizer=opt, scheduler=sched, trainer_state={"step": 3})
    assert not half.exists()
    assert latest_checkpoint(tmp_path) == tmp_path / "checkpoints" / "step-3"


def test_keep_last_prunes_old_checkpoints(tmp_path):
    model = tiny_llama(0)
    for step in range(1, 5):
        save_checkpoint(
            tmp_path,
            step,
            model=model,
            optimizer=None,
            scheduler=None,
            trainer_state={"step": step},
            keep_last=2,
        )
    root = tmp_path / "checkpoints"
    assert sorted(p.name for p in root.iterdir()) == ["step-3", "step-4"]

    for step in range(5, 8):
        save_checkpoint(
            tmp_path,
            step,
            model=model,
            optimizer=None,
            scheduler=None,
            trainer_state={"step": step},
            keep_last=None,
        )
    assert sorted(p.name for p in root.iterdir()) == ["step-3", "step-4", "step-5", "step-6", "step-7"]

    # re-saving an existing step replaces it
    save_checkpoint(
        tmp_path, 7, model=model, optimizer=None, scheduler=None, trainer_state={"step": 7, "x": 1}
    )
    assert json.loads((root / "step-7" / "trainer_state.json").read_text()) == {"step": 7, "x": 1}
    assert sorted(p.name for p in root.iterdir()) == ["step-6", "step-7"]


def test_peft_lora_round_trip(tmp_path):
    from peft import LoraConfig, get_peft_model

    def lora_model(seed):
        base = tiny_llama(0)  # same base weights: only the adapter is saved
        torch.manual_seed(seed)
        cfg = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"])
        return get_peft_model(base, cfg)

    model = lora_model(1)
    opt, sched = make_opt(model)
    train_step(model, opt, sched)  # lora_B becomes non-zero
    ckpt = save_checkpoint(
        tmp_path, 5, model=model, optimizer=opt, scheduler=sched, trainer_state={"step": 5}
    )
    names = {p.name for p in ckpt.iterdir()}
    assert "adapter_model.safetensors" in names and "model.safetensors" not in names

    other = lora_model(2)
    opt2, sched2 = make_opt(other)

    def lora(m):
        return {k: v for k, v in m.state_dict().items() if "lora_" in k}

    assert not state_equal(lora(model), lora(other))
    assert load_checkpoint(ckpt, model=other, optimizer=opt2, scheduler=sched2) == {"step": 5}
    assert state_equal(lora(model), lora(other))
    assert state_equal(model.state_dict(), other.state_dict())
    for k, v in opt.state_dict()["state"].items():
        assert state_equal(v, opt2.state_dict()["state"][k])


def test_multi_rank_save_with_barrier(tmp_path):
    """Two ranks (threads) with a real barrier: each writes its RNG file, rank 0 the rest."""
    model = tiny_llama(0)
    opt, sched = make_opt(model)
    barrier = threading.Barrier(2)
    results, errors = {}, []

    def rank_main(rank):
        try:
            results[rank] = save_checkpoint(
                tmp_path,
                3,
                model=model,
                optimizer=opt,
                scheduler=sched,
                trainer_state={"step": 3},
                rank=rank,
                world_size=2,
                barrier=lambda: barrier.wait(timeout=30),
            )
            # the checkpoint must exist when save_checkpoint returns, on every rank
            assert (results[rank] / "trainer_state.json").is_file()
        except BaseException as e:  # surface thread failures in the test
            errors.append(e)

    threads = [threading.Thread(target=rank_main, args=(r,)) for r in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    ckpt = tmp_path / "checkpoints" / "step-3"
    assert results == {0: ckpt, 1: ckpt}
    assert (ckpt / "rng_rank0.pt").is_file() and (ckpt / "rng_rank1.pt").is_file()
    assert load_checkpoint(ckpt, model=model, optimizer=opt, scheduler=sched, rank=1)["step"] == 3
    # a rank without its own RNG file falls back to rank 0's
    assert load_checkpoint(ckpt, model=model, optimizer=None, scheduler=None, rank=5)["step"] == 3


def test_resolve_resume(tmp_path):
    run = tmp_path / "run"
    assert resolve_resume(None, run) is None
    assert resolve_resume("", run) is None
    assert resolve_resume("latest", run) is None  # nothing yet: fresh start
    with pytest.raises(UserError, match="checkpoint not found: .*nope"):
        resolve_resume(str(tmp_path / "nope"), run)

    model = tiny_llama(0)
    ckpt = save_checkpoint(run, 4, model=model, optimizer=None, scheduler=None, trainer_state={})
    assert resolve_resume("latest", run) == ckpt
    assert resolve_resume(str(ckpt), tmp_path / "elsewhere") == ckpt
    assert resolve_resume(str(run), tmp_path / "elsewhere") == ckpt  # a run dir: its latest
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError, match="not a checkpoint"):
        resolve_resume(str(empty), run)


# A saver that checkpoints in a tight loop, continuing from the latest checkpoint (as a resumed
# run would). It forks the saver so torch is imported once; the parent SIGKILLs the saver at a
# random moment, then checks that the latest checkpoint loads and is self-consistent (weights,
# optimizer and trainer_state all from the same step).
CRASH_SCRIPT = textwrap.dedent(
    """
    import json, os, random, signal, sys, time
    import torch
    torch.set_num_threads(1)
    from safetensors.torch import save_file
    from telos.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint

    class Tiny(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = torch.nn.Embedding(512, 128)
            self.lin = torch.nn.Linear(128, 512)

        def save_pretrained(self, d, **kwargs):
            sd = {k: v.contiguous() for k, v in self.state_dict().items()}
            save_file(sd, os.path.join(d, "model.safetensors"))

    run_dir, kills, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    rng = random.Random(seed)
    model = Tiny()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    opt.step()

    def fill(step):
        with torch.no_grad():
            for p in model.parameters():
                p.fill_(float(step))

    fill(0)
    save_checkpoint(run_dir, 0, model=model, optimizer=opt, scheduler=None, trainer_state={"step": 0})

    for i in range(kills):
        latest = latest_checkpoint(run_dir)
        start = json.loads((latest / "trainer_state.json").read_text())["step"] if latest else 0
        pid = os.fork()
        if pid == 0:
            try:
                step = start
                while True:
                    step += 1
                    fill(step)
                    save_checkpoint(run_dir, step, model=model, optimizer=opt, scheduler=None,
                                    trainer_state={"step": step}, keep_last=2)
            finally:
                os._exit(1)
        time.sleep(rng.uniform(0.15, 0.6))
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        latest = latest_checkpoint(run_dir)
        fill(-1)
        state = load_checkpoint(latest, model=model, optimizer=opt, scheduler=None)
        ok = all(bool((p == state["step"]).all()) for p in model.parameters())
        leftovers = sorted(p.name for p in latest.parent.iterdir() if p.name.startswith("."))
        print(json.dumps({"latest": latest.name, "step": state["step"], "consistent": ok,
                          "leftovers": leftovers}), flush=True)
    """
)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork + SIGKILL")
def test_sigkill_never_leaves_a_half_checkpoint(tmp_path):
    script = tmp_path / "saver.py"
    script.write_text(CRASH_SCRIPT)
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    kills = 4
    seed = random.randrange(1 << 30)
    proc = subprocess.run(
        [sys.executable, str(script), str(run), str(kills), str(seed)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert proc.returncode == 0, f"seed {seed}\n" + proc.stderr[-3000:]
    reports = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert len(reports) == kills, proc.stdout
    steps = [r["step"] for r in reports]
    assert all(r["consistent"] for r in reports), (seed, reports)
    assert steps == sorted(steps) and steps[-1] > 0, (seed, reports)  # progress across restarts
    # every step-N on disk is complete
    for d in (run / "checkpoints").iterdir():
        if d.name.startswith("step-"):
            names = {p.name for p in d.iterdir()}
            assert {"model.safetensors", "optimizer.pt", "trainer_state.json"} <= names, d


class _Payload:
    """Unpickling it runs code: what a hostile downloaded ``optimizer.pt`` could carry."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (Path(self.marker), "pwned"))


@pytest.mark.parametrize("victim", ["optimizer.pt", "scheduler.pt", "rng_rank0.pt"])
def test_resume_never_executes_pickled_code(tmp_path, victim):
    model = tiny_llama(0)
    opt, sched = make_opt(model)
    ckpt = save_checkpoint(
        tmp_path, 1, model=model, optimizer=opt, scheduler=sched, trainer_state={"step": 1}
    )
    marker = tmp_path / "marker"
    torch.save({"state": _Payload(str(marker))}, ckpt / victim)
    with pytest.raises(UserError, match=victim):
        load_checkpoint(ckpt, model=tiny_llama(1), optimizer=make_opt(model)[0], scheduler=make_opt(model)[1])
    assert not marker.exists(), "loading the checkpoint executed code from it"


def test_rng_file_is_plain_data_and_older_numpy_files_still_load(tmp_path):
    model = tiny_llama(0)
    ckpt = save_checkpoint(
        tmp_path, 1, model=model, optimizer=None, scheduler=None, trainer_state={"step": 1}
    )
    torch.load(ckpt / "rng_rank0.pt", weights_only=True)  # no allow-list needed: tensors and tuples only
    # a file written before (numpy's state as an ndarray) loads through the numpy allow-list
    np.random.seed(5)
    expected = np.random.rand()
    np.random.seed(5)
    torch.save(
        {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()},
        ckpt / "rng_rank0.pt",
    )
    np.random.seed(99)
    load_checkpoint(ckpt, model=None, optimizer=None, scheduler=None)
    assert np.random.rand() == expected


def test_sharded_optimizer_needs_every_rank_and_the_same_world_size(tmp_path):
    """ZeRO: each rank writes its shard; the loader gets all shards in rank order."""

    class Shard:
        def __init__(self, rank):
            self.rank, self.loaded = rank, None

        def state_dict(self):
            return {"rank": self.rank, "t": torch.full((2,), float(self.rank))}

        def load_state_dict(self, shards):
            self.loaded = shards

    model = tiny_llama(0)
    ckpt = tmp_path / "checkpoints" / "step-1"
    barrier = threading.Barrier(2)
    threads = [
        threading.Thread(
            target=save_checkpoint,
            args=(tmp_path, 1),
            kwargs=dict(
                model=model,
                optimizer=Shard(r),
                scheduler=None,
                trainer_state={"step": 1},
                rank=r,
                world_size=2,
                barrier=barrier.wait,
                optimizer_shards=True,
            ),
        )
        for r in (0, 1)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert {p.name for p in ckpt.glob("optimizer*")} == {"optimizer_rank0.pt", "optimizer_rank1.pt"}
    target = Shard(1)
    load_checkpoint(
        ckpt, model=None, optimizer=target, scheduler=None, rank=1, world_size=2, optimizer_shards=True
    )
    assert [s["rank"] for s in target.loaded] == [0, 1]
    with pytest.raises(UserError, match="2 optimizer shards.*4 ranks"):
        load_checkpoint(
            ckpt, model=None, optimizer=Shard(0), scheduler=None, world_size=4, optimizer_shards=True
        )


def test_final_directory_and_summary_are_replaced_atomically(tmp_path):
    from telos.checkpoint import write_directory_atomically, write_json_atomically

    final = tmp_path / "final"
    write_directory_atomically(final, lambda d: (d / "model.safetensors").write_text("old"))

    def crash(d: Path) -> None:
        (d / "model.safetensors").write_text("half")
        raise RuntimeError("killed mid-save")

    with pytest.raises(RuntimeError):
        write_directory_atomically(final, crash)
    assert (final / "model.safetensors").read_text() == "old"  # the old final/ is untouched
    write_directory_atomically(final, lambda d: (d / "model.safetensors").write_text("new"))
    assert (final / "model.safetensors").read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["final"]  # no temp directory left behind

    summary = tmp_path / "summary.json"
    write_json_atomically(summary, {"steps": 1})
    with pytest.raises(TypeError):
        write_json_atomically(summary, {"steps": object()})
    assert json.loads(summary.read_text()) == {"steps": 1}
