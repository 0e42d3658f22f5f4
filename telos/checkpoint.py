"""Crash-safe training checkpoints: ``RUN/checkpoints/step-N/``.

A checkpoint holds everything needed to continue a run as if it had never stopped:

    step-N/
      model.safetensors, config.json   (or adapter_model.safetensors + adapter_config.json for peft)
      tokenizer files                  (when a tokenizer is passed)
      optimizer.pt, scheduler.pt       (state dicts; a sharded optimizer — DeepSpeed ZeRO — writes
                                        optimizer_rank{R}.pt on every rank instead)
      trainer_state.json               (the caller's dict: step, data cursor, ...)
      rng_rank{R}.pt                   (python / numpy / torch / CUDA RNG of every rank)

Loading never unpickles code: every ``torch.load`` is ``weights_only=True`` (a downloaded run
directory passed as ``resume:`` must not be able to execute anything). The RNG file therefore
holds tensors and plain Python values only; older files with a numpy array load through an
allow-list of the numpy globals that array needs.

Atomicity: everything is written into ``checkpoints/.tmp-step-N/``, fsynced, and only then
renamed to ``step-N`` (``os.replace`` of a directory is atomic on POSIX file systems). A process
killed at any moment therefore leaves either the previous checkpoints or the new one, never a
half-written ``step-N``; leftover ``.tmp-*`` directories are ignored by ``latest_checkpoint`` and
removed by the next save. Old checkpoints are renamed to ``.tmp-*`` before being deleted, so an
interrupted deletion leaves nothing that looks like a checkpoint either.

Multi-process runs assume a file system shared by all ranks (the usual setup for
``accelerate launch``): rank 0 writes the model, optimizer and scheduler, every rank writes its
own RNG file, and ``barrier()`` orders the steps.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import shutil
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from telos.errors import UserError

CHECKPOINTS = "checkpoints"
TRAINER_STATE = "trainer_state.json"
OPTIMIZER = "optimizer.pt"
SCHEDULER = "scheduler.pt"
TMP_PREFIX = ".tmp-"
_STEP_RE = re.compile(r"^step-(\d+)$")

# Written by transformers' / peft's save_pretrained.
_ADAPTER_FILES = ("adapter_model.safetensors", "adapter_model.bin")
_SAFE_WEIGHTS = "model.safetensors"
_SAFE_INDEX = "model.safetensors.index.json"


def _noop() -> None:
    return None


# --------------------------------------------------------------------------------------- save


def save_checkpoint(
    run_dir: Path,
    step: int,
    *,
    model,
    optimizer,
    scheduler,
    trainer_state: dict,
    tokenizer=None,
    rank: int = 0,
    world_size: int = 1,
    barrier: Callable[[], None] = _noop,
    keep_last: int | None = 2,
    extra_writers: dict[str, Callable[[Path], None]] | None = None,
    state_dict: dict | None = None,
    optimizer_shards: bool = False,
) -> Path:
    """Write ``run_dir/checkpoints/step-{step}`` atomically and return its path.

    Every rank must call this (with its own ``rank`` and a real ``barrier`` when
    ``world_size > 1``). ``model`` is the unwrapped model (a transformers ``PreTrainedModel`` or a
    peft model, whose adapter only is saved). ``optimizer`` / ``scheduler`` may be ``None``.
    ``keep_last``: how many checkpoints to keep (``None`` keeps all); older ones are deleted
    after the new one is in place. ``extra_writers``: ``{name: write(directory)}`` for state
    beyond the policy (e.g. OREAL's token RM), each written by rank 0 into ``step-N/<name>/``
    inside the same atomic rename. ``state_dict``: the full weights when the module does not
    hold them (gathered ZeRO-3 shards; only rank 0's is used). ``optimizer_shards``: every rank
    writes its own ``optimizer.state_dict()`` (a ZeRO optimizer holds one shard per rank).
    """
    if keep_last is not None and keep_last < 1:
        raise ValueError(f"keep_last must be >= 1 or None, got {keep_last}")
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} out of range for world_size {world_size}")
    payload = json.dumps(trainer_state, indent=2, sort_keys=True).encode()  # fail before writing
    ckpt_root = Path(run_dir) / CHECKPOINTS
    tmp = ckpt_root / f"{TMP_PREFIX}step-{step}"
    final = ckpt_root / f"step-{step}"

    # 1. rank 0 clears what a crashed save left behind and creates the temp dir.
    if rank == 0:
        ckpt_root.mkdir(parents=True, exist_ok=True)
        _remove_leftovers(ckpt_root)
        tmp.mkdir()
    barrier()

    # 2. every rank writes its RNG; rank 0 writes the rest.
    _write_file(tmp / f"rng_rank{rank}.pt", lambda f: torch.save(_rng_state(), f))
    if optimizer is not None and optimizer_shards:
        _write_file(tmp / _optimizer_shard(rank), lambda f: torch.save(optimizer.state_dict(), f))
    if rank == 0:
        extra = {} if state_dict is None else {"state_dict": state_dict}
        with _no_hf_progress_bars():
            model.save_pretrained(tmp, safe_serialization=True, **_save_kwargs(model), **extra)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        if optimizer is not None and not optimizer_shards:
            _write_file(tmp / OPTIMIZER, lambda f: torch.save(optimizer.state_dict(), f))
        if scheduler is not None:
            _write_file(tmp / SCHEDULER, lambda f: torch.save(scheduler.state_dict(), f))
        for name, write in (extra_writers or {}).items():
            (tmp / name).mkdir()
            with _no_hf_progress_bars():
                write(tmp / name)
        # Written last: its presence marks the directory as a checkpoint.
        _write_file(tmp / TRAINER_STATE, lambda f: f.write(payload))
    barrier()

    # 3. rank 0 makes it durable and visible in one rename, then prunes.
    if rank == 0:
        _fsync_tree(tmp)
        replaced = ckpt_root / f"{TMP_PREFIX}replaced-step-{step}"
        if final.exists():  # re-saving the same step (rare): move the old one out of the way
            os.replace(final, replaced)
        os.replace(tmp, final)
        _fsync_dir(ckpt_root)
        shutil.rmtree(replaced, ignore_errors=True)
        _prune(ckpt_root, keep_last, just_saved=step)
    barrier()
    return final


def write_directory_atomically(directory: Path, write: Callable[[Path], None]) -> Path:
    """Create ``directory`` (e.g. a run's ``final/``) atomically: ``write(tmp)`` fills a private
    sibling (``telos.cache.atomic_path``), which is fsynced and renamed over it. A kill at any
    moment leaves the old directory or the new one, never a mix."""
    from telos.cache import atomic_path

    directory = Path(directory)
    with atomic_path(directory) as tmp:
        tmp.mkdir()
        with _no_hf_progress_bars():
            write(tmp)
        _fsync_tree(tmp)
    _fsync_dir(directory.parent)
    return directory


def write_json_atomically(path: Path, data) -> None:
    """``path`` holds the old JSON or the new one, never a torn file (temp file, fsync, rename)."""
    path = Path(path)
    payload = json.dumps(data, indent=2).encode()  # fail before touching the file
    tmp = path.with_name(f"{TMP_PREFIX}{path.name}")
    _write_file(tmp, lambda f: f.write(payload))
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _save_kwargs(model) -> dict:
    """Extra ``save_pretrained`` arguments for transformers models.

    transformers 5 reverts its internal weight conversions (e.g. fused MoE experts) on save so
    the files match the hub layout; a resume checkpoint should instead hold exactly
    ``model.state_dict()`` so it loads back with ``load_state_dict``. peft models are left alone.
    """
    if _is_peft(model):
        return {}
    import inspect

    try:
        params = inspect.signature(model.save_pretrained).parameters
    except (TypeError, ValueError):
        return {}
    return {"save_original_format": False} if "save_original_format" in params else {}


@contextlib.contextmanager
def _no_hf_progress_bars():
    """transformers draws a "Writing model shards" tqdm bar per save: noise in training logs."""
    hf_logging = None
    if "transformers" in sys.modules:
        from transformers.utils import logging as hf_logging

        if not hf_logging.is_progress_bar_enabled():
            hf_logging = None
    if hf_logging is not None:
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if hf_logging is not None:
            hf_logging.enable_progress_bar()


def _optimizer_shard(rank: int) -> str:
    return f"optimizer_rank{rank}.pt"


def _rng_state() -> dict:
    """Tensors and plain values only, so it loads with ``weights_only=True``."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
        state["cuda_device"] = torch.cuda.current_device()
    return state


def _write_file(path: Path, write: Callable) -> None:
    with open(path, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # platforms that cannot open directories (Windows)
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    """fsync every file (save_pretrained does not) and directory under ``root``."""
    for dirpath, _dirnames, filenames in os.walk(root):
        for name in filenames:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(Path(dirpath))


def _remove_leftovers(ckpt_root: Path) -> None:
    for p in ckpt_root.iterdir():
        if not p.name.startswith(TMP_PREFIX):
            continue
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)


def _complete_checkpoints(ckpt_root: Path) -> list[tuple[int, Path]]:
    if not ckpt_root.is_dir():
        return []
    found = []
    for p in ckpt_root.iterdir():
        m = _STEP_RE.match(p.name)
        if m and p.is_dir() and (p / TRAINER_STATE).is_file():
            found.append((int(m.group(1)), p))
    return sorted(found)


def _prune(ckpt_root: Path, keep_last: int | None, just_saved: int) -> None:
    ckpts = _complete_checkpoints(ckpt_root)
    newer = [s for s, _ in ckpts if s > just_saved]
    if newer:
        warnings.warn(
            f"{ckpt_root} holds checkpoints newer than step {just_saved} ({newer}); "
            "`resume: latest` will pick those, not this run's",
            stacklevel=3,
        )
    if keep_last is None:
        return
    doomed = [(s, p) for s, p in ckpts[:-keep_last] if s != just_saved]
    for s, p in doomed:
        # Rename first (atomic) so a crash mid-delete leaves no partial ``step-N``.
        trash = ckpt_root / f"{TMP_PREFIX}delete-step-{s}"
        os.replace(p, trash)
        shutil.rmtree(trash, ignore_errors=True)


# --------------------------------------------------------------------------------------- find


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The highest complete ``step-N`` under ``run_dir/checkpoints``, or ``None``."""
    ckpts = _complete_checkpoints(Path(run_dir) / CHECKPOINTS)
    return ckpts[-1][1] if ckpts else None


def resolve_resume(resume: str | None, run_dir: Path) -> Path | None:
    """Turn the recipe's ``resume:`` value into a checkpoint directory.

    ``None`` / ``""`` → ``None`` (fresh start); ``"latest"`` → the newest checkpoint of
    ``run_dir``, or ``None`` if there is none yet (a fresh start is fine); anything else is a path
    to a ``step-N`` directory (a run directory also works: its latest checkpoint is used).
    """
    if resume is None or str(resume).strip() == "":
        return None
    if str(resume).strip() == "latest":
        return latest_checkpoint(run_dir)
    path = Path(resume).expanduser()
    if not path.is_dir():
        raise UserError(f"checkpoint not found: {resume}")
    if (path / TRAINER_STATE).is_file():
        return path
    inner = latest_checkpoint(path)  # a run directory
    if inner is not None:
        return inner
    raise UserError(f"not a checkpoint (no {TRAINER_STATE}): {resume}")


# --------------------------------------------------------------------------------------- load


def load_checkpoint(
    path: Path,
    *,
    model,
    optimizer,
    scheduler,
    rank: int = 0,
    world_size: int = 1,
    optimizer_shards: bool = False,
    safe_globals: list | tuple = (),
) -> dict:
    """Restore ``model`` (in place), ``optimizer``, ``scheduler`` and this rank's RNG from
    ``path``; return the saved trainer state. ``model`` / ``optimizer`` / ``scheduler`` may be
    ``None`` (``load_model_weights`` loads the weights alone). ``optimizer_shards``: the
    optimizer was saved one shard per rank; ``optimizer.load_state_dict`` gets the list of all
    ``world_size`` shards. ``safe_globals``: the data-only classes those shards pickle (every
    file is loaded with ``weights_only=True``)."""
    path = Path(path)
    state_file = path / TRAINER_STATE
    if not state_file.is_file():
        raise UserError(f"not a checkpoint (no {TRAINER_STATE}): {path}")
    if model is not None:
        _load_weights(path, model)
    if optimizer is not None and optimizer_shards:
        files = [path / _optimizer_shard(r) for r in range(world_size)]
        saved = sorted(p.name for p in path.glob("optimizer_rank*.pt"))
        if not all(f.is_file() for f in files) or len(saved) != world_size:
            raise UserError(
                f"checkpoint {path} holds {len(saved)} optimizer shards ({OPTIMIZER} if 0), this run has "
                f"{world_size} ranks: resume a sharded (ZeRO) checkpoint with the same accelerate config "
                "and --num_processes"
            )
        optimizer.load_state_dict([_safe_load(f, safe_globals) for f in files])
    elif optimizer is not None:
        _require(path / OPTIMIZER)
        optimizer.load_state_dict(_safe_load(path / OPTIMIZER))
    if scheduler is not None:
        _require(path / SCHEDULER)
        scheduler.load_state_dict(_safe_load(path / SCHEDULER))
    rng_file = path / f"rng_rank{rank}.pt"
    if not rng_file.is_file():
        rng_file = path / "rng_rank0.pt"
    if rng_file.is_file():
        _set_rng_state(_safe_load(rng_file, _numpy_rng_globals()))
    return json.loads(state_file.read_text())


def load_model_weights(path: Path, model) -> None:
    """Load only the model weights of checkpoint ``path`` into ``model`` (in place)."""
    _load_weights(Path(path), model)


def _safe_load(file: Path, allowed: list | tuple = ()):
    """``torch.load(weights_only=True)``: tensors, containers and the ``allowed`` classes only;
    anything else in the file is a user error naming it, never executed."""
    try:
        with torch.serialization.safe_globals(list(allowed)):
            return torch.load(file, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle.UnpicklingError and friends: the message names the global
        if "Weights only load failed" not in str(e):
            raise
        names = ", ".join(torch.serialization.get_unsafe_globals_in_checkpoint(file)) or "unknown objects"
        raise UserError(f"checkpoint file {file} holds objects resume does not load ({names})") from None


def _numpy_rng_globals() -> list:
    """What a numpy RNG state array pickled by older telos versions needs (data only)."""
    core = getattr(np, "_core", None) or np.core
    return [core.multiarray._reconstruct, np.ndarray, np.dtype, type(np.dtype(np.uint32))]


def _require(file: Path) -> None:
    if not file.is_file():
        raise UserError(f"checkpoint is missing {file.name}: {file.parent}")


def _set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    kind, keys, *rest = state["numpy"]
    if isinstance(keys, torch.Tensor):
        keys = keys.numpy().astype(np.uint32)
    np.random.set_state((kind, keys, *rest))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def _is_peft(model) -> bool:
    # Avoid importing peft (slow) for plain models: a peft model always has ``peft_config``.
    if not hasattr(model, "peft_config"):
        return False
    from peft import PeftModel

    return isinstance(model, PeftModel)


def _load_weights(path: Path, model) -> None:
    if _is_peft(model):
        _load_adapters(path, model)
    else:
        _load_full(path, model)


def _load_adapters(path: Path, model) -> None:
    from peft.utils import load_peft_weights, set_peft_model_state_dict

    for name in model.peft_config:
        # peft's save_pretrained puts the "default" adapter at the top, others in subdirs.
        adir = path if name == "default" else path / name
        if not any((adir / f).is_file() for f in _ADAPTER_FILES):
            raise UserError(f"checkpoint {path} has no weights for adapter {name!r}")
        weights = load_peft_weights(str(adir), device="cpu")
        result = set_peft_model_state_dict(model, weights, adapter_name=name)
        unexpected = getattr(result, "unexpected_keys", [])
        if unexpected:
            raise UserError(
                f"checkpoint {path} does not match the model: unexpected adapter keys {_short(unexpected)}"
            )


def _load_full(path: Path, model) -> None:
    from safetensors.torch import load_file

    if (path / _SAFE_INDEX).is_file():
        index = json.loads((path / _SAFE_INDEX).read_text())
        shards = sorted(set(index["weight_map"].values()))
    elif (path / _SAFE_WEIGHTS).is_file():
        shards = [_SAFE_WEIGHTS]
    else:
        raise UserError(f"checkpoint {path} has no model weights ({_SAFE_WEIGHTS})")

    loaded: set[str] = set()
    unexpected: list[str] = []
    for shard in shards:  # one shard in memory at a time
        sd = load_file(str(path / shard), device="cpu")
        result = model.load_state_dict(sd, strict=False)
        unexpected += result.unexpected_keys
        loaded.update(k for k in sd if k not in result.unexpected_keys)
        del sd

    # save_pretrained omits tied duplicates (lm_head.weight tied to the embeddings): a missing
    # key is fine only if it is the very same tensor as one that was loaded.
    model_sd = model.state_dict(keep_vars=True)
    loaded_ids = {id(model_sd[k]) for k in loaded if k in model_sd}
    tied_targets = set(getattr(model, "all_tied_weights_keys", None) or {})
    missing = [
        k for k in model_sd if k not in loaded and id(model_sd[k]) not in loaded_ids and k not in tied_targets
    ]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing keys {_short(missing)}")
        if unexpected:
            parts.append(f"unexpected keys {_short(unexpected)}")
        raise UserError(f"checkpoint {path} does not match the model: " + "; ".join(parts))


def _short(keys: list[str], n: int = 5) -> str:
    more = f" (+{len(keys) - n} more)" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more
