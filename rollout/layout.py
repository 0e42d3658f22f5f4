"""The text around an episode's turns: where an observation ends and a sampled turn starts, and
what closes a turn. Shared by the actor's and the strategist's token sequences.

Plain (tiny and chat models read the same)::

    {instruction}\\n\\n{observation 0}{cue}{turn 0}\\n{observation 1}{cue}{turn 1}\\n...

The actor's cue is ``\\n> ``. With ``chat`` the instruction is the system message, each
observation a user message and each turn an assistant message, in the tokenizer's own chat
template; the template is rendered once around placeholders to learn the text between turns, so
a history is only ever appended to.
"""

from __future__ import annotations

from dataclasses import dataclass

ACTION_CUE = "\n> "


@dataclass(frozen=True)
class Layout:
    """``head`` + observation + ``cue`` is the prompt; after a sampled turn comes ``closing``,
    then the next observation (the environment's tokens)."""

    head: str  # before the first observation
    cue: str  # after an observation: where the model's turn starts
    close: str  # after a turn, before the next observation
    chat: bool = False
    eos_text: str = ""  # the chat template's end of turn when it is the EOS token

    def opening(self, obs: str) -> str:
        return self.head + obs + self.cue

    def closing(self, stopped: bool, on_eos: bool) -> str:
        """What still has to follow the sampled tokens. Plain: a newline, unless the ``\\n``
        stop already wrote it. Chat: the end of the assistant turn, less the EOS token when the
        model closed its turn with it."""
        if not self.chat:
            return "" if stopped and not on_eos else self.close
        if on_eos and self.eos_text and self.close.startswith(self.eos_text):
            return self.close[len(self.eos_text) :]
        return self.close


_U, _A = "\x00OBSERVATION\x00", "\x00ACTION\x00"


def layout_for(instruction: str, chat: bool, tokenizer, cue: str = ACTION_CUE) -> Layout:
    """The plain layout (``cue`` after each observation), or the pieces of the tokenizer's chat
    template (rendered once around placeholder turns: a 2-turn chat vs a 1-turn chat gives the
    text between turns)."""
    if not chat:
        head = f"{instruction}\n\n" if instruction else ""
        return Layout(head, cue, "\n")
    system = [{"role": "system", "content": instruction}] if instruction else []
    one = tokenizer.apply_chat_template(
        [*system, {"role": "user", "content": _U}], tokenize=False, add_generation_prompt=True
    )
    two = tokenizer.apply_chat_template(
        [
            *system,
            {"role": "user", "content": _U},
            {"role": "assistant", "content": _A},
            {"role": "user", "content": _U},
        ],
        tokenize=False,
        add_generation_prompt=True,
    )
    head, chat_cue = one.split(_U)
    after_action = two.split(_A, 1)[1]
    close, rest = after_action.split(_U, 1)
    if rest != chat_cue or not two.startswith(head):
        raise ValueError("the chat template does not append turns; use episodes.chat: false")
    eos = tokenizer.eos_token_id
    return Layout(
        head, chat_cue, close, chat=True, eos_text=tokenizer.decode([eos]) if eos is not None else ""
    )


def first_line(text: str) -> str:
    """A sampled turn's text: its first line (actions and thoughts are one line)."""
    return text.strip().split("\n", 1)[0].strip()
