"""EPO (a trained strategist guiding a frozen actor) and Retroformer (a trained retrospective
model reflecting for it) through the landed RL loop, the collector and ``telos eval agent``:
real TextWorld games, the small text actor of conftest as actor and as the trained model."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import TELOS, TEXT_GAMES, set_dotted

from agents.strategist import Strategist, StrategistSettings
from envs.text.pools import load_pool
from rollout.episodes import GUIDE_PREFIX, EpisodeSettings, collect_episodes
from telos.tracking import read_metrics
from telos.types import SamplingParams
from trainers.common.batching import pack_completions
from trainers.common.frozen import load_frozen
from trainers.rl.loop import train_rl
from trainers.run import load_recipe

POOL = f"{TEXT_GAMES}&games=4&seed=0&max_steps=6"


@pytest.mark.slow
def test_strategist_thoughts_reach_the_actor_and_form_their_own_episodes(text_actor_dir):
    """Each thought is environment text in the actor's sequence (mask 0), right before its
    action; the strategist's own sequence holds the thoughts as its trained spans, the actor's
    actions as environment text, and each thought is credited with its action's gain."""
    actor = load_frozen(str(text_actor_dir), "actor")
    strategist = load_frozen(str(text_actor_dir), "strategist")
    rows = load_pool(POOL)[:2]
    guide = Strategist(
        strategist.engine,
        strategist.tokenizer,
        StrategistSettings(max_context=1024),
        SamplingParams(temperature=1.0, seed=3),
    )
    played = collect_episodes(
        actor.engine,
        actor.tokenizer,
        rows,
        SamplingParams(temperature=0.0),
        EpisodeSettings(max_context=1024),
        2,
        guide=guide,
    )
    own = guide.episodes(played)
    tok = actor.tokenizer
    for ep, view in zip(played, own, strict=True):
        assert len(ep.thoughts) == len(ep.turns) == len(view.turns)
        text = tok.decode(ep.prompt_ids + ep.token_ids)
        for thought, turn in zip(ep.thoughts, ep.turns, strict=True):
            if thought:
                assert f"{GUIDE_PREFIX}{thought}\n> {turn.action}" in text
        for turn in ep.turns:  # the actor trains on its actions only, never on a thought
            assert tok.decode(ep.token_ids[turn.start : turn.end]).strip() == turn.action
        assert sum(ep.loss_mask) == sum(t.end - t.start for t in ep.turns)
        s_text = tok.decode(view.prompt_ids + view.token_ids)
        assert s_text.startswith(StrategistSettings().instruction)
        for k, turn in enumerate(view.turns):
            assert turn.action == ep.thoughts[k] and turn.reward == ep.turns[k].reward
            assert tok.decode(view.token_ids[turn.start : turn.end]).split("\n")[0].strip() == turn.action
        for action in ep.turns[:-1]:
            assert f"> {action.action}\n" in s_text
        assert (view.won, view.score, view.finish) == (ep.won, ep.score, ep.finish)
        packed = pack_completions([view.completion(0)], tok.pad_token_id)
        assert packed.completion_mask[0, : len(view.loss_mask)].tolist() == [float(m) for m in view.loss_mask]


@pytest.mark.slow
def test_an_actor_behind_an_openai_compatible_server_plays_like_the_local_one(text_actor_dir):
    """``openai:URL#MODEL``: the frozen actor served by ``telos serve``; greedy, it takes the
    same actions as the same weights in this process (the text round-trips through the server)."""
    from serve_support import LiveServer

    rows = load_pool(POOL)[:3]
    settings = EpisodeSettings(max_context=1024)
    local = load_frozen(str(text_actor_dir), "actor")
    here = collect_episodes(local.engine, local.tokenizer, rows, SamplingParams(temperature=0.0), settings)
    live = LiveServer(["--policy", str(text_actor_dir), "--served-model-name", str(text_actor_dir)])
    try:
        remote = load_frozen(f"openai:{live.url}/v1#{text_actor_dir}", "actor")
        there = collect_episodes(
            remote.engine, remote.tokenizer, rows, SamplingParams(temperature=0.0), settings
        )
    finally:
        live.stop()
    assert [[t.action for t in e.turns] for e in there] == [[t.action for t in e.turns] for e in here]
    assert [e.token_ids for e in there] == [e.token_ids for e in here]


