"""Reward-model data: TRL-format preference and stepwise rows → token ids (``rewards/preferences.py``),
and the offline data builders ``telos data preferences`` / ``telos data process-labels``
(``eval/rm_data.py``) run in-process on the session's tiny model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rewards.preferences import pair_texts, response_ids, tokenize_pairs, tokenize_steps
from telos.cli import main
from telos.errors import UserError

# renders every message as "<|role|>content\n"; the generation prompt is "<|assistant|>"
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def _user(text: str) -> dict:
    return {"role": "user", "content": text}


def _assistant(text: str) -> dict:
    return {"role": "assistant", "content": text}


@pytest.fixture(scope="module")
def tok(tiny_model_dir):
    from telos.models import load_tokenizer

    return load_tokenizer(str(tiny_model_dir))


@pytest.fixture
def chat_tok(tiny_model_dir):
    """A fresh copy of the tiny tokenizer with a simple chat template."""
    from telos.models import load_tokenizer

    t = load_tokenizer(str(tiny_model_dir))
    t.chat_template = CHAT_TEMPLATE
    return t


def _plain(tok, text: str) -> list[int]:
    return tok(text, add_special_tokens=False)["input_ids"]


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def _one_error_line(err: str) -> str:
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, f"expected one stderr line, got {len(lines)}:\n{err}"
    assert lines[0].startswith("error: "), lines[0]
    return lines[0]


# ------------------------------------------------------------------------------- pair_texts


def test_pair_texts_explicit_prompt():
    row = {"prompt": "2+3=", "chosen": " 5", "rejected": " 6"}
    assert pair_texts(row, "row 0") == ("2+3=", " 5", " 6", 0.0)


def test_pair_texts_implicit_prompt():
    row = {"chosen": "2+3= 5", "rejected": "2+3= 6"}
    assert pair_texts(row, "row 0") == ("", "2+3= 5", "2+3= 6", 0.0)


@pytest.mark.parametrize("margin", [2, 0.5, -1.25])
def test_pair_texts_reads_margin(margin):
    _, _, _, m = pair_texts({"prompt": "p", "chosen": "a", "rejected": "b", "margin": margin}, "row 0")
    assert m == float(margin) and isinstance(m, float)


def test_pair_texts_conversational_explicit_prompt(chat_tok):
    row = {
        "prompt": [_user("1+1?")],
        "chosen": [_assistant("2")],
        "rejected": [_assistant("3")],
        "margin": 1,
    }
    assert pair_texts(row, "row 0", chat_tok) == ("<|user|>1+1?\n<|assistant|>", "2\n", "3\n", 1.0)


def test_pair_texts_conversational_multi_turn_prompt(chat_tok):
    row = {
        "prompt": [_user("hi"), _assistant("hello"), _user("1+1?")],
        "chosen": [_assistant("2")],
        "rejected": [_assistant("3")],
    }
    prompt, chosen, rejected, _ = pair_texts(row, "row 0", chat_tok)
    assert prompt == "<|user|>hi\n<|assistant|>hello\n<|user|>1+1?\n<|assistant|>"
    assert (chosen, rejected) == ("2\n", "3\n")


def test_pair_texts_conversational_implicit_prompt(chat_tok):
    """TRL's "conversational, implicit prompt" rows: the whole conversation in chosen/rejected.
    The shared prefix is not split out, so the prompt is empty and each side is the full chat
    (an empty conversation is never rendered: transformers ≥ 5 refuses it)."""
    row = {
        "chosen": [_user("1+1?"), _assistant("2")],
        "rejected": [_user("1+1?"), _assistant("3")],
    }
    out = pair_texts(row, "row 0", chat_tok)
    assert out == ("", "<|user|>1+1?\n<|assistant|>2\n", "<|user|>1+1?\n<|assistant|>3\n", 0.0)


def test_conversational_without_chat_template_is_user_error(tok):
    assert not getattr(tok, "chat_template", None)
    row = {"prompt": [_user("1+1?")], "chosen": [_assistant("2")], "rejected": [_assistant("3")]}
    with pytest.raises(UserError, match=r"row 3 of f\.jsonl.*chat template"):
        tokenize_pairs([{"prompt": "a", "chosen": "b", "rejected": "c"}] * 3 + [row], tok, source="f.jsonl")


def test_conversational_pairs_tokenize(chat_tok):
    row = {"prompt": [_user("1+1?")], "chosen": [_assistant("2")], "rejected": [_assistant("13")]}
    (ex,), dropped = tokenize_pairs([row], chat_tok)
    assert dropped == 0
    prompt_ids = chat_tok("<|user|>1+1?\n<|assistant|>")["input_ids"]
    eos = chat_tok.eos_token_id
    assert ex.chosen_ids == prompt_ids + _plain(chat_tok, "2\n") + [eos]
    assert ex.rejected_ids == prompt_ids + _plain(chat_tok, "13\n") + [eos]
    assert ex.chosen_start == ex.rejected_start == len(prompt_ids)


BAD_PAIRS = {
    "missing rejected": ({"prompt": "p", "chosen": "a"}, ["row 1 of bad.jsonl", "rejected"]),
    "not a dict": (["p", "a", "b"], ["row 1 of bad.jsonl", "not a preference pair"]),
    "non-string chosen": (
        {"prompt": "p", "chosen": 5, "rejected": "b"},
        ["row 1 of bad.jsonl", "strings"],
    ),
    "null prompt": ({"prompt": None, "chosen": "a", "rejected": "b"}, ["row 1 of bad.jsonl", "strings"]),
    "mixed text and chat": (
        {"prompt": "p", "chosen": [_assistant("a")], "rejected": "b"},
        ["row 1 of bad.jsonl", "strings"],
    ),
    "string margin": (
        {"prompt": "p", "chosen": "a", "rejected": "b", "margin": "big"},
        ["row 1 of bad.jsonl", "'margin'", "'big'"],
    ),
    "bool margin": (
        {"prompt": "p", "chosen": "a", "rejected": "b", "margin": True},
        ["row 1 of bad.jsonl", "'margin'"],
    ),
}


@pytest.mark.parametrize("row, words", BAD_PAIRS.values(), ids=BAD_PAIRS.keys())
def test_bad_pair_rows_name_the_row(tok, row, words):
    good = {"prompt": "p", "chosen": "a", "rejected": "b"}
    with pytest.raises(UserError) as info:
        tokenize_pairs([good, row, good], tok, source="bad.jsonl")
    for word in words:
        assert word in str(info.value), f"{word!r} not in {info.value}"


# ------------------------------------------------------------------------------- token ids


def test_response_ids_layout_exact(tok):
    ids, start = response_ids(tok, "2+3=", " 5")
    prompt, response = _plain(tok, "2+3="), _plain(tok, " 5")
    assert ids == prompt + response + [tok.eos_token_id]
    assert start == len(prompt) > 0
    assert ids[start : start + len(response)] == response
    assert ids[-1] == tok.eos_token_id


def test_response_ids_empty_prompt(tok):
    ids, start = response_ids(tok, "", "2+3= 5")
    assert start == 0
    assert ids == _plain(tok, "2+3= 5") + [tok.eos_token_id]


@pytest.fixture
def bos_tok(tiny_model_dir):
    """The tiny tokenizer with a post-processor that prepends BOS (as Llama's does)."""
    from tokenizers import processors

    from telos.models import load_tokenizer

    t = load_tokenizer(str(tiny_model_dir))
    t.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{t.bos_token} $A", special_tokens=[(t.bos_token, t.bos_token_id)]
    )
    if t("x")["input_ids"][0] != t.bos_token_id:
        pytest.skip("this transformers version ignores the backend post-processor")
    return t


