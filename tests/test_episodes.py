"""The multi-turn episode collector (rollout/episodes.py) on real TextWorldExpress games: the
token layout and masks of a hand-built episode, batched vs one call per episode, and the
episodes' path into the RL loop's packed batch."""

from __future__ import annotations

import pytest
import torch

from envs.text.pools import load_pool
from rollout.episodes import ACTION_CUE, EpisodeSettings, collect_episodes, play, scripted_actor
from telos.types import SamplingParams
from trainers.common.batching import pack_completions
from trainers.rl.sources import episode_groups

TWX = "env:twx-cookingworld?numLocations=1&numIngredients=1&numDistractorItems=1&includeDoors=0&games=2&max_steps=12"


@pytest.fixture(scope="module")
def rows():
    return load_pool(TWX)


@pytest.fixture(scope="module")
def tokenizer(rows):
    from telos.models import build_tokenizer

    texts = [" ".join(r["walkthrough"]) for r in rows] + ["You are hungry! Let's cook a delicious meal."]
    return build_tokenizer(texts, 300)


def _decode(tok, ids):
    return tok.decode(ids, skip_special_tokens=False)


def test_two_turn_episode_layout_and_masks(rows, tokenizer):
    """Two scripted turns, then the game's max_steps (set to 2) ends the episode: the prompt is
    instruction + observation + cue; each turn's span holds exactly the action and its newline
    (mask 1); the game's answers between them are mask 0 with log-prob placeholders."""
    row = {**rows[0], "max_steps": 2}
    actions = ["take cookbook", "dance"]
    it = iter(actions)
    settings = EpisodeSettings(instruction="Cook.")
    (ep,) = play([row], scripted_actor(tokenizer, lambda ep: next(it)), tokenizer, settings)
    assert _decode(tokenizer, ep.prompt_ids).startswith("Cook.\n\nYou are hungry!")
    assert _decode(tokenizer, ep.prompt_ids).endswith(ACTION_CUE)
    assert [t.action for t in ep.turns] == actions and ep.finish == "max_steps"
    assert len(ep.token_ids) == len(ep.loss_mask) == len(ep.logprobs)
    trained = [i for i, m in enumerate(ep.loss_mask) if m]
    spans = [i for t in ep.turns for i in range(t.start, t.end)]
    assert trained == spans
    for turn, action in zip(ep.turns, actions, strict=True):
        assert _decode(tokenizer, ep.token_ids[turn.start : turn.end]) == action + "\n"
    between = _decode(tokenizer, ep.token_ids[ep.turns[0].end : ep.turns[1].start])
    assert between == "You take the cookbook." + ACTION_CUE
    assert all(lp == 0.0 for lp, m in zip(ep.logprobs, ep.loss_mask, strict=True) if not m)
    assert ep.turns[0].state_key != ep.turns[1].state_key
    # the packed training row carries the same mask over the completion columns
    packed = pack_completions([ep.completion(0)], tokenizer.pad_token_id)
    assert packed.completion_mask[0, : len(ep.loss_mask)].tolist() == [float(m) for m in ep.loss_mask]
    assert packed.completion_ids[0, : len(ep.token_ids)].tolist() == ep.token_ids


def test_walkthrough_episode_scores_and_groups(rows, tokenizer):
    plans = {r["game_id"]: list(r["walkthrough"]) for r in rows}
    actor = scripted_actor(tokenizer, lambda ep: plans[ep.game_id][len(ep.turns)])
    episodes = play(rows, actor, tokenizer, EpisodeSettings(), per_row=2)
    assert [ep.row_index for ep in episodes] == [0, 0, 1, 1]
    assert all(ep.won and ep.finish == "won" and ep.normalized_score == pytest.approx(1.0) for ep in episodes)
    assert sum(t.reward for t in episodes[0].turns) == pytest.approx(1.0)
    groups = episode_groups(episodes, [5, 9], "score")
    assert groups.row_indices == [5, 9] and groups.correct == [1.0] * 4
    assert groups.completions[0].finish_reason == "stop" and groups.episodes[0] is episodes[0]


