"""What the quickstart's summary.json records so two runs can be compared bit for bit."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from trainers.quickstart import numerics_info, weights_sha256


def test_weights_digest_is_equal_only_for_bit_identical_weights(tmp_path):
    w = {"w": torch.tensor([1.0, 2.0, 3.0])}
    for name in ("a", "b", "c"):
        (tmp_path / name).mkdir()
    save_file(w, tmp_path / "a" / "model.safetensors")
    save_file({"w": w["w"].clone()}, tmp_path / "b" / "model.safetensors")
    # one unit in the last place of one weight: a different digest
    save_file({"w": torch.nextafter(w["w"], torch.tensor(9.0))}, tmp_path / "c" / "model.safetensors")
    a, b, c = (weights_sha256(tmp_path / n) for n in ("a", "b", "c"))
    assert a == b and len(a) == 64 and a != c
    assert weights_sha256(tmp_path / "missing") is None


def test_numerics_info_names_threads_and_kernels():
    info = numerics_info()
    assert info["torch_threads"] == torch.get_num_threads()
    assert info["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert info["torch"] == torch.__version__ and info["cpu"]


def test_rl_phase_runs_on_one_thread_and_restores_the_count():
    from trainers.quickstart import _run_rl_one_thread

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        seen = _run_rl_one_thread(torch.get_num_threads)
        assert seen == 1 and torch.get_num_threads() == 2
        with pytest.raises(RuntimeError):  # restored on failure too
            _run_rl_one_thread(lambda: (_ for _ in ()).throw(RuntimeError("boom")))
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
