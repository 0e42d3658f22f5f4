"""Registered reward functions, user-function resolution and weighted scoring."""

from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import Any

import pytest

from rewards import (
    REWARD_FUNCTIONS,
    accuracy_reward,
    format_reward,
    resolve_reward_function,
    score_completions,
)
from telos.errors import UserError

PROMPTS = ["q1", "q2", "q3", "q4"]
COMPLETIONS = ["work\n#### 7", "\\boxed{\\frac{1}{2}}", "I think it is 3", "#### 5"]
ANSWERS = ["7", "0.5", "3", "\\frac{1}{"]  # the last gold is malformed: cannot score


def test_registry_names() -> None:
    assert {"accuracy", "gsm8k", "numeric", "format"} <= set(REWARD_FUNCTIONS.names())


def test_builtin_rewards() -> None:
    cols = {"answer": ANSWERS}
    acc = REWARD_FUNCTIONS.get("accuracy")(PROMPTS, COMPLETIONS, **cols)
    assert acc == [1.0, 1.0, 1.0, None]  # "I think it is 3": math_verify reads the whole text
    gsm = REWARD_FUNCTIONS.get("gsm8k")(PROMPTS, COMPLETIONS, **cols)
    assert gsm == [1.0, 0.0, 0.0, None]
    num = REWARD_FUNCTIONS.get("numeric")(PROMPTS, COMPLETIONS, **cols)
    assert num == [1.0, 0.0, 0.0, None]  # \frac{1}{2} is not a plain number
    fmt = REWARD_FUNCTIONS.get("format")(PROMPTS, COMPLETIONS, **cols)
    assert fmt == [1.0, 0.0, 0.0, 1.0]


# (completion, gold, expected): free-form final answers with no ####/\\boxed/"answer is" are
# read by math_verify over the whole completion, as TRL's accuracy_reward does.
FREE_FORM = [
    ("Answer: 3/4", "3/4", 1.0),
    ("Answer: 3/4", "\\frac{3}{4}", 1.0),
    ("So x = 5.", "5", 1.0),
    ("Answer: $3/4$", "\\frac{3}{4}", 1.0),
    ("Answer: 2/3", "3/4", 0.0),
    ("So x = 4.", "5", 0.0),
    ("no idea", "5", 0.0),
    ("work\n#### 5", "5", 1.0),  # fast paths kept
    ("\\boxed{\\frac{3}{4}}", "0.75", 1.0),
    ("#### 4", "5", 0.0),
]


@pytest.mark.parametrize(("completion", "gold", "expected"), FREE_FORM)
def test_accuracy_free_form_answers(completion: str, gold: str, expected: float) -> None:
    from math_verify import parse, verify

    assert accuracy_reward([""], [completion], answer=[gold]) == [expected]
    if "####" not in completion and "boxed" not in completion:  # = math_verify on the whole text
        assert float(verify(parse(gold), parse(completion))) == expected


def test_accuracy_equals_trl_on_latex_answers() -> None:
    """TRL 1.16's accuracy_reward (math_verify over the whole completion, LaTeX answers) on
    conversational completions: the same rewards here. (TRL reads only LaTeX, so it gives the
    plain-text "Answer: 3/4" 0 where math_verify's default reading, used here, gives 1.)"""
    from trl.rewards import accuracy_reward as trl_accuracy

    cases = [
        ("Answer: $3/4$", "\\frac{3}{4}"),
        ("The result is \\boxed{12}.", "12"),
        ("First $2$, then \\boxed{\\sqrt{2}}", "$\\sqrt{2}$"),
        ("\\boxed{7}", "8"),
        ("Answer: $2/3$", "\\frac{3}{4}"),
    ]
    completions = [[{"role": "assistant", "content": c}] for c, _ in cases]
    golds = [g for _, g in cases]
    theirs = trl_accuracy(completions, golds)
    ours = accuracy_reward([[{"role": "user", "content": "q"}]] * len(cases), completions, answer=golds)
    assert theirs == [1.0, 1.0, 1.0, 0.0, 0.0]
    assert ours == theirs


def test_format_reward_cases() -> None:
    completions = ["a\n#### 3\n\n", "#### 3\nmore text", "#### ", "", "x #### 3", "####3"]
    assert format_reward([""] * 6, completions) == [1.0, 0.0, 0.0, 0.0, 0.0, 1.0]


def test_conversational_completions_and_extra_kwargs() -> None:
    # TRL passes chat completions as message lists, plus extra kwargs such as trainer_state.
    completions = [[{"role": "assistant", "content": "#### 4"}]]
    out = REWARD_FUNCTIONS.get("gsm8k")(["q"], completions, answer=["4"], trainer_state=None)
    assert out == [1.0]


def test_missing_answer_column() -> None:
    with pytest.raises(UserError, match="needs an 'answer' column; got columns: solution"):
        REWARD_FUNCTIONS.get("accuracy")(["q"], ["#### 1"], solution=["#### 1"])


