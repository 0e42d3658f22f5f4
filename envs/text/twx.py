"""TextWorldExpress games (``env:twx-<game>``: cookingworld, coin, mapreader, ...), ~1 ms a step.

TextWorldExpress (Jansen & Côté 2022) simulates the games in a Java process (one per env; the
Java runtime must be on the machine). A game is a (seed, fold) pair: nothing is generated or
cached. Its folds are train / dev / test; ``split=valid`` maps to ``dev``. Game ``i`` of a pool
uses seed ``seed·100003 + i``. Every other spec key is a TextWorldExpress game parameter
(``numLocations``, ``numIngredients``, ``numDistractorItems``, ``includeDoors``, ...).
The reward is the gain in TextWorldExpress's normalised score (0..1).
"""

from __future__ import annotations

import shutil
from typing import Any

from envs.text.base import TEXT_ENVS, EnvSpec, TextEnv, TextWorldBackend, missing_package
from telos.errors import UserError

PIP = "textworld-express==1.1.0"
GAMES = ("cookingworld", "twc", "coin", "mapreader", "arithmetic", "sorting", "simonsays", "peckingorder")
FOLDS = {"train": "train", "valid": "dev", "test": "test"}
PARAMS = {
    "cookingworld": (
        "numLocations",
        "numIngredients",
        "numDistractorItems",
        "includeDoors",
        "limitInventorySize",
    ),
    "twc": ("numLocations", "numItemsToPutAway", "includeDoors", "limitInventorySize"),
    "coin": ("numLocations", "numDistractorItems", "includeDoors", "limitInventorySize"),
    "mapreader": ("numLocations", "maxDistanceApart", "maxDistractorItemsPerLocation", "includeDoors"),
    "arithmetic": (),
    "sorting": (),
    "simonsays": ("gameLength", "numDistractors", "memorization"),
    "peckingorder": (),
}


def _express():
    try:
        from textworld_express import TextWorldExpressEnv
    except ImportError:
        raise missing_package("twx-*", "textworld-express", PIP) from None
    if shutil.which("java") is None:
        raise UserError("TextWorldExpress needs a Java runtime (java on PATH): apt-get install default-jre")
    return TextWorldExpressEnv


class TextWorldExpress(TextWorldBackend):
    def __init__(self, game: str) -> None:
        self.game = game
        self.option_names = PARAMS[game]

    def check(self, spec: EnvSpec) -> None:
        for key, value in spec.options.items():
            if not value.isdigit():
                raise UserError(f"env spec {spec.text!r}: {key} must be an integer, got {value!r}")

    def pool(self, spec: EnvSpec) -> list[dict[str, Any]]:
        _express()
        params = ",".join(f"{k}={v}" for k, v in sorted(spec.options.items()))
        env = TwxEnv(self.game, params, 0, FOLDS[spec.split], spec.max_steps)
        rows = []
        try:
            for i in range(spec.games):
                seed = spec.seed * 100_003 + i
                env.seed = seed
                env.reset(gold=True)
                rows.append(
                    {
                        "game": self.game,
                        "params": params,
                        "seed": seed,
                        "fold": FOLDS[spec.split],
                        "walkthrough": env.gold[1:],  # the gold path starts with a 'look around'
                        "max_score": 1.0,
                        "game_id": f"{self.game}-{spec.split}-{seed}",
                    }
                )
        finally:
            env.close()
        return rows

    def make(self, row: dict[str, Any], max_steps: int) -> TextEnv:
        return TwxEnv(row["game"], row["params"], int(row["seed"]), row["fold"], max_steps)


class TwxEnv(TextEnv):
    def __init__(self, game: str, params: str, seed: int, fold: str, max_steps: int) -> None:
        self._env = _express()(envStepLimit=max_steps + 1)
        self._env.load(gameName=game, gameParams=params)
        self.seed, self.fold, self.max_steps = seed, fold, max_steps
        self.gold: list[str] = []
        self._steps, self._score = 0, 0.0

    def _info(self, infos: dict) -> dict[str, Any]:
        return {
            "admissible": sorted(infos.get("validActions") or []),
            "score": float(infos.get("score") or 0.0),
            "max_score": 1.0,
            "won": bool(infos.get("tasksuccess")),
            "lost": bool(infos.get("taskfailure")),
        }

    def reset(self, gold: bool = False) -> tuple[str, dict[str, Any]]:
        obs, infos = self._env.reset(seed=self.seed, gameFold=self.fold, generateGoldPath=gold)
        if gold:
            self.gold = list(self._env.getGoldActionSequence())
        self._steps, self._score = 0, 0.0
        task = infos.get("taskDescription", "")
        text = f"{task}\n\n{obs.strip()}" if task else obs.strip()
        return text, {**self._info(infos), "state_key": f"0|{obs.strip()}"}

    def step(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        obs, _, done, infos = self._env.step(action)
        self._steps += 1
        info = self._info(infos)
        reward, self._score = info["score"] - self._score, info["score"]
        terminated = info["won"] or info["lost"] or (bool(done) and self._steps < self.max_steps)
        truncated = not terminated and self._steps >= self.max_steps
        return (
            obs.strip(),
            reward,
            terminated,
            truncated,
            {**info, "state_key": f"{info['score']:g}|{obs.strip()}"},
        )

    def close(self) -> None:
        self._env.close()


for _game in GAMES:
    TEXT_ENVS.register(f"twx-{_game}")(TextWorldExpress(_game))
