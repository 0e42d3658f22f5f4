"""The starting model a recipe names, as a local directory every rank can load.

Besides directories, hub ids, ``tiny:<task>`` and packaged models, a recipe can start from the
model another recipe trains: ``from-recipe:recipes/math/sft_gsm_symbolic_smollm2.yaml`` is that
recipe's ``final/`` (``output_dir`` or ``runs/<name>``, relative to where telos runs). So an
SFT → RL pair ships as two recipes that both pass ``telos check`` on a fresh clone.
"""

from __future__ import annotations

from pathlib import Path

from telos.errors import UserError
from telos.pretrained import is_packaged, resolve_model
from trainers.common.tiny import resolve_tiny

FROM_RECIPE = "from-recipe:"


def recipe_final_dir(spec: str) -> Path:
    """``from-recipe:PATH`` → the ``final/`` directory PATH's run writes (the file is read, not run)."""
    import yaml

    path = Path(spec[len(FROM_RECIPE) :])
    if not path.is_file():
        raise UserError(f"{spec!r}: no recipe file {path}")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise UserError(f"{spec!r}: {path} is not valid YAML: {str(e).splitlines()[0]}") from None
    name, out = raw.get("name"), raw.get("output_dir")
    if not isinstance(out, str) and not isinstance(name, str):
        raise UserError(
            f"{spec!r}: {path} has neither 'name' nor 'output_dir', so its run has no known place"
        )
    return Path(out if isinstance(out, str) else f"runs/{name}") / "final"


def start_model_dir(name: str) -> str:
    """Resolve ``name`` in this process: build, convert or look up; hub ids pass through."""
    if name.startswith(FROM_RECIPE):
        final = recipe_final_dir(name)
        if not (final / "config.json").is_file():
            recipe = name[len(FROM_RECIPE) :]
            raise UserError(f"{name!r}: {final} holds no trained model yet; run `telos train {recipe}` first")
        return str(final)
    if name.startswith("tiny:"):
        return resolve_tiny(name)
    return resolve_model(name) if is_packaged(name) else name


def resolve_start_model(acc, name: str) -> str:
    """``tiny:<task>`` is built, a packaged model (``smollm2:135m-instruct``) converted, once per
    machine (the main process first; the others then find it in the cache); ``from-recipe:``
    names the run another recipe wrote; directories and hub ids pass through."""
    if not (name.startswith(("tiny:", FROM_RECIPE)) or is_packaged(name)):
        return name
    with acc.main_process_first():
        return start_model_dir(name)
