"""The per-machine cache (``$TELOS_CACHE``, default ``~/.cache/telos``): entries built once and
shared by every process on the machine (the tiny models, benchmark models, recipe data).

Two processes may ask for the same entry at once (two recipes started together, a benchmark
beside a training run). ``build_cached`` serialises them with a lock file next to the entry:
the first builds, the second waits and then reuses what the first built. Each build writes
into a private temporary path that replaces the entry only when complete, so no process ever
deletes another's work in progress, and a killed build leaves nothing that looks finished.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path


def cache_dir() -> Path:
    """The cache root: ``$TELOS_CACHE`` or ``~/.cache/telos``."""
    return Path(os.environ.get("TELOS_CACHE", Path.home() / ".cache" / "telos"))


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


@contextlib.contextmanager
def atomic_path(out: Path) -> Iterator[Path]:
    """A fresh private path next to ``out`` (same suffix, not yet created) to write a file or a
    directory into; when the block succeeds it replaces ``out`` (an old ``out`` is moved aside
    first, then removed), and when it fails it is removed and ``out`` is left as it was."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    # mkdtemp reserves a unique name; the builder gets the path inside it, so the suffix
    # (np.savez appends ".npz" when it is missing) and a directory or file both work
    holder = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    tmp = holder / out.name
    try:
        yield tmp
        if not tmp.exists():
            raise RuntimeError(f"the builder of {out} wrote nothing")
        if out.exists() or out.is_symlink():
            trash = holder / (out.name + ".old")
            os.replace(out, trash)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(holder, ignore_errors=True)


def build_cached(
    out: Path,
    build: Callable[[Path], object],
    *,
    ready: Callable[[Path], bool] | None = None,
    what: str | None = None,
) -> Path:
    """Return ``out``, building it with ``build(tmp_path)`` first unless ``ready(out)``
    (default: it exists). Concurrent callers for the same ``out`` wait on ``out``'s lock file
    and reuse the entry the first one built; ``what`` names it in the progress lines."""
    out = Path(out)
    is_ready = ready or (lambda p: p.exists())
    if is_ready(out):
        return out
    from filelock import FileLock, Timeout  # an OS lock (flock): released if its holder dies

    out.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(out.with_name(out.name + ".lock")))
    label = what or out.name
    try:
        lock.acquire(timeout=0)
    except Timeout:  # another process is building it
        print(f"waiting for another process building {label} → {out}", file=sys.stderr, flush=True)
        lock.acquire()
    try:
        if not is_ready(out):  # the process we waited for may have built it
            with atomic_path(out) as tmp:
                build(tmp)
    finally:
        lock.release()
    return out
