"""Reward-model data: preference pairs and stepwise labels, in TRL's dataset formats, tokenized.

Preference rows (``{prompt, chosen, rejected}`` with an optional ``margin``):

- explicit prompt, plain text:   ``{"prompt": "2+3=", "chosen": " 5", "rejected": " 6"}``
- implicit prompt, plain text:   ``{"chosen": "2+3= 5", "rejected": "2+3= 6"}``
- conversational (explicit or implicit prompt): lists of ``{"role", "content"}`` messages,
  rendered with the tokenizer's chat template.

Stepwise rows (process supervision): ``{"prompt", "completions": [step, ...], "labels": [...]}``
with one label per step, a bool (hard) or a float in [0, 1] (soft).

Prompt and response are tokenized separately and concatenated (response + EOS), so the first
response token's index is exact — the goal-conditioned loss samples positions in the response.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from telos.errors import UserError

PAIR_FORMATS = "{prompt, chosen, rejected[, margin]} as strings or chat messages, or {chosen, rejected}"
STEP_FORMAT = "{prompt, completions: [step, ...], labels: [bool | float, ...]}"


@dataclass
class PairExample:
    chosen_ids: list[int]
    rejected_ids: list[int]
    chosen_start: int  # index of the first response token in chosen_ids
    rejected_start: int
    margin: float = 0.0


@dataclass
class StepExample:
    input_ids: list[int]
    label_positions: list[int]  # the last token of each step
    labels: list[float]


def _is_messages(value: Any) -> bool:
    return isinstance(value, list) and all(
        isinstance(m, dict) and "role" in m and "content" in m for m in value
    )


def _render_chat(tokenizer, prompt: list[dict], response: list[dict], where: str) -> tuple[str, str]:
    if not getattr(tokenizer, "chat_template", None):
        raise UserError(
            f"{where}: conversational rows need a tokenizer with a chat template; this one has none"
        )
    # an implicit prompt has no messages of its own (templates refuse an empty conversation)
    prompt_text = (
        tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True) if prompt else ""
    )
    full = tokenizer.apply_chat_template(prompt + response, tokenize=False)
    if not full.startswith(prompt_text):  # templates that rewrite earlier turns: keep it whole
        return "", full
    return prompt_text, full[len(prompt_text) :]


def pair_texts(row: dict, where: str, tokenizer=None) -> tuple[str, str, str, float]:
    """(prompt, chosen response, rejected response, margin) as text from any supported row."""
    if not isinstance(row, dict) or "chosen" not in row or "rejected" not in row:
        fields = sorted(row) if isinstance(row, dict) else type(row).__name__
        raise UserError(f"{where} is not a preference pair (fields: {fields}); valid: {PAIR_FORMATS}")
    prompt, chosen, rejected = row.get("prompt", ""), row["chosen"], row["rejected"]
    margin = row.get("margin", 0.0)
    if not isinstance(margin, int | float) or isinstance(margin, bool):
        raise UserError(f"{where}: 'margin' must be a number, got {margin!r}")
    if _is_messages(chosen) and _is_messages(rejected) and (prompt == "" or _is_messages(prompt)):
        prompt_msgs = prompt or []
        p, c = _render_chat(tokenizer, prompt_msgs, chosen, where)
        p2, r = _render_chat(tokenizer, prompt_msgs, rejected, where)
        if p != p2:  # implicit prompt: the shared chat prefix is not split out
            return "", p + c, p2 + r, float(margin)
        return p, c, r, float(margin)
    if not all(isinstance(v, str) for v in (prompt, chosen, rejected)):
        raise UserError(
            f"{where}: prompt/chosen/rejected must all be strings or all chat messages; valid: {PAIR_FORMATS}"
        )
    return prompt, chosen, rejected, float(margin)


def _ids(tokenizer, text: str, special: bool) -> list[int]:
    return tokenizer(text, add_special_tokens=special)["input_ids"] if text else []


def appends_eos(tokenizer) -> bool:
    """Whether responses end with EOS. Not when EOS is also the pad token: transformers'
    sequence classifiers score the last non-pad token, so a trailing EOS would be skipped and
    the saved model would score a different token than training did."""
    return tokenizer.eos_token_id is not None and tokenizer.eos_token_id != tokenizer.pad_token_id


def response_ids(tokenizer, prompt: str, response: str) -> tuple[list[int], int]:
    """``prompt tokens + response tokens [+ EOS]`` and the index of the first response token."""
    p = _ids(tokenizer, prompt, special=True)
    r = _ids(tokenizer, response, special=not p)
    eos = [tokenizer.eos_token_id] if appends_eos(tokenizer) else []
    return p + r + eos, len(p)


def tokenize_pairs(
    rows: list[dict], tokenizer, max_length: int | None = None, source: str = "data"
) -> tuple[list[PairExample], int]:
    """Tokenize preference rows; pairs longer than ``max_length`` are dropped (as TRL does)
    and counted. Returns (examples, dropped)."""
    out, dropped = [], 0
    for i, row in enumerate(rows):
        prompt, chosen, rejected, margin = pair_texts(row, f"row {i} of {source}", tokenizer)
        c_ids, c_start = response_ids(tokenizer, prompt, chosen)
        r_ids, r_start = response_ids(tokenizer, prompt, rejected)
        if max_length is not None and max(len(c_ids), len(r_ids)) > max_length:
            dropped += 1
            continue
        out.append(PairExample(c_ids, r_ids, c_start, r_start, margin))
    return out, dropped


def step_rows_check(row: dict, where: str) -> tuple[str, list[str], list[float]]:
    if not isinstance(row, dict) or not {"prompt", "completions", "labels"} <= set(row):
        fields = sorted(row) if isinstance(row, dict) else type(row).__name__
        raise UserError(f"{where} is not a stepwise row (fields: {fields}); valid: {STEP_FORMAT}")
    steps, labels = row["completions"], row["labels"]
    if not isinstance(steps, list) or not isinstance(labels, list) or len(steps) != len(labels) or not steps:
        raise UserError(f"{where}: 'completions' and 'labels' must be non-empty lists of equal length")
    values = []
    for label in labels:
        value = float(label) if isinstance(label, bool | int | float) else None
        if value is None or not 0.0 <= value <= 1.0:
            raise UserError(f"{where}: labels must be bools or numbers in [0, 1], got {label!r}")
        values.append(value)
    return str(row["prompt"]), [str(s) for s in steps], values


def tokenize_steps(
    rows: list[dict], tokenizer, separator: str = "\n", max_length: int | None = None, source: str = "data"
) -> tuple[list[StepExample], int]:
    """Prompt, then each step followed by ``separator``; a step's label sits on its last token
    (the separator's). Rows longer than ``max_length`` are dropped and counted."""
    out, dropped = [], 0
    for i, row in enumerate(rows):
        prompt, steps, labels = step_rows_check(row, f"row {i} of {source}")
        ids = _ids(tokenizer, prompt, special=True)
        positions = []
        for step in steps:
            ids += _ids(tokenizer, step + separator, special=False)
            positions.append(len(ids) - 1)
        if max_length is not None and len(ids) > max_length:
            dropped += 1
            continue
        out.append(StepExample(ids, positions, labels))
    return out, dropped
