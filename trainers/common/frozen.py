"""A frozen model behind an engine: the actor a strategist guides or a retrospective model
reflects for, and the actor ``telos eval agent`` plays with. Nothing trains it, so it is loaded
in eval mode once and only generates: in this process (a model directory, hub id, ``tiny:``,
``llm:PATH``), or on an OpenAI-compatible server (``openai:URL#MODEL``, MODEL also naming the
tokenizer to load here: a directory or hub id)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from telos.errors import UserError
from trainers.common.start_model import start_model_dir


@dataclass
class FrozenModel:
    engine: object
    tokenizer: object
    max_context: int  # the model's max_position_embeddings
    path: str

    def close(self) -> None:
        self.engine.close()


FORMS = "a model directory, a hub id, tiny:textworld-cooking, llm:PATH, openai:URL#MODEL"


def parse_openai(name: str, what: str) -> tuple[str, str]:
    """``openai:URL#MODEL`` → (URL, MODEL)."""
    url, _, model = name.removeprefix("openai:").partition("#")
    if not url.startswith(("http://", "https://")) or not model:
        raise UserError(f"{what} {name!r} is not valid; valid: openai:http://HOST:PORT/v1#MODEL")
    return url, model


def model_dir(name: str, what: str) -> str:
    """``llm:PATH`` or a plain model (directory, hub id, ``tiny:...``, packaged) → a loadable
    path (a tiny model is built once per machine); a local path without a model is an error."""
    name = name.removeprefix("llm:")
    if not name:
        raise UserError(f"{what} is empty; valid: {FORMS}")
    path = start_model_dir(name)
    looks_local = name.startswith((".", "/", "~")) or name.startswith(("tiny:", "smollm2:"))
    if looks_local and not (Path(path).expanduser() / "config.json").is_file():
        raise UserError(f"{what} {name!r}: {path} holds no model (no config.json)")
    return path


def load_frozen(name: str, what: str, backend: str = "hf", seed: int = 0) -> FrozenModel:
    from rollout.backends import make_engine
    from telos.models import load_model, load_tokenizer

    if name.startswith("openai:"):
        url, served = parse_openai(name, what)
        path = model_dir(served, what)  # the tokenizer and the context size, read here
        tokenizer = load_tokenizer(path)
        engine = make_engine("openai", None, tokenizer, url=url, served_model=served)
        return FrozenModel(engine, tokenizer, _max_context(path), name)
    path = model_dir(name, what)
    tokenizer = load_tokenizer(path)
    model = load_model(path, "float32", None)
    model.eval()
    model.requires_grad_(False)
    engine = make_engine(backend, model, tokenizer, seed=seed)
    return FrozenModel(engine, tokenizer, int(getattr(model.config, "max_position_embeddings", 2048)), path)


def _max_context(path: str) -> int:
    from transformers import AutoConfig

    return int(getattr(AutoConfig.from_pretrained(path), "max_position_embeddings", 2048))
