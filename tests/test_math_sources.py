"""Math data sources (spec parsing, files, field mapping, generators) and prompt templates."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from envs.math import TEMPLATES, DataSpec, format_prompt, load_rows, parse_spec
from telos.errors import UserError

# --- spec parsing ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("procedural:arith", DataSpec("procedural", "arith")),
        ("procedural:arith:test", DataSpec("procedural", "arith", split="test")),
        (
            "procedural:arith:test?n=50&max_value=1.5&style=words",
            DataSpec(
                "procedural", "arith", split="test", params={"n": 50, "max_value": 1.5, "style": "words"}
            ),
        ),
        ("procedural:arith?n=10", DataSpec("procedural", "arith", params={"n": 10})),
        ("hf:openai/gsm8k", DataSpec("hf", "openai/gsm8k")),
        ("hf:openai/gsm8k:main", DataSpec("hf", "openai/gsm8k", config="main")),
        ("hf:openai/gsm8k:main@test", DataSpec("hf", "openai/gsm8k", config="main", split="test")),
        ("hf:HuggingFaceH4/MATH-500@test", DataSpec("hf", "HuggingFaceH4/MATH-500", split="test")),
        ("hf:openai/gsm8k:main@train[:100]", DataSpec("hf", "openai/gsm8k", "main", "train[:100]")),
        ("reasoning-gym:basic_arithmetic", DataSpec("reasoning-gym", "basic_arithmetic")),
        (
            "reasoning-gym:chain_sum?size=20&seed=3",
            DataSpec("reasoning-gym", "chain_sum", params={"size": 20, "seed": 3}),
        ),
        (  # booleans are booleans ("false" would be truthy); %2B is a literal "+"
            "reasoning-gym:basic_arithmetic?allow_negation=false&allow_parentheses=True&operators=%2B-",
            DataSpec(
                "reasoning-gym",
                "basic_arithmetic",
                params={"allow_negation": False, "allow_parentheses": True, "operators": "+-"},
            ),
        ),
        ("data/train.jsonl", DataSpec("file", "data/train.jsonl")),
        ("/abs/path/rows.JSON", DataSpec("file", "/abs/path/rows.JSON")),
        ("rows.parquet", DataSpec("file", "rows.parquet")),
    ],
)
def test_parse_spec(spec: str, expected: DataSpec) -> None:
    assert parse_spec(spec) == expected


@pytest.mark.parametrize(
    ("spec", "why"),
    [
        ("s3:bucket/data", "unknown source"),
        ("data.csv", "unknown source"),
        ("", "empty"),
        ("procedural:", "no generator name"),
        ("hf:@test", "no dataset repo"),
        ("reasoning-gym:?size=3", "no task name"),
        ("procedural:arith?n", "query part 'n' is not k=v"),
    ],
)
def test_parse_spec_errors(spec: str, why: str) -> None:
    with pytest.raises(UserError) as e:
        parse_spec(spec)
    msg = str(e.value)
    assert f"bad data spec {spec!r}: {why}" in msg
    assert "procedural:NAME" in msg and "hf:REPO" in msg and "reasoning-gym:TASK" in msg and ".jsonl" in msg


# --- local files -----------------------------------------------------------------------------


ROWS = [
    {"prompt": "What is 2 + 3?", "answer": "5", "level": 1},
    {"prompt": "Halve 1.", "answer": "\\frac{1}{2}", "level": 2},
]


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_jsonl_round_trip(tmp_path: Path) -> None:
    p = tmp_path / "data.jsonl"
    _write_jsonl(p, ROWS)
    assert load_rows(str(p)) == ROWS  # other columns kept as-is


def test_json_list_and_json_lines(tmp_path: Path) -> None:
    p = tmp_path / "list.json"
    p.write_text(json.dumps(ROWS))
    assert load_rows(str(p)) == ROWS
    q = tmp_path / "lines.json"
    _write_jsonl(q, ROWS)
    assert load_rows(str(q)) == ROWS


def test_parquet_round_trip(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    p = tmp_path / "data.parquet"
    pq.write_table(pa.Table.from_pylist(ROWS), p)
    assert load_rows(str(p)) == ROWS


def test_limit_takes_first_rows(tmp_path: Path) -> None:
    p = tmp_path / "data.jsonl"
    rows = [{"prompt": f"q{i}", "answer": str(i)} for i in range(10)]
    _write_jsonl(p, rows)
    assert load_rows(str(p), limit=3) == rows[:3]
    assert load_rows(str(p), limit=0) == []
    assert load_rows(str(p), limit=100) == rows


def test_limit_skips_validation_of_later_rows(tmp_path: Path) -> None:
    p = tmp_path / "data.jsonl"
    _write_jsonl(p, [{"prompt": "q", "answer": "1"}, {"oops": 1}])
    assert len(load_rows(str(p), limit=1)) == 1


def test_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.jsonl"
    with pytest.raises(UserError, match=f"^data file not found: {missing}$"):
        load_rows(str(missing))


def test_invalid_json_line(tmp_path: Path) -> None:
    p = tmp_path / "bad.jsonl"
    p.write_text('{"prompt": "q", "answer": "1"}\n\n{"prompt": oops}\n')
    with pytest.raises(UserError, match=r"bad.jsonl line 3: invalid JSON"):
        load_rows(str(p))


def test_non_object_row(tmp_path: Path) -> None:
    p = tmp_path / "bad.json"
    p.write_text("[1, 2]")
    with pytest.raises(UserError, match=r"row 0 of .*bad.json is a int, not a JSON object"):
        load_rows(str(p))


# --- field mapping ---------------------------------------------------------------------------


def test_gsm8k_shaped_rows(tmp_path: Path) -> None:
    p = tmp_path / "gsm8k.jsonl"
    solution = "Janet has 16 - 3 - 4 = <<16-3-4=9>>9 eggs.\nShe makes 9 * 2 = 18 dollars.\n#### 1,018"
    _write_jsonl(p, [{"question": "How much?", "answer": solution}])
    [row] = load_rows(str(p))
    assert row == {"prompt": "How much?", "answer": "1018", "solution": solution}


def test_math_shaped_rows(tmp_path: Path) -> None:
    p = tmp_path / "math.jsonl"
    solution = "We get $x = \\boxed{\\frac{1}{2}}$."
    _write_jsonl(p, [{"problem": "Solve 2x = 1.", "solution": solution, "level": "Level 1"}])
    [row] = load_rows(str(p))
    assert row["prompt"] == "Solve 2x = 1."
    assert row["answer"] == "\\frac{1}{2}"
    # The solution gains a final "#### <answer>" line so SFT targets match what verifiers read.
    assert row["solution"] == solution + "\n#### \\frac{1}{2}"
    assert row["level"] == "Level 1"


def test_answer_column_wins_over_solution(tmp_path: Path) -> None:
    p = tmp_path / "math500.jsonl"
    _write_jsonl(p, [{"problem": "p", "solution": "long \\boxed{2}", "answer": "2"}])
    [row] = load_rows(str(p))
    assert row["answer"] == "2" and row["solution"].endswith("\n#### 2")


def test_numeric_answers_become_strings(tmp_path: Path) -> None:
    p = tmp_path / "nums.jsonl"
    _write_jsonl(p, [{"prompt": "q", "answer": 41}, {"prompt": "q", "answer": 2.5}])
    assert [r["answer"] for r in load_rows(str(p))] == ["41", "2.5"]


def test_row_missing_prompt(tmp_path: Path) -> None:
    p = tmp_path / "data.jsonl"
    rows = [{"prompt": f"q{i}", "answer": "1"} for i in range(3)] + [{"a": 1, "b": 2}]
    _write_jsonl(p, rows)
    with pytest.raises(UserError) as e:
        load_rows(str(p))
    assert str(e.value) == f"row 3 of {p} has no 'prompt' (or 'question'/'problem') field; fields: a, b"


def test_row_missing_answer(tmp_path: Path) -> None:
    p = tmp_path / "data.jsonl"
    _write_jsonl(p, [{"question": "q", "label": "1"}])
    with pytest.raises(UserError) as e:
        load_rows(str(p))
    assert str(e.value) == f"row 0 of {p} has no 'answer' (or 'solution') field; fields: question, label"


def test_row_solution_without_boxed(tmp_path: Path) -> None:
    p = tmp_path / "data.jsonl"
    _write_jsonl(p, [{"problem": "q", "solution": "no final answer marked"}])
    with pytest.raises(UserError, match=r"row 0 of .* has no 'answer' field and its 'solution' has no"):
        load_rows(str(p))


def test_row_prompt_not_string(tmp_path: Path) -> None:
    p = tmp_path / "data.jsonl"
    _write_jsonl(p, [{"prompt": 7, "answer": "1"}])
    with pytest.raises(UserError, match="row 0 of .*: 'prompt' must be a string .* or a list of .*messages"):
        load_rows(str(p))


def test_conversational_rows_are_accepted(tmp_path: Path) -> None:
    """TRL's conversational format: the prompt is a list of messages, kept as it is."""
    p = tmp_path / "data.jsonl"
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "1+2?"}]
    _write_jsonl(p, [{"prompt": msgs, "answer": 3}])
    assert load_rows(str(p)) == [{"prompt": msgs, "answer": "3"}]


