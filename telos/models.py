"""Model and tokenizer loading: a local path, a hub id, or a tiny model built from a config.

The tiny model is what makes the laptop path possible without downloads: a byte-level BPE
tokenizer trained on text we generate, and a Qwen2/Llama config of a few million parameters.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

import torch

from telos.errors import UserError
from telos.pretrained import PACKAGED_MODELS, is_packaged, resolve_model
from telos.schema import number, text

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
SPECIAL_TOKENS = {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>"}


@dataclass
class TinyModelConfig:
    """Shape of a locally built model (``model.name_or_path: tiny``)."""

    arch: Annotated[Literal["qwen2", "llama"], text("transformers architecture")] = "qwen2"
    hidden_size: Annotated[int, number("width of the residual stream", ge=1)] = 128
    num_layers: Annotated[int, number("decoder layers", ge=1)] = 4
    num_heads: Annotated[int, number("attention heads (divides hidden_size)", ge=1)] = 4
    num_kv_heads: Annotated[int, number("key/value heads (divides num_heads)", ge=1)] = 2
    intermediate_size: Annotated[int, number("MLP width", ge=1)] = 384
    vocab_size: Annotated[int, number("BPE vocabulary trained on the generated text", ge=1)] = 384
    max_position_embeddings: Annotated[int, number("longest sequence, in tokens", ge=1)] = 512


@dataclass
class LoraConfig:
    r: Annotated[int, number("LoRA rank", ge=1)] = 16
    alpha: Annotated[int, number("LoRA scale numerator (scale = alpha / r)", ge=1)] = 32
    dropout: Annotated[float, number("dropout on the LoRA input", ge=0, lt=1)] = 0.0
    target_modules: Annotated[list[str], text("module names that get adapters")] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"]
    )


def build_tokenizer(corpus: list[str], vocab_size: int, cross_spaces: bool = False):
    """Train a byte-level BPE tokenizer on ``corpus``; digits stay single tokens (arithmetic
    is learnable digit by digit). ``cross_spaces``: merges may span spaces (not newlines), so
    recurring phrases of a fixed prompt format become single tokens. Returns a
    ``PreTrainedTokenizerFast``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=SPECIAL_TOKENS["unk_token"]))
    if cross_spaces:
        splits = [
            pre_tokenizers.Split("\n", "merged_with_previous"),
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    else:
        splits = [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False),
        ]
    tok.pre_tokenizer = pre_tokenizers.Sequence(splits)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS.values()),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, **SPECIAL_TOKENS)


def build_tiny_model(cfg: TinyModelConfig, tokenizer, seed: int = 0, vocab_size: int | None = None):
    """A randomly initialised causal LM of the given shape, sized to the tokenizer (or to
    ``vocab_size`` — a larger embedding whose extra ids decode to nothing)."""
    from transformers import AutoModelForCausalLM, LlamaConfig, Qwen2Config

    config_cls = {"qwen2": Qwen2Config, "llama": LlamaConfig}.get(cfg.arch)
    if config_cls is None:
        raise UserError(f"tiny.arch {cfg.arch!r} is not valid; valid: llama, qwen2")
    config = config_cls(
        vocab_size=vocab_size or len(tokenizer),
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_kv_heads,
        max_position_embeddings=cfg.max_position_embeddings,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    quiet_transformers()
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config, dtype=torch.float32)


def quiet_transformers() -> None:
    """Transformers' per-load/per-save progress bars drown the run's own progress output."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


def _is_local(name_or_path: str) -> bool:
    # a hub id is "name" or "org/name": a path with two or more slashes can only be local
    return (
        name_or_path.startswith((".", "/", "~"))
        or name_or_path.count("/") >= 2
        or os.path.exists(name_or_path)
    )


def check_model_path(name_or_path: str) -> None:
    """A local-looking path must exist and hold a model config; a packaged model's package must
    be installed (it is converted on first load, not here); hub ids pass (checked on load)."""
    if is_packaged(name_or_path):
        PACKAGED_MODELS.get(name_or_path).gguf_path(name_or_path)
    elif _is_local(name_or_path):
        p = Path(name_or_path).expanduser()
        if not p.exists():
            raise UserError(f"model path not found: {name_or_path}")
        if not (p / "config.json").exists() and not (p / "adapter_config.json").exists():
            raise UserError(f"model path {name_or_path} has no config.json (not a saved model)")


# tokenizer classes that carry no model-specific rules: the saved tokenizer.json is the tokenizer
_GENERIC_TOKENIZERS = ("TokenizersBackend", "PreTrainedTokenizerFast")


def load_tokenizer(name_or_path: str):
    """The model's tokenizer. A generic fast tokenizer (what ``build_tokenizer`` saves) is
    loaded exactly as saved: transformers 5's ``AutoTokenizer`` rebuilds the tokenizer of a
    ``qwen2``/``llama`` directory from its model type and swaps in that model's stock
    pre-tokenizer, so the model would read text split differently from how it was trained."""
    import json

    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    check_model_path(name_or_path)
    name_or_path = resolve_model(name_or_path)
    config = Path(name_or_path).expanduser() / "tokenizer_config.json"
    generic = False
    if _is_local(name_or_path) and config.is_file():
        generic = json.loads(config.read_text()).get("tokenizer_class") in _GENERIC_TOKENIZERS
    loader = PreTrainedTokenizerFast if generic else AutoTokenizer
    tok = loader.from_pretrained(name_or_path)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model(name_or_path: str, dtype: str = "float32", lora: LoraConfig | None = None):
    """Load a causal LM (local dir, hub id or packaged model); wrap it with a LoRA adapter when asked."""
    from transformers import AutoModelForCausalLM

    check_model_path(name_or_path)
    name_or_path = resolve_model(name_or_path)
    quiet_transformers()
    if dtype not in DTYPES:
        raise UserError(f"model.dtype {dtype!r} is not valid; valid: {', '.join(DTYPES)}")
    model = AutoModelForCausalLM.from_pretrained(name_or_path, dtype=DTYPES[dtype])
    if lora is not None:
        from peft import LoraConfig as PeftLoraConfig
        from peft import get_peft_model

        model = get_peft_model(
            model,
            PeftLoraConfig(
                r=lora.r,
                lora_alpha=lora.alpha,
                lora_dropout=lora.dropout,
                target_modules=lora.target_modules,
                task_type="CAUSAL_LM",
            ),
        )
    return model


def count_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())
