"""Is ``telos quickstart`` bit-reproducible, and what moves its numbers?

Runs the quickstart several times in fresh processes, each under one numerics setting given by
environment variables read when torch loads, and compares the weights' SHA-256 digests
(``summary.json``: ``sft_weights_sha256``, ``rl_weights_sha256``) and the accuracies:

* ``default``         torch's own choice (here: as many threads as cores, the CPU's best kernels)
* ``threads1``        ``OMP_NUM_THREADS=1``: another core count (a 1-core VM, or a laptop's 8)
* ``isa_default``     ``ATEN_CPU_CAPABILITY=default``: torch's non-vectorised kernels, standing
                      in for a CPU with other vector units (AVX-512, Arm NEON) than this one
* ``mkl_compatible``  ``MKL_CBWR=COMPATIBLE``: MKL's matmuls on its portable code path
* ``hashseed0``       ``PYTHONHASHSEED=0``: Python's str hashes (set / dict-of-set order) fixed

``default`` twice checks run-to-run determinism on one machine. Writes
benchmarks/results/quickstart_repro.json (and, with ``--summary-out``, the first run's
summary.json: the quickstart's own result file).

    python benchmarks/quickstart_repro.py --scale 0.1                                  # ~3 min
    python benchmarks/quickstart_repro.py --variants default,default,threads1 \\
        --summary-out benchmarks/results/quickstart.json                                # ~12 min
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import machine_info, write_json  # noqa: E402

VARIANTS: dict[str, dict[str, str]] = {
    "default": {},
    "threads1": {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"},
    "isa_default": {"ATEN_CPU_CAPABILITY": "default"},
    "mkl_compatible": {"MKL_CBWR": "COMPATIBLE"},
    "hashseed0": {"PYTHONHASHSEED": "0"},
}
KEYS = ("sft_accuracy", "rl_accuracy", "improvement", "sft_seconds", "rl_seconds", "wall_seconds")


def run_variant(name: str, scale: float, algo: str, seed: int, work: Path) -> dict:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"OMP_NUM_THREADS", "MKL_NUM_THREADS", "PYTHONHASHSEED"}
    }
    env.update(VARIANTS[name])
    out = work / "qs"
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "telos", "quickstart", "--out", str(out), "--algo", algo]
    cmd += ["--seed", str(seed), "--scale", str(scale)]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, cwd=work, stdout=subprocess.DEVNULL)
    summary = json.loads((out / "summary.json").read_text())
    return {
        "variant": name,
        "env": VARIANTS[name],
        **{k: summary[k] for k in KEYS},
        "sft_weights_sha256": summary["sft_weights_sha256"],
        "rl_weights_sha256": summary["rl_weights_sha256"],
        "numerics": summary["numerics"],
        "process_seconds": round(time.perf_counter() - t0, 1),
        "summary": summary,
    }


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--variants", default="default,default,threads1,isa_default,mkl_compatible")
    p.add_argument("--scale", type=float, default=1.0, help="quickstart --scale (1 = the README's run)")
    p.add_argument("--algo", default="grpo")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="benchmarks/results/quickstart_repro.json")
    p.add_argument("--summary-out", default=None, help="also write the first run's summary.json here")
    args = p.parse_args(argv)
    names = args.variants.split(",")
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise SystemExit(f"error: --variants {','.join(unknown)}: valid: {', '.join(VARIANTS)}")
    runs = []
    with tempfile.TemporaryDirectory(prefix="telos-qs-repro-") as tmp:
        for name in names:
            runs.append(run_variant(name, args.scale, args.algo, args.seed, Path(tmp)))
            r = runs[-1]
            print(
                f"{name:15s} SFT {r['sft_accuracy']:.3f}  {args.algo.upper()} {r['rl_accuracy']:.3f}  "
                f"sft {r['sft_weights_sha256'][:12]}  rl {r['rl_weights_sha256'][:12]}  "
                f"{r['wall_seconds']:.0f} s",
                flush=True,
            )
    base = runs[0]
    for r in runs:
        r["sft_bit_identical_to_first"] = r["sft_weights_sha256"] == base["sft_weights_sha256"]
        r["rl_bit_identical_to_first"] = r["rl_weights_sha256"] == base["rl_weights_sha256"]
    result = {
        "benchmark": "quickstart_repro",
        "settings": vars(args),
        "sft_accuracy_range": [min(r["sft_accuracy"] for r in runs), max(r["sft_accuracy"] for r in runs)],
        "rl_accuracy_range": [min(r["rl_accuracy"] for r in runs), max(r["rl_accuracy"] for r in runs)],
        "runs": [{k: v for k, v in r.items() if k != "summary"} for r in runs],
        "machine": machine_info(("torch", "transformers", "tokenizers")),
    }
    write_json(args.out, result)
    if args.summary_out:
        cmd = f"telos quickstart --algo {args.algo} --seed {args.seed}" + (
            f" --scale {args.scale}" if args.scale != 1.0 else ""
        )
        write_json(args.summary_out, base["summary"] | {"command": cmd, "machine": result["machine"]})
    return result


if __name__ == "__main__":
    main()