def _recipe(tmp_path: Path, actor: Path, trainer: str, role: str, **overrides) -> Path:
    data = {
        "trainer": trainer,
        "name": f"{trainer}-{role}-test",
        "output_dir": str(tmp_path / "run"),
        "model": {"name_or_path": str(actor)},
        "data": {"train": POOL, "test": POOL},
        "agent": {"role": role, "actor": str(actor), "actor_temperature": 1.0},
        "sampling": {"num_generations": 2, "temperature": 1.0},
        "train": {"steps": 2, "prompts_per_step": 2, "micro_batch_size": 8, "lr": 1e-4, "save_every": 1,
                  "eval_before_training": True},
    }  # fmt: skip
    if trainer == "grpo":
        data["grpo"] = {"dynamic_sampling": False}
    for key, value in overrides.items():
        set_dotted(data, key, value)
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.slow
def test_epo_reward_weighted_self_play_trains_the_strategist_and_resumes(tmp_path, text_actor_dir):
    path = _recipe(
        tmp_path,
        text_actor_dir,
        "epo",
        "strategist",
        **{"epo.num_iterations": 2, "epo.mini_batches": 2, "train.steps": 1},
    )
    recipe, raw = load_recipe(str(path))
    summary = train_rl(recipe, raw)
    assert summary["steps"] == 1 and 0.0 <= summary["eval_accuracy"] <= 1.0 and "eval_score" in summary
    (row,) = [r for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if r["step"] == 1]
    assert 0.0 <= row["rewarded_episodes_frac"] <= 1.0 and "weighted_nll" in row and row["turns"] >= 1
    recipe, raw = load_recipe(str(path), ["train.steps=2", "resume=latest"])
    assert train_rl(recipe, raw)["steps"] == 2


@pytest.mark.slow
def test_grpo_trains_a_strategist_through_the_collector(tmp_path, text_actor_dir):
    path = _recipe(
        tmp_path,
        text_actor_dir,
        "grpo",
        "strategist",
        **{"train.steps": 1, "grpo.step_advantage_weight": 1.0},
    )
    recipe, raw = load_recipe(str(path))
    summary = train_rl(recipe, raw)
    assert summary["steps"] == 1 and (tmp_path / "run" / "final" / "config.json").is_file()


@pytest.mark.slow
def test_retroformer_grpo_rates_reflections_by_the_next_trial(tmp_path, text_actor_dir):
    path = _recipe(
        tmp_path, text_actor_dir, "grpo", "retrospective", **{"train.steps": 1, "agent.eval_trials": 2}
    )
    recipe, raw = load_recipe(str(path))
    summary = train_rl(recipe, raw)
    assert summary["eval_success_trial1"] <= summary["eval_success_trial2"] == summary["eval_accuracy"]
    (row,) = [r for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if r["step"] == 1]
    # a reflection's reward is G1 − G0 of a failed trial: within [−1, 1]
    assert -1.0 <= row["reward_mean"] <= 1.0 and 0.0 <= row["trial1_success"] <= 1.0


@pytest.mark.slow
def test_eval_agent_with_a_strategist_and_reflections_over_trials(tmp_path, text_actor_dir, subprocess_env):
    out = tmp_path / "eval"
    actor = str(text_actor_dir)
    cmd = [TELOS, "eval", "agent", "--env", POOL, "--actor", actor, "--strategist", actor, "--retrospective", actor,
           "--trials", "3", "--temperature", "1.0", "--out", str(out)]  # fmt: skip
    proc = subprocess.run(cmd, env=subprocess_env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads((out / "results.json").read_text())
    trials = results["summary"]["by_trial"]
    assert [t["trial"] for t in trials] == [1, 2, 3] and results["summary"]["attempts"] == 4
    rates = [t["success_rate"] for t in trials]
    assert rates == sorted(rates) and rates[-1] == results["summary"]["success_rate"]
    first = [e for e in results["episodes"] if e["trial"] == 0]
    assert len(first) == 4 and all(len(e["thoughts"]) == e["turns"] for e in first)
    later = [e for e in results["episodes"] if e["trial"] > 0]
    assert all(len(e["reflections"]) == e["trial"] for e in later)
    assert "Solved by trial" in (out / "report.md").read_text()


@pytest.mark.parametrize(
    "agent, trainer, message",
    [
        ({"role": "strategist"}, "grpo", "error: 'agent.actor' is needed for agent.role strategist"),
        (
            {"role": "retrospective", "actor": "tiny:textworld-cooking"},
            "epo",
            "error: trainer epo weights the turns",
        ),
        ({"actor": "tiny:textworld-cooking"}, "grpo", "error: 'agent.actor' is only read with"),
        ({"role": "strategist", "actor": "/no/such/actor"}, "grpo", "error: 'agent.actor'"),
    ],
)
def test_planner_recipe_errors_are_one_line(tmp_path, subprocess_env, agent, trainer, message):
    data = {
        "trainer": trainer,
        "model": {"name_or_path": "tiny:textworld-cooking"},
        "data": {"train": POOL},
        "agent": agent,
    }
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    proc = subprocess.run(
        [TELOS, "check", str(path)], env=subprocess_env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2 and proc.stderr.strip().startswith(message), proc.stderr
    assert "Traceback" not in proc.stderr
