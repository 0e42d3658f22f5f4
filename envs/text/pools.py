"""Env specs → pools of game rows → envs, over every registered text-world backend."""

from __future__ import annotations

from typing import Any

import envs.text.backends  # noqa: F401  # registers the backends
from envs.text.base import COMMON_KEYS, SPEC_PREFIX, TEXT_ENVS, EnvSpec, TextEnv, is_env_spec
from telos.errors import UserError


def parse_env_spec(spec: str) -> EnvSpec:
    """``env:<name>?k=v&...`` → EnvSpec; an unknown env, key or bad value raises a UserError
    naming what is valid."""
    if not is_env_spec(spec):
        raise UserError(
            f"{spec!r} is not an env spec; valid: env:<name>?key=value&... (env:textworld-cooking)"
        )
    body = spec.strip()[len(SPEC_PREFIX) :]
    name, _, query = body.partition("?")
    backend = TEXT_ENVS.get(name)
    values: dict[str, str] = {}
    for part in filter(None, query.split("&")):
        key, eq, value = part.partition("=")
        if not eq or not key:
            raise UserError(f"env spec {spec!r}: {part!r} is not key=value")
        values[key] = value
    unknown = set(values) - set(COMMON_KEYS) - set(backend.option_names)
    if unknown:
        valid = ", ".join(sorted(set(COMMON_KEYS) | set(backend.option_names)))
        raise UserError(f"env spec {spec!r}: unknown key(s) {', '.join(sorted(unknown))}; valid: {valid}")
    common: dict[str, Any] = {}
    for key, default in COMMON_KEYS.items():
        raw = values.pop(key, None)
        if raw is None:
            common[key] = default
        elif isinstance(default, int):
            if not raw.isdigit() or (key != "seed" and int(raw) < 1):
                raise UserError(f"env spec {spec!r}: {key} must be a positive integer, got {raw!r}")
            common[key] = int(raw)
        else:
            common[key] = raw
    if common["split"] not in backend.splits:
        raise UserError(
            f"env spec {spec!r}: split {common['split']!r} is not valid; valid: {', '.join(backend.splits)}"
        )
    parsed = EnvSpec(name=name, options=values, **common)
    backend.check(parsed)
    return parsed


def load_pool(spec: str | EnvSpec) -> list[dict[str, Any]]:
    """The game rows of a spec (built and cached on first use by the backend)."""
    parsed = parse_env_spec(spec) if isinstance(spec, str) else spec
    rows = TEXT_ENVS.get(parsed.name).pool(parsed)
    return [{**r, "env": parsed.name, "max_steps": parsed.max_steps} for r in rows]


def make_env(row: dict[str, Any]) -> TextEnv:
    """The env of one pool row."""
    return TEXT_ENVS.get(row["env"]).make(row, int(row.get("max_steps", COMMON_KEYS["max_steps"])))
