"""Reward-model training (``trainer: rm``, ``trainers/rm/train.py``) for bt, gcrm and prm on the session's
tiny model: the saved ``final/`` is a plain transformers checkpoint that scores like the telos API,
the gcrm goal vector, metrics, resume; recipe errors; and ``telos eval rm`` on every data kind."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from telos.cli import main

REPO = Path(__file__).resolve().parents[1]
RM_RECIPES = REPO / "recipes" / "rm"

PAIRS = [
    {"prompt": f"{a}+{b}=", "chosen": f" {a + b}", "rejected": f" {a + b + 1 + (a * b) % 3}"}
    for a in range(4)
    for b in range(3)
]
PAIRS[0]["margin"] = 0.5
PAIRS[1] = {"chosen": "7+1= 8", "rejected": "7+1= 9"}  # implicit prompt
STEPS = [
    {
        "prompt": f"What is {a}+{b}+1?\n",
        "completions": [f"{a}+{b}={a + b + (a % 2)}", f"{a + b + (a % 2)}+1={a + b + 1 + (a % 2)}", "done"],
        "labels": [a % 2 == 0, 0.5 if a % 2 else 1.0, float(a % 2 == 0)],
        "group": a,
    }
    for a in range(4)
    for b in range(2)
]


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def data_files(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("rm-data")
    return {
        "pairs": _write_jsonl(d / "pairs.jsonl", PAIRS),
        "pairs_test": _write_jsonl(d / "pairs_test.jsonl", PAIRS[:5]),
        "steps": _write_jsonl(d / "steps.jsonl", STEPS),
        "steps_test": _write_jsonl(d / "steps_test.jsonl", STEPS[:3]),
    }


def _overrides(kind: str, model: Path, files: dict[str, Path], out: Path, *extra: str) -> list[str]:
    data = "steps" if kind == "prm" else "pairs"
    return [
        f"model.name_or_path={model}",
        f"data.train={files[data]}",
        f"data.test={files[data + '_test']}",
        f"output_dir={out}",
        "train.steps=2",
        "train.batch_size=4",
        "train.micro_batch_size=2",
        "train.save_every=1",
        *extra,
    ]


def _train(kind: str, model: Path, files: dict[str, Path], out: Path, *extra: str) -> dict:
    from trainers.rm.train import train_rm
    from trainers.run import load_recipe

    recipe, raw = load_recipe(
        str(RM_RECIPES / f"{kind}_tiny.yaml"), _overrides(kind, model, files, out, *extra)
    )
    assert recipe.trainer == "rm" and recipe.rm.kind == kind
    return train_rm(recipe, raw)


@pytest.fixture(scope="module")
def runs(tiny_model_dir, data_files, tmp_path_factory) -> dict[str, Path]:
    """One 2-step run per kind (prm without test data: see test_prm_with_test_data)."""
    root = tmp_path_factory.mktemp("rm-runs")
    out = {}
    for kind in ("bt", "gcrm", "prm"):
        extra = ["data.test=null"] if kind == "prm" else []
        summary = _train(kind, tiny_model_dir, data_files, root / kind, *extra)
        assert summary["kind"] == kind and summary["steps"] == 2
        out[kind] = root / kind
    return out


def _pad_right(seqs: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in seqs)
    ids = torch.tensor([s + [pad_id] * (width - len(s)) for s in seqs])
    mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in seqs])
    return ids, mask


def _encode(tok, prompt: str, response: str) -> tuple[list[int], int]:
    """prompt tokens + response tokens + EOS, by hand."""
    p = tok(prompt)["input_ids"] if prompt else []
    r = tok(response, add_special_tokens=not p)["input_ids"]
    return p + r + [tok.eos_token_id], len(p)


# ----------------------------------------------------------------------------------- training


@pytest.mark.parametrize("kind", ["bt", "gcrm", "prm"])
def test_run_layout_and_metrics(runs, kind):
    run = runs[kind]
    for name in (
        "config.yaml",
        "metrics.jsonl",
        "summary.json",
        "final/config.json",
        "final/model.safetensors",
    ):
        assert (run / name).is_file(), name
    assert (run / "final" / "tokenizer_config.json").is_file()
    assert sorted(p.name for p in (run / "checkpoints").iterdir() if p.name.startswith("step-")) == [
        "step-1",
        "step-2",
    ]
    metrics = _read_jsonl(run / "metrics.jsonl")
    assert [m["step"] for m in metrics] == [1, 2]
    accuracy = "step_accuracy" if kind == "prm" else "accuracy"
    for m in metrics:
        assert math.isfinite(m["loss"]) and m["loss"] > 0
        assert 0.0 <= m[accuracy] <= 1.0
        assert math.isfinite(m["grad_norm"]) and m["tokens_per_s"] > 0
        if kind == "gcrm":
            assert math.isfinite(m["contrastive_loss"]) and math.isfinite(m["bt_loss"])
            # loss = BT + β · contrastive (β = rm.contrastive_weight = 0.5), micro-batch means
            assert m["loss"] == pytest.approx(m["bt_loss"] + 0.5 * m["contrastive_loss"], rel=1e-4)
        else:
            assert "contrastive_loss" not in m
    summary = json.loads((run / "summary.json").read_text())
    assert summary["trainer"] == "rm" and summary["kind"] == kind
    assert summary["train_examples"] == (len(STEPS) if kind == "prm" else len(PAIRS))
    assert summary["dropped_over_max_length"] == 0
    assert summary["model_dir"] == str(run / "final")
    if kind != "prm":
        assert 0.0 <= summary["eval_accuracy"] <= 1.0 and summary["test_examples"] == 5
        assert metrics[-1]["eval_accuracy"] == summary["eval_accuracy"]


@pytest.mark.parametrize("kind", ["bt", "gcrm"])
def test_final_loads_as_sequence_classifier_with_same_score(runs, kind):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from rewards.reward_model import RewardModel

    final = runs[kind] / "final"
    hf = AutoModelForSequenceClassification.from_pretrained(final).eval()
    tok = AutoTokenizer.from_pretrained(final)
    assert hf.config.num_labels == 1
    assert hf.config.pad_token_id == tok.pad_token_id
    prompts, responses = ["2+3=", "12+9="], [" 5", " 21 is the sum"]
    seqs = [_encode(tok, p, r)[0] for p, r in zip(prompts, responses, strict=True)]
    ids, mask = _pad_right(seqs, tok.pad_token_id)
    with torch.no_grad():
        hf_scores = hf(input_ids=ids, attention_mask=mask).logits[:, 0]
        # the same by hand: the head at each row's last real token (the EOS)
        hidden = hf.model(input_ids=ids, attention_mask=mask).last_hidden_state
        last = mask.sum(-1) - 1
        manual = hf.score(hidden)[torch.arange(2), last, 0]
    torch.testing.assert_close(hf_scores, manual, atol=1e-5, rtol=0)
    rm = RewardModel.from_pretrained(final, device="cpu")
    assert rm.encode(prompts, responses) == [
        _encode(tok, p, r) for p, r in zip(prompts, responses, strict=True)
    ]
    ours = rm.score(prompts, responses)
    assert ours == pytest.approx(hf_scores.tolist(), abs=1e-5)
    assert rm.score(prompts[:1], responses[:1]) == pytest.approx(ours[:1], abs=1e-5)  # no padding


def test_final_loads_as_token_classifier_with_same_step_scores(runs):
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    from rewards.preferences import tokenize_steps
    from rewards.reward_model import ProcessRM

    final = runs["prm"] / "final"
    hf = AutoModelForTokenClassification.from_pretrained(final).eval()
    tok = AutoTokenizer.from_pretrained(final)
    assert hf.config.num_labels == 2  # soft_ce
    prm = ProcessRM.from_pretrained(final, device="cpu")
    assert prm.separator == "\n" and prm.num_labels == 2
    rows = STEPS[:2]
    (a, b), _ = tokenize_steps(rows, tok, "\n")
    ids, mask = _pad_right([a.input_ids, b.input_ids], tok.pad_token_id)
    with torch.no_grad():
        probs = hf(input_ids=ids, attention_mask=mask).logits.softmax(-1)[..., 1]
    expected = [probs[0, a.label_positions].tolist(), probs[1, b.label_positions].tolist()]
    got = prm.step_scores([r["prompt"] for r in rows], [r["completions"] for r in rows])
    assert [len(s) for s in got] == [3, 3]
    for g, e in zip(got, expected, strict=True):
        assert g == pytest.approx(e, abs=1e-5)
        assert all(0.0 <= v <= 1.0 for v in g)


def test_prm_mse_and_custom_separator(tiny_model_dir, data_files, tmp_path):
    from transformers import AutoModelForTokenClassification

    from rewards.reward_model import ProcessRM

    run = tmp_path / "prm-mse"
    _train("prm", tiny_model_dir, data_files, run, "data.test=null", "rm.prm_loss=mse", "rm.step_separator=;")
    hf = AutoModelForTokenClassification.from_pretrained(run / "final")
    assert hf.config.num_labels == 1
    prm = ProcessRM.from_pretrained(run / "final", device="cpu")
    assert prm.separator == ";" and prm.num_labels == 1
    (scores,) = prm.step_scores(["Q\n"], [["1+1=2", "done"]])
    assert len(scores) == 2 and all(0.0 < s < 1.0 for s in scores)  # sigmoid of one logit


def test_prm_with_test_data(tiny_model_dir, data_files, tmp_path):
    summary = _train("prm", tiny_model_dir, data_files, tmp_path / "prm")
    assert 0.0 <= summary["eval_accuracy"] <= 1.0 and summary["test_examples"] == 3


def test_gcrm_goal_vector_files(runs, data_files):
    from safetensors.torch import load_file
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from rewards.reward_model import GOAL_FILE, GOAL_META

    final = runs["gcrm"] / "final"
    assert (final / GOAL_FILE).is_file() and (final / GOAL_META).is_file()
    assert not (runs["bt"] / "final" / GOAL_FILE).exists()
    meta = json.loads((final / GOAL_META).read_text())
    assert {"checkpoint", "layer", "pooling", "num_examples", "source"} <= set(meta)
    assert meta["checkpoint"] == str(final)
    assert meta["num_examples"] == len(PAIRS)
    assert meta["source"] == str(data_files["pairs"])
    goal = load_file(str(final / GOAL_FILE))["goal"]
    hf = AutoModelForSequenceClassification.from_pretrained(final).eval()
    assert goal.shape == (hf.config.hidden_size,) and goal.dtype == torch.float32
    # g = mean trunk state at the EOS of every chosen training response (final weights)
    tok = AutoTokenizer.from_pretrained(final)
    states = []
    with torch.no_grad():
        for row in PAIRS:
            ids, _ = _encode(tok, row.get("prompt", ""), row["chosen"])
            states.append(hf.model(input_ids=torch.tensor([ids])).last_hidden_state[0, -1])
    torch.testing.assert_close(goal, torch.stack(states).mean(0), atol=1e-4, rtol=1e-4)


def test_gcrm_q_values(runs):
    from transformers import AutoTokenizer

    from rewards.reward_model import GoalConditionedRM, RewardModel

    final = runs["gcrm"] / "final"
    rm = GoalConditionedRM.from_pretrained(final, device="cpu")
    assert rm.meta["num_examples"] == len(PAIRS)
    prompts, responses = ["2+3=", "1+1=", ""], [" 5", " 2 and then some more words", "4+4= 8"]
    q = rm.q_values(prompts, responses)
    tok = AutoTokenizer.from_pretrained(final)
    for p, r, values in zip(prompts, responses, q, strict=True):
        ids, start = _encode(tok, p, r)
        assert len(values) == len(ids) - start == rm.response_length(p, r) + 1
        assert all(-1.0 <= v <= 1.0 for v in values)
    # Q_t = cos(h_t, g) on the trunk's last hidden state, padding-independent
    ids, start = _encode(tok, prompts[0], responses[0])
    with torch.no_grad():
        h = rm.net.trunk(input_ids=torch.tensor([ids])).last_hidden_state[0, start:]
    expected = torch.nn.functional.cosine_similarity(h, rm.goal[None], dim=-1)
    assert q[0] == pytest.approx(expected.tolist(), abs=1e-5)
    assert rm.q_values(prompts[:1], responses[:1])[0] == pytest.approx(q[0], abs=1e-5)
    # the gcrm's scalar reward is the same as a plain RewardModel on the same directory
    assert rm.score(prompts, responses) == pytest.approx(
        RewardModel.from_pretrained(final, device="cpu").score(prompts, responses), abs=1e-6
    )


def test_score_prefixes_full_length_is_score_without_eos(runs):
    from rewards.reward_model import RewardModel

    rm = RewardModel.from_pretrained(runs["bt"] / "final", device="cpu")
    prompt, response = "2+3=", " 5 ok"
    n = rm.response_length(prompt, response)
    assert n == len(rm.tokenizer(response, add_special_tokens=False)["input_ids"])
    prefixes = rm.score_prefixes(prompt, response, [0, 1, n])
    ids, start = rm.encode([prompt], [response])[0]
    head, _, mask = rm._forward([ids[:start], ids[: start + 1], ids[:-1]])
    from rewards.reward_model import last_token_values

    assert prefixes == pytest.approx(last_token_values(head, mask).tolist(), abs=1e-6)


def test_max_length_drops_are_counted(tiny_model_dir, data_files, tmp_path):
    long = {"prompt": "1+1=", "chosen": " 2", "rejected": " " + "3" * 60}
    train = _write_jsonl(tmp_path / "train.jsonl", PAIRS + [long, long])
    summary = _train(
        "bt",
        tiny_model_dir,
        {**data_files, "pairs": train},
        tmp_path / "run",
        "data.max_length=32",
        "train.steps=1",
    )
    assert summary["dropped_over_max_length"] == 2 and summary["train_examples"] == len(PAIRS)


@pytest.mark.parametrize("kind", ["bt", "gcrm", "prm"])
def test_resume_matches_straight_run(
    kind, tiny_model_dir, data_files, tmp_path, weights_of, assert_same_weights
):
    common = ["train.lr=1e-3", "train.lr_scheduler=constant", "train.warmup_steps=0", "data.test=null"]
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    _train(kind, tiny_model_dir, data_files, straight, *common, "train.steps=4")
    _train(kind, tiny_model_dir, data_files, resumed, *common, "train.steps=2")
    first_half = weights_of(resumed / "final")
    _train(kind, tiny_model_dir, data_files, resumed, *common, "train.steps=4", "resume=latest")
    assert [m["step"] for m in _read_jsonl(resumed / "metrics.jsonl")] == [1, 2, 3, 4]
    assert_same_weights(weights_of(resumed / "final"), weights_of(straight / "final"), atol=1e-5)
    # and the last two steps did something
    worst = max((first_half[k] - v).abs().max().item() for k, v in weights_of(straight / "final").items())
    assert worst > 1e-4
    if kind == "gcrm":
        from safetensors.torch import load_file

        goals = [load_file(str(r / "final" / "goal_vector.safetensors"))["goal"] for r in (straight, resumed)]
        torch.testing.assert_close(goals[0], goals[1], atol=1e-5, rtol=1e-5)


def test_hf_score_matches_when_pad_is_eos(tiny_model_dir, data_files, tmp_path):
    from transformers import AutoModelForSequenceClassification

    from rewards.reward_model import RewardModel
    from telos.models import load_tokenizer

    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    tok = load_tokenizer(str(model))
    tok.pad_token = tok.eos_token  # as load_tokenizer does for tokenizers without a pad token
    tok.save_pretrained(model)
    _train("bt", model, data_files, tmp_path / "run", "data.test=null", "train.steps=1")
    final = tmp_path / "run" / "final"
    rm = RewardModel.from_pretrained(final, device="cpu")
    ids, _ = rm.encode(["2+3="], [" 5"])[0]
    with torch.no_grad():
        hf = AutoModelForSequenceClassification.from_pretrained(final).eval()
        hf_score = hf(input_ids=torch.tensor([ids])).logits[0, 0].item()
    assert rm.score(["2+3="], [" 5"])[0] == pytest.approx(hf_score, abs=1e-5)


@pytest.mark.parametrize("module", ["trainers.rm.train", "trainers.rm.recipe"])
def test_rm_modules_import_on_their_own(module, subprocess_env):
    """Regression: trainers.rm.recipe and trainers.rl.recipe once imported each other in a cycle."""
    proc = subprocess.run(
        [sys.executable, "-c", f"import {module}"],
        env=subprocess_env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr


# ----------------------------------------------------------------------------------- recipe errors


def _assert_user_error(code: int, err: str, *must_name: str) -> str:
    assert "Traceback" not in err, err
    assert code == 2, f"exit {code}; stderr:\n{err}"
    lines = err.strip().splitlines()
    assert len(lines) == 1, f"expected one stderr line, got {len(lines)}:\n{err}"
    line = lines[0]
    assert line.startswith("error: "), line
    for word in must_name:
        assert word in line, f"{word!r} not in {line!r}"
    return line


BAD_RM_OVERRIDES = {
    "procedural data": (["data.train=procedural:arith"], ["'data.train'", "procedural:arith", "preference"]),
    "procedural test data": (["data.test=procedural:arith:test?n=5"], ["'data.test'"]),
    "unknown kind": (["rm.kind=foo"], ["'rm.kind'", "'foo'", "bt", "gcrm", "prm"]),
    "prm loss": (["rm.prm_loss=foo"], ["'rm.prm_loss'", "'foo'", "soft_ce", "mse"]),
    "batch size 0": (["train.batch_size=0"], ["'train.batch_size'", "≥ 1", "0"]),
    "micro batch 0": (["train.micro_batch_size=0"], ["'train.micro_batch_size'"]),
    "contrastive strategy": (
        ["rm.contrastive_strategy=foo"],
        ["'rm.contrastive_strategy'", "'foo'", "cosine"],
    ),
    "position pairs": (["rm.position_pairs=0"], ["'rm.position_pairs'"]),
    "negative weight": (["rm.contrastive_weight=-1"], ["'rm.contrastive_weight'", "≥ 0"]),
    "max length": (["data.max_length=1"], ["'data.max_length'"]),
    "unknown key": (["rm.kindd=bt"], ["'rm.kindd'"]),
    "rl key": (["grpo.loss_type=dapo"], ["'grpo"]),
    "missing data": (["data.train=./nope.jsonl"], ["'data.train'", "nope.jsonl"]),
    "missing model": (["model.name_or_path=./nope-model"], ["'model.name_or_path'", "nope-model"]),
}


@pytest.mark.parametrize("command", ["check", "train"])
@pytest.mark.parametrize("overrides, words", BAD_RM_OVERRIDES.values(), ids=BAD_RM_OVERRIDES.keys())
def test_rm_recipe_errors(command, overrides, words, data_files, tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "run"
    base = [f"model.name_or_path={tiny_model_dir}", f"data.train={data_files['pairs']}", "data.test=null"]
    code = main([command, str(RM_RECIPES / "gcrm_tiny.yaml"), *base, f"output_dir={out}", *overrides])
    _assert_user_error(code, capsys.readouterr().err, *words)
    assert not out.exists()  # failed before any work


def test_rm_recipes_pass_check(data_files, tiny_model_dir, capsys):
    for kind in ("bt", "gcrm", "prm"):
        data = data_files["steps" if kind == "prm" else "pairs"]
        code = main(
            ["check", str(RM_RECIPES / f"{kind}_tiny.yaml"), f"model.name_or_path={tiny_model_dir}"]
            + [f"data.train={data}", f"data.test={data}"]
        )
        assert code == 0
        assert capsys.readouterr().out.startswith("ok: ")


@pytest.mark.parametrize(
    "kind, bad_row, words",
    [
        ("bt", {"prompt": "p", "chosen": "a"}, ["row 3 of", "not a preference pair"]),
        ("prm", {"prompt": "p", "completions": ["a", "b"], "labels": [1]}, ["row 3 of", "equal length"]),
        ("prm", {"prompt": "p", "completions": ["a"], "labels": [2]}, ["row 3 of", "[0, 1]"]),
    ],
)
def test_bad_row_in_training_data_is_user_error(kind, bad_row, words, tiny_model_dir, tmp_path, capsys):
    good = STEPS if kind == "prm" else PAIRS
    train = _write_jsonl(tmp_path / "train.jsonl", [*good[:3], bad_row, *good[3:]])
    code = main(
        ["train", str(RM_RECIPES / f"{kind}_tiny.yaml"), f"model.name_or_path={tiny_model_dir}"]
        + [f"data.train={train}", "data.test=null", f"output_dir={tmp_path / 'run'}", "train.steps=1"]
    )
    line = _assert_user_error(code, capsys.readouterr().err, *words)
    assert str(train) in line


def test_all_rows_over_max_length_is_user_error(tiny_model_dir, data_files, tmp_path, capsys):
    code = main(
        ["train", str(RM_RECIPES / "bt_tiny.yaml"), f"model.name_or_path={tiny_model_dir}"]
        + [f"data.train={data_files['pairs']}", "data.test=null", f"output_dir={tmp_path / 'run'}"]
        + ["data.max_length=2", "train.steps=1"]
    )
    _assert_user_error(code, capsys.readouterr().err, "data.train", "no usable rows", "max_length")


# ----------------------------------------------------------------------------------- telos eval rm


@pytest.fixture(scope="module")
def samples_file(tiny_model_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("rm-samples")
    code = main(
        ["data", "preferences", "--model", str(tiny_model_dir), "--data", "procedural:arith?n=6&max_value=20"]
        + ["--samples", "4", "--max-tokens", "24", "--out", str(out / "pairs.jsonl")]
        + ["--samples-out", str(out / "samples.jsonl")]
    )
    assert code == 0
    return out / "samples.jsonl"


def _results(out: Path) -> dict:
    data = json.loads((out / "results.json").read_text())
    assert (out / "report.md").is_file()
    assert (out / "report.md").read_text().startswith("# Reward model evaluation")
    return data


def test_eval_rm_gcrm_on_samples(runs, samples_file, tmp_path, capsys):
    out = tmp_path / "eval"
    code = main(
        ["eval", "rm", "--model", str(runs["gcrm"] / "final"), "--data", str(samples_file)]
        + ["--out", str(out)]
    )
    assert code == 0
    assert "auroc_reward" in capsys.readouterr().out
    data = _results(out)
    assert data["config"]["kind"] == "samples"
    m = data["metrics"]
    assert (out / "partial_auroc.png").stat().st_size > 0
    assert m["goal_conditioned"] is True
    assert m["samples"] == len(_read_jsonl(samples_file))
    for key in ("auroc_reward", "auroc_q_last", "auroc_q_mean", "best_of_n_reward", "weighted_vote_reward"):
        assert key in m
        assert math.isnan(m[key]) or 0.0 <= m[key] <= 1.0, (key, m[key])
    assert set(m["partial_auroc_reward"]) == set(m["partial_auroc_q"])
    assert len(m["partial_auroc_reward"]) > 2
    gf = m["goal_filter"]
    assert {"skip", "tau", "tokens_saved_share"} <= set(gf)
    assert gf["skip"] == 5 and gf["tau"] == 0.0
    assert 0.0 <= gf["tokens_saved_share"] <= 1.0


def test_eval_rm_bt_on_samples_has_no_goal_metrics(runs, samples_file, tmp_path):
    out = tmp_path / "eval"
    args = ["eval", "rm", "--model", str(runs["bt"] / "final"), "--data", str(samples_file), "--limit", "8"]
    assert main([*args, "--out", str(out)]) == 0
    m = _results(out)["metrics"]
    assert m["goal_conditioned"] is False and m["samples"] == 8
    assert "auroc_reward" in m and "goal_filter" not in m and "auroc_q_last" not in m
    assert (out / "partial_auroc.png").is_file()


@pytest.mark.parametrize("kind", ["bt", "gcrm"])
def test_eval_rm_on_pairs(kind, runs, data_files, tmp_path):
    from rewards.reward_model import RewardModel

    out = tmp_path / "eval"
    args = ["eval", "rm", "--model", str(runs[kind] / "final"), "--data", str(data_files["pairs"])]
    assert main([*args, "--out", str(out)]) == 0
    data = _results(out)
    assert data["config"]["kind"] == "pairs"
    m = data["metrics"]
    assert m["pairs"] == len(PAIRS)
    rm = RewardModel.from_pretrained(runs[kind] / "final", device="cpu")
    chosen = rm.score([r.get("prompt", "") for r in PAIRS], [r["chosen"] for r in PAIRS])
    rejected = rm.score([r.get("prompt", "") for r in PAIRS], [r["rejected"] for r in PAIRS])
    wins = sum(c > r for c, r in zip(chosen, rejected, strict=True))
    assert m["pairwise_accuracy"] == pytest.approx(wins / len(PAIRS))
    assert not (out / "partial_auroc.png").exists()


def test_eval_rm_prm_on_steps(runs, data_files, tmp_path):
    out = tmp_path / "eval"
    args = ["eval", "rm", "--model", str(runs["prm"] / "final"), "--data", str(data_files["steps"])]
    assert main([*args, "--aggregate", "last", "--out", str(out)]) == 0
    data = _results(out)
    assert data["config"]["kind"] == "steps"
    m = data["metrics"]
    assert m["solutions"] == len(STEPS) and m["steps"] == 3 * len(STEPS)
    assert 0.0 <= m["step_accuracy"] <= 1.0
    for agg in ("min", "last", "prod"):
        assert 0.0 <= m[f"best_of_n_{agg}"] <= 1.0
        assert 0.0 <= m[f"auroc_{agg}"] <= 1.0  # both classes present in STEPS
    assert m["aggregate"] == "last"
    assert m["oracle_any_correct"] == pytest.approx(0.5)  # groups a = 0, 2 end correct


def test_eval_rm_errors(runs, data_files, tmp_path, capsys):
    weird = _write_jsonl(tmp_path / "weird.jsonl", [{"text": "hello"}])
    cases = [
        (["--data", str(weird)], ["cannot tell", "text"]),
        (["--data", str(data_files["pairs"]), "--aggregate", "max"], ["--aggregate", "'max'", "min"]),
        (["--data", str(data_files["pairs"]), "--skip", "-1"], ["--skip"]),
    ]
    for extra, words in cases:
        code = main(
            ["eval", "rm", "--model", str(runs["bt"] / "final"), "--out", str(tmp_path / "e"), *extra]
        )
        _assert_user_error(code, capsys.readouterr().err, *words)
    # a bt directory is not a goal-conditioned RM
    from rewards.reward_model import GoalConditionedRM
    from telos.errors import UserError

    with pytest.raises(UserError, match="goal_vector"):
        GoalConditionedRM.from_pretrained(runs["bt"] / "final", device="cpu")


def test_train_layers_trains_only_the_top_layers_and_the_head(tiny_model_dir, data_files, tmp_path):
    """rm.train_layers=1: the embeddings and every layer but the last keep the start weights."""
    from safetensors.torch import load_file

    _train("bt", tiny_model_dir, data_files, tmp_path / "run", "rm.train_layers=1", "train.lr=1e-2")
    start = load_file(str(tiny_model_dir / "model.safetensors"))
    final = load_file(str(tmp_path / "run" / "final" / "model.safetensors"))
    n_layers = 1 + max(int(k.split(".")[2]) for k in start if k.startswith("model.layers."))
    moved = {k for k in start if k in final and not torch.equal(start[k], final[k])}
    assert moved and all(
        k.startswith(f"model.layers.{n_layers - 1}.") or k == "model.norm.weight" for k in moved
    ), moved
    assert any(k.startswith(f"model.layers.{n_layers - 1}.") for k in moved)
    code = main(
        [
            "check",
            str(RM_RECIPES / "bt_tiny.yaml"),
            f"model.name_or_path={tiny_model_dir}",
            f"data.train={data_files['pairs']}",
            "rm.train_layers=0",
        ]
    )
    assert code == 2


def test_freeze_lower_layers_counts_and_refuses_too_many(tiny_model_dir):
    from rewards.reward_model import _parts, freeze_lower_layers, load_head_model
    from telos.errors import UserError

    trunk, head = _parts(load_head_model(str(tiny_model_dir), "bt"))
    total = sum(p.numel() for p in trunk.parameters())
    kept = sum(p.numel() for p in trunk.layers[-1].parameters()) + sum(
        p.numel() for p in trunk.norm.parameters()
    )
    assert freeze_lower_layers(trunk, 1) == total - kept
    assert all(p.requires_grad for p in head.parameters())
    with pytest.raises(UserError, match="has 2 layers|layers"):
        freeze_lower_layers(trunk, 99)
