"""Iteration-level (continuous) batching over the lean decoder: the serving engine.

Every sample is its own stream (a ``Stream``). Streams join the running decode batch between
two decode steps and leave it the step they finish or are aborted, so concurrent requests
share one decode batch and a pruned sample frees its slot at once. The trainers' batch
``HFEngine.generate`` is untouched: this module only reuses the decoder's math.

How rows of different ages share one KV cache: every row writes its next key at the same
column ``length``; a row that joins later is prefilled on its own and its keys are placed
right-aligned just before that column (left padding, masked out), and its rotary positions are
its own. The cache grows by ``GROW`` columns when full and drops leading columns no live row
attends to, so a long-lived batch does not keep the width of the longest row ever served.
"""

from __future__ import annotations

import itertools
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from rollout.hf import COMPACT_BELOW, process_logits, sample_categorical
from rollout.lean import LeanDecoder
from telos.errors import UserError
from telos.types import SamplingParams

GROW = 64  # cache columns added when the batch runs out of room
STOP_TAIL = 16  # tokens decoded to look for a stop string


@dataclass(frozen=True)
class StreamParams:
    """What one sample stream draws: the OpenAI sampling fields for a single sample."""

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    max_tokens: int = 64
    stop: tuple[str, ...] = ()
    seed: int | None = None
    logprobs: int | None = None  # None: none; 0: the sampled token's; k: also the top k
    ignore_eos: bool = False  # vLLM's extension: always generate max_tokens (benchmarks)

    def sampling(self) -> SamplingParams:
        return SamplingParams(temperature=self.temperature, top_p=self.top_p, top_k=self.top_k)


@dataclass
class TokenEvent:
    token_id: int
    logprob: float | None = None  # under the model's distribution, as OpenAI reports it
    top: list[tuple[int, float]] | None = None


@dataclass
class FinishEvent:
    reason: str  # "stop" (EOS or a stop string) | "length" | "abort" | "error"
    stop_string: str | None = None
    message: str | None = None


Event = TokenEvent | FinishEvent


@dataclass(eq=False)
class Stream:
    """One sample being generated. ``sink`` receives its events (called from the decode
    thread through the batcher's ``dispatch``)."""

    prompt_ids: list[int]
    params: StreamParams
    sink: Callable[[Event], None]
    tokens: list[int] = field(default_factory=list)
    aborted: bool = False
    generator: torch.Generator | None = None
    id: int = 0


