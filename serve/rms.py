"""Reward models the server loads by path, and the batching that lets every live sample of
every request share one RM forward.

A call (``score``, ``prefix_q``, ``step_scores``) joins the pending batch of its RM and
operation; the batch runs one event-loop iteration later, after every request woken by the same
decode step has added its call, in a single worker thread (RM forwards never run two at once,
so they do not fight the decode thread for more than one core's worth of threads).

A GC-RM that shares the policy's tokenizer scores prefixes incrementally: each sample keeps
the RM trunk's KV cache over the tokens it has scored (``QState``), so a check every k tokens
costs k new token positions, not a forward over the whole prompt and answer again.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rewards.preferences import appends_eos
from rewards.reward_model import GOAL_FILE, GoalConditionedRM, ProcessRM, RewardModel
from telos.errors import UserError

RM_KINDS = ("bt", "gcrm", "prm")


def detect_kind(path: Path) -> str:
    """gcrm: a goal vector beside the checkpoint; prm: a token-classification head; else bt."""
    if (path / GOAL_FILE).is_file():
        return "gcrm"
    config = path / "config.json"
    if not config.is_file():
        raise UserError(f"reward model {path} has no config.json (not a `trainer: rm` final/ directory)")
    archs = json.loads(config.read_text()).get("architectures") or []
    return "prm" if any("TokenClassification" in a for a in archs) else "bt"


def parse_rm_flags(values: list[str]) -> dict[str, str]:
    """``--rm NAME=PATH`` (repeatable) → {name: path}; one error line for a malformed flag."""
    out: dict[str, str] = {}
    for v in values:
        name, sep, path = v.partition("=")
        if not sep or not name or not path:
            raise UserError(f"--rm {v!r} is not NAME=PATH (e.g. --rm gcrm=runs/rm-gcrm/final)")
        if name in out:
            raise UserError(f"--rm name {name!r} is given twice")
        out[name] = path
    return out


@dataclass
class LoadedRM:
    name: str
    kind: str
    path: str
    model: Any
    calls: int = 0
    seconds: float = 0.0

    def describe(self) -> dict[str, Any]:
        meta = getattr(self.model, "meta", {}) if self.kind == "gcrm" else {}
        out = {"id": self.name, "object": "reward_model", "kind": self.kind, "path": self.path}
        if self.kind == "prm":
            out["step_separator"] = self.model.separator
        if meta:
            out["goal"] = meta
        return out


@dataclass
class QState:
    """One sample's incremental GC-RM state: the trunk's KV cache and Q_t of every position
    scored so far (prompt positions included)."""

    cache: Any = None
    q: list[float] = field(default_factory=list)


@dataclass
class _Pending:
    items: list[tuple[tuple, asyncio.Future]] = field(default_factory=list)
    scheduled: bool = False


def check_rm_paths(paths: dict[str, str]) -> dict[str, str]:
    """Each ``--rm`` directory exists and holds a reward model: {name: kind}. Cheap, so the
    server checks it before loading the policy."""
    kinds = {}
    for name, path in paths.items():
        if not Path(path).is_dir():
            raise UserError(f"--rm {name}={path}: not a directory")
        kinds[name] = detect_kind(Path(path))
    return kinds


class RMPool:
    """The served RMs by name, with batched async scoring."""

    def __init__(self, paths: dict[str, str], device: str | None = None) -> None:
        self.rms: dict[str, LoadedRM] = {}
        kinds = check_rm_paths(paths)
        for name, path in paths.items():
            p = Path(path)
            kind = kinds[name]
            cls = {"gcrm": GoalConditionedRM, "prm": ProcessRM, "bt": RewardModel}[kind]
            self.rms[name] = LoadedRM(name, kind, str(p), cls.from_pretrained(p, device=device))
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="telos-rm")
        self._pending: dict[tuple[str, str], _Pending] = {}

    def get(self, name: str | None, kinds: tuple[str, ...], param: str = "steering.rm") -> LoadedRM:
        """The RM called ``name``, or the only one of a fitting kind when ``name`` is None."""
        from serve.protocol import APIError

        if name is None:
            fitting = [r for r in self.rms.values() if r.kind in kinds]
            if len(fitting) == 1:
                return fitting[0]
            have = ", ".join(f"{r.name} ({r.kind})" for r in self.rms.values()) or "none loaded"
            raise APIError(
                400, f"{param}: name a reward model of kind {'/'.join(kinds)}; served: {have}", param
            )
        rm = self.rms.get(name)
        if rm is None:
            have = ", ".join(self.rms) or "none (start the server with --rm NAME=PATH)"
            raise APIError(404, f"reward model {name!r} not found; served: {have}", param, "model_not_found")
        if rm.kind not in kinds:
            raise APIError(400, f"{param}: {name!r} is a {rm.kind} RM; this needs {'/'.join(kinds)}", param)
        return rm

    # --------------------------------------------------------------------------- batched calls

    async def score(self, rm: LoadedRM, prompt: str, completion: str) -> float:
        """The RM's scalar reward of a finished answer (a PRM: not here, see step_scores)."""
        return await self._call(rm, "score", (prompt, completion))

    async def prefix_q(self, rm: LoadedRM, prompt: str, partial: str) -> list[float]:
        """Q_t = cos(h_t, g) for every token of a partial answer (no EOS appended)."""
        return await self._call(rm, "prefix_q", (prompt, partial))

    async def step_scores(self, rm: LoadedRM, prompt: str, steps: list[str]) -> list[float]:
        return await self._call(rm, "steps", (prompt, steps))

    async def full_q(self, rm: LoadedRM, prompt: str, completion: str) -> list[float]:
        return await self._call(rm, "full_q", (prompt, completion))

    async def q_incremental(
        self, rm: LoadedRM, state: QState, ids: list[int], prompt_len: int
    ) -> list[float]:
        """Q_t of ``ids[prompt_len:]``, computing only the positions ``state`` has not seen."""
        return await self._call(rm, "q_ids", (state, ids, prompt_len))

    def shares_tokenizer(self, rm: LoadedRM, tokenizer) -> bool:
        """Whether the RM reads the policy's token ids as they are (same vocabulary), so
        generated ids can be scored without decoding and re-tokenizing."""
        a, b = rm.model.tokenizer, tokenizer
        probe = "The answer is 42.\n  Check: 6 × 7 = 42"
        return len(a) == len(b) and a(probe)["input_ids"] == b(probe)["input_ids"]

    async def _call(self, rm: LoadedRM, op: str, args: tuple):
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        pending = self._pending.setdefault((rm.name, op), _Pending())
        pending.items.append((args, fut))
        if not pending.scheduled:
            pending.scheduled = True
            loop.call_soon(lambda: asyncio.ensure_future(self._flush(rm, op)))
        return await fut

    async def _flush(self, rm: LoadedRM, op: str) -> None:
        pending = self._pending.pop((rm.name, op))
        items = [(a, f) for a, f in pending.items if not f.cancelled()]
        if not items:
            return
        run = self._runner(rm, op)
        start = time.perf_counter()
        try:
            results = await asyncio.get_running_loop().run_in_executor(self._pool, run, [a for a, _ in items])
        except Exception as e:  # noqa: BLE001 - every waiter gets the failure
            for _, f in items:
                if not f.done():
                    f.set_exception(e)
            return
        rm.calls += 1
        rm.seconds += time.perf_counter() - start
        for (_, f), r in zip(items, results, strict=True):
            if not f.done():
                f.set_result(r)

    def _runner(self, rm: LoadedRM, op: str) -> Callable[[list[tuple]], list]:
        m = rm.model
        if op == "score":
            return lambda batch: m.score([p for p, _ in batch], [c for _, c in batch])
        if op == "full_q":
            return lambda batch: m.q_values([p for p, _ in batch], [c for _, c in batch])
        if op == "prefix_q":
            drop_eos = appends_eos(m.tokenizer)

            def prefix(batch):
                qs = m.q_values([p for p, _ in batch], [c for _, c in batch])
                return [q[:-1] if drop_eos and len(q) > 1 else q for q in qs]

            return prefix
        if op == "q_ids":
            return lambda batch: incremental_q_batch(m, batch)
        if op == "steps":
            return lambda batch: m.step_scores([p for p, _ in batch], [s for _, s in batch])
        raise ValueError(op)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def incremental_q_batch(
    rm: GoalConditionedRM, batch: list[tuple[QState, list[int], int]]
) -> list[list[float]]:
    """``incremental_q`` for many samples: those with as many positions scored and as many to
    add (the samples of one request checked at the same decode step) share one forward, their
    KV caches stacked along the batch."""
    groups: dict[tuple[int, int], list[int]] = {}
    for i, (state, ids, _) in enumerate(batch):
        groups.setdefault((len(state.q), len(ids)), []).append(i)
    for (done, total), members in groups.items():
        if total > done and len(members) > 1:
            _extend([batch[i][0] for i in members], [batch[i][1] for i in members], done, rm)
    return [incremental_q(rm, state, ids, start) for state, ids, start in batch]


