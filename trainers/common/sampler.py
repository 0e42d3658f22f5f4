"""Seeded, resumable sampling of row indices, shared by every trainer that walks a data set."""

from __future__ import annotations

import random


class PromptSampler:
    """Epoch-wise shuffled prompt indices, fully determined by (seed, cursor) so a resumed run
    draws exactly the prompts the killed run would have drawn next."""

    def __init__(self, num_rows: int, seed: int, cursor: int = 0) -> None:
        self.num_rows, self.seed, self.cursor = num_rows, seed, cursor
        self._epoch, self._order = -1, []

    def take(self, k: int) -> list[int]:
        out = []
        for _ in range(k):
            epoch, pos = divmod(self.cursor, self.num_rows)
            if epoch != self._epoch:
                self._order = list(range(self.num_rows))
                random.Random(self.seed * 100003 + epoch).shuffle(self._order)
                self._epoch = epoch
            out.append(self._order[pos])
            self.cursor += 1
        return out
