"""Final-answer extraction and number normalisation for math completions.

Pure string functions with no heavy imports: both the data loaders (gold answers inside
GSM8K / MATH solutions) and the verifiers (model outputs) use them, so one rule decides what
"the final answer" of a text is.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation, localcontext

__all__ = [
    "clean_answer",
    "extract_answer",
    "extract_boxed",
    "extract_hash_answer",
    "normalize_number",
]

# The text after the *last* "####" that has something on its line. "[ \t]*" (not "\s*") so an
# empty "#### " line never swallows the next line as its answer.
_HASH_RE = re.compile(r"####[ \t]*(\S[^\n]*)")
# "The answer is X", "the final answer is: X", "Final Answer: The final answer is X" (MATH style).
_ANSWER_IS_RE = re.compile(r"answer\s+is\s*:?[ \t]*(\S[^\n]*)", re.IGNORECASE)
_BOXED_RE = re.compile(r"\\(?:boxed|fbox)\s*\{")
# A thousands separator: a comma between a digit and exactly three digits. Stripping only these
# keeps the commas of tuples and lists ("(1, 2)") intact.
_THOUSANDS_RE = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
_NUMBER_RE = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
# Exponents beyond this are not answers anyone expects; refusing them keeps Decimal formatting
# (which writes every digit) from building gigantic strings.
_MAX_EXPONENT = 10_000


def clean_answer(s: str) -> str:
    """Strip the decoration models put around a final answer: whitespace, ``$`` signs, markdown
    bold, thousands separators and a sentence-ending period."""
    s = s.replace("\\$", "").replace("$", "").replace("**", "")
    s = s.replace("{,}", "").strip()  # LaTeX thousands separator: 10{,}000
    s = _THOUSANDS_RE.sub("", s)
    # A trailing period ends the sentence; "3." is still the number 3 after normalisation.
    while s.endswith("."):
        s = s[:-1].rstrip()
    return s


def extract_hash_answer(text: str) -> str | None:
    """The cleaned answer after the last non-empty ``#### X`` line (GSM8K style), or None."""
    matches = _HASH_RE.findall(text)
    for raw in reversed(matches):
        ans = clean_answer(raw)
        if ans:
            return ans
    return None


def extract_boxed(text: str) -> str | None:
    """The content of the last ``\\boxed{...}`` (or ``\\fbox{...}``) with balanced braces.

    Hand-written because a regex cannot match nested braces (``\\boxed{\\frac{1}{2}}``).
    A box whose braces never close is skipped in favour of an earlier, complete one.
    """
    starts = [m.end() for m in _BOXED_RE.finditer(text)]
    for start in reversed(starts):
        depth = 1
        for i in range(start, len(text)):
            ch = text[i]
            if ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
                if depth == 0:
                    inner = clean_answer(text[start:i])
                    if inner:
                        return inner
                    break
    return None


def extract_answer_is(text: str) -> str | None:
    matches = _ANSWER_IS_RE.findall(text)
    for raw in reversed(matches):
        # Cut at the end of the sentence ("The answer is 42. Because ..."); ". " rather than "."
        # so that decimals such as 3.5 survive.
        raw = re.split(r"\.\s", raw, maxsplit=1)[0]
        ans = clean_answer(raw)
        if ans:
            return ans
    return None


def extract_answer(text: str) -> str | None:
    """The final answer of a model output, or None when it states none.

    Order of preference: the last ``#### X`` (GSM8K), else the last ``\\boxed{...}`` (MATH),
    else the last "The answer is X". The result is cleaned with :func:`clean_answer`.
    """
    if not isinstance(text, str) or not text:
        return None
    for extractor in (extract_hash_answer, extract_boxed, extract_answer_is):
        ans = extractor(text)
        if ans is not None:
            return ans
    return None


def normalize_number(s: str) -> str | None:
    """Canonical decimal string of a number, or None if ``s`` is not a plain number.

    ``"1,234" -> "1234"``, ``"3.50" -> "3.5"``, ``"-0" -> "0"``, ``"$5." -> "5"``,
    ``"1e3" -> "1000"``. Fractions and LaTeX are not numbers here (see ``verify_math``).
    """
    if not isinstance(s, str):
        return None
    s = clean_answer(s)
    if not _NUMBER_RE.fullmatch(s):
        return None
    try:
        d = Decimal(s)
    except InvalidOperation:
        return None
    if not d.is_finite():
        return None
    if d.is_zero():
        return "0"  # covers "-0", "0.00", "-0e5"
    if abs(d.adjusted()) > _MAX_EXPONENT:
        return None
    # normalize() rounds to the context precision, so give it room for every digit.
    with localcontext() as ctx:
        ctx.prec = len(d.as_tuple().digits) + 2
        d = d.normalize()
    return format(d, "f")
