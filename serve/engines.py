"""Serving engines: one sample = one stream of token events that the server can abort.

- ``hf``: the continuous batcher (rollout/continuous.py) over the policy's own weights; its
  decode thread hands each step's events to the event loop in one callback, so every sample
  advanced by a step wakes in the same loop iteration (and their reward-model checks batch).
- ``vllm``: vLLM's ``AsyncLLM``, one engine request per sample (so a pruned sample is aborted by
  its id: a child of an ``n > 1`` request cannot be aborted alone).
"""

from __future__ import annotations

import asyncio
import itertools
import os
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator

from rollout.continuous import ContinuousBatcher, Event, FinishEvent, Stream, StreamParams, TokenEvent
from telos.errors import UserError
from telos.registry import Registry

SERVE_ENGINES: Registry[type[ServeEngine]] = Registry("serving engine")


class SampleStream:
    """The events of one sample as they arrive; ``abort()`` stops it (a ``FinishEvent`` with
    reason "abort" still arrives, after any tokens already generated)."""

    def __init__(self, abort) -> None:
        self.queue: asyncio.Queue[Event] = asyncio.Queue()
        self._abort = abort
        self.finished = False

    def abort(self) -> None:
        if not self.finished:
            self._abort()

    async def events(self) -> AsyncIterator[Event]:
        while True:
            event = await self.queue.get()
            yield event
            if isinstance(event, FinishEvent):
                self.finished = True
                return


class ServeEngine(ABC):
    """What the server needs from a backend."""

    tokenizer = None
    max_context: int = 2048

    @abstractmethod
    async def start(self) -> None:
        """Bind to the running event loop (called once the server's loop exists)."""

    @abstractmethod
    def open(self, prompt_ids: list[int], params: StreamParams) -> SampleStream: ...

    @property
    @abstractmethod
    def alive(self) -> bool: ...

    def load(self) -> dict[str, int]:
        """Samples running and waiting (for /health and /metrics)."""
        return {"running": 0, "waiting": 0}

    async def close(self) -> None:  # noqa: B027
        pass


@SERVE_ENGINES.register("hf")
class HFServeEngine(ServeEngine):
    def __init__(self, model, tokenizer, max_batch_size: int = 256, **_) -> None:
        self.batcher = ContinuousBatcher(model, tokenizer, max_batch_size, dispatch=self._dispatch)
        self.tokenizer = tokenizer
        self.max_context = self.batcher.max_context
        self._loop: asyncio.AbstractEventLoop | None = None

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()

    def _dispatch(self, events: list[tuple[Stream, Event]]) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(_deliver, events)

    def open(self, prompt_ids: list[int], params: StreamParams) -> SampleStream:
        holder: list[Stream] = []
        sample = SampleStream(lambda: self.batcher.abort(holder[0]))
        holder.append(self.batcher.submit(Stream(list(prompt_ids), params, sample.queue.put_nowait)))
        return sample

    @property
    def alive(self) -> bool:
        return self.batcher.alive

    def load(self) -> dict[str, int]:
        return {"running": self.batcher.running, "waiting": self.batcher.waiting}

    async def close(self) -> None:
        await asyncio.to_thread(self.batcher.close)


def _deliver(events: list[tuple[Stream, Event]]) -> None:
    for stream, event in events:
        stream.sink(event)


@SERVE_ENGINES.register("vllm")
class VLLMServeEngine(ServeEngine):
    """vLLM's async engine in this process; the model directory is loaded by vLLM itself."""

    def __init__(self, model, tokenizer, model_dir: str = "", max_model_len: int | None = None, **_) -> None:
        from rollout.vllm import CPU_KV_CACHE_BYTES, _on_cpu, require_vllm

        require_vllm()
        if not model_dir:
            raise UserError("--engine vllm needs a model directory")
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
        self.tokenizer = tokenizer
        self.model_dir = model_dir
        self.kwargs = dict(
            model=model_dir,
            dtype="float32" if _on_cpu() else "auto",
            max_model_len=max_model_len,
            enforce_eager=_on_cpu(),
            seed=0,
        )
        if _on_cpu():
            self.kwargs["kv_cache_memory_bytes"] = CPU_KV_CACHE_BYTES
        self.engine = None
        self._ids = itertools.count(1)
        self._tasks: set[asyncio.Task] = set()
        self._running = 0

    async def start(self) -> None:
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        self.engine = AsyncLLM.from_engine_args(AsyncEngineArgs(**self.kwargs))
        self.max_context = int(self.engine.model_config.max_model_len)

    def open(self, prompt_ids: list[int], params: StreamParams) -> SampleStream:
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        rid = f"telos-{next(self._ids)}"
        sampling = SamplingParams(
            n=1,
            temperature=params.temperature,
            top_p=params.top_p,
            top_k=params.top_k if params.top_k > 0 else 0,
            max_tokens=params.max_tokens,
            stop=list(params.stop) or None,
            seed=params.seed,
            logprobs=params.logprobs,
            ignore_eos=params.ignore_eos,
            output_kind=RequestOutputKind.DELTA,
        )
        sample = SampleStream(lambda: asyncio.ensure_future(self.engine.abort(rid)))
        task = asyncio.ensure_future(self._pump(rid, list(prompt_ids), sampling, sample))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return sample

    async def _pump(self, rid: str, prompt_ids: list[int], sampling, sample: SampleStream) -> None:
        finish = FinishEvent("abort")
        self._running += 1
        try:
            async for out in self.engine.generate({"prompt_token_ids": prompt_ids}, sampling, rid):
                o = out.outputs[0]
                for i, tok in enumerate(o.token_ids):
                    lp = o.logprobs[i] if o.logprobs else None
                    if lp is None:
                        sample.queue.put_nowait(TokenEvent(tok))
                        continue
                    top = sorted(lp.items(), key=lambda kv: kv[1].rank or 0)
                    pairs = [(t, v.logprob) for t, v in top if v.rank and v.rank <= (sampling.logprobs or 0)]
                    sample.queue.put_nowait(TokenEvent(tok, lp[tok].logprob, pairs or None))
                if o.finish_reason is not None:
                    stop = o.stop_reason if isinstance(o.stop_reason, str) else None
                    reason = "abort" if o.finish_reason == "abort" else o.finish_reason
                    finish = FinishEvent(reason, stop_string=stop)
        except asyncio.CancelledError:
            finish = FinishEvent("abort")
        except Exception as e:  # noqa: BLE001 - the sample fails, the server keeps serving
            finish = FinishEvent("error", message=f"{type(e).__name__}: {e}")
        finally:
            self._running -= 1
            sample.queue.put_nowait(finish)

    @property
    def alive(self) -> bool:
        return self.engine is not None and not getattr(self.engine, "errored", False)

    def load(self) -> dict[str, int]:
        return {"running": self._running, "waiting": 0}

    async def close(self) -> None:
        if self.engine is not None:
            engine, self.engine = self.engine, None
            engine.shutdown()
            del engine  # its __del__ shuts down again: let it run now, not at interpreter exit
            import gc

            gc.collect()
