"""Helpers shared by the side-by-side benchmarks: timing, a measured matmul peak, an MFU
estimate, machine info, JSON results and a plain-text table.

Every benchmark writes one JSON file; these helpers keep the fields and their meaning the
same across benchmarks (``machine``, ``peak_flops``, ``mfu``).
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent


def bootstrap_repo_path() -> None:
    """Make the repo's packages importable when a benchmark runs as ``python benchmarks/x.py``."""
    root = str(REPO_ROOT)
    if root not in sys.path:
        sys.path.insert(0, root)


def set_offline() -> None:
    """Nothing downloads during a benchmark (set before transformers / hub are imported)."""
    for key in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        os.environ.setdefault(key, "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


# ------------------------------------------------------------------------------ timing


class Stopwatch:
    """Accumulates wall time over several timed sections: ``with sw: ...`` adds one lap."""

    def __init__(self) -> None:
        self.laps: list[float] = []
        self._t0: float | None = None

    def start(self) -> None:
        self._t0 = time.perf_counter()

    def stop(self) -> float:
        if self._t0 is None:
            raise RuntimeError("Stopwatch.stop() without start()")
        lap = time.perf_counter() - self._t0
        self._t0 = None
        self.laps.append(lap)
        return lap

    def __enter__(self) -> Stopwatch:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def total(self) -> float:
        return sum(self.laps)


@contextmanager
def timed() -> Iterator[dict[str, float]]:
    """``with timed() as t: ...`` then ``t["seconds"]``."""
    out = {"seconds": float("nan")}
    t0 = time.perf_counter()
    try:
        yield out
    finally:
        out["seconds"] = time.perf_counter() - t0


# ------------------------------------------------------------------------------ FLOPs / MFU


def measure_matmul_peak(seconds: float = 1.0, n: int = 1024, dtype: str = "float32") -> dict[str, float]:
    """Achievable dense-matmul throughput on this machine, now: ``torch.mm`` of two n×n
    matrices repeated for about ``seconds`` (after one warm-up call), with torch's current
    thread count. Returns ``{"flops_per_s", "seconds", "calls", "n", "threads"}``."""
    import torch

    dt = getattr(torch, dtype)
    a = torch.randn(n, n, dtype=dt)
    b = torch.randn(n, n, dtype=dt)
    out = torch.empty(n, n, dtype=dt)
    torch.mm(a, b, out=out)  # warm-up: first call pays allocation / kernel selection
    calls, t0 = 0, time.perf_counter()
    while True:
        torch.mm(a, b, out=out)
        calls += 1
        elapsed = time.perf_counter() - t0
        if elapsed >= seconds:
            break
    return {
        "flops_per_s": 2.0 * n**3 * calls / elapsed,
        "seconds": elapsed,
        "calls": calls,
        "n": n,
        "dtype": dtype,
        "threads": torch.get_num_threads(),
    }


def training_flops(num_params: int, generated_tokens: float, trained_tokens: float) -> float:
    """FLOPs of an RL step, the usual dense-transformer estimate: 2·N per generated token
    (forward only) + 6·N per trained token (forward + backward over prompt + completion).
    Attention's sequence-length term and the prompt prefill during generation are left out."""
    return 2.0 * num_params * generated_tokens + 6.0 * num_params * trained_tokens


def mfu(flops: float, seconds: float, peak_flops_per_s: float) -> float:
    """Model FLOPs utilisation: achieved FLOP/s over the measured peak."""
    if seconds <= 0 or peak_flops_per_s <= 0:
        return float("nan")
    return flops / seconds / peak_flops_per_s


# ------------------------------------------------------------------------------ reporting


def package_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def machine_info(packages: Sequence[str] = ("torch", "transformers", "accelerate", "trl")) -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "cuda": torch.cuda.is_available(),
    }
    if hasattr(os, "sched_getaffinity"):
        info["cpus_usable"] = len(os.sched_getaffinity(0))
    if hasattr(os, "getloadavg"):
        info["load_avg_1m"] = round(os.getloadavg()[0], 2)
    for p in packages:
        info[f"{p}_version"] = package_version(p)
    return info


def resolve_model(spec: str) -> str:
    """A model directory from ``tiny:<task>`` (SFT-warmed, built once and cached),
    ``random:<size>`` (random weights, benchmarks/models.py), a packaged real model
    (``smollm2:135m-instruct``) or a local directory."""
    if spec.startswith("random:"):
        from benchmarks.models import random_model_dir

        return random_model_dir(spec.split(":", 1)[1])
    if spec.startswith("tiny:"):
        from trainers.common.tiny import resolve_tiny

        return resolve_tiny(spec)
    from telos.pretrained import is_packaged
    from telos.pretrained import resolve_model as resolve_packaged

    if is_packaged(spec):  # smollm2:135m-instruct, converted once per machine
        return resolve_packaged(spec)
    if not (Path(spec) / "config.json").exists():
        raise SystemExit(f"error: --model {spec}: not a model directory (no config.json)")
    return str(Path(spec).resolve())


def summarize(values: Sequence[float]) -> dict[str, float]:
    vals = [float(v) for v in values]
    if not vals:
        return {"mean": float("nan"), "min": float("nan"), "max": float("nan"), "stdev": float("nan")}
    return {
        "mean": statistics.fmean(vals),
        "min": min(vals),
        "max": max(vals),
        "stdev": statistics.stdev(vals) if len(vals) > 1 else 0.0,
    }


def _jsonable(obj: Any) -> Any:
    """NaN/inf become null (strict JSON); tuples become lists."""
    if isinstance(obj, float):
        return obj if obj == obj and obj not in (float("inf"), float("-inf")) else None
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    return obj


def write_json(path: str | Path, data: dict[str, Any]) -> Path:
    """Write ``data`` as indented strict JSON, atomically (temp file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(_jsonable(data), indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A fixed-width text table; floats get 4 significant digits."""

    def cell(v: Any) -> str:
        if isinstance(v, float):
            return "nan" if v != v else f"{v:.4g}"
        return str(v)

    cells = [[cell(v) for v in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(out)


def read_partial(path: Path) -> list[dict]:
    """The runs a killed benchmark finished (one JSON object per line; a torn last line is skipped)."""
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:  # a line cut by a kill mid-write
            continue
    return rows


def append_partial(path: Path, run: dict) -> None:
    """Append one finished run, flushed and fsynced, so a kill right after keeps it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        f.write(json.dumps(run) + "\n")
        f.flush()
        os.fsync(f.fileno())


class PartialRuns:
    """The finished runs of a resumable experiment, kept in a partial JSONL file: ``have``
    finds a run by its key fields, ``record`` adds one (appended and fsynced at once)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.runs = read_partial(path)

    def have(self, **key) -> dict | None:
        return next((r for r in self.runs if all(r.get(k) == v for k, v in key.items())), None)

    def record(self, run: dict) -> None:
        self.runs.append(run)
        append_partial(self.path, run)