class ContinuousBatcher:
    """A decode thread over one model. ``submit`` a stream, ``abort`` it; events reach each
    stream's sink through ``dispatch(list of (stream, event))``, one call per decode step (the
    async server hands the whole step to its event loop at once)."""

    def __init__(
        self,
        model,
        tokenizer,
        max_batch_size: int = 256,
        dispatch: Callable[[list[tuple[Stream, Event]]], None] | None = None,
    ) -> None:
        if not LeanDecoder.supports(model):
            arch = getattr(getattr(model, "config", None), "model_type", type(model).__name__)
            raise UserError(
                f"the hf serving engine batches Llama/Qwen2-shaped models (this one is {arch!r}); "
                "valid: a llama or qwen2 checkpoint, or --engine vllm"
            )
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.eos = tokenizer.eos_token_id
        self.max_batch_size = max_batch_size
        self.max_context = int(getattr(model.config, "max_position_embeddings", 2048))
        self.dispatch = dispatch or (lambda events: [s.sink(e) for s, e in events])
        self.device = next(model.parameters()).device
        self.decoder = LeanDecoder(model)
        self._waiting: deque[Stream] = deque()
        self._rows: list[Stream | None] = []  # None: a finished row's slot, until compaction
        self._logits: Tensor | None = None
        self._cond = threading.Condition()
        self._ids = itertools.count(1)
        self._closed = False
        self.steps = 0
        self.tokens_generated = 0
        self.last_error: str | None = None
        self._thread = threading.Thread(target=self._loop, name="telos-decode", daemon=True)
        self._thread.start()

    # ----------------------------------------------------------------------------- public API

    @property
    def running(self) -> int:
        return sum(s is not None for s in self._rows)

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive() and not self._closed

    def submit(self, stream: Stream) -> Stream:
        if len(stream.prompt_ids) + stream.params.max_tokens > self.max_context:
            raise UserError(
                f"prompt ({len(stream.prompt_ids)} tokens) + max_tokens ({stream.params.max_tokens}) "
                f"exceeds the model's context of {self.max_context} tokens"
            )
        stream.id = next(self._ids)
        if stream.params.seed is not None and stream.params.temperature > 0:
            stream.generator = torch.Generator(device=self.device).manual_seed(stream.params.seed)
        with self._cond:
            self._waiting.append(stream)
            self._cond.notify()
        return stream

    def abort(self, stream: Stream) -> None:
        """Stop a stream; it leaves the batch before the next decode step."""
        stream.aborted = True
        with self._cond:
            self._cond.notify()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join(timeout=10)

    # ----------------------------------------------------------------------------- the loop

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._closed and not self._rows and not self._waiting:
                    self._cond.wait()
                if self._closed:
                    break
            try:
                with torch.no_grad():
                    self._iteration()
            except Exception as e:  # noqa: BLE001 - a failed step ends its streams, not the server
                self.last_error = f"{type(e).__name__}: {e}"
                failed = [(s, FinishEvent("error", message=self.last_error)) for s in self._live()]
                failed += [(s, FinishEvent("error", message=self.last_error)) for s in self._drain()]
                self._rows, self._logits = [], None
                self.dispatch(failed)
        ended = [(s, FinishEvent("abort")) for s in [*self._live(), *self._drain()]]
        self.dispatch(ended)

    def _drain(self) -> list[Stream]:
        with self._cond:
            out = list(self._waiting)
            self._waiting.clear()
        return out

    def _live(self) -> list[Stream]:
        return [s for s in self._rows if s is not None]

    def _iteration(self) -> None:
        events: list[tuple[Stream, Event]] = []
        if self._rows:
            sampled = self._sample(self._logits)
            step_tokens = [self.eos if self.eos is not None else 0] * len(self._rows)  # dead slots
            for r, stream in enumerate(self._rows):
                if stream is None:
                    continue
                if stream.aborted:
                    events.append((stream, FinishEvent("abort")))
                    self._rows[r] = None
                    continue
                token, event = sampled[r]
                stream.tokens.append(token)
                events.append((stream, event))
                self.tokens_generated += 1
                finish = self._finished(stream, token)
                if finish is not None:
                    events.append((stream, finish))
                    self._rows[r] = None
                else:
                    step_tokens[r] = token
            self.steps += 1
            live = [r for r, st in enumerate(self._rows) if st is not None]
            # a finished row's slot is taken by the next waiting stream (an in-place write); with
            # none waiting, dead slots leave once they are a quarter of the batch (a compaction
            # copies the whole cache)
            if len(live) < len(self._rows) and (
                not live or (not self._waiting and len(live) <= COMPACT_BELOW * len(self._rows))
            ):
                self._select(live)
                step_tokens = [step_tokens[r] for r in live]
            if self._rows:
                self._ensure_room()
                self._logits = self.decoder.step(torch.tensor(step_tokens, device=self.device))
        self._admit(events)
        if events:
            self.dispatch(events)

    def _finished(self, stream: Stream, token: int) -> FinishEvent | None:
        if token == self.eos and not stream.params.ignore_eos:
            return FinishEvent("stop")
        if stream.params.stop:
            tail = self.tokenizer.decode(stream.tokens[-STOP_TAIL:])
            for s in stream.params.stop:
                if s in tail:
                    return FinishEvent("stop", stop_string=s)
        if len(stream.tokens) >= stream.params.max_tokens:
            return FinishEvent("length")
        return None

    # ----------------------------------------------------------------------------- sampling

    def _sample(self, logits: Tensor) -> list[tuple[int, TokenEvent] | None]:
        """One token per live row, each under its own stream's sampling parameters (None for a
        dead slot)."""
        rows = self._rows
        chosen = torch.zeros(len(rows), dtype=torch.long, device=logits.device)
        groups: dict[tuple, list[int]] = {}
        for r, s in enumerate(rows):
            if s is None:
                continue
            p = s.params
            groups.setdefault((p.temperature, p.top_p, p.top_k), []).append(r)
        for (temperature, top_p, top_k), idx in groups.items():
            index = torch.tensor(idx, device=logits.device)
            params = SamplingParams(temperature=temperature, top_p=top_p, top_k=top_k)
            processed = process_logits(logits[index], params)
            if params.greedy:
                chosen[index] = processed.argmax(-1)
                continue
            probs = processed.softmax(-1)
            shared = [j for j, r in enumerate(idx) if rows[r].generator is None]
            if shared:
                chosen[index[shared]] = sample_categorical(probs[shared], None)
            for j, r in enumerate(idx):
                if rows[r].generator is not None:
                    chosen[r] = sample_categorical(probs[j : j + 1], rows[r].generator)[0]
        want = [r for r, s in enumerate(rows) if s is not None and s.params.logprobs is not None]
        logps: dict[int, tuple[float, list[tuple[int, float]] | None]] = {}
        if want:
            raw = logits[want].log_softmax(-1)
            picked = raw.gather(-1, chosen[want][:, None]).squeeze(-1).tolist()
            k = max(rows[r].params.logprobs or 0 for r in want)
            top = raw.topk(k, dim=-1) if k else None
            for j, r in enumerate(want):
                kr = rows[r].params.logprobs or 0
                pairs = (
                    list(zip(top.indices[j, :kr].tolist(), top.values[j, :kr].tolist(), strict=True))
                    if kr
                    else None
                )
                logps[r] = (picked[j], pairs)
        tokens = chosen.tolist()
        return [(t, TokenEvent(t, *logps[r]) if r in logps else TokenEvent(t)) for r, t in enumerate(tokens)]

    # ----------------------------------------------------------------------------- the cache

    def _select(self, keep: list[int]) -> None:
        self._rows = [self._rows[r] for r in keep]
        if not keep:
            self._logits = None
            return
        index = torch.tensor(keep, device=self.device)
        self.decoder.select(index)
        self._trim()

    def _trim(self) -> None:
        """Drop leading cache columns no live row attends to."""
        d = self.decoder
        used = d.key_mask[:, : d.length].any(0)
        first = int(used.float().argmax()) if bool(used.any()) else d.length
        if first >= GROW:
            d.k = [k[:, :, first:] for k in d.k]
            d.v = [v[:, :, first:] for v in d.v]
            d.key_mask = d.key_mask[:, first:]
            d.length -= first

    def _ensure_room(self) -> None:
        d = self.decoder
        if d.length < d.key_mask.shape[1]:
            return
        b = d.key_mask.shape[0]
        pad = torch.zeros(
            (b, self.decoder.n_kv, GROW, self.decoder.head_dim), dtype=d.k[0].dtype, device=self.device
        )
        d.k = [torch.cat([k, pad], dim=2) for k in d.k]
        d.v = [torch.cat([v, pad], dim=2) for v in d.v]
        d.key_mask = torch.cat([d.key_mask, torch.zeros((b, GROW), dtype=torch.bool, device=self.device)], 1)

    def _admit(self, events: list[tuple[Stream, Event]]) -> None:
        free = [r for r, st in enumerate(self._rows) if st is None]
        room = self.max_batch_size - len(self._rows) + len(free)
        new: list[Stream] = []
        with self._cond:
            while self._waiting and len(new) < room:
                s = self._waiting.popleft()
                if s.aborted:
                    events.append((s, FinishEvent("abort")))
                else:
                    new.append(s)
        if not new:
            return
        reuse = free[: len(new)]
        logits = self._join([s.prompt_ids for s in new], reuse)
        for slot, stream in zip(reuse, new, strict=False):
            self._rows[slot] = stream
        appended = new[len(reuse) :]
        self._rows.extend(appended)
        if reuse:
            self._logits[torch.tensor(reuse, device=self.device)] = logits[: len(reuse)]
        if appended:
            tail = logits[len(reuse) :]
            self._logits = tail if self._logits is None else torch.cat([self._logits, tail])

    def _join(self, prompts: Sequence[list[int]], slots: Sequence[int] = ()) -> Tensor:
        """Prefill new rows and put their keys into the running cache: the first ``len(slots)``
        into those dead rows' slots, in place (copying only the new rows), the rest appended.
        Returns their next-token logits."""
        d = self.decoder
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        w = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), w), pad, dtype=torch.long)
        mask = torch.zeros((len(prompts), w), dtype=torch.long)
        for r, p in enumerate(prompts):
            ids[r, w - len(p) :] = torch.tensor(p)
            mask[r, w - len(p) :] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        logits, ks, vs, positions = d.prefill(ids, mask)
        first_rows = not self._rows
        if first_rows:
            d.k, d.v, d.length = [], [], w
            d.key_mask = torch.zeros((0, w + GROW), dtype=torch.bool, device=self.device)
            d.positions = torch.zeros(0, dtype=torch.long, device=self.device)
        elif w > d.length:  # room on the left for the new rows' prompts
            shift = w - d.length
            b = d.key_mask.shape[0]
            zeros = torch.zeros((b, d.n_kv, shift, d.head_dim), dtype=d.k[0].dtype, device=self.device)
            d.k = [torch.cat([zeros, k], dim=2) for k in d.k]
            d.v = [torch.cat([zeros, v], dim=2) for v in d.v]
            d.key_mask = torch.cat(
                [torch.zeros((b, shift), dtype=torch.bool, device=self.device), d.key_mask], 1
            )
            d.length = w
        t, width = d.length, d.key_mask.shape[1]
        n_slots = len(slots)
        if n_slots:
            index = torch.tensor(list(slots), device=self.device)
            d.key_mask[index] = False
            d.key_mask[index, t - w : t] = mask[:n_slots].bool()
            d.positions[index] = positions[:n_slots]
            for layer, (k, v) in enumerate(zip(ks, vs, strict=True)):
                d.k[layer][index, :, t - w : t] = k[:n_slots]
                d.v[layer][index, :, t - w : t] = v[:n_slots]
        extra = len(prompts) - n_slots
        if extra:
            new_mask = torch.zeros((extra, width), dtype=torch.bool, device=self.device)
            new_mask[:, t - w : t] = mask[n_slots:].bool()
            for layer, (k, v) in enumerate(zip(ks, vs, strict=True)):
                nk = torch.zeros((extra, d.n_kv, width, d.head_dim), dtype=k.dtype, device=self.device)
                nv = torch.zeros_like(nk)
                nk[:, :, t - w : t], nv[:, :, t - w : t] = k[n_slots:], v[n_slots:]
                if first_rows:
                    d.k.append(nk)
                    d.v.append(nv)
                else:
                    d.k[layer] = torch.cat([d.k[layer], nk])
                    d.v[layer] = torch.cat([d.v[layer], nv])
            d.key_mask = torch.cat([d.key_mask, new_mask])
            d.positions = torch.cat([d.positions, positions[n_slots:]])
        return logits
