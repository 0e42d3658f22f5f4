"""Batch-wide numbers under real two-process DDP (gloo): ``scale_rewards: batch`` divides by
the std of the rewards of *all* ranks (TRL gathers them), and the logged batch metrics count
every rank's groups, not rank 0's alone.

Rank 0 holds one group [1, 0, 0, 0]; rank 1 holds [1, 1, 1, 0] and [1, 1, None, 1] (flat, one
unscorable). Over both: 11 scorable rewards, Σr = Σr² = 7 →
    reward_mean = accuracy = 7/11 = 0.636364,  σ = sqrt((7 − 7²/11)/10) = 0.504525,
    frac_zero_std_groups = 1/3,  num_unscorable = 1.
Rank 0's advantages: (r − 0.25)/(σ + 1e-4) = [1.48625, −0.49542, −0.49542, −0.49542]
(its own std, 0.5, gave [1.49970, −0.49990, ...]); rank 0 alone logged reward_mean 0.25.
"""

from __future__ import annotations

import json
import math
import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from telos.config import from_dict
from telos.types import Completion
from trainers.rl.algorithms import make_algorithm
from trainers.rl.recipe import RECIPES
from trainers.rl.rollout_batch import ScoredGroups, rollout_stats, sum_over_ranks

RANK_REWARDS = [[1.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 0.0, 1.0, 1.0, None, 1.0]]


class _Collectives:
    """The accelerator's ``gather`` over the process group (what the loop's sums use)."""

    num_processes, device = 2, torch.device("cpu")

    def gather(self, t: torch.Tensor) -> torch.Tensor:
        out = [torch.zeros_like(t) for _ in range(self.num_processes)]
        dist.all_gather(out, t)
        return torch.cat(out)


def _worker(rank: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    recipe = from_dict(
        RECIPES["grpo"],
        {
            "trainer": "grpo",
            "model": {"name_or_path": "tiny:arith"},
            "data": {"train": "procedural:arith"},
            "grpo": {"scale_rewards": "batch"},
        },
    )
    rewards = RANK_REWARDS[rank]
    groups = ScoredGroups(
        [Completion(i // 4, [1], [2], "x", [-0.1], "stop") for i in range(len(rewards))],
        rewards,
        rewards,
        list(range(len(rewards) // 4)),
    )
    acc = _Collectives()
    algo = make_algorithm(recipe)
    algo.attach(type("Ctx", (), {"accelerator": acc})())
    tb = algo.train_batch(groups, 4, step=1, rank=rank)
    stats = rollout_stats(groups, flat_groups=rank, total=sum_over_ranks(acc))  # rank 1: one flat group
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
        json.dump({"advantages": tb.advantages.tolist(), "stats": stats}, f)
    dist.destroy_process_group()


def test_batch_scale_and_metrics_span_all_ranks(tmp_path):
    from trl.trainer.utils import nanstd

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_worker, args=(port, str(tmp_path)), nprocs=2, join=True)
    out = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]

    sigma = math.sqrt((7 - 49 / 11) / 10)
    assert abs(sigma - 0.504525) < 1e-6
    everything = torch.tensor([math.nan if v is None else v for v in sum(RANK_REWARDS, [])])
    assert abs(nanstd(everything).item() - sigma) < 1e-6  # TRL's std of the gathered batch
    expected = [(v - 0.25) / (sigma + 1e-4) for v in RANK_REWARDS[0]]
    torch.testing.assert_close(torch.tensor(out[0]["advantages"]), torch.tensor(expected), atol=1e-5, rtol=0)
    for rank in range(2):  # every rank logs the same, global numbers
        st = out[rank]["stats"]
        assert abs(st["reward_mean"] - 7 / 11) < 1e-9 and abs(st["accuracy"] - 7 / 11) < 1e-9
        assert abs(st["reward_std"] - sigma) < 1e-6
        assert abs(st["frac_zero_std_groups"] - 1 / 3) < 1e-9
        assert st["num_unscorable"] == 1
