"""JARVIS-1's multimodal memory, text-only: successful (task, state, plan) entries on disk,
retrieved by similarity of task and state.

Embedding: feature-hashed bags of word unigrams + bigrams and character trigrams (1,024
dimensions, signed hashing, L2-normalised) — fully offline, deterministic and fast; the
task and the state are embedded apart and scored ``task_weight·cos(task) + (1 −
task_weight)·cos(state)``, so plans for the same task come first and, among them, those made
from the most similar situation.
"""

from __future__ import annotations

import json
import os
import re
import zlib
from dataclasses import asdict
from pathlib import Path

import numpy as np

from agents.types import MemoryEntry

DIM = 1024
_WORD = re.compile(r"[a-z_]+|\d+")


def embed(text: str, dim: int = DIM) -> np.ndarray:
    words = _WORD.findall(text.lower())
    feats = words + [f"{a} {b}" for a, b in zip(words, words[1:], strict=False)]
    squashed = " ".join(words)
    feats += [f"#{squashed[i : i + 3]}" for i in range(max(0, len(squashed) - 2))]
    vec = np.zeros(dim, dtype=np.float32)
    for f in feats:
        h = zlib.crc32(f.encode())
        vec[h % dim] += 1.0 if (h >> 16) & 1 else -1.0
    norm = np.linalg.norm(vec)
    return vec / norm if norm > 0 else vec


class PlanMemory:
    """Entries live in memory and in ``path`` (JSONL) when given; ``save`` rewrites it
    atomically. Workers read a snapshot; the parent merges their new entries."""

    def __init__(self, path: str | Path | None = None, task_weight: float = 0.7, max_entries: int = 2000):
        self.path = Path(path) if path else None
        self.task_weight = task_weight
        self.max_entries = max_entries
        self.entries: list[MemoryEntry] = []
        self._task_vecs: list[np.ndarray] = []
        self._state_vecs: list[np.ndarray] = []
        if self.path is not None and self.path.exists():
            for line in self.path.read_text().splitlines():
                if line.strip():
                    row = json.loads(line)
                    self.add(
                        MemoryEntry(row["task"], row["state"], tuple(row["plan"]), row.get("success", True))
                    )

    def __len__(self) -> int:
        return len(self.entries)

    def add(self, entry: MemoryEntry) -> None:
        if any(
            e.task == entry.task and e.plan == entry.plan and e.state == entry.state for e in self.entries
        ):
            return
        self.entries.append(entry)
        self._task_vecs.append(embed(entry.task))
        self._state_vecs.append(embed(entry.state))
        if len(self.entries) > self.max_entries:  # forget the oldest
            del self.entries[0], self._task_vecs[0], self._state_vecs[0]

    def retrieve(self, task: str, state: str, k: int = 2) -> list[MemoryEntry]:
        """The ``k`` most similar successful entries, best first."""
        if not self.entries:
            return []
        tv, sv = embed(task), embed(state)
        scores = self.task_weight * (np.stack(self._task_vecs) @ tv) + (1 - self.task_weight) * (
            np.stack(self._state_vecs) @ sv
        )
        order = [i for i in np.argsort(-scores, kind="stable") if self.entries[i].success]
        return [self.entries[i] for i in order[:k]]

    def save(self, path: str | Path | None = None) -> Path:
        target = Path(path) if path else self.path
        if target is None:
            raise ValueError("PlanMemory.save needs a path")
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".tmp")
        with open(tmp, "w") as f:
            for e in self.entries:
                f.write(json.dumps({**asdict(e), "plan": list(e.plan)}) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
        return target
