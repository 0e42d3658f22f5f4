"""The ``data:`` section of the math trainers (RL and SFT): problems from a data spec, a prompt
template, the chat template, and the checks `telos check` runs on them before any model loads."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from envs.math.sources import load_rows
from telos.errors import UserError
from telos.schema import flag, local_path, number, text
from trainers.common.checks import about

CHECK_ROWS = 16  # rows of a local data file that `telos check` validates


@dataclass
class DataSection:
    train: Annotated[
        str,
        text(
            "problems: procedural:arith, file.jsonl, hf:openai/gsm8k:main@train; or games: env:textworld-cooking?..."
        ),
        local_path("data"),
    ]
    test: Annotated[
        str | None, text("held-out problems for greedy eval (same forms)"), local_path("data")
    ] = None
    template: Annotated[str, text("prompt template name, or a string containing {prompt}")] = "plain"
    chat: Annotated[bool, flag("wrap prompts with the tokenizer's chat template")] = False
    num_train: Annotated[int | None, number("use the first N training problems (null: all)", ge=1)] = None
    num_test: Annotated[int, number("held-out problems evaluated", ge=0)] = 200


def check_math_data(data: DataSection) -> None:
    """Each spec parses (a procedural generator makes one row with its options; a local file's
    first rows map to the contract) and the template is known."""
    from envs.math.prompts import TEMPLATES
    from envs.math.sources import parse_spec
    from envs.text.base import is_env_spec
    from envs.text.pools import parse_env_spec

    if data.test is not None and is_env_spec(data.train) != is_env_spec(data.test):
        raise UserError("'data.train' and 'data.test' must both be env: specs (games) or both problems")
    for key in ("train", "test"):
        spec = getattr(data, key)
        if spec is not None and is_env_spec(spec):
            with about(f"data.{key}"):
                parse_env_spec(spec)
        elif spec is not None:
            with about(f"data.{key}"):
                parsed = parse_spec(spec)
                if spec.startswith("procedural:"):
                    _check_procedural(spec)
                elif parsed.scheme == "file":
                    # a malformed row must fail here, not after the model is built
                    load_rows(spec, limit=CHECK_ROWS)
    t = data.template
    if t not in TEMPLATES and "{prompt}" not in t:
        raise UserError(
            f"'data.template' is {t!r}; valid: {', '.join(TEMPLATES)} or a string containing {{prompt}}"
        )


def _check_procedural(spec: str) -> None:
    """Generate one row with the spec's settings: catches unknown generators and options
    (and bad values such as n=abc) before any model is loaded."""
    from envs.math.procedural import PROCEDURAL_TASKS
    from envs.math.sources import parse_spec

    parsed = parse_spec(spec)
    PROCEDURAL_TASKS.get(parsed.name)
    params = dict(parsed.params)
    n = params.pop("n", "1")
    if not str(n).isdigit():
        raise UserError(f"n must be a non-negative integer, got {n!r}")
    load_rows(f"procedural:{parsed.name}:{parsed.split or 'train'}" + _query({**params, "n": 1}))


def _query(params: dict) -> str:
    return "?" + "&".join(f"{k}={v}" for k, v in params.items()) if params else ""