def test_response_ids_special_tokens_only_once(bos_tok):
    """BOS goes on the prompt, not again in front of the response (it is tokenized separately);
    with no prompt the response carries it."""
    bos, eos = bos_tok.bos_token_id, bos_tok.eos_token_id
    ids, start = response_ids(bos_tok, "2+3=", " 5")
    assert ids == [bos] + _plain(bos_tok, "2+3=") + _plain(bos_tok, " 5") + [eos]
    assert start == 1 + len(_plain(bos_tok, "2+3="))
    assert ids.count(bos) == 1
    ids, start = response_ids(bos_tok, "", "2+3= 5")
    assert ids == [bos] + _plain(bos_tok, "2+3= 5") + [eos] and start == 0


def test_tokenize_pairs_starts_and_margin(tok):
    rows = [
        {"prompt": "12+3=", "chosen": " 15", "rejected": " 16", "margin": 0.5},
        {"chosen": "1+1= 2", "rejected": "1+1= 11"},
    ]
    (a, b), dropped = tokenize_pairs(rows, tok)
    assert dropped == 0
    p = _plain(tok, "12+3=")
    assert a.chosen_ids[: a.chosen_start] == p == a.rejected_ids[: a.rejected_start]
    assert a.chosen_ids[a.chosen_start : -1] == _plain(tok, " 15")
    assert a.rejected_ids[a.rejected_start : -1] == _plain(tok, " 16")
    assert a.margin == 0.5
    assert b.chosen_start == b.rejected_start == 0 and b.margin == 0.0
    assert b.chosen_ids == _plain(tok, "1+1= 2") + [tok.eos_token_id]


