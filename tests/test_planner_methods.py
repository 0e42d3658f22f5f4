"""The planner methods' math and loops, by hand: EPO's process returns, per-turn weights and
reward-weighted loss; Retroformer's memory, ratings and trial loop on real TextWorldExpress
games with a scripted actor that follows a plan when its instruction holds one."""

from __future__ import annotations

import pytest
import torch

from agents.reflection import (
    MEMORY_SIZE,
    clean_reflection,
    memory_instruction,
    reflection_prompt,
    reflection_rating,
    run_trials,
)
from envs.text.experts import harmless_actions
from envs.text.pools import load_pool
from rollout.episodes import Episode, EpisodeSettings, Turn, play, scripted_actor
from trainers.rl.epo import (
    RewardWeightedBatch,
    process_returns,
    process_rewards,
    reward_weighted_loss,
    segment_weights,
)

TWX = "env:twx-cookingworld?numLocations=1&numIngredients=1&numDistractorItems=1&includeDoors=0&games=3&max_steps=12"


def test_process_rewards_mark_gains_and_the_final_score():
    # turns that gained are critical (worth their gain); the last turn carries the episode score
    assert process_rewards([0.0, 1 / 3, 0.0, 0.0], 1 / 3) == [0.0, 1 / 3, 0.0, 1 / 3]
    assert process_rewards([0.0, 0.5], 1.0) == [0.0, 0.5]  # the last turn gained: its gain
    assert process_rewards([], 0.0) == []


def test_process_returns_discount_then_scale_to_max_one():
    # γ = 0.5: R3 = 1, R2 = 0.5, R1 = 0.5 + 0.25 = 0.75, R0 = 0.375; max |R| = 1
    assert process_returns([0.0, 0.5, 0.0, 1.0], 0.5) == pytest.approx([0.375, 0.75, 0.5, 1.0])
    # R = [0.2·0.5 + 0.2, 0.2] = [0.3, 0.2] → / 0.3
    assert process_returns([0.2, 0.2], 0.5) == pytest.approx([1.0, 2 / 3])
    assert process_returns([0.0, 0.0], 0.99) == [0.0, 0.0]


def _episode(spans, rewards, score, max_score=1.0, width=7):
    ep = Episode(
        0, "g", [1, 2], token_ids=list(range(width)), loss_mask=[0] * width, score=score, max_score=max_score
    )
    for (start, end), r in zip(spans, rewards, strict=True):
        ep.turns.append(Turn(start, end, "a", r, "s"))
        ep.loss_mask[start:end] = [1] * (end - start)
    return ep


def test_segment_weights_spread_each_turns_return_over_its_tokens():
    # gains [0, 2] of max 2 → r = [0, 1]; γ 0.5 → R = [0.5, 1]; spans of 2 and 3 tokens
    ep = _episode([(0, 2), (3, 6)], [0.0, 2.0], score=2.0, max_score=2.0)
    weights, segments = segment_weights([ep], 0.5)
    assert weights[0].tolist() == pytest.approx([0.25, 0.25, 0.0, 1 / 3, 1 / 3, 1 / 3, 0.0])
    assert segments.tolist() == [2.0]
    # a lost episode that gained nothing carries no weight
    zero, _ = segment_weights([_episode([(0, 2)], [0.0], score=0.0)], 0.99)
    assert float(zero.abs().sum()) == 0.0