def test_reasoning_gym_reward() -> None:
    rg = pytest.importorskip("reasoning_gym")
    entry = rg.create_dataset("basic_arithmetic", size=1, seed=1)[0]
    fn = resolve_reward_function("reasoning-gym")
    good = f"#### {entry['answer']}"
    out = fn(["q"] * 3, [good, "#### 123456789", "junk"], answer=[entry["answer"]] * 3,
             metadata=[entry["metadata"]] * 3)  # fmt: skip
    assert out == [1.0, 0.0, 0.0]


# --- resolution ------------------------------------------------------------------------------


def test_resolve_registered() -> None:
    assert resolve_reward_function("format") is format_reward


def test_resolve_unknown_lists_valid_names() -> None:
    with pytest.raises(UserError) as e:
        resolve_reward_function("acuracy")
    msg = str(e.value)
    assert "unknown reward function 'acuracy'" in msg
    assert "accuracy, format, gsm8k" in msg
    assert "module.sub:function" in msg


def test_resolve_user_module() -> None:
    fn = resolve_reward_function("math:sqrt")  # any importable callable resolves
    assert fn is math.sqrt


def test_resolve_user_file(tmp_path: Path) -> None:
    f = tmp_path / "my_rewards.py"
    f.write_text("def length_reward(prompts, completions, **kw):\n    return [len(c) for c in completions]\n")
    fn = resolve_reward_function(f"{f}:length_reward")
    assert fn(["q"], ["abc"]) == [3]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            "no_such_module_xyz:fn",
            "cannot import reward function 'no_such_module_xyz:fn': ModuleNotFoundError",
        ),
        ("math:no_such_fn", "module 'math' has no 'no_such_fn'"),
        ("math:pi", "is not callable"),
        (":fn", "expected 'module.sub:function'"),
        ("missing_file.py:fn", "reward function file not found: missing_file.py"),
    ],
)
def test_resolve_errors(spec: str, message: str) -> None:
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        resolve_reward_function(spec)


# --- scoring ---------------------------------------------------------------------------------


def _const(values: list[Any], name: str) -> Any:
    def fn(prompts: list[str], completions: list[str], **columns: Any) -> list[Any]:
        return list(values)

    fn.__name__ = name
    return fn


def test_score_weights_and_none_propagation() -> None:
    a = _const([1.0, 0.0, None, 1.0], "a")
    b = _const([0.5, 1.0, 1.0, None], "b")
    totals, per_fn = score_completions([a, b], [2.0, 0.5], PROMPTS, COMPLETIONS, {"answer": ANSWERS})
    assert totals == [2.25, 0.5, None, None]  # None anywhere -> None, never 0
    assert per_fn == {"a": [1.0, 0.0, None, 1.0], "b": [0.5, 1.0, 1.0, None]}


def test_score_with_builtins() -> None:
    fns = [resolve_reward_function("accuracy"), resolve_reward_function("format")]
    totals, per_fn = score_completions(fns, [1.0, 0.1], PROMPTS, COMPLETIONS, {"answer": ANSWERS})
    assert totals == [pytest.approx(1.1), 1.0, 1.0, None]
    assert set(per_fn) == {"accuracy_reward", "format_reward"}


def test_score_nan_is_none_and_duplicate_names() -> None:
    a = _const([math.nan, 1], "r")
    b = _const([1, 1], "r")
    totals, per_fn = score_completions([a, b], [1.0, 1.0], ["p", "p"], ["c", "c"], {})
    assert totals == [None, 2.0]
    assert per_fn == {"r": [None, 1.0], "r_2": [1.0, 1.0]}


def test_score_partial_name() -> None:
    fn = functools.partial(_const([1.0], "inner"))
    _, per_fn = score_completions([fn], [1.0], ["p"], ["c"], {})
    assert list(per_fn) == ["inner"]


@pytest.mark.parametrize(
    ("fn", "message"),
    [
        (_const([1.0], "short_fn"), "reward function 'short_fn' returned 1 values for 2 samples"),
        (_const(["high", 1.0], "str_fn"), "reward function 'str_fn' returned 'high' for sample 0"),
        (lambda prompts, completions, **kw: 1.0, "returned float, not a list"),
    ],
)
def test_score_bad_user_function(fn: Any, message: str) -> None:
    with pytest.raises(UserError, match=message):
        score_completions([fn], [1.0], ["p", "p"], ["c", "c"], {})


def test_score_mismatched_inputs() -> None:
    fn = _const([1.0], "f")
    with pytest.raises(UserError, match="1 reward functions but 2 reward weights"):
        score_completions([fn], [1.0, 2.0], ["p"], ["c"], {})
    with pytest.raises(UserError, match="column 'answer' has 2 values for 1 completions"):
        score_completions([fn], [1.0], ["p"], ["c"], {"answer": ["1", "2"]})