def test_tokenize_pairs_max_length_drops_and_counts(tok):
    short = {"prompt": "1+1=", "chosen": " 2", "rejected": " 3"}
    # only the rejected side is long: the pair still goes (the longer side decides)
    long_rejected = {"prompt": "1+1=", "chosen": " 2", "rejected": " " + "9" * 40}
    n = len(response_ids(tok, "1+1=", " 2")[0])
    examples, dropped = tokenize_pairs([short, long_rejected, short], tok, max_length=n)
    assert dropped == 1 and len(examples) == 2
    examples, dropped = tokenize_pairs([short, long_rejected], tok, max_length=n - 1)
    assert dropped == 2 and examples == []
    examples, dropped = tokenize_pairs([short, long_rejected], tok, max_length=None)
    assert dropped == 0 and len(examples) == 2


# ------------------------------------------------------------------------------- stepwise


def test_tokenize_steps_label_on_each_steps_last_token(tok):
    row = {"prompt": "Q: 2+3+4?\n", "completions": ["2+3=5", "5+4=9", "#### 9"], "labels": [True, 0.25, 1]}
    (ex,), dropped = tokenize_steps([row], tok, separator="\n")
    assert dropped == 0
    ids = _plain(tok, "Q: 2+3+4?\n")
    expected_positions = []
    for step in row["completions"]:
        ids += _plain(tok, step + "\n")
        expected_positions.append(len(ids) - 1)
    assert ex.input_ids == ids
    assert ex.label_positions == expected_positions
    assert ex.labels == [1.0, 0.25, 1.0]
    newline = _plain(tok, "\n")
    assert len(newline) == 1
    assert [ex.input_ids[p] for p in ex.label_positions] == newline * 3  # the separator's token
    assert tok.eos_token_id not in ex.input_ids


def test_tokenize_steps_custom_separator(tok):
    row = {"prompt": "Q", "completions": ["a", "b"], "labels": [0, 1]}
    (ex,), _ = tokenize_steps([row], tok, separator=" ;")
    q, a, b = _plain(tok, "Q"), _plain(tok, "a ;"), _plain(tok, "b ;")
    assert ex.input_ids == q + a + b
    assert ex.label_positions == [len(q) + len(a) - 1, len(q) + len(a) + len(b) - 1]


def test_tokenize_steps_max_length_drops_and_counts(tok):
    short = {"prompt": "Q\n", "completions": ["1"], "labels": [1.0]}
    long = {"prompt": "Q\n", "completions": ["1", "2" * 30], "labels": [1.0, 0.0]}
    n = len(tokenize_steps([short], tok)[0][0].input_ids)
    examples, dropped = tokenize_steps([long, short, long], tok, max_length=n)
    assert dropped == 2 and len(examples) == 1 and examples[0].labels == [1.0]