def test_context_cap_ends_an_episode(rows, tokenizer):
    """An episode stops before a turn that might not fit: here after exactly two turns."""
    actor = scripted_actor(tokenizer, lambda ep: "look around")
    (full,) = play(rows[:1], actor, tokenizer, EpisodeSettings(action_tokens=8, max_context=10**6))
    cap = len(full.prompt_ids) + full.turns[2].start + 8 - 1
    (ep,) = play(rows[:1], actor, tokenizer, EpisodeSettings(max_context=cap, action_tokens=8))
    assert ep.finish == "context" and len(ep.turns) == 2 and ep.length <= cap


def test_batched_and_per_episode_calls_play_the_same_greedy_episodes(rows, text_actor_dir):
    """One generate call for all live episodes gives the episodes that one call per episode
    gives (greedy), with fewer engine calls."""
    from rollout.backends import make_engine
    from telos.models import load_model, load_tokenizer

    tok = load_tokenizer(str(text_actor_dir))
    model = load_model(str(text_actor_dir), "float32", None)
    engine = make_engine("hf", model, tok)
    calls = []
    inner = engine.generate_ids
    engine.generate_ids = lambda ids, p: calls.append(len(ids)) or inner(ids, p)
    settings = EpisodeSettings(action_tokens=8, max_context=1024)
    params = SamplingParams(temperature=0.0)
    small = [{**r, "max_steps": 3} for r in rows]
    batched = collect_episodes(engine, tok, small, params, settings, per_row=2)
    n_batched = len(calls)
    alone = collect_episodes(engine, tok, small, params, settings, per_row=2, batched=False)
    assert [e.token_ids for e in batched] == [e.token_ids for e in alone]
    assert [e.loss_mask for e in batched] == [e.loss_mask for e in alone]
    assert n_batched == 3 and len(calls) - n_batched == 3 * 4  # 3 turns × (1 vs 4 calls)
    # the logged log-probs of the action tokens are the engine's (finite, ≤ 0)
    lps = torch.tensor([lp for e in batched for lp, m in zip(e.logprobs, e.loss_mask, strict=True) if m])
    assert bool((lps <= 0).all()) and bool(torch.isfinite(lps).all())


def test_chat_layout_appends_turns_in_the_models_template(rows):
    """With ``chat`` the episode is the tokenizer's chat: system = instruction, user =
    observations, assistant = actions; the text is what the template renders for the same chat."""
    from transformers import AutoTokenizer

    from trainers.common.start_model import start_model_dir

    tok = AutoTokenizer.from_pretrained(start_model_dir("smollm2:135m-instruct"))
    row = {**rows[0], "max_steps": 2}
    it = iter(["take cookbook", "read cookbook"])
    (ep,) = play(
        [row], scripted_actor(tok, lambda ep: next(it)), tok, EpisodeSettings(instruction="Cook.", chat=True)
    )
    obs = ep.transcript[0::2]
    messages = [{"role": "system", "content": "Cook."}]
    for o, a in zip(obs, ["take cookbook\n", "read cookbook\n"], strict=False):
        messages += [{"role": "user", "content": o}, {"role": "assistant", "content": a}]
    messages.append({"role": "user", "content": obs[2]})
    rendered = tok.apply_chat_template(messages, tokenize=False)
    text = tok.decode(ep.prompt_ids + ep.token_ids)
    assert rendered.startswith(text) and rendered[len(text) :].strip() == "<|im_end|>"
    assert [tok.decode(ep.token_ids[t.start : t.end]) for t in ep.turns] == [
        "take cookbook\n",
        "read cookbook\n",
    ]


def test_env_pool_reuses_games_and_caps_idle_envs(rows):
    from rollout.episodes import EnvPool

    pool = EnvPool(max_free=2)
    envs = [pool.acquire(rows[0]) for _ in range(3)]
    for env in envs:
        pool.release(rows[0], env)
    assert len(pool._order) == 2  # the oldest idle env was closed
    again = pool.acquire(rows[0])
    assert again is envs[2]  # the most recently released
    assert again.reset()[1]["score"] == 0.0  # a reused env restarts its game
    pool.release(rows[0], again)
    pool.close()
