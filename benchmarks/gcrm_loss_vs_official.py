"""telos's contrastive GC-RM loss against the official ``ContrastiveGoalLoss``, over many seeds.

For each seed: random hidden states for a chosen and a rejected sequence (random lengths, random
response spans ending at the last position, as the official left-padded batches have them),
then

* official: ``torch.manual_seed(seed)``; ``ContrastiveGoalLoss(16, 16, beta, strategy, ps, pg)``
  on ``[1, T, H]`` states and the response lengths (``chosen_na``, ``rejected_na``);
* telos: ``sample_goal_positions(..., torch.Generator().manual_seed(seed))`` with spans
  ``[T − n, T)`` and ``contrastive_goal_loss`` on the same states;

and records |L_telos − L_official| and the largest |∂L/∂h| difference. Batch size 1 (the released
recipe's ``micro_train_batch_size``): there one generator state gives both the same draw.

The official code is read from a clone, never copied into this repo:

    git clone https://github.com/vaskarnathscale/goal-conditioned-rm /tmp/gcrm && git -C /tmp/gcrm checkout 9daaf8d
    python benchmarks/gcrm_loss_vs_official.py --official /tmp/gcrm --seeds 300

Its ``openrlhf/models/loss.py`` is loaded as is; its one relative import (``from .utils import
masked_mean``, unused by ``ContrastiveGoalLoss``) is served by a stub, because the real
``utils.py`` imports bitsandbytes. Writes benchmarks/results/gcrm_loss_vs_official.json.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import machine_info, write_json  # noqa: E402

# (strategy, source percentile, goal percentile): the released recipe first
# (train_contrastive_rm.sh: cosine, 0, 0), then the official options it does not use
CONFIGS = (("cosine", 0.0, 0.0), ("cosine_avg", 0.0, 0.0), ("cosine", 0.5, 0.5), ("cosine", 0.3, 0.6))


def load_official(repo: Path):
    """``ContrastiveGoalLoss`` from ``repo/openrlhf/models/loss.py``, unmodified."""
    path = repo / "openrlhf" / "models" / "loss.py"
    if not path.exists():
        raise SystemExit(f"error: --official {repo}: no openrlhf/models/loss.py (clone goal-conditioned-rm)")
    pkg = types.ModuleType("gcrm_official")
    pkg.__path__ = [str(path.parent)]
    stub = types.ModuleType("gcrm_official.utils")
    stub.masked_mean = None  # imported by loss.py, used only by the PPO losses
    sys.modules["gcrm_official"], sys.modules["gcrm_official.utils"] = pkg, stub
    spec = importlib.util.spec_from_file_location("gcrm_official.loss", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.ContrastiveGoalLoss


def git_commit(repo: Path) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True)
    except OSError:
        return None
    return out.stdout.strip() or None


def compare_one(official_cls, seed: int, config: tuple[str, float, float], beta: float) -> dict[str, Any]:
    import torch

    from rewards.rm_losses import contrastive_goal_loss, sample_goal_positions

    strategy, ps, pg = config
    g = torch.Generator().manual_seed(10_000 + seed)  # the states: a stream apart from the draw
    t_c, t_r = (int(v) for v in torch.randint(2, 40, (2,), generator=g))
    # a prompt always precedes the response in the official left-padded rows: n < T
    n_c, n_r = int(torch.randint(1, t_c, (1,), generator=g)), int(torch.randint(1, t_r, (1,), generator=g))
    hidden = int(torch.randint(2, 33, (1,), generator=g))
    h_c = torch.randn(t_c, hidden, generator=g, dtype=torch.float32)
    h_r = torch.randn(t_r, hidden, generator=g, dtype=torch.float32)

    hc_o, hr_o = h_c.clone().requires_grad_(True), h_r.clone().requires_grad_(True)
    torch.manual_seed(seed)
    official = official_cls(16, 16, beta, strategy, ps, pg)(
        hc_o.unsqueeze(0), hr_o.unsqueeze(0), torch.tensor([float(n_c)]), torch.tensor([float(n_r)])
    )
    official.backward()

    hc_t, hr_t = h_c.clone().requires_grad_(True), h_r.clone().requires_grad_(True)
    pos, neg = sample_goal_positions(
        n_c, n_r, 16, torch.Generator().manual_seed(seed), chosen_start=t_c - n_c, rejected_start=t_r - n_r,
        source_percentile=ps, goal_percentile=pg,
    )  # fmt: skip
    ours, _ = contrastive_goal_loss(hc_t, hr_t, pos, neg, beta=beta, strategy=strategy)
    ours.backward()
    grad_diff = max(float((hc_o.grad - hc_t.grad).abs().max()), float((hr_o.grad - hr_t.grad).abs().max()))
    return {
        "seed": seed,
        "strategy": strategy,
        "source_percentile": ps,
        "goal_percentile": pg,
        "chosen": [t_c, n_c],
        "rejected": [t_r, n_r],
        "hidden": hidden,
        "official": official.item(),
        "telos": ours.item(),
        "abs_diff": abs(official.item() - ours.item()),
        "grad_abs_diff": grad_diff,
    }


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--official", required=True, help="a clone of vaskarnathscale/goal-conditioned-rm")
    p.add_argument("--seeds", type=int, default=300, help="seeds 0..N-1, for each configuration")
    p.add_argument("--beta", type=float, default=0.5)
    p.add_argument("--out", default="benchmarks/results/gcrm_loss_vs_official.json")
    args = p.parse_args(argv)
    official_cls = load_official(Path(args.official))
    rows = [compare_one(official_cls, s, c, args.beta) for c in CONFIGS for s in range(args.seeds)]

    def worst(cfg: tuple[str, float, float]) -> dict[str, Any]:
        sel = [r for r in rows if (r["strategy"], r["source_percentile"], r["goal_percentile"]) == cfg]
        return {
            "strategy": cfg[0],
            "source_percentile": cfg[1],
            "goal_percentile": cfg[2],
            "seeds": len(sel),
            "max_abs_diff": max(r["abs_diff"] for r in sel),
            "max_grad_abs_diff": max(r["grad_abs_diff"] for r in sel),
            "exact_equal": sum(r["abs_diff"] == 0.0 for r in sel),
        }

    summary = [worst(c) for c in CONFIGS]
    loss_py = Path(args.official) / "openrlhf" / "models" / "loss.py"
    result = {
        "benchmark": "gcrm_loss_vs_official",
        "settings": vars(args)
        | {
            "official_commit": git_commit(Path(args.official)),
            "official_loss_py_sha256": hashlib.sha256(loss_py.read_bytes()).hexdigest(),
            "batch_size": 1,
        },
        "summary": summary,
        # every seed is in the summary; a few rows per configuration show what was compared
        "examples": [r for r in rows if r["seed"] < 5],
        "machine": machine_info(("torch",)),
    }
    write_json(args.out, result)
    for s in summary:
        print(
            f"{s['strategy']:10s} ps={s['source_percentile']} pg={s['goal_percentile']}  seeds {s['seeds']}  "
            f"max |ΔL| {s['max_abs_diff']:.3g}  max |Δgrad| {s['max_grad_abs_diff']:.3g}  "
            f"bit-equal {s['exact_equal']}/{s['seeds']}"
        )
    return result


if __name__ == "__main__":
    main()