BAD_STEPS = {
    "missing labels": ({"prompt": "p", "completions": ["a"]}, ["not a stepwise row", "labels"]),
    "length mismatch": (
        {"prompt": "p", "completions": ["a", "b"], "labels": [1.0]},
        ["'completions' and 'labels'", "equal length"],
    ),
    "empty steps": ({"prompt": "p", "completions": [], "labels": []}, ["non-empty"]),
    "labels not a list": ({"prompt": "p", "completions": ["a"], "labels": 1.0}, ["lists"]),
    "label above 1": ({"prompt": "p", "completions": ["a"], "labels": [1.5]}, ["[0, 1]", "1.5"]),
    "label below 0": ({"prompt": "p", "completions": ["a"], "labels": [-0.1]}, ["[0, 1]", "-0.1"]),
    "string label": ({"prompt": "p", "completions": ["a"], "labels": ["yes"]}, ["[0, 1]", "'yes'"]),
    "null label": ({"prompt": "p", "completions": ["a"], "labels": [None]}, ["[0, 1]", "None"]),
}


@pytest.mark.parametrize("row, words", BAD_STEPS.values(), ids=BAD_STEPS.keys())
def test_bad_step_rows_name_the_row(tok, row, words):
    good = {"prompt": "p", "completions": ["a"], "labels": [0.5]}
    with pytest.raises(UserError) as info:
        tokenize_steps([good, good, row], tok, source="steps.jsonl")
    message = str(info.value)
    assert "row 2 of steps.jsonl" in message, message
    for word in words:
        assert word in message, f"{word!r} not in {message}"


# ------------------------------------------------------------------------------- telos data


# the 40-SFT-step model is right ~2 % of the time: 40 prompts × 8 answers make a prompt with
# both a right and a wrong answer near certain (6 × 4 relied on the sampler's luck)
PREF_PROMPTS, PREF_SAMPLES = 40, 8


@pytest.fixture(scope="module")
def preference_files(tiny_model_dir, tmp_path_factory) -> tuple[Path, Path]:
    out = tmp_path_factory.mktemp("prefs")
    code = main(
        [
            "data",
            "preferences",
            "--model",
            str(tiny_model_dir),
            "--data",
            f"procedural:arith?n={PREF_PROMPTS}&max_value=20",
            "--samples",
            str(PREF_SAMPLES),
            "--max-tokens",
            "24",
            "--out",
            str(out / "pairs.jsonl"),
            "--samples-out",
            str(out / "samples.jsonl"),
        ]
    )
    assert code == 0
    return out / "pairs.jsonl", out / "samples.jsonl"


def test_data_preferences_samples(preference_files):
    from envs.math.answers import extract_answer
    from rewards.functions import resolve_reward_function

    _, samples_path = preference_files
    samples = _read_jsonl(samples_path)
    assert len(samples) == PREF_PROMPTS * PREF_SAMPLES
    fields = {"group", "prompt", "completion", "correct", "answer", "extracted", "num_tokens"}
    for s in samples:
        assert fields <= set(s), sorted(s)
        assert isinstance(s["num_tokens"], int) and 0 < s["num_tokens"] <= 24
        assert s["extracted"] == extract_answer(s["completion"])
    assert sorted({s["group"] for s in samples}) == list(range(PREF_PROMPTS))
    for g in range(PREF_PROMPTS):
        group = [s for s in samples if s["group"] == g]
        assert len(group) == PREF_SAMPLES and len({(s["prompt"], s["answer"]) for s in group}) == 1
    numeric = resolve_reward_function("numeric")
    scores = numeric(
        [s["prompt"] for s in samples],
        [s["completion"] for s in samples],
        answer=[s["answer"] for s in samples],
    )
    assert [s["correct"] for s in samples] == [bool(v and v > 0) for v in scores]


