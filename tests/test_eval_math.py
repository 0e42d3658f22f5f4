"""``telos eval math`` end to end through the real CLI, on a tiny model built locally."""

from __future__ import annotations

import json
import re

import pytest
import torch

from telos.cli import main
from trainers.common.sft import SFTConfig
from trainers.common.tiny import TinyTaskConfig, build_sft_model

DATA = "procedural:arith:test?n=8&max_value=30"


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # On a shared 2-core machine, 2 OpenMP threads that spin-wait for each other can be ~10x
    # slower than 1 thread for a model this small.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory, one_thread):
    out = tmp_path_factory.mktemp("eval-math") / "tiny"
    build_sft_model(TinyTaskConfig(num_train=500, sft=SFTConfig(steps=20, batch_size=16)), out)
    return out


def _run(capsys, *argv):
    code = main(["eval", "math", *map(str, argv)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_eval_math_samples(tiny_model, tmp_path, capsys):
    out = tmp_path / "out"
    code, stdout, _ = _run(
        capsys, "--model", tiny_model, "--data", DATA, "--samples", 4, "--max-tokens", 32, "--out", out
    )
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    config, metrics = results["config"], results["metrics"]
    assert config == {
        "model": str(tiny_model),
        "data": DATA,
        "samples": 4,
        "temperature": 1.0,  # the default for k > 1
        "top_p": 1.0,
        "max_tokens": 32,
        "limit": None,
        "seed": 0,
        "template": "plain",
        "chat": False,
        "reward": "accuracy",
        "engine": "hf",
    }
    assert metrics["num_problems"] == 8
    assert metrics["num_samples"] == 32
    assert metrics["unscorable_samples"] == 0
    assert metrics["unscorable_problems"] == 0
    for key in ("pass@1", "pass@2", "pass@4", "maj@1", "maj@2", "maj@4", "truncated_frac", "reward_mean"):
        assert 0.0 <= metrics[key] <= 1.0, key
    assert metrics["pass@1"] <= metrics["pass@2"] <= metrics["pass@4"]
    assert metrics["pass@1"] == pytest.approx(metrics["reward_mean"])  # 0/1 rewards, none dropped
    assert 0 < metrics["mean_completion_tokens"] <= 32
    assert metrics["generated_tokens"] == pytest.approx(metrics["mean_completion_tokens"] * 32)
    assert metrics["tokens_per_s"] > 0
    assert metrics["wall_s"] >= metrics["generation_s"] > 0

    report = (out / "report.md").read_text()
    assert "| pass@4 " in report
    assert "| pass@1 " in stdout and "| maj@4 " in stdout  # the table is printed
    assert (out / "pass_at_k.png").read_bytes().startswith(b"\x89PNG")
    lines = (out / "samples.jsonl").read_text().splitlines()
    assert len(lines) == 8
    first = json.loads(lines[0])
    assert len(first["completions"]) == len(first["scores"]) == 4


def test_eval_math_greedy_default_and_unscorable(tiny_model, tmp_path, capsys):
    # A user reward function that cannot score the first problem and accepts everything else.
    rewards = tmp_path / "my_rewards.py"
    rewards.write_text(
        "def first_unscorable(prompts, completions, answer, **kw):\n"
        "    first = prompts[0]\n"
        "    return [None if p == first else 1.0 for p in prompts]\n"
    )
    out = tmp_path / "greedy"
    code, stdout, _ = _run(
        capsys,
        "--model",
        tiny_model,
        "--data",
        DATA,
        "--limit",
        3,
        "--max-tokens",
        16,
        "--reward",
        f"{rewards}:first_unscorable",
        "--out",
        out,
    )
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    assert results["config"]["temperature"] == 0.0  # greedy when k = 1
    m = results["metrics"]
    assert m["num_problems"] == 3
    assert m["unscorable_samples"] == 1
    assert m["unscorable_problems"] == 1
    assert m["pass@1"] == 1.0  # the unscorable problem is excluded, not scored 0
    assert re.search(r"^\| unscorable samples +\| 1 +\|$", stdout, re.MULTILINE)


def test_eval_math_greedy_is_deterministic(tiny_model, tmp_path, capsys):
    metrics = []
    for name in ("a", "b"):
        code, _, _ = _run(
            capsys,
            "--model",
            tiny_model,
            "--data",
            DATA,
            "--limit",
            4,
            "--max-tokens",
            16,
            "--out",
            tmp_path / name,
        )
        assert code == 0
        metrics.append((tmp_path / name / "samples.jsonl").read_text())
    assert metrics[0] == metrics[1]


def _assert_one_error_line(code, stdout, stderr, needle):
    assert code == 2
    assert stdout == ""
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: ")
    assert needle in lines[0]


def test_bad_model_path(tmp_path, capsys):
    code, stdout, stderr = _run(capsys, "--model", tmp_path / "nope", "--data", DATA, "--out", tmp_path / "o")
    _assert_one_error_line(code, stdout, stderr, "model path not found")
    assert not (tmp_path / "o").exists()


def test_bad_data_spec(tiny_model, tmp_path, capsys):
    code, stdout, stderr = _run(
        capsys, "--model", tiny_model, "--data", "nonsense:thing", "--out", tmp_path / "o"
    )
    _assert_one_error_line(code, stdout, stderr, "bad data spec")
    code, stdout, stderr = _run(
        capsys, "--model", tiny_model, "--data", tmp_path / "missing.jsonl", "--out", tmp_path / "o"
    )
    _assert_one_error_line(code, stdout, stderr, "data file not found")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    ("option", "value", "needle"),
    [
        ("--samples", 0, "--samples"),
        ("--max-tokens", 0, "--max-tokens"),
        ("--top-p", 0, "--top-p"),
        ("--temperature", -1, "--temperature"),
        ("--reward", "no_such_reward", "unknown reward function"),
        ("--template", "no_such_template", "unknown prompt template"),
        ("--limit", 0, "--limit"),
    ],
)
def test_bad_options(tiny_model, tmp_path, capsys, option, value, needle):
    code, stdout, stderr = _run(
        capsys, "--model", tiny_model, "--data", DATA, option, value, "--out", tmp_path / "o"
    )
    _assert_one_error_line(code, stdout, stderr, needle)


def test_unknown_engine(tiny_model, tmp_path, capsys):
    # Backends register when rollout.backends is imported by make_engine's caller, so the name is checked
    # there, after the model is loaded (transformers' loading bar may precede the error line).
    code, stdout, stderr = _run(
        capsys, "--model", tiny_model, "--data", DATA, "--engine", "no_such_engine", "--out", tmp_path / "o"
    )
    assert code == 2
    assert stdout == ""
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("error: unknown engine backend 'no_such_engine'")
    assert "Traceback" not in stderr