@pytest.mark.parametrize(
    ("prompt", "words"),
    [
        ([{"role": "user"}], "message 0 must be"),
        ([{"role": "user", "content": "q"}, "hi"], "message 1 must be"),
        ([], "is an empty list of messages"),
    ],
)
def test_conversational_bad_messages(tmp_path: Path, prompt: list, words: str) -> None:
    p = tmp_path / "data.jsonl"
    _write_jsonl(p, [{"prompt": prompt, "answer": "1"}])
    with pytest.raises(UserError, match=f"row 0 of .*: 'prompt' {words}"):
        load_rows(str(p))


# --- generators ------------------------------------------------------------------------------


def test_procedural_source() -> None:
    procedural = pytest.importorskip("envs.math.procedural")
    name = procedural.PROCEDURAL_TASKS.names()[0]
    rows = load_rows(f"procedural:{name}?n=20", seed=1)
    assert len(rows) == 20
    assert all(isinstance(r["prompt"], str) and isinstance(r["answer"], str) for r in rows)
    assert load_rows(f"procedural:{name}?n=20", seed=1) == rows  # seeded: deterministic
    assert load_rows(f"procedural:{name}?n=20", seed=1, limit=5) == rows[:5]
    assert load_rows(f"procedural:{name}:test?n=5") != load_rows(f"procedural:{name}?n=5")
    with pytest.raises(UserError, match="no_such_generator_xyz"):
        load_rows("procedural:no_such_generator_xyz")
    with pytest.raises(UserError, match="n must be a non-negative integer"):
        load_rows(f"procedural:{name}?n=abc")