def test_reward_weighted_loss_by_hand():
    """loss = −Σ_t w_t ℓ_t / S over the trained tokens: −(0.25·−1 + 0.25·−2 + 0.5·−3) / 2 = 1.125,
    and ∂loss/∂ℓ_t = −w_t / S."""
    logps = torch.tensor([[-1.0, -2.0, -7.0, -3.0]], requires_grad=True)
    batch = RewardWeightedBatch(
        logps=logps,
        old_logps=logps.detach(),
        advantages=torch.tensor([[0.25, 0.25, 9.0, 0.5]]),  # the masked column's weight is ignored
        mask=torch.tensor([[1.0, 1.0, 0.0, 1.0]]),
        segments=torch.tensor([2.0]),
    )
    loss, metrics = reward_weighted_loss(batch, None)
    assert loss.item() == pytest.approx(1.125)
    loss.backward()
    assert logps.grad[0].tolist() == pytest.approx([-0.125, -0.125, 0.0, -0.25])
    # two sequences: the step's mean over sequences
    batch2 = RewardWeightedBatch(
        logps=torch.tensor([[-1.0], [-4.0]]),
        old_logps=torch.zeros(2, 1),
        advantages=torch.tensor([[1.0], [0.5]]),
        mask=torch.ones(2, 1),
        segments=torch.tensor([1.0, 1.0]),
        num_sequences=2,
    )
    assert float(reward_weighted_loss(batch2, None)[0]) == pytest.approx((1.0 + 2.0) / 2)
    assert metrics["weight_mean"] == pytest.approx(1.0 / 3)


def test_memory_keeps_the_last_three_reflections():
    text = memory_instruction("Cook.", ["a", "b", "", "c", "d"])
    assert text.startswith("Cook.\n\n") and "- a" not in text
    assert [line[2:] for line in text.splitlines() if line.startswith("- ")] == ["b", "c", "d"]
    assert MEMORY_SIZE == 3 and memory_instruction("Cook.", []) == "Cook."
    assert clean_reflection("\n  take the carrot first\nmore") == "take the carrot first"


def test_rating_is_the_return_difference():
    before, after = (
        Episode(0, "g", [], score=1.0, max_score=4.0),
        Episode(0, "g", [], score=3.0, max_score=4.0),
    )
    assert reflection_rating(before, after) == pytest.approx(0.5)
    after.won = True
    assert reflection_rating(before, after, "won") == 1.0 and reflection_rating(after, before, "won") == -1.0


@pytest.fixture(scope="module")
def rows():
    return load_pool(TWX)


@pytest.fixture(scope="module")
def tokenizer(rows):
    from telos.models import build_tokenizer

    return build_tokenizer([" ".join(r["walkthrough"]) for r in rows], 300)


def test_trials_replay_failed_games_and_reflections_reach_the_actor(rows, tokenizer):
    """The scripted actor wanders (harmless actions) unless its instruction holds a plan, then
    walks the walkthrough. No reflection: no trial succeeds. A reflection that writes the plan:
    every game is solved at trial 2 and not replayed at trial 3."""
    walk = {r["game_id"]: r["walkthrough"] for r in rows}
    settings = EpisodeSettings()

    def play_fn(rows_, instructions, trial):
        out = []
        for row, instr in zip(rows_, instructions, strict=True):
            steps = iter(walk[row["game_id"]]) if "PLAN" in instr else None

            def choose(ep, steps=steps):
                return next(steps, "look") if steps else harmless_actions(ep.admissible)[0]

            out += play([row], scripted_actor(tokenizer, choose), tokenizer, settings)
        return out

    prompts = []

    def reflect(failed, past):
        prompts.extend(reflection_prompt(f, p) for f, p in zip(failed, past, strict=True))
        return ["PLAN follow the walkthrough"] * len(failed)

    none = run_trials(rows, play_fn, None, 3)
    assert none.success_by_trial() == [0.0, 0.0, 0.0]
    assert all(ep is not None for trial in none.episodes for ep in trial)  # failures are replayed
    res = run_trials(rows, play_fn, reflect, 3, "Cook.")
    assert res.success_by_trial() == [0.0, 1.0, 1.0]
    assert res.episodes[2] == [None] * len(rows)  # solved games are not replayed
    assert res.reflections == [["PLAN follow the walkthrough"]] * len(rows)
    assert len(prompts) == len(rows) and prompts[0].endswith("New plan:")
    assert "Result: score 0 of" in prompts[0] and res.score_by_trial()[1] == 1.0
