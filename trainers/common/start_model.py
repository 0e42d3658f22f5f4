"""The starting model a recipe names, as a local directory every rank can load."""

from __future__ import annotations

from telos.pretrained import is_packaged, resolve_model
from trainers.common.tiny import resolve_tiny


def resolve_start_model(acc, name: str) -> str:
    """``tiny:<task>`` is built, a packaged model (``smollm2:135m-instruct``) converted, once per
    machine (the main process first; the others then find it in the cache); directories and hub
    ids pass through."""
    if not (name.startswith("tiny:") or is_packaged(name)):
        return name
    with acc.main_process_first():
        return resolve_tiny(name) if name.startswith("tiny:") else resolve_model(name)