def test_reasoning_gym_source() -> None:
    pytest.importorskip("reasoning_gym")
    rows = load_rows("reasoning-gym:basic_arithmetic?size=5&seed=3")
    assert len(rows) == 5
    for r in rows:
        assert set(r) == {"prompt", "answer", "metadata"}
        assert r["metadata"]["source_dataset"] == "basic_arithmetic"
    assert load_rows("reasoning-gym:basic_arithmetic", seed=3, limit=5) == rows


def test_reasoning_gym_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("reasoning_gym")
    with pytest.raises(UserError, match="reasoning-gym:no_such_task"):
        load_rows("reasoning-gym:no_such_task?size=2")
    with pytest.raises(UserError, match="reasoning-gym:basic_arithmetic.*bogus"):
        load_rows("reasoning-gym:basic_arithmetic?size=2&bogus=1")
    monkeypatch.setitem(sys.modules, "reasoning_gym", None)  # import now raises ImportError
    with pytest.raises(UserError, match="^reasoning-gym is not installed: pip install reasoning-gym$"):
        load_rows("reasoning-gym:basic_arithmetic")


def test_hf_source_plumbing(monkeypatch: pytest.MonkeyPatch) -> None:
    # No network in tests: check what reaches datasets.load_dataset and how rows are mapped.
    datasets = pytest.importorskip("datasets")
    calls: list[tuple[Any, ...]] = []

    def fake_load_dataset(repo: str, config: str | None, split: str) -> Any:
        calls.append((repo, config, split))
        return datasets.Dataset.from_list([{"question": "q", "answer": "step\n#### 3"}])

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    rows = load_rows("hf:openai/gsm8k:main@test", limit=1)
    assert calls == [("openai/gsm8k", "main", "test[:1]")]
    assert rows == [{"prompt": "q", "answer": "3", "solution": "step\n#### 3"}]
    load_rows("hf:org/data")
    assert calls[-1] == ("org/data", None, "train")

    def failing(*args: Any, **kwargs: Any) -> Any:
        raise ConnectionError("offline\nlong traceback text")

    monkeypatch.setattr(datasets, "load_dataset", failing)
    with pytest.raises(UserError, match="^cannot load hf:org/data: offline$"):
        load_rows("hf:org/data")