def _extend(states: list[QState], seqs: list[list[int]], done: int, rm: GoalConditionedRM) -> None:
    import torch
    from transformers import DynamicCache

    from rewards.rm_losses import q_values

    cache = DynamicCache()
    if done:
        for layer in range(len(states[0].cache.layers)):
            keys = torch.cat([st.cache.layers[layer].keys for st in states])
            values = torch.cat([st.cache.layers[layer].values for st in states])
            cache.update(keys, values, layer)
    new = torch.tensor([ids[done:] for ids in seqs], device=rm.device)
    positions = torch.arange(done, len(seqs[0]), device=rm.device)[None].expand(len(seqs), -1)
    with torch.no_grad():
        hidden = rm.net.trunk(
            input_ids=new, position_ids=positions, past_key_values=cache, use_cache=True
        ).last_hidden_state
    q = q_values(hidden.float(), rm.goal).tolist()
    for row, st in enumerate(states):
        own = DynamicCache()
        for layer, lay in enumerate(cache.layers):
            own.update(lay.keys[row : row + 1].clone(), lay.values[row : row + 1].clone(), layer)
        st.cache = own
        st.q += q[row]


def incremental_q(rm: GoalConditionedRM, state: QState, ids: list[int], prompt_len: int) -> list[float]:
    """Extend ``state`` to cover ``ids`` (one trunk forward over the new positions through its
    KV cache) and return Q_t = cos(h_t, g) for the response positions ``ids[prompt_len:]``."""
    import torch
    from transformers import DynamicCache

    from rewards.rm_losses import q_values

    done = len(state.q)
    if len(ids) > done:
        if state.cache is None:
            state.cache = DynamicCache()
        new = torch.tensor([ids[done:]], device=rm.device)
        positions = torch.arange(done, len(ids), device=rm.device)[None]
        with torch.no_grad():
            hidden = rm.net.trunk(
                input_ids=new, position_ids=positions, past_key_values=state.cache, use_cache=True
            ).last_hidden_state
        state.q += q_values(hidden[0].float(), rm.goal).tolist()
    return state.q[prompt_len : len(ids)]
