"""User errors in recipes and on the command line: ``telos check`` / ``telos train`` exit 2 with
exactly one stderr line ``error: ...`` that names the offending key, and no traceback; valid
recipes pass. Every check here must fail *before any work* (no model load, no run directory)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
_BIN = REPO / ".venv" / "bin" / "telos"
TELOS = [str(_BIN)] if _BIN.exists() else [sys.executable, "-m", "telos"]
TINY = REPO / "recipes" / "math" / "grpo_tiny.yaml"


def _telos(*args: str, env: dict, cwd: Path = REPO, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*TELOS, *map(str, args)], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout
    )


def _assert_user_error(proc: subprocess.CompletedProcess, *must_name: str) -> str:
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == 2, f"exit {proc.returncode}; stderr:\n{proc.stderr}"
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one stderr line, got {len(lines)}:\n{proc.stderr}"
    line = lines[0]
    assert line.startswith("error: "), line
    for word in must_name:
        assert word in line, f"{word!r} not in {line!r}"
    return line


@pytest.mark.parametrize(
    "recipe",
    [
        f"recipes/math/{algo}_{size}.yaml"
        for algo in ("grpo", "nft", "oreal")
        for size in ("tiny", "qwen2.5_0.5b")
    ]
    + ["recipes/rm/bt_qwen2.5_0.5b.yaml"],
)
def test_shipped_recipes_pass_check(recipe, subprocess_env):
    proc = _telos("check", recipe, env=subprocess_env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"ok: {recipe}"), proc.stdout
    assert "Traceback" not in proc.stderr


def test_python_m_telos_check(subprocess_env):
    proc = subprocess.run(
        [sys.executable, "-m", "telos", "check", str(TINY), "train.steps=7"],
        env=subprocess_env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "7 steps" in proc.stdout


# (overrides, words the one-line error must contain). Run through a real ``telos`` process.
BAD_OVERRIDES = {
    "unknown key": (["train.lrr=1"], ["'train.lrr'", "valid keys", "lr"]),
    "wrong type": (["train.steps=abc"], ["'train.steps'", "int", "abc"]),
    "registry choice": (["grpo.loss_type=foo"], ["'grpo.loss_type'", "'foo'", "dapo", "grpo"]),
    "missing model dir": (["model.name_or_path=./nope"], ["'model.name_or_path'", "./nope"]),
    "missing data file": (["data.train=./missing.jsonl"], ["'data.train'", "./missing.jsonl"]),
    "unknown trainer": (["trainer=foo"], ["'trainer'", "'foo'", "grpo"]),
    "bad override syntax": (["foo"], ["'foo'", "key.sub=value"]),
}


@pytest.mark.parametrize("overrides, words", BAD_OVERRIDES.values(), ids=BAD_OVERRIDES.keys())
def test_check_rejects_bad_override(overrides, words, subprocess_env):
    _assert_user_error(_telos("check", TINY, *overrides, env=subprocess_env), *words)


# More of the same, checked in-process through ``telos.cli.main`` (a process each would cost
# ~4 s of imports apiece on a 2-core machine); an exception other than UserError escapes
# ``main`` and fails the test just as a traceback would.
MORE_BAD_OVERRIDES = {
    "unknown top-level key": (["foo=1"], ["'foo'", "valid keys", "train"]),
    "bool is not int": (["train.steps=true"], ["'train.steps'", "int"]),
    "float is not int": (["train.steps=1.5"], ["'train.steps'", "int"]),
    "wrong type float": (["grpo.epsilon=abc"], ["'grpo.epsilon'", "float"]),
    "wrong type list": (["sampling.stop=foo"], ["'sampling.stop'", "list"]),
    "section given a scalar": (["train=5"], ["'train'", "section"]),
    "scalar used as section": (["name.x=1"], ["'name.x'", "not a section"]),
    "literal choice": (["grpo.scale_rewards=foo"], ["'grpo.scale_rewards'", "group", "batch", "none"]),
    "dtype choice": (["model.dtype=fp8"], ["'model.dtype'", "float32", "bfloat16"]),
    "missing test file": (["data.test=./missing.jsonl"], ["'data.test'", "./missing.jsonl"]),
    "bad template": (["data.template=xx"], ["'data.template'", "plain"]),
    "unknown reward": (["rewards=[{name: nope}]"], ["'rewards[0].name'", "nope", "numeric"]),
    "reward weight type": (["rewards=[{name: numeric, weight: heavy}]"], ["'rewards[0].weight'", "float"]),
    "zero steps": (["train.steps=0"], ["'train.steps'", "1"]),
    "one generation": (["sampling.num_generations=1"], ["'sampling.num_generations'", "2"]),
    "negative temperature": (["sampling.temperature=-1"], ["'sampling.temperature'"]),
    "unknown backend": (["engine.backend=sglang"], ["'engine.backend'", "hf", "vllm"]),
    "server without url": (["engine.backend=vllm", "engine.mode=server"], ["'engine.url'", "http"]),
    "hf has no server": (["engine.mode=server", "engine.url=http://x:1"], ["'engine.mode'", "vllm"]),
    "correction cap": (["engine.correction_cap=0"], ["'engine.correction_cap'"]),
    "correction mode": (["engine.correction=clip"], ["'engine.correction'", "token_truncate"]),
    # a typo inside an optional section must name the inner key, not only the section
    "lora field type": (["model.lora={r: abc}"], ["'model.lora.r'", "int"]),
    "lora unknown key": (["model.lora={rank: 8}"], ["'model.lora.rank'", "alpha"]),
    # checks that today happen only once `telos train` has set up (model loaded, or a step run)
    "missing resume checkpoint": (["resume=./nope"], ["resume", "./nope"]),
    "unknown tracker": (["report_to=[foo]"], ["report_to", "foo", "tensorboard"]),
    "unknown tiny task": (["model.name_or_path=tiny:foo"], ["tiny:foo", "arith"]),
    "unknown procedural task": (["data.train=procedural:nope"], ["'data.train'", "nope", "arith"]),
    "bad procedural n": (["data.train=procedural:arith?n=abc"], ["'data.train'", "abc"]),
    "keep_last zero": (["train.keep_last=0"], ["'train.keep_last'", "1"]),
    # `step % -1 == 0` holds for every step: a negative value silently evaluates every step
    "negative eval_every": (["train.eval_every=-1"], ["'train.eval_every'", "0"]),
}


@pytest.mark.parametrize("overrides, words", MORE_BAD_OVERRIDES.values(), ids=MORE_BAD_OVERRIDES.keys())
def test_check_rejects_bad_override_inprocess(overrides, words, capsys):
    from telos.cli import main

    code = main(["check", str(TINY), *overrides])
    captured = capsys.readouterr()
    _assert_user_error(subprocess.CompletedProcess([], code, captured.out, captured.err), *words)


# The NFT and OREAL sections, checked against their own tiny recipes.
ALGO_BAD_OVERRIDES = {
    "grpo section in an nft recipe": ("nft", ["grpo.epsilon=0.1"], ["unknown key 'grpo'", "nft"]),
    "nft omega choice": ("nft", ["nft.omega=half"], ["'nft.omega'", "1-p", "sqrt"]),
    "nft level choice": ("nft", ["nft.level=word"], ["'nft.level'", "token", "sequence"]),
    "nft p_clamp order": ("nft", ["nft.p_clamp=[0.9, 0.1]"], ["p_clamp", "lo <= hi"]),
    "nft p_clamp shape": ("nft", ["nft.p_clamp=0.5"], ["p_clamp", "two numbers"]),
    "nft normalizer": ("nft", ["nft.normalizer=0"], ["normalizer", "> 0"]),
    "nft mini_batches": ("nft", ["nft.mini_batches=0"], ["'nft.mini_batches'", "1"]),
    "nft section in an oreal recipe": ("oreal", ["nft.omega=1"], ["unknown key 'nft'", "oreal"]),
    "oreal freeze past the end": (
        "oreal",
        ["oreal.freeze_policy_steps=40"],
        ["freeze_policy_steps", "train.steps"],
    ),
    "oreal negative rm_lr": ("oreal", ["oreal.rm_lr=-1"], ["'oreal.rm_lr'", "0"]),
    "oreal token_rm type": ("oreal", ["oreal.token_rm=maybe"], ["'oreal.token_rm'", "bool"]),
    "negative token budget": ("oreal", ["train.max_generated_tokens=-5"], ["'train.max_generated_tokens'"]),
}


@pytest.mark.parametrize("algo, overrides, words", ALGO_BAD_OVERRIDES.values(), ids=ALGO_BAD_OVERRIDES.keys())
def test_check_rejects_bad_algorithm_section(algo, overrides, words, capsys):
    from telos.cli import main

    code = main(["check", str(TINY.parent / f"{algo}_tiny.yaml"), *overrides])
    captured = capsys.readouterr()
    _assert_user_error(subprocess.CompletedProcess([], code, captured.out, captured.err), *words)


def test_numeric_yaml_value_is_accepted_as_a_string_choice(capsys):
    from telos.cli import main

    assert main(["check", str(TINY.parent / "nft_tiny.yaml"), "nft.omega=1"]) == 0  # `1` means "1"


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_missing_required_section(tmp_path, subprocess_env):
    recipe = yaml.safe_load(TINY.read_text())
    del recipe["data"]
    path = _write(tmp_path / "nodata.yaml", yaml.safe_dump(recipe))
    _assert_user_error(_telos("check", path, env=subprocess_env), "missing required key 'data'")


def test_missing_required_trainer(tmp_path, subprocess_env):
    recipe = yaml.safe_load(TINY.read_text())
    del recipe["trainer"]
    path = _write(tmp_path / "notrainer.yaml", yaml.safe_dump(recipe))
    _assert_user_error(_telos("check", path, env=subprocess_env), "'trainer'", "grpo")


@pytest.mark.parametrize(
    "text, words",
    [
        ('trainer: grpo\nmodel: {name_or_path: "x"\n', ["not valid YAML", "line"]),
        ("trainer: grpo\n\tmodel: x\n", ["not valid YAML"]),
        ("- a\n- b\n", ["mapping"]),
        ("", ["mapping"]),
    ],
    ids=["unclosed-flow", "tab", "list", "empty"],
)
def test_not_a_yaml_mapping(tmp_path, subprocess_env, text, words):
    path = _write(tmp_path / "bad.yaml", text)
    line = _assert_user_error(_telos("check", path, env=subprocess_env), str(path), *words)
    assert len(line) < 400, line


def test_missing_recipe_file(tmp_path, subprocess_env):
    missing = tmp_path / "nope.yaml"
    _assert_user_error(_telos("check", missing, env=subprocess_env), "recipe not found", str(missing))


def test_recipe_is_a_directory(subprocess_env):
    _assert_user_error(_telos("check", "recipes", env=subprocess_env), "recipes")


def test_train_fails_before_any_work(tmp_path, subprocess_env):
    """``telos train`` with a bad key: the same one line, and no run directory is created."""
    out = tmp_path / "run"
    proc = _telos("train", TINY, f"output_dir={out}", "train.lrr=1", env=subprocess_env)
    _assert_user_error(proc, "'train.lrr'")
    assert not out.exists()


def test_debug_shows_traceback(subprocess_env):
    proc = _telos("--debug", "check", TINY, "train.lrr=1", env=subprocess_env)
    assert proc.returncode != 0
    assert "Traceback" in proc.stderr and "train.lrr" in proc.stderr


def test_quickstart_rejects_unknown_model_before_any_work(tmp_path, capsys):
    from telos.cli import main

    out = tmp_path / "qs"
    assert main(["quickstart", "--model", "gpt5", "--out", str(out)]) == 2
    _assert_user_error(
        subprocess.CompletedProcess([], 2, "", capsys.readouterr().err), "--model", "tiny", "smollm2"
    )
    assert main(["quickstart", "--model", "smollm2", "--algo", "ppo", "--out", str(out)]) == 2
    _assert_user_error(subprocess.CompletedProcess([], 2, "", capsys.readouterr().err), "--algo", "grpo")
    assert not out.exists()


@pytest.mark.parametrize(
    "argv, words",
    [
        (["--policy", "/nonexistent/model"], "model path not found"),
        (["--policy", "tiny:arith", "--rm", "gcrm"], "is not NAME=PATH"),
        (["--policy", "tiny:arith", "--engine", "tgi"], "valid: hf, vllm"),
        (["--policy", "tiny:arith", "--rm", "a=/nonexistent"], "not a directory"),
        (["--policy", "tiny:arith", "--max-queue", "0"], "--max-queue must be >= 1"),
        (["--policy", "tiny:arith", "--port", "70000"], "--port must be in"),
    ],
)
def test_serve_flags_fail_in_one_line(argv, words, capsys):
    """`telos serve` refuses a bad flag before loading any model: one `error:` line, exit 2."""
    from telos.cli import main

    assert main(["serve", *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and words in err[0]
