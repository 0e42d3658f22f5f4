"""The accelerator every trainer builds, and what DeepSpeed ZeRO needs beyond DDP.

``accelerate launch --config_file recipes/accelerate/zero{2,3}.yaml`` must give a
``DeepSpeedEngine`` (or a one-line error), never a silent DDP fallback. On a machine without
CUDA that takes two things accelerate does not do by itself: no ``Accelerator(cpu=True)`` (it
drops the DeepSpeed plugin) and an explicit ``gloo`` backend (with none, accelerate initialises
DeepSpeed's process group and then reports a world of one process).

telos micro-batches and accumulates itself (``trainers.common.batching.accumulate``), so DeepSpeed's
own gradient accumulation is pinned to 1 (its ``backward`` would otherwise divide the loss by
it) and the accumulation boundary is set explicitly on the last micro-batch of each optimizer
step. Clipping, the non-finite-gradient skip and the optimizer step are the engine's
(``engine.step()``), since the optimizer wrapper's ``step()`` is a no-op under DeepSpeed.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

from telos.errors import UserError

# the accelerate config keys telos owns (its own micro-batching); a user value must agree
_OWNED_BATCH_KEYS = ("train_micro_batch_size_per_gpu", "gradient_accumulation_steps", "train_batch_size")


def deepspeed_requested() -> bool:
    """``accelerate launch`` with ``distributed_type: DEEPSPEED`` (or ``--use_deepspeed``)."""
    return os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true"


def make_accelerator(micro_batch_size: int, max_grad_norm: float, kwargs_handlers: list | None = None):
    """The run's ``Accelerator``: DeepSpeed when the launch asks for it (configured for telos's
    own micro-batching, see the module docstring), else DDP / single process as accelerate
    decides, on the CPU when CUDA is absent."""
    from accelerate import Accelerator, InitProcessGroupKwargs
    from accelerate.utils import DistributedType, is_deepspeed_available

    handlers = list(kwargs_handlers or [])
    cuda = torch.cuda.is_available()
    if not deepspeed_requested():
        return Accelerator(cpu=not cuda, kwargs_handlers=handlers)
    if not is_deepspeed_available():
        raise UserError(
            "the accelerate config asks for DeepSpeed (distributed_type: DEEPSPEED) but deepspeed is "
            "not installed; valid: pip install 'telos-rl[deepspeed]', or launch with recipes/accelerate/ddp.yaml"
        )
    if not cuda:
        # DeepSpeed's CPU accelerator (gloo when oneCCL is absent); read when deepspeed is imported
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
        handlers.append(InitProcessGroupKwargs(backend="gloo"))
    acc = Accelerator(kwargs_handlers=handlers)
    if acc.distributed_type != DistributedType.DEEPSPEED:
        raise UserError(
            f"the accelerate config asks for DeepSpeed but accelerate set up {acc.distributed_type.value}; "
            "valid: a config with distributed_type: DEEPSPEED and a zero_stage"
        )
    configure_deepspeed(
        acc.state.deepspeed_plugin.deepspeed_config, micro_batch_size, acc.num_processes, max_grad_norm
    )
    if zero_stage(acc) == 3 and not acc.state.deepspeed_plugin.zero3_init_flag:
        # transformers reads this to load the model partitioned and to keep ``generate`` in
        # lockstep across ranks (synced_gpus); without it ranks that finish early would hang
        acc.state.deepspeed_plugin.zero3_init_flag = True
        acc.state.deepspeed_plugin.set_deepspeed_weakref()
    return acc


def configure_deepspeed(config: dict, micro_batch_size: int, world_size: int, max_grad_norm: float) -> dict:
    """Fill (in place) the DeepSpeed config keys telos decides: batch sizes with accumulation 1
    (``train_batch_size = micro_batch_size · world_size``, DeepSpeed's own check), clipping at
    ``max_grad_norm``, gathered weights on save under ZeRO-3, and the non-finite-gradient skip
    under bf16 (DeepSpeed checks fp32 and fp16 gradients by itself)."""
    gas = config.get("gradient_accumulation_steps", "auto")
    if gas not in ("auto", 1):
        raise UserError(
            f"deepspeed config gradient_accumulation_steps={gas!r}: telos accumulates micro-batches "
            "itself (train.micro_batch_size); valid: 1 or auto"
        )
    for key in _OWNED_BATCH_KEYS:
        config.pop(key, None)
    config["train_micro_batch_size_per_gpu"] = micro_batch_size
    config["gradient_accumulation_steps"] = 1
    config["train_batch_size"] = micro_batch_size * world_size
    if config.get("gradient_clipping", "auto") == "auto":
        config["gradient_clipping"] = float(max_grad_norm or 0.0)
    zero = config.setdefault("zero_optimization", {})
    if zero.get("stage") == 3:
        zero["stage3_gather_16bit_weights_on_model_save"] = True  # final/ and checkpoints need it
    bf16 = config.get("bf16")
    if isinstance(bf16, dict) and bf16.get("enabled") is True:
        bf16.setdefault("check_grad_overflow", True)
    return config


def is_deepspeed(model) -> bool:
    """``model`` is a prepared ``DeepSpeedEngine`` (duck-typed: deepspeed need not be installed)."""
    return hasattr(model, "set_gradient_accumulation_boundary") and hasattr(model, "zero_optimization_stage")


def zero_stage(acc) -> int | None:
    """The ZeRO stage of a DeepSpeed run, ``None`` otherwise."""
    plugin = getattr(acc.state, "deepspeed_plugin", None)
    if plugin is None:
        return None
    return int(plugin.deepspeed_config.get("zero_optimization", {}).get("stage", 0))


def run_layout(acc) -> dict:
    """What ran, for summary.json: accelerate's distributed type, the ZeRO stage, the world size."""
    return {
        "distributed_type": acc.distributed_type.value,
        "zero_stage": zero_stage(acc),
        "world_size": acc.num_processes,
    }


def backward(acc, model, loss: torch.Tensor, boundary: bool) -> None:
    """One micro-batch's backward. Under DeepSpeed, straight to the engine with the accumulation
    boundary set (``acc.backward`` would run ``engine.step()`` after every micro-batch)."""
    if is_deepspeed(model):
        model.set_gradient_accumulation_boundary(boundary)
        model.backward(loss)
    else:
        acc.backward(loss)


def optimizer_step(acc, model, optimizer, max_grad_norm: float) -> float:
    """Clip, step and clear gradients; returns the gradient norm before clipping. A non-finite
    norm skips the step (the weights stay as they were), the NaN guard of every trainer."""
    import math

    if is_deepspeed(model):
        model.step()  # clips, skips on a non-finite norm (reported as inf), steps, zeroes
        norm = model.get_global_grad_norm()
        return float("nan") if norm is None else float(norm)
    norm = float(acc.clip_grad_norm_(model.parameters(), max_grad_norm))
    if math.isfinite(norm):
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return norm


@contextlib.contextmanager
def gathered(model, modifier_rank: int | None = None) -> Iterator[None]:
    """Under ZeRO-3 the full parameters on every rank for the block (rank ``modifier_rank``'s
    changes are kept); elsewhere nothing to do."""
    params = list(model.parameters())
    if not any(hasattr(p, "ds_id") for p in params):
        yield
        return
    import deepspeed

    with deepspeed.zero.GatheredParameters(params, modifier_rank=modifier_rank):
        yield


def full_state_dict(acc, model, submodule: str = "") -> dict | None:
    """The full state dict of the prepared ``model`` (of its ``submodule`` attribute, keys
    relative to it) on the main process; ``None`` where DDP / one process need no gathering
    (``save_pretrained`` reads the module). Under DeepSpeed every rank must call it."""
    if not is_deepspeed(model):
        return None
    state = acc.get_state_dict(model)
    if not acc.is_main_process:
        return {}
    if submodule:
        prefix = submodule + "."
        state = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    return state


class ZeroOptimizerState:
    """A ZeRO optimizer as ``telos.checkpoint`` sees one: ``state_dict()`` is this rank's shard,
    ``load_state_dict`` takes every rank's shard in rank order (DeepSpeed's own signature)."""

    def __init__(self, optimizer) -> None:
        self.inner = getattr(optimizer, "optimizer", optimizer)  # accelerate's wrapper

    def state_dict(self) -> dict:
        return self.inner.state_dict()

    def load_state_dict(self, shards: list[dict]) -> None:
        # the fp32 master weights come from the checkpoint, not from the (maybe bf16) module
        self.inner.load_state_dict(shards, load_optimizer_states=True, load_from_fp32_weights=True)


def checkpoint_safe_globals() -> list:
    """The (data-only) DeepSpeed classes a ZeRO optimizer shard pickles, so resume can load it
    with ``torch.load(weights_only=True)``."""
    from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler, LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address

    return [LossScaler, DynamicLossScaler, ZeroStageEnum, fragment_address]


def reference_model(acc, policy, load) -> torch.nn.Module:
    """The frozen reference for the KL term: a copy of the starting policy. A ZeRO-3 policy is
    partitioned, so a deep copy would copy empty shards: load it again (``load()``) and wrap it in
    an optimizer-less ZeRO-3 engine, so it stays partitioned and its forward gathers."""
    import copy

    if zero_stage(acc) != 3:
        return _frozen(copy.deepcopy(acc.unwrap_model(policy)))
    import deepspeed

    config = copy.deepcopy(acc.state.deepspeed_plugin.deepspeed_config)
    config.pop("optimizer", None)
    config.pop("scheduler", None)
    with torch.random.fork_rng():  # loading must not move the run's RNG (same rollouts as DDP)
        ref = load()
    engine, *_ = deepspeed.initialize(model=_frozen(ref), config=config)
    engine.eval()  # DeepSpeedEngine.eval returns None, hence not chained
    return engine


def _frozen(model: torch.nn.Module) -> torch.nn.Module:
    return model.eval().requires_grad_(False)


def _module(acc, model, submodule: str):
    module = acc.unwrap_model(model)
    return getattr(module, submodule) if submodule else module


def save_kwargs(acc, model, optimizer, submodule: str = "") -> dict:
    """``telos.checkpoint.save_checkpoint`` arguments for the prepared ``model`` / ``optimizer``
    (the saved model is its ``submodule`` attribute, if given): under DeepSpeed the gathered
    weights and every rank's optimizer shard (all ranks call it)."""
    module = _module(acc, model, submodule)
    if not is_deepspeed(model):
        return {"model": module, "optimizer": optimizer}
    return {
        "model": module,
        "optimizer": ZeroOptimizerState(optimizer),
        "state_dict": full_state_dict(acc, model, submodule),
        "optimizer_shards": True,
    }


def load_resume(acc, model, optimizer, scheduler, path, submodule: str = "") -> dict:
    """Restore a checkpoint into the prepared ``model`` / ``optimizer`` (every rank calls it);
    returns the trainer state. Under ZeRO-3 the weights load into the gathered parameters."""
    from telos.checkpoint import load_checkpoint, load_model_weights

    module = _module(acc, model, submodule)
    if not is_deepspeed(model):
        return load_checkpoint(
            path, model=module, optimizer=optimizer, scheduler=scheduler, rank=acc.process_index
        )
    with gathered(module, modifier_rank=0):
        load_model_weights(path, module)
    return load_checkpoint(
        path,
        model=None,
        optimizer=ZeroOptimizerState(optimizer),
        scheduler=scheduler,
        rank=acc.process_index,
        world_size=acc.num_processes,
        optimizer_shards=True,
        safe_globals=checkpoint_safe_globals(),
    )


def save_final(
    acc,
    model,
    directory,
    tokenizer=None,
    submodule: str = "",
    merge_adapters: bool = False,
    also: Callable[[Path], None] | None = None,
) -> None:
    """Write ``final/`` atomically from the main process, loadable with ``from_pretrained``:
    ZeRO-3 shards are gathered first (every rank must call this). ``submodule``: save that
    attribute of the prepared model; ``merge_adapters``: a LoRA model merged into its base;
    ``also(directory)`` writes further files inside the same atomic rename."""
    from telos.checkpoint import write_directory_atomically

    state = full_state_dict(acc, model, submodule)
    if not acc.is_main_process:
        return
    module = _module(acc, model, submodule)
    extra = {} if state is None else {"state_dict": state}
    if merge_adapters and hasattr(module, "merge_and_unload"):
        module, extra = module.merge_and_unload(), {}

    def write(tmp) -> None:
        module.save_pretrained(tmp, **extra)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        if also is not None:
            also(tmp)

    write_directory_atomically(directory, write)
