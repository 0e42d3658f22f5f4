"""Seeded procedural arithmetic word problems with worked solutions.

Train and test splits never overlap: a problem belongs to the test split iff a hash of its
text falls in the test bucket, and each split's generator rejects problems of the other.
Solutions end with a GSM8K-style ``#### <answer>`` line so the same verifiers apply.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable

from telos.errors import UserError
from telos.registry import Registry

PROCEDURAL_TASKS: Registry[Callable[..., dict]] = Registry("procedural task")

_NAMES = ["Tom", "Ana", "Li", "Sam", "Eva", "Max", "Ida", "Ben", "Zoe", "Raj", "Mia", "Leo"]
_ITEMS = ["apples", "coins", "books", "cards", "eggs", "pens", "shells", "stamps", "marbles"]
_ADD = ["{p} buys {n} more.", "{p} finds {n} more.", "{p} gets {n} more.", "{p} wins {n} more."]
_SUB = ["{p} gives away {n}.", "{p} loses {n}.", "{p} sells {n}.", "{p} uses {n}."]
TEST_BUCKETS = 5  # one hash bucket in five is the test split


def _is_test(text: str) -> bool:
    return int(hashlib.sha1(text.encode()).hexdigest(), 16) % TEST_BUCKETS == 0


@PROCEDURAL_TASKS.register("arith")
def arith_problem(
    rng: random.Random,
    *,
    min_ops: int = 2,
    max_ops: int = 3,
    max_value: int = 99,
    max_operand: int | None = None,
    direct_frac: float = 0.0,
) -> dict:
    """A word problem: a start value ≤ ``max_value``, then ``min_ops..max_ops`` additions or
    subtractions of numbers ≤ ``max_operand`` (default ``max_value``); never below zero.

    With probability ``direct_frac`` the solution states only the answer (``#### n``) instead
    of working it step by step: a harder habit for a small model, which RL can unlearn.
    """
    name, item = rng.choice(_NAMES), rng.choice(_ITEMS)
    pronoun = rng.choice(["He", "She"])
    value = rng.randint(1, max_value)
    sentences = [f"{name} has {value} {item}."]
    steps = []
    for _ in range(rng.randint(min_ops, max_ops)):
        if value > 1 and rng.random() < 0.5:
            n = rng.randint(1, min(value - 1, max_operand or max_value))
            sentences.append(rng.choice(_SUB).format(p=pronoun, n=n))
            steps.append(f"{value}-{n}={value - n}")
            value -= n
        else:
            n = rng.randint(1, max_operand or max_value)
            sentences.append(rng.choice(_ADD).format(p=pronoun, n=n))
            steps.append(f"{value}+{n}={value + n}")
            value += n
    sentences.append(f"How many {item} does {name} have now?")
    work = "" if rng.random() < direct_frac else "\n".join(steps) + "\n"
    return {"prompt": " ".join(sentences), "answer": str(value), "solution": f"{work}#### {value}"}


def generate(name: str, split: str = "train", n: int = 1000, seed: int = 0, **kwargs) -> list[dict]:
    """``n`` distinct problems of task ``name`` for ``split`` ("train" or "test")."""
    if split not in ("train", "test"):
        raise UserError(f"procedural split {split!r} is not valid; valid: train, test")
    make = PROCEDURAL_TASKS.get(name)
    rng = random.Random(f"{name}:{split}:{seed}")
    want_test = split == "test"
    rows: list[dict] = []
    seen: set[str] = set()
    attempts = 0
    while len(rows) < n:
        attempts += 1
        if attempts > 200 * n + 1000:
            raise UserError(f"procedural:{name} cannot make {n} distinct {split} problems; lower n")
        try:
            row = make(rng, **kwargs)
        except TypeError as e:
            raise UserError(f"procedural:{name}: {e}") from None
        if row["prompt"] in seen or _is_test(row["prompt"]) != want_test:
            continue
        seen.add(row["prompt"])
        rows.append(row)
    return rows
