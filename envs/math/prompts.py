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


def render_messages(messages: list[dict[str, str]], tokenizer: Any) -> str:
    """A conversation as the policy's prompt text: the tokenizer's chat template with the
    generation prompt (continuing a final assistant message instead, as TRL does). A tokenizer
    without a chat template (the tiny local model, base models) gets the contents one per line,
    which for one user message is exactly the standard format's "plain" prompt."""
    if tokenizer is None or not getattr(tokenizer, "chat_template", None):
        return "".join(f"{m['content']}\n" for m in messages)
    final_assistant = messages[-1]["role"] == "assistant"
    return tokenizer.apply_chat_template(
        messages,
        tokenize=False,
        add_generation_prompt=not final_assistant,
        continue_final_message=final_assistant,
    )


def format_prompt(
    row: dict[str, Any], template: str = "plain", tokenizer: Any = None, chat: bool = False
) -> str:
    """The prompt text for ``row``: ``template`` (a name in TEMPLATES or a string containing
    ``{prompt}``) filled with ``row["prompt"]``.

    With ``chat=True`` the filled text becomes a single user message rendered by the tokenizer's
    chat template, generation prompt included. A conversational row (TRL's format: ``prompt`` is
    a list of ``{"role", "content"}`` messages) is always rendered by the chat template; a
    template other than "plain" fills its last user message.
    """
    text = _resolve_template(template)
    try:
        question = row["prompt"]
    except KeyError:
        raise UserError(
            f"data row has no 'prompt' field; fields: {', '.join(map(str, row)) or '(none)'}"
        ) from None
    if isinstance(question, list):
        messages = [dict(m) for m in question]
        users = [i for i, m in enumerate(messages) if m.get("role") == "user"]
        if template != "plain" and users:
            last = messages[users[-1]]
            last["content"] = text.replace("{prompt}", str(last["content"])).rstrip("\n")
        return render_messages(messages, tokenizer)
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
