"""``accumulate`` under real two-process DDP (gloo) when one rank has no sequences: before the
fix the empty rank's zero loss never armed DDP's all-reduce and the other rank waited forever
(found as a hang of the OREAL DDP test, whose ranks can get zero pairs). Both ranks must end
with the same, averaged gradients."""

from __future__ import annotations

import contextlib
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel

from trainers.common.batching import accumulate


class _Collectives:
    """The four accelerator calls ``accumulate`` makes, over the process group."""

    def __init__(self, world: int) -> None:
        self.num_processes, self.device = world, torch.device("cpu")

    def gather(self, t: torch.Tensor) -> torch.Tensor:
        out = [torch.zeros_like(t) for _ in range(self.num_processes)]
        dist.all_gather(out, t)
        return torch.cat(out)

    def no_sync(self, model):
        return model.no_sync() if isinstance(model, DistributedDataParallel) else contextlib.nullcontext()

    def backward(self, loss: torch.Tensor) -> None:
        loss.backward()


def _worker(rank: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    torch.manual_seed(0)
    model = DistributedDataParallel(torch.nn.Linear(4, 2))
    x = torch.arange(12.0).view(3, 4)
    n_local = 3 if rank == 0 else 0  # rank 1 has nothing this step

    def loss_of(idx, num_micro):
        return model(x[idx]).pow(2).sum()

    accumulate(_Collectives(2), model, n_local, 2, loss_of)
    torch.save([p.grad for p in model.parameters()], os.path.join(out_dir, f"grad{rank}.pt"))
    dist.destroy_process_group()


@pytest.mark.timeout(120)  # the bug was a hang
def test_empty_rank_does_not_hang_and_gradients_are_averaged(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_worker, args=(port, str(tmp_path)), nprocs=2, join=True)
    g0, g1 = (torch.load(tmp_path / f"grad{r}.pt") for r in (0, 1))
    torch.manual_seed(0)
    ref = torch.nn.Linear(4, 2)
    ref(torch.arange(12.0).view(3, 4)).pow(2).sum().backward()
    for a, b, p in zip(g0, g1, ref.parameters(), strict=True):
        assert torch.equal(a, b)
        torch.testing.assert_close(a, p.grad / 2)  # rank 0's gradient averaged with rank 1's zeros
