"""The text-world interface over real TextWorld and TextWorldExpress games (envs/text)."""

from __future__ import annotations

import builtins
import json
from pathlib import Path

import pytest

from envs.text.pools import load_pool, make_env, parse_env_spec
from envs.text.textworld_cooking import clean_feedback
from telos.errors import UserError

TWX = "env:twx-cookingworld?numLocations=1&numIngredients=1&numDistractorItems=1&includeDoors=0&games=3&max_steps=12"
TW = "env:textworld-cooking?recipe=1&take=1&go=1&games=2&seed=0&max_steps=8"


def _play(row: dict, actions: list[str]):
    env = make_env(row)
    try:
        obs, info = env.reset()
        steps = [env.step(a) for a in actions]
    finally:
        env.close()
    return obs, info, steps


def test_twx_walkthrough_wins_and_rewards_add_up():
    rows = load_pool(TWX)
    assert len(rows) == 3 and len({r["game_id"] for r in rows}) == 3
    obs, info, steps = _play(rows[0], rows[0]["walkthrough"])
    assert "cookbook" in obs and info["admissible"] and info["score"] == 0.0
    *_, (last_obs, _, terminated, truncated, last_info) = steps
    assert terminated and not truncated and last_info["won"]
    assert sum(s[1] for s in steps) == pytest.approx(last_info["score"]) == pytest.approx(1.0)


def test_invalid_action_is_the_games_answer_and_max_steps_truncates():
    row = load_pool(TWX)[0]
    _, _, steps = _play(row, ["dance wildly"] + ["look around"] * 11)
    obs, reward, terminated, truncated, info = steps[0]
    assert reward == 0.0 and not terminated and isinstance(obs, str) and obs
    assert steps[-1][3] and not steps[-1][2]  # the 12th step hits max_steps=12: truncated
    assert not any(s[3] for s in steps[:-1])


@pytest.mark.slow
def test_textworld_pool_is_cached_and_walkthrough_wins(telos_cache):
    rows = load_pool(TW)
    assert len(rows) == 2 and rows[0]["max_score"] >= 1
    pool_files = [Path(rows[0]["game"]).parent / "pool.json"]
    assert pool_files[0].is_file() and pool_files[0].parent.parent == telos_cache / "textworld"
    stamp = pool_files[0].stat().st_mtime_ns
    assert load_pool(TW) == rows and pool_files[0].stat().st_mtime_ns == stamp  # reused, not rebuilt
    obs, info, steps = _play(rows[0], ["eat the moon"] + rows[0]["walkthrough"])
    assert obs.startswith("You are hungry!") and "$$" not in obs  # banner cleaned off
    assert "not a verb" in steps[0][0] or "can't" in steps[0][0] or steps[0][1] == 0.0
    final = steps[-1]
    assert final[2] and final[4]["won"] and final[4]["score"] == rows[0]["max_score"]
    assert sum(s[1] for s in steps) == rows[0]["max_score"]
    # the state key tells states apart by score and text
    assert steps[0][4]["state_key"] != final[4]["state_key"]
    held_out = load_pool(TW.replace("seed=0", "seed=0&split=valid"))
    assert {r["game"] for r in held_out}.isdisjoint({r["game"] for r in rows})
    assert json.loads(pool_files[0].read_text())["rows"][0]["walkthrough"] == rows[0]["walkthrough"]


def test_clean_feedback_drops_status_line_and_menu():
    raw = (
        "\nYou eat the meal.\n\n\nYour score has just gone up by one point.\n\n\n      *** The End ***\n\n"
        "You scored 3 out of a possible 3.\nWould you like to RESTART?\n>   -= Kitchen =-2/5"
    )
    assert clean_feedback(raw) == (
        "You eat the meal.\n\nYour score has just gone up by one point.\n\n      *** The End ***"
    )
    assert clean_feedback("\nYou take it.\n\n\n\n>                -= Kitchen =-1/4") == "You take it."


@pytest.mark.parametrize(
    "spec, message",
    [
        ("env:nethack?games=2", "unknown text environment 'nethack'; valid: textworld-cooking"),
        ("env:textworld-cooking?level=3", "unknown key(s) level; valid: cook, cut, drop, games"),
        ("env:textworld-cooking?split=dev", "split 'dev' is not valid; valid: train, valid, test"),
        ("env:textworld-cooking?games=0", "games must be a positive integer"),
        ("env:textworld-cooking?games", "'games' is not key=value"),
        ("textworld-cooking", "is not an env spec"),
    ],
)
def test_bad_specs_name_what_is_valid(spec, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_env_spec(spec)


def test_bad_backend_values_fail_at_parse_time_before_generating():
    with pytest.raises(UserError, match="go='5' is not valid; valid: 1, 6, 9, 12"):
        parse_env_spec("env:textworld-cooking?go=5&games=1")
    with pytest.raises(UserError, match="take must be between 1 and recipe"):
        load_pool("env:textworld-cooking?recipe=1&take=2&games=1")
    with pytest.raises(UserError, match="numLocations must be an integer"):
        parse_env_spec("env:twx-cookingworld?numLocations=many&games=1")


def test_missing_package_names_the_install(monkeypatch):
    real_import = builtins.__import__

    def no_textworld(name, *args, **kwargs):
        if name == "textworld" or name.startswith("textworld."):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_textworld)
    with pytest.raises(UserError, match=r"needs the textworld package.*pip install 'textworld==1.7.0'"):
        load_pool("env:textworld-cooking?games=1&seed=77")
