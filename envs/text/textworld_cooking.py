"""TextWorld's cooking games (``env:textworld-cooking``), the First TextWorld Problems family.

Games are generated and compiled locally by TextWorld (``tw-make tw-cooking``'s own generator,
called in-process), ~5 s each, in parallel worker processes, and cached per machine under
``$TELOS_CACHE/textworld/`` (one locked build per pool: a second run waits and reuses it).
TextWorld's ``split`` keeps train / valid / test food items apart, so held-out games hold
ingredients the training games never show. Game ``i`` of a pool uses seed ``seed·100003 + i``.

Options (as ``tw-make tw-cooking``): ``recipe`` (ingredients in the recipe), ``take`` (to
fetch), ``go`` (rooms: 1, 6, 9, 12), ``open``, ``cook``, ``cut``, ``drop`` (0/1).
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from envs.text.base import TEXT_ENVS, EnvSpec, TextEnv, TextWorldBackend, missing_package
from telos.cache import build_cached, cache_dir
from telos.errors import UserError

PIP = "textworld==1.7.0"
FLAGS = ("open", "cook", "cut", "drop")
GENERATOR_VERSION = 1  # bump when the generated games change, so cached pools rebuild


def _textworld():
    try:
        import textworld
    except ImportError:
        raise missing_package("textworld-cooking", "textworld", PIP) from None
    return textworld


def _settings(spec: EnvSpec) -> dict[str, Any]:
    o = spec.options

    def integer(key: str, default: int, valid: tuple[int, ...] | None = None) -> int:
        raw = o.get(key, str(default))
        if not raw.isdigit() or (valid and int(raw) not in valid):
            allowed = ", ".join(map(str, valid)) if valid else "a positive integer"
            raise UserError(f"env spec {spec.text!r}: {key}={raw!r} is not valid; valid: {allowed}")
        return int(raw)

    settings = {
        "recipe": integer("recipe", 1),
        "take": integer("take", 1),
        "go": integer("go", 1, (1, 6, 9, 12)),
        "split": spec.split,
        "recipe_seed": 0,
    }
    if not 1 <= settings["take"] <= settings["recipe"]:
        raise UserError(f"env spec {spec.text!r}: take must be between 1 and recipe ({settings['recipe']})")
    for flag in FLAGS:
        raw = o.get(flag, "0")
        if raw not in ("0", "1"):
            raise UserError(f"env spec {spec.text!r}: {flag}={raw!r} is not valid; valid: 0, 1")
        settings[flag] = raw == "1"
    return settings


def generate_game(settings: dict, seed: int, path: str) -> dict[str, Any]:
    """Generate and compile one game at ``path``; its row."""
    textworld = _textworld()
    from textworld.challenges.tw_cooking.cooking import make
    from textworld.generator import compile_game

    options = textworld.GameOptions()
    options.seeds = seed
    options.path = path
    options.force_recompile = True
    options.file_ext = ".z8"
    game = make(dict(settings), options)
    compile_game(game, options)
    return {"game": path, "walkthrough": list(game.metadata["walkthrough"]), "max_score": game.max_score}


class TextWorldCooking(TextWorldBackend):
    option_names = ("recipe", "take", "go", *FLAGS)

    def check(self, spec: EnvSpec) -> None:
        _settings(spec)

    def pool(self, spec: EnvSpec) -> list[dict[str, Any]]:
        settings = _settings(spec)
        _textworld()  # the install error before any worker starts
        key_src = json.dumps([settings, spec.games, spec.seed, GENERATOR_VERSION], sort_keys=True)
        key = hashlib.sha1(key_src.encode()).hexdigest()[:12]
        out = cache_dir() / "textworld" / f"cooking-{spec.split}-{key}"

        def build(tmp: Path) -> None:

            tmp.mkdir(parents=True)
            jobs = [
                (settings, spec.seed * 100_003 + i, str(tmp / f"game{i:04d}.z8")) for i in range(spec.games)
            ]
            rows = _generate_in_subprocesses(jobs, max(1, min(len(jobs), _cpus())))
            # the rows name the games by file name: the directory is renamed into place
            for r in rows:
                r["game"] = Path(r["game"]).name
            (tmp / "pool.json").write_text(json.dumps({"spec": spec.text, "rows": rows}, indent=1))

        build_cached(
            out, build, ready=lambda p: (p / "pool.json").exists(), what=f"{spec.games} TextWorld games"
        )
        rows = json.loads((out / "pool.json").read_text())["rows"]
        return [
            {**r, "game": str(out / r["game"]), "game_id": f"cooking-{spec.split}-{spec.seed}-{i}"}
            for i, r in enumerate(rows)
        ]

    def make(self, row: dict[str, Any], max_steps: int) -> TextEnv:
        return CookingEnv(row["game"], max_steps)


def _generate_in_subprocesses(jobs: list[tuple[dict, int, str]], workers: int) -> list[dict[str, Any]]:
    """Each game in its own ``python -m`` process, ``workers`` at a time (subprocesses, not a
    multiprocessing pool: a pool's spawned children re-run an unguarded user script)."""
    from telos.tracking import progress

    bar = progress(len(jobs), f"generating {len(jobs)} TextWorld cooking games")
    running: list[tuple[subprocess.Popen, str]] = []
    pending = list(jobs)
    try:
        while pending or running:
            while pending and len(running) < workers:
                settings, seed, path = pending.pop(0)
                cmd = [
                    sys.executable,
                    "-m",
                    "envs.text.textworld_cooking",
                    json.dumps(settings),
                    str(seed),
                    path,
                ]
                proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                running.append((proc, path))
            proc, path = running.pop(0)
            out, err = proc.communicate()
            if proc.returncode != 0:
                tail = (err or "").strip().splitlines()[-1:] or ["no output"]
                raise UserError(f"TextWorld could not generate {Path(path).name}: {tail[0]}")
            bar.advance()
    finally:
        for proc, _ in running:
            proc.kill()
        bar.close()
    return [json.loads(Path(path + ".row.json").read_text()) for _, _, path in jobs]


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


_BANNER_END = "You are hungry!"
_THE_END = "*** The End ***"
_STATUS = re.compile(r">\s+-=.*?=-\s*\d+/\d+\s*$", re.S)  # the status line after the prompt
_PROMPT_TAIL = re.compile(r"\n*>\s*$")


def clean_feedback(text: str) -> str:
    """TextWorld's feedback without the title banner, the status line and the trailing prompt;
    blank-line runs collapsed (what a reader needs, in fewer tokens)."""
    if _BANNER_END in text:
        text = text[text.index(_BANNER_END) :]
    if _THE_END in text:  # the interpreter's restart / quit menu follows
        text = text[: text.index(_THE_END) + len(_THE_END)]
    text = _STATUS.sub("", text)
    text = _PROMPT_TAIL.sub("", text)
    text = re.sub(r"[ \t]+\n", "\n", text)
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip()


class CookingEnv(TextEnv):
    """One compiled cooking game, played through TextWorld's Jericho-backed interpreter."""

    def __init__(self, path: str, max_steps: int) -> None:
        textworld = _textworld()
        if not Path(path).exists():
            raise UserError(f"TextWorld game {path!r} does not exist")
        infos = textworld.EnvInfos(admissible_commands=True, max_score=True, won=True, lost=True, score=True)
        self._env = textworld.start(path, request_infos=infos)
        self.max_steps = max_steps
        self._steps = 0
        self._score = 0.0
        self._max_score = 1

    def _info(self, state) -> dict[str, Any]:
        return {
            "admissible": sorted(state.get("admissible_commands") or []),
            "score": float(state.get("score") or 0),
            "max_score": float(self._max_score),
            "won": bool(state.get("won")),
            "lost": bool(state.get("lost")),
        }

    def reset(self) -> tuple[str, dict[str, Any]]:
        state = self._env.reset()
        self._steps, self._score = 0, 0.0
        self._max_score = state.get("max_score") or 1
        obs = clean_feedback(state.feedback)
        return obs, {**self._info(state), "state_key": f"0|{obs}"}

    def step(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        state, score, done = self._env.step(action)  # score: the new total
        self._steps += 1
        info = self._info(state)
        obs = clean_feedback(state.feedback)
        reward, self._score = float(score or 0) - self._score, float(score or 0)
        terminated = bool(done) or info["won"] or info["lost"]
        truncated = not terminated and self._steps >= self.max_steps
        return obs, reward, terminated, truncated, {**info, "state_key": f"{info['score']:g}|{obs}"}

    def close(self) -> None:
        self._env.close()


TEXT_ENVS.register("textworld-cooking")(TextWorldCooking())

if __name__ == "__main__":  # one game: python -m envs.text.textworld_cooking SETTINGS SEED PATH
    _row = generate_game(json.loads(sys.argv[1]), int(sys.argv[2]), sys.argv[3])
    Path(sys.argv[3] + ".row.json").write_text(json.dumps(_row))
