"""Answer verifiers: is a completion's final answer equal to the gold answer?

Each returns ``True`` / ``False``, or ``None`` when the sample cannot be scored because the gold
answer itself is unusable (the trainer excludes and counts those, never scores them 0). A
malformed completion is the model's fault, so it is ``False``; a verifier never raises on one.
"""

from __future__ import annotations

import functools
import logging
import threading
from decimal import Decimal, localcontext
from typing import Any

from envs.math.answers import extract_answer, extract_hash_answer, normalize_number

__all__ = ["MATH_VERIFY_TIMEOUT_S", "verify_gsm8k", "verify_math", "verify_numeric"]

logger = logging.getLogger(__name__)


# math_verify's own per-call limit (seconds). It is enforced with signal.alarm, which Python
# allows only in the main thread; see _timeout().
MATH_VERIFY_TIMEOUT_S = 5
# Longer "final answers" are rambling, not answers; refusing them also bounds sympy's work when
# no timeout can be set (worker threads).
_MAX_ANSWER_CHARS = 1000
# A numeric exponent / factorial argument above this makes sympy build numbers with more digits
# than any gold answer has (10^{10^{10}} would take minutes and gigabytes), so such an answer is
# judged wrong without evaluating it.
_MAX_EXPONENT = 10_000
_MAX_SYMBOLIC_EXPONENT = 100


def _drop_no_timeout_warning(record: logging.LogRecord) -> bool:
    # math_verify warns "Timeout is disabled ..." whenever it is called with no timeout, which we
    # do on purpose in worker threads (see _timeout); its once-only flag races, so the warning
    # repeats across threads and floods training logs. Other math_verify warnings still pass.
    return not record.getMessage().startswith("Timeout is disabled")


for _name in ("math_verify.parser", "math_verify.grader"):
    logging.getLogger(_name).addFilter(_drop_no_timeout_warning)


def verify_numeric(pred: str | None, gold: str, rel_tol: float = 1e-6, abs_tol: float = 1e-9) -> bool | None:
    """Numeric equality of two answer strings within ``rel_tol`` / ``abs_tol``.

    ``pred`` None or not a number → False; ``gold`` not a number → None. Compared as Decimals,
    so long integers keep every digit (floats would call 10**20 and 10**20 + 1 equal).
    """
    g = normalize_number(gold) if isinstance(gold, str) else None
    if g is None:
        return None
    if pred is None:
        return False
    p = normalize_number(pred) if isinstance(pred, str) else None
    if p is None:
        return False
    a, b = Decimal(p), Decimal(g)
    if a == b:  # exact: Decimal comparison ignores context precision
        return True
    with localcontext() as ctx:
        # 60 significant digits: rounding in the subtraction is far below any rel_tol.
        ctx.prec = 60
        diff = abs(a - b)
        bound = max(Decimal(rel_tol) * max(abs(a), abs(b)), Decimal(abs_tol))
        return diff <= bound


def verify_gsm8k(completion: str, gold: str) -> bool | None:
    """GSM8K grading: the number after the completion's last ``#### `` equals the gold number.

    Only the ``####`` line counts (no \\boxed or "The answer is" fallback), as in GSM8K's own
    grader. A gold that is a full GSM8K solution is reduced to its ``####`` answer first.
    """
    if not isinstance(gold, str):
        return None
    if "####" in gold:
        gold = extract_hash_answer(gold) or gold
    pred = extract_hash_answer(completion) if isinstance(completion, str) else None
    return verify_numeric(pred, gold)


def _timeout() -> int | None:
    # math_verify's timeouts use signal.alarm, which raises ValueError outside the main thread
    # (rollout scoring may run in a thread pool). There we pass None (no alarm) and rely on
    # _MAX_ANSWER_CHARS and _is_huge() to keep sympy's work bounded.
    return MATH_VERIFY_TIMEOUT_S if threading.current_thread() is threading.main_thread() else None


def _mv_parse(latex: str) -> list[Any]:
    from math_verify import parse

    # "$...$" marks the text as LaTeX math, so math_verify parses the whole answer rather than
    # hunting for an expression inside it.
    return parse(f"${latex}$", parsing_timeout=_timeout())


@functools.lru_cache(maxsize=4096)
def _parse_gold(gold: str) -> tuple[Any, ...]:
    # Cached: each gold answer is compared with a whole group of samples.
    return tuple(_mv_parse(gold))


def _exceeds(x: Any, limit: int = _MAX_EXPONENT) -> bool:
    try:
        return bool(abs(x.evalf(5)) > limit)  # evalf handles towers without expanding
    except Exception:
        return False


def _is_huge(expr: Any) -> bool:
    """True if evaluating ``expr`` would build an astronomically large number."""
    import sympy

    if not isinstance(expr, sympy.Basic):
        return False
    for node in sympy.preorder_traversal(expr):
        if isinstance(node, sympy.Pow):
            base, exp = node.args
            # A symbolic base is expanded when compared: (x+1)^{500} already takes seconds.
            limit = _MAX_EXPONENT if base.is_number else _MAX_SYMBOLIC_EXPONENT
            if exp.is_number and base not in (0, 1, -1) and _exceeds(exp, limit):
                return True
        elif isinstance(node, (sympy.factorial, sympy.factorial2, sympy.binomial, sympy.gamma)) and any(
            arg.is_number and _exceeds(arg) for arg in node.args
        ):
            return True
    return False


def verify_math(completion: str, gold: str) -> bool | None:
    """MATH-style grading: the completion's final answer is mathematically equal to ``gold``
    (``\\frac{1}{2}`` = ``0.5``), using math_verify.

    Fast paths first: a ``####``, ``\\boxed{}`` or "The answer is" answer is taken as the answer
    (plain numbers on both sides compared without sympy). A completion with none of them is
    handed to math_verify whole, with its default extraction (LaTeX and plain expressions), as
    TRL's ``accuracy_reward`` hands it the whole completion: "Answer: 3/4", "So x = 5." and
    "Answer: $3/4$" are then read. Returns None when ``gold`` cannot be parsed; False for a
    missing or malformed answer; never raises.
    """
    if not isinstance(gold, str) or not gold.strip():
        return None
    if not isinstance(completion, str):
        return False
    try:
        pred = extract_answer(completion)
        if pred is not None and normalize_number(gold) is not None and normalize_number(pred) is not None:
            return verify_numeric(pred, gold)
        gold_parsed = _parse_gold(gold)
        if all(isinstance(g, str) for g in gold_parsed):
            # math_verify could only fall back to the raw string: the gold is malformed LaTeX.
            return None
        if pred is not None and len(pred) > _MAX_ANSWER_CHARS:
            return False
        from math_verify import parse, verify

        pred_parsed = _mv_parse(pred) if pred is not None else parse(completion, parsing_timeout=_timeout())
        if not pred_parsed or any(_is_huge(p) for p in pred_parsed):
            return False
        return bool(verify(list(gold_parsed), pred_parsed, timeout_seconds=_timeout()))
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException:
        # BaseException because math_verify's TimeoutException derives from it. A garbage answer
        # that trips sympy must not kill a training run: log it and score it wrong.
        logger.debug("verify_math failed on %r vs %r", completion, gold, exc_info=True)
        return False
