"""Prompt templates: how a data row's question becomes the text the policy sees."""

from __future__ import annotations

from typing import Any

from telos.errors import UserError

__all__ = ["TEMPLATES", "format_prompt"]

TEMPLATES: dict[str, str] = {
    # The tiny locally built model is trained on bare questions; any instruction text would only
    # be noise to it.
    "plain": "{prompt}\n",
    # For real models: the answer format the `gsm8k` / `format` rewards check.
    "cot": (
        "Solve the following math problem step by step. "
        "After your reasoning, write the final answer on its own last line "
        "in the form '#### <answer>'.\n\n"
        "{prompt}\n"
    ),
    # MATH-style answers (fractions, radicals, intervals) read better in LaTeX.
    "boxed": (
        "Solve the following math problem step by step. Put the final answer in \\boxed{}.\n\n{prompt}\n"
    ),
}


def _resolve_template(template: str) -> str:
    if template in TEMPLATES:
        return TEMPLATES[template]
    if "{prompt}" in template:
        return template
    raise UserError(
        f"unknown prompt template {template!r}; valid: {', '.join(sorted(TEMPLATES))} "
        "(or a template string containing {prompt})"
    )


def format_prompt(
    row: dict[str, Any], template: str = "plain", tokenizer: Any = None, chat: bool = False
) -> str:
    """The prompt text for ``row``: ``template`` (a name in TEMPLATES or a string containing
    ``{prompt}``) filled with ``row["prompt"]``.

    With ``chat=True`` the filled text becomes a single user message rendered by the tokenizer's
    chat template, generation prompt included.
    """
    text = _resolve_template(template)
    try:
        question = row["prompt"]
    except KeyError:
        raise UserError(
            f"data row has no 'prompt' field; fields: {', '.join(map(str, row)) or '(none)'}"
        ) from None
    # Plain replacement rather than str.format: LaTeX in templates ("\\boxed{}") is full of
    # braces that str.format would try to interpret.
    text = text.replace("{prompt}", str(question))
    if not chat:
        return text
    if tokenizer is None or not getattr(tokenizer, "chat_template", None):
        raise UserError(
            "chat: true needs a tokenizer with a chat template, and this model's tokenizer has "
            "none; set chat: false (the prompt is then used as plain text)"
        )
    return tokenizer.apply_chat_template(
        [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True
    )
