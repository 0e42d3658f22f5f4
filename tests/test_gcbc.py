"""Goal-conditioned behaviour cloning: hindsight labels and loss by hand, a short real training
run with resume, the learned controller in a real Crafter world, and recipe errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

pytest.importorskip("crafter")

from agents.encoding import GOALS, encode_inventory, encode_view, goal_index  # noqa: E402
from agents.gcbc import ACTIONS, GCBCPolicy, LearnedController, PolicyConfig, encode_facing  # noqa: E402
from agents.progress import step_events  # noqa: E402
from agents.types import AgentView  # noqa: E402
from envs.crafter.env import CrafterConfig, CrafterEnv, nearest_things  # noqa: E402
from envs.crafter.techtree import Subgoal  # noqa: E402
from telos.cli import main  # noqa: E402
from telos.errors import UserError  # noqa: E402
from trainers.agents.gcbc import gcbc_loss, hindsight_labels, load_play_data  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TREE = Subgoal("collect", "tree")


def tree_policy(view: AgentView, rng: np.random.Generator) -> str:
    """Walk toward the nearest visible tree and hit it; wander when none is in view. Moving
    into a blocked cell only turns the player, so "walk into the tree" is how it comes to face it."""
    if view.facing == "tree":
        return "do"
    tree = nearest_things(view.local_view).get("tree")
    if tree is None:
        return str(rng.choice(["move_left", "move_right", "move_up", "move_down"]))
    dx, dy = tree
    if dx:
        return "move_right" if dx > 0 else "move_left"
    return "move_down" if dy > 0 else "move_up"


def make_play(path: Path, episodes: int = 3, steps: int = 200, noise: float = 0.2, seed: int = 0) -> Path:
    """Play data as `telos data crafter-play` writes it, from the tree policy with noise."""
    env = CrafterEnv(CrafterConfig(length=steps + 10))
    rng = np.random.default_rng(seed)
    cols: dict[str, list] = {k: [] for k in ("views", "inventory", "actions", "commanded", "noise")}
    cols.update(events=[], episode=[], facing=[])
    for ep in range(episodes):
        view = AgentView.from_env(*env.reset(seed=seed + ep))
        for _ in range(steps):
            is_noise = bool(rng.random() < noise)
            name = str(rng.choice(env.actions)) if is_noise else tree_policy(view, rng)
            commanded = goal_index(TREE) if "tree" in view.visible() else -1
            obs, _, terminated, truncated, info = env.step(name)
            after = AgentView.from_env(obs, info)
            events = step_events(view, name, after)
            for key, value in (
                ("views", encode_view(view.local_view)),
                ("inventory", encode_inventory(view)),
                ("actions", env.actions.index(name)),
                ("commanded", commanded),
                ("noise", is_noise),
                ("events", goal_index(events[0]) if events else -1),
                ("episode", ep),
                ("facing", encode_facing(view.facing)),
            ):
                cols[key].append(value)
            view = after
            if terminated or truncated:
                break
    dtypes = dict(views=np.int8, inventory=np.int8, actions=np.int8, commanded=np.int16, noise=bool)
    dtypes.update(events=np.int16, episode=np.int32, facing=np.int8)
    np.savez(path, **{k: np.array(v, dtype=dtypes[k]) for k, v in cols.items()})
    return path


@pytest.fixture(scope="module")
def play_file(tmp_path_factory) -> Path:
    return make_play(tmp_path_factory.mktemp("play") / "play.npz")


def write_recipe(directory: Path, data: Path, **overrides) -> Path:
    recipe = yaml.safe_load((REPO / "recipes/agents/gcbc_crafter.yaml").read_text())
    recipe.update(run_dir=str(directory / "run"), resume=None)
    recipe["data"]["path"] = str(data)
    recipe["train"].update(steps=6, batch_size=32, save_every=3, eval_every=3)
    for key, value in overrides.items():
        section, _, leaf = key.rpartition(".")
        (recipe[section] if section else recipe)[leaf] = value
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory, play_file) -> Path:
    """Run dir of a 6-step training run through `telos train`."""
    directory = tmp_path_factory.mktemp("gcbc")
    assert main(["train", str(write_recipe(directory, play_file))]) == 0
    return directory / "run"


def test_hindsight_labels_by_hand():
    events = np.array([-1, -1, 3, -1, -1, -1, -1, 5, -1])
    episode = np.array([0, 0, 0, 0, 0, 0, 1, 1, 1])
    commanded = np.array([-1, 2, 2, -1, 4, -1, -1, -1, -1])
    noise = np.array([0, 0, 0, 1, 0, 0, 0, 0, 0], dtype=bool)
    # t0: the event at t2 is 2 steps on, not < horizon 2; t3: noise; t4: the next event is in
    # episode 1, so the commanded goal (4) stands in; t2: hindsight (3) beats commanded (2)
    expected = [-1, 3, 3, -1, 4, -1, 5, 5, -1]
    assert hindsight_labels(events, episode, commanded, noise, 2).tolist() == expected
    pure = [-1, 3, 3, -1, -1, -1, 5, 5, -1]
    assert hindsight_labels(events, episode, commanded, noise, 2, commanded_fallback=False).tolist() == pure
    assert hindsight_labels(events, episode, commanded, noise, 1).tolist() == [-1, 2, 3, -1, 4, -1, -1, 5, -1]
    assert hindsight_labels(events, episode, commanded, noise, 3).tolist()[0] == 3


def test_gcbc_loss_by_hand():
    logits = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0], [5.0, -5.0]], requires_grad=True)
    actions = torch.tensor([0, 1, 1])
    mask = torch.tensor([True, True, False])
    loss = gcbc_loss(logits, actions, mask)
    # row 0: −log(1/2); row 1: −log(1/(3+1)); row 2 masked out
    assert loss.item() == pytest.approx((math.log(2) + math.log(4)) / 2)
    loss.backward()
    assert logits.grad[2].abs().sum() == 0
    assert gcbc_loss(logits, actions, torch.zeros(3, dtype=torch.bool)).item() == 0.0


def test_policy_is_small_and_round_trips(tmp_path):
    assert tuple(CrafterEnv(CrafterConfig(seed=0)).actions) == ACTIONS
    policy = GCBCPolicy(PolicyConfig(use_facing=True)).eval()
    assert policy.num_parameters() < 300_000
    views, inv = torch.randint(0, 20, (4, 7, 9)), torch.randint(0, 10, (4, 16))
    goals, facing = torch.randint(0, len(GOALS), (4,)), torch.randint(0, 20, (4,))
    loaded = GCBCPolicy.load(policy.save(tmp_path / "p"))
    assert torch.equal(policy(views, inv, goals, facing), loaded(views, inv, goals, facing))
    config = json.loads((tmp_path / "p" / "config.json").read_text())
    assert config["goals"][0] == ["collect", "tree"] and "view_names" in config
    with pytest.raises(UserError, match="not a GCBC policy"):
        GCBCPolicy.load(tmp_path)


def test_training_writes_final_checkpoints_and_report(trained):
    assert (trained / "checkpoints" / "step-6" / "trainer_state.json").is_file()
    assert (trained / "checkpoints" / "step-3").is_dir()
    assert (trained / "final" / "model.safetensors").is_file()
    summary = json.loads((trained / "summary.json").read_text())
    assert summary["trainer"] == "gcbc" and summary["uses_facing"]
    assert 0.0 <= summary["val_accuracy"] <= 1.0 and summary["val_examples"] > 0
    assert "collect tree" in summary["val_per_goal"]
    assert "| collect tree |" in (trained / "report.md").read_text()
    assert (trained / "plots" / "loss.png").is_file() and (trained / "plots" / "accuracy.png").is_file()
    rows = [json.loads(line) for line in (trained / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6] and "val_accuracy" in rows[2]


def test_resume_continues_from_checkpoint(tmp_path, play_file, trained, weights_of, assert_same_weights):
    # 4 steps, then the same recipe told to go to 6 resumes at the step-4 checkpoint and must end
    # where the uninterrupted 6-step run ended: same data order, optimizer state and weights
    assert (
        main(["train", str(write_recipe(tmp_path, play_file, **{"train.steps": 4, "train.save_every": 2}))])
        == 0
    )
    run = tmp_path / "run"
    # mark the first run's rows: a resumed run keeps rows up to its start step, a fresh one drops them
    rows = [
        {**json.loads(line), "first_run": True} for line in (run / "metrics.jsonl").read_text().splitlines()
    ]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    recipe = write_recipe(tmp_path, play_file, resume="latest", **{"train.save_every": 2})
    assert main(["train", str(recipe)]) == 0
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]
    assert [r.get("first_run", False) for r in rows] == [True] * 4 + [False] * 2
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-4", "step-6"]
    assert_same_weights(weights_of(trained / "final"), weights_of(run / "final"), atol=1e-6)


def test_learned_controller_acts_in_crafter(trained):
    env = CrafterEnv(CrafterConfig(length=500))
    view = AgentView.from_env(*env.reset(seed=1))
    ctl = LearnedController(trained / "final", max_steps_without_progress=5)
    assert ctl.status(view).state == "failed"  # nothing started yet
    ctl.start(Subgoal("place", "table"), view)  # impossible without wood: never progresses
    states = []
    for _ in range(5):
        action = ctl.act(view)
        assert 0 <= action < len(ACTIONS)
        assert ctl.status(view).state == "running"
        obs, _, _, _, info = env.step(action)
        view = AgentView.from_env(obs, info)
        ctl.observe(view, action)
        states.append(ctl.status(view))
    assert states[-1].state == "failed" and "no progress on place table in 5 steps" in states[-1].reason
    ctl.reset()
    with pytest.raises(RuntimeError):
        ctl.act(view)


def test_learned_controller_done_when_tracker_met(trained):
    """Status follows what happens, whoever acted: scripted tree collecting makes it done."""
    env = CrafterEnv(CrafterConfig(length=500))
    view = AgentView.from_env(*env.reset(seed=0))
    ctl = LearnedController(trained / "final")
    ctl.start(TREE, view)
    rng = np.random.default_rng(0)
    for _ in range(300):
        if ctl.status(view).state == "done":
            break
        name = tree_policy(view, rng)
        obs, _, _, _, info = env.step(name)
        view = AgentView.from_env(obs, info)
        ctl.observe(view, env.actions.index(name))
    assert ctl.status(view).state == "done"


def test_sampling_is_seeded(trained):
    env = CrafterEnv(CrafterConfig(length=100))
    view = AgentView.from_env(*env.reset(seed=2))
    runs = []
    for _ in range(2):
        ctl = LearnedController(trained / "final", temperature=2.0, seed=7)
        ctl.start(TREE, view)
        runs.append([ctl.act(view) for _ in range(20)])
    assert runs[0] == runs[1] and len(set(runs[0])) > 1


def test_check_accepts_the_shipped_recipe_with_data(play_file, capsys):
    recipe = str(REPO / "recipes/agents/gcbc_crafter.yaml")
    assert main(["check", recipe, f"data.path={play_file}", "resume=null"]) == 0
    assert "trainer gcbc" in capsys.readouterr().out


@pytest.mark.parametrize(
    "override, message",
    [
        ({"data.val_fraction": 1.5}, "'data.val_fraction' must be in (0, 1)"),
        ({"data.horizon": 0}, "'data.horizon' must be ≥ 1"),
        ({"train.steps": 0}, "'train.steps' must be ≥ 1"),
        ({"train.lr": 0}, "'train.lr' must be > 0"),
        ({"data.path": "nowhere/play.npz"}, "make it with `telos data crafter-play --out nowhere/play.npz`"),
        ({"model.nope": 1}, "unknown key 'model.nope'"),
    ],
)
def test_bad_recipe_is_one_line_error(tmp_path, play_file, capsys, override, message):
    assert main(["check", str(write_recipe(tmp_path, play_file, **override))]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and message in err


def test_bad_play_file(tmp_path, play_file):
    with np.load(play_file) as npz:
        arrays = dict(npz)
    np.savez(tmp_path / "short.npz", **{k: v for k, v in arrays.items() if k != "events"})
    with pytest.raises(UserError, match="lacks arrays events"):
        load_play_data(str(tmp_path / "short.npz"))
    np.savez(tmp_path / "shape.npz", **{**arrays, "views": arrays["views"][:, :5]})
    with pytest.raises(UserError, match=r"'views' has shape \[\d+, 5, 9\]"):
        load_play_data(str(tmp_path / "shape.npz"))
    np.savez(tmp_path / "range.npz", **{**arrays, "actions": arrays["actions"] + 20})
    with pytest.raises(UserError, match="'actions' values must be in"):
        load_play_data(str(tmp_path / "range.npz"))