def test_data_preferences_pairs_are_correct_vs_wrong(preference_files):
    from rewards.functions import resolve_reward_function

    pairs_path, samples_path = preference_files
    pairs, samples = _read_jsonl(pairs_path), _read_jsonl(samples_path)
    # this model (40 SFT steps) is right now and then: with 40 × 8 samples some prompt has both
    assert pairs, "no pairs: no prompt had a right and a wrong answer"
    numeric = resolve_reward_function("numeric")
    answers = [p["answer"] for p in pairs]
    chosen = numeric([p["prompt"] for p in pairs], [p["chosen"] for p in pairs], answer=answers)
    rejected = numeric([p["prompt"] for p in pairs], [p["rejected"] for p in pairs], answer=answers)
    assert all(v == 1.0 for v in chosen), chosen
    assert all(v == 0.0 for v in rejected), rejected
    by_prompt = {}
    for s in samples:
        by_prompt.setdefault(s["prompt"], set()).add(s["completion"])
    for p in pairs:
        assert {"prompt", "chosen", "rejected", "answer"} <= set(p)
        assert p["chosen"] != p["rejected"]
        assert {p["chosen"], p["rejected"]} <= by_prompt[p["prompt"]]  # sampled for that prompt
    # default --pairs-per-prompt 2; each answer used at most once per side
    for prompt in {p["prompt"] for p in pairs}:
        same = [p for p in pairs if p["prompt"] == prompt]
        assert len(same) <= 2
        assert len({p["chosen"] for p in same}) == len({p["rejected"] for p in same}) == len(same)
    # the written pairs are valid training rows
    assert pair_texts(pairs[0], "row 0")[0] == pairs[0]["prompt"]


def test_data_process_labels(tiny_model_dir, tmp_path):
    out = tmp_path / "steps.jsonl"
    code = main(
        [
            "data",
            "process-labels",
            "--model",
            str(tiny_model_dir),
            "--data",
            "procedural:arith?n=6&max_value=20",
            "--solutions",
            "1",
            "--rollouts",
            "2",
            "--max-tokens",
            "24",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    rows = _read_jsonl(out)
    assert 0 < len(rows) <= 6
    for r in rows:
        n = len(r["completions"])
        assert n >= 1 and all(isinstance(s, str) and s.strip() and "\n" not in s for s in r["completions"])
        assert len(r["labels"]) == len(r["soft_labels"]) == len(r["hard_labels"]) == n
        assert r["labels"] == r["soft_labels"]  # --label soft is the default
        for soft, hard in zip(r["soft_labels"], r["hard_labels"], strict=True):
            assert 0.0 <= soft <= 1.0 and soft in (0.0, 0.5, 1.0)  # share of 2 rollouts
            assert hard is (soft > 0)
        assert 0 <= r["group"] < 6 and r["prompt"].endswith("\n")
    # the rows are valid stepwise training data
    from telos.models import load_tokenizer

    examples, dropped = tokenize_steps(rows, load_tokenizer(str(tiny_model_dir)))
    assert len(examples) == len(rows) and dropped == 0


def test_data_process_labels_hard(tiny_model_dir, tmp_path):
    out = tmp_path / "steps.jsonl"
    args = ["data", "process-labels", "--model", str(tiny_model_dir), "--label", "hard"]
    args += ["--data", "procedural:arith?n=2&max_value=20", "--solutions", "1", "--rollouts", "2"]
    assert main([*args, "--max-tokens", "16", "--out", str(out)]) == 0
    for r in _read_jsonl(out):
        assert r["labels"] == r["hard_labels"] == [s > 0 for s in r["soft_labels"]]


@pytest.mark.parametrize(
    "command, flag",
    [("preferences", "--samples"), ("preferences", "--max-tokens"), ("process-labels", "--rollouts")],
)
def test_data_commands_reject_non_positive_counts(command, flag, tmp_path, capsys):
    code = main(
        ["data", command, "--model", str(tmp_path / "nope"), "--data", "procedural:arith?n=2"]
        + ["--out", str(tmp_path / "o.jsonl"), flag, "0"]
    )
    line = _one_error_line(capsys.readouterr().err)
    assert code == 2
    assert flag in line and "0" in line
    assert not (tmp_path / "o.jsonl").exists()