# --- prompts ---------------------------------------------------------------------------------


class FakeChatTokenizer:
    chat_template = "{% for m in messages %}...{% endfor %}"

    def apply_chat_template(
        self, messages: list[dict[str, str]], tokenize: bool, add_generation_prompt: bool
    ) -> str:
        assert tokenize is False and add_generation_prompt is True
        [m] = messages
        return f"<user>{m['content']}</user><assistant>"


def test_format_prompt_templates() -> None:
    row = {"prompt": "What is \\frac{1}{2} + {x}?", "answer": "1"}
    assert TEMPLATES["plain"] == "{prompt}\n"
    assert format_prompt(row) == "What is \\frac{1}{2} + {x}?\n"  # braces in the question are safe
    cot = format_prompt(row, "cot")
    assert cot.endswith("What is \\frac{1}{2} + {x}?\n") and "####" in cot and "step by step" in cot
    assert "\\boxed{}" in format_prompt(row, "boxed")
    assert format_prompt(row, "Q: {prompt}\nA:") == "Q: What is \\frac{1}{2} + {x}?\nA:"


def test_format_prompt_chat() -> None:
    row = {"prompt": "2+2?"}
    assert format_prompt(row, "plain", FakeChatTokenizer(), chat=True) == "<user>2+2?\n</user><assistant>"
    assert format_prompt(row, "plain", FakeChatTokenizer()) == "2+2?\n"  # chat off: plain text


def test_format_prompt_errors() -> None:
    with pytest.raises(UserError, match=r"unknown prompt template 'cott'; valid: boxed, cot, plain"):
        format_prompt({"prompt": "q"}, "cott")
    with pytest.raises(UserError, match="data row has no 'prompt' field; fields: question"):
        format_prompt({"question": "q"})

    class NoTemplate:
        chat_template = None

    with pytest.raises(UserError, match="chat template"):
        format_prompt({"prompt": "q"}, tokenizer=NoTemplate(), chat=True)
    with pytest.raises(UserError, match="chat template"):
        format_prompt({"prompt": "q"}, chat=True)


def _chat_tokenizer():
    """A real transformers tokenizer, built locally, with a small Jinja chat template."""
    from telos.models import build_tokenizer

    tok = build_tokenizer(["hello world 1 + 2"], 64)
    tok.chat_template = (
        "{% for m in messages %}<{{ m.role }}>{{ m.content }}</{{ m.role }}>{% endfor %}"
        "{% if add_generation_prompt %}<assistant>{% endif %}"
    )
    return tok


def test_format_prompt_conversational() -> None:
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "1+2?"}]
    row = {"prompt": msgs, "answer": "3"}
    tok = _chat_tokenizer()
    assert format_prompt(row, tokenizer=tok) == "<system>Be brief.</system><user>1+2?</user><assistant>"
    cot = format_prompt(row, "Q: {prompt}", tokenizer=tok)  # a template fills the last user message
    assert cot == "<system>Be brief.</system><user>Q: 1+2?</user><assistant>"
    assert row["prompt"][1]["content"] == "1+2?"  # the row is not modified
    # a final assistant message is continued, not closed (TRL's continue_final_message)
    prefill = {"prompt": [*msgs, {"role": "assistant", "content": "It is"}]}
    assert format_prompt(prefill, tokenizer=tok).endswith("<user>1+2?</user><assistant>It is")
    # no chat template (the tiny model): one line per message, = the standard "plain" prompt
    assert format_prompt({"prompt": msgs[1:]}) == format_prompt({"prompt": "1+2?"}) == "1+2?\n"


def test_reasoning_gym_worked_solution_becomes_the_solution_column() -> None:
    """gsm_symbolic's metadata.answer_cot is the SFT target (`trainer: sft`'s data.target)."""
    pytest.importorskip("reasoning_gym")
    row = load_rows("reasoning-gym:gsm_symbolic?size=2&seed=1")[1]
    assert row["solution"] == row["metadata"]["answer_cot"]
    assert row["solution"].rstrip().endswith(f"#### {row['answer']}")
    assert "solution" not in load_rows("reasoning-gym:basic_arithmetic?size=1&seed=1")[0]
