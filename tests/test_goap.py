"""GOAP: the remembered-map encoding by hand, `telos data crafter-goap` (parallel, resumable,
deterministic, memory-mapped), the controller reading exactly what the data recorded, the
behaviour encoder's causality and padding, training with resume through `telos train`, the
`goap:PATH` controller in `telos eval minecraft`, and one-line errors."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

pytest.importorskip("crafter")

from agents.controllers import make_controller  # noqa: E402
from agents.encoding import (  # noqa: E402
    ACTIONS,
    COMPASS_TARGETS,
    COMPASS_UNKNOWN,
    COW_MEMORY,
    GOALS,
    REFLEXES,
    STATUS_DIM,
    VIEW_NAMES,
    encode_compass,
    encode_map,
)
from agents.goap import (  # noqa: E402
    COMPASS_DIM,
    GOAL_COMPASS_DIM,
    GOAL_TARGETS,
    NO_ACTION,
    GOAPConfig,
    GOAPController,
    GOAPPolicy,
    compass_vector,
    goal_compass_features,
    status_vector,
)
from agents.navigation import SpatialMap  # noqa: E402
from agents.scripted import ScriptedController  # noqa: E402
from agents.types import AgentView, Controller  # noqa: E402
from eval.crafter_goap import GOAPRecorder, crafter_goap_command  # noqa: E402
from eval.crafter_play import play_episodes  # noqa: E402
from telos.cli import main  # noqa: E402
from telos.errors import UserError  # noqa: E402
from trainers.agents.cloning import split_episodes  # noqa: E402
from trainers.agents.goap import craft_goals, repeat_routine_rows, training_rows  # noqa: E402
from trainers.agents.goap_data import GOAPBatcher, load_goap_data  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
ID = {n: i for i, n in enumerate(VIEW_NAMES)}


def goap_args(out: Path, **kw) -> argparse.Namespace:
    base = dict(out=str(out), steps=None, episodes=4, workers=2, episodes_per_shard=2, suite="crafter-techtree",
                noise=0.05, seed=0, budget=120, map_radius=4, policy=None, beta=0.5)  # fmt: skip
    return argparse.Namespace(**{**base, **kw})


@pytest.fixture(scope="module")
def goap_data(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("goap") / "data"
    assert crafter_goap_command(goap_args(out)) == 0
    return out


def test_encode_map_by_hand():
    m = SpatialMap()
    m.pos = (5, 5)
    m.cells = {(5, 4): "tree", (6, 5): "stone", (3, 7): "water", (9, 5): "iron"}  # (9, 5) is outside r=2
    grid = encode_map(m, radius=2)
    assert grid.shape == (5, 5) and grid.dtype == np.int8
    expected = np.full((5, 5), ID["unknown"])
    expected[1, 2] = ID["tree"]  # one north: the row above the centre
    expected[2, 3] = ID["stone"]  # one east
    expected[4, 0] = ID["water"]  # two south, two west
    np.testing.assert_array_equal(grid, expected)


def test_status_vector_by_hand():
    inv = np.zeros(16, dtype=np.int8)
    inv[0], inv[5] = 9, 3  # health 9, wood 3
    v = status_vector(inv, np.array(51, dtype=np.uint8), np.array(True))
    assert v.shape == (STATUS_DIM,)
    assert v[0] == 1.0 and v[5] == pytest.approx(3 / 9) and v[16] == pytest.approx(0.2) and v[17] == 1.0


def test_training_rows_skip_unlabelled_steps():
    goal = np.array([0, 0, -1, 3, 3, 3])
    noise = np.array([0, 1, 0, 0, 0, 0], dtype=bool)
    held_out = np.array([0, 0, 0, 1, 1, 0], dtype=bool)
    expert = np.where(noise, -1, 2)
    train, val = training_rows(goal, expert, held_out)
    assert train.tolist() == [0, 5] and val.tolist() == [3, 4]


def test_repeat_routine_rows_lists_night_routine_steps_again():
    sleep, eat = REFLEXES.index("sleep"), REFLEXES.index("eat")
    noop, place, do = ACTIONS.index("noop"), ACTIONS.index("place_stone"), ACTIONS.index("do")
    reflex = np.array([0, sleep, sleep, sleep, eat, sleep])
    expert = np.array([do, place, noop, do, do, do])
    rows = np.array([0, 1, 2, 3, 4])  # row 5 is held out: never repeated
    assert repeat_routine_rows(rows, reflex, expert, 1) is rows
    assert repeat_routine_rows(rows, reflex, expert, 3).tolist() == [0, 1, 2, 3, 4, 1, 3, 1, 3]


def test_data_command_writes_memory_mapped_arrays(goap_data):
    meta = json.loads((goap_data / "meta.json").read_text())
    assert meta["episodes"] == 4 and meta["shards"] == 2 and meta["map_radius"] == 4
    views = np.load(goap_data / "views.npy", mmap_mode="r")
    assert isinstance(views, np.memmap) and views.shape == (meta["steps"], 7, 9)
    data = load_goap_data(str(goap_data))
    a = data.arrays
    assert a["map"].shape == (meta["steps"], 9, 9)
    assert sorted(np.unique(a["episode"]).tolist()) == [0, 1, 2, 3]
    # the dispatched subgoal is on every step (reflex steps too): the oracle always has a plan
    assert (a["goal"] >= 0).all()
    assert set(np.unique(a["reflex"]).tolist()) <= set(range(len(REFLEXES)))
    # episode 0 is collect_wood: its steps are labelled collect tree
    assert (a["goal"][a["episode"] == 0] == GOALS.index(("collect", "tree"))).all()
    starts = data.start[np.r_[0, np.flatnonzero(np.diff(a["episode"])) + 1]]
    assert starts.tolist() == np.r_[0, np.flatnonzero(np.diff(a["episode"])) + 1].tolist()


def test_data_command_resumes_and_is_deterministic(tmp_path, goap_data):
    out = tmp_path / "again"
    assert crafter_goap_command(goap_args(out)) == 0
    shard = sorted((out / "shards").glob("shard-*.npz"))[1]
    shard.unlink()  # a run killed before its second shard landed
    before = {p.name: p.stat().st_mtime_ns for p in (out / "shards").glob("shard-*.npz")}
    assert crafter_goap_command(goap_args(out)) == 0
    after = {p.name: p.stat().st_mtime_ns for p in (out / "shards").glob("shard-*.npz")}
    assert {k: after[k] for k in before} == before  # the finished shard was not replayed
    assert shard.is_file()
    for name in ("views", "map", "actions", "goal", "episode"):
        np.testing.assert_array_equal(np.load(out / f"{name}.npy"), np.load(goap_data / f"{name}.npy"))


def test_data_command_rejects_other_settings(tmp_path, goap_data):
    out = tmp_path / "d"
    assert crafter_goap_command(goap_args(out, episodes=2)) == 0
    with pytest.raises(UserError, match="other settings"):
        crafter_goap_command(goap_args(out, episodes=2, noise=0.2))
    with pytest.raises(UserError, match="one of --steps"):
        crafter_goap_command(goap_args(out, steps=100))


def test_max_steps_keeps_whole_episodes(goap_data):
    full = load_goap_data(str(goap_data))
    first = int((full.arrays["episode"] == 0).sum())
    cut = load_goap_data(str(goap_data), max_steps=first + 1)
    ep = full.arrays["episode"]
    assert len(cut) == first + int((ep == ep[first]).sum())


class Mirror(Controller):
    """The recorder plays (scripted + noise); a GOAP controller is fed the same steps and its
    inputs at every act are kept, to compare with what the data says about that step."""

    def __init__(self, recorder: GOAPRecorder, goap: GOAPController) -> None:
        self.recorder, self.goap, self.seen = recorder, goap, []
        self.rows = recorder.rows
        self.name = "mirror"

    def reset(self) -> None:
        self.recorder.reset()
        self.goap.reset()

    def start(self, subgoal, view) -> None:
        self.recorder.start(subgoal, view)
        self.goap.start(subgoal, view)

    def status(self, view):
        return self.recorder.status(view)

    def act(self, view) -> int:
        self.seen.append(self.goap.inputs(view))
        return self.recorder.act(view)

    def observe(self, view, action=None) -> None:
        self.recorder.observe(view, action)
        self.goap.observe(view, action)


def test_controller_reads_what_the_data_recorded(tmp_path):
    policy = GOAPPolicy(GOAPConfig(map_radius=4, history=6))
    mirror = Mirror(GOAPRecorder(ScriptedController(), 0.2, 1, map_radius=4), GOAPController(policy=policy))
    parts = play_episodes([4], "crafter-techtree", lambda _ep: mirror, seed=0, budget=150)
    rows = parts[0]
    n = len(rows["actions"])
    assert n == len(mirror.seen) > 50
    for name in ("views", "inventory", "daylight", "sleeping", "facing", "map", "compass", "actions", "goal",
                 "reflex", "noise", "events", "episode"):  # fmt: skip
        d = tmp_path / f"{name}.npy"
        np.save(d, rows[name].astype(np.int32 if name == "episode" else rows[name].dtype))
    meta = {"steps": n, "map_radius": 4, "arrays": list(rows)}
    (tmp_path / "meta.json").write_text(json.dumps(meta))
    batcher = GOAPBatcher(load_goap_data(str(tmp_path)), history=6, with_history=True, with_compass=True)
    for t in (0, 1, 5, n // 2, n - 1):
        batch, _ = batcher(np.array([t]))
        for key, value in mirror.seen[t].items():
            if (
                key == "goal"
            ):  # the data's label is the dispatched goal; the controller's own goal is the same
                assert int(value) == int(rows["goal"][t])
                continue
            torch.testing.assert_close(batch[key].to(value.dtype), value, msg=f"step {t}: {key}")
    # action dropout hides history actions in training batches only, and nothing else
    dropping = GOAPBatcher(load_goap_data(str(tmp_path)), history=6, with_history=True, action_dropout=0.5)
    rows_ = np.arange(6, n)
    plain, _ = dropping(rows_)
    dropped, _ = dropping(rows_, training=True)
    assert (plain["hist_action"] < NO_ACTION).all()
    hidden = (dropped["hist_action"] == NO_ACTION).float().mean()
    assert 0.35 < hidden < 0.65
    kept = dropped["hist_action"] < NO_ACTION
    assert torch.equal(dropped["hist_action"][kept], plain["hist_action"][kept])
    torch.testing.assert_close(dropped["hist_view"], plain["hist_view"])


def _batch(b: int, k: int, radius: int = 4) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    side = 2 * radius + 1
    return {
        "view": torch.randint(0, len(VIEW_NAMES), (b, 7, 9), generator=g),
        "status": torch.rand(b, STATUS_DIM, generator=g),
        "facing": torch.randint(0, len(VIEW_NAMES), (b,), generator=g),
        "map": torch.randint(0, len(VIEW_NAMES), (b, side, side), generator=g),
        "goal": torch.randint(0, len(GOALS), (b,), generator=g),
        "hist_view": torch.randint(0, len(VIEW_NAMES), (b, k, 7, 9), generator=g),
        "hist_status": torch.rand(b, k, STATUS_DIM, generator=g),
        "hist_action": torch.randint(0, NO_ACTION, (b, k), generator=g),
        "hist_valid": torch.ones(b, k, dtype=torch.bool),
        "compass": torch.rand(b, COMPASS_DIM, generator=g),
    }


@pytest.mark.parametrize("variant", ["goap", "no_behaviour", "goal_only"])
def test_variants_read_what_they_should(variant):
    torch.manual_seed(0)
    policy = GOAPPolicy(GOAPConfig(variant=variant, map_radius=4, history=5, d_model=32, heads=2)).eval()
    batch = _batch(3, 5)
    base = policy(batch)
    assert base.shape == (3, 17)
    # padded history slots are invisible: their contents do not move the logits
    padded = {**batch, "hist_valid": batch["hist_valid"].clone()}
    padded["hist_valid"][:, :2] = False
    other = {**padded, "hist_view": padded["hist_view"].clone(), "hist_action": padded["hist_action"].clone()}
    other["hist_view"][:, :2] = 0
    other["hist_action"][:, :2] = (other["hist_action"][:, :2] + 1) % NO_ACTION
    torch.testing.assert_close(policy(padded), policy(other))
    # which inputs matter: actions only for goap, history at all only with behaviour tokens
    acted = {**batch, "hist_action": (batch["hist_action"] + 1) % NO_ACTION}
    moved_by_actions = not torch.allclose(policy(acted), base)
    assert moved_by_actions == (variant == "goap")
    seen = {**batch, "hist_view": torch.roll(batch["hist_view"], 1, dims=0)}
    assert (not torch.allclose(policy(seen), base)) == (variant != "no_behaviour")
    # the compass is read
    pointed = {**batch, "compass": torch.roll(batch["compass"], 1, dims=0)}
    assert not torch.allclose(policy(pointed), base)
    # an empty history (episode start) is well defined
    empty = {**batch, "hist_valid": torch.zeros_like(batch["hist_valid"])}
    assert torch.isfinite(policy(empty)).all()


def test_reflex_mode_head_conditions_the_action_on_the_mode():
    torch.manual_seed(0)
    policy = GOAPPolicy(GOAPConfig(map_radius=4, history=5, d_model=32, heads=2, reflex_mode=True)).eval()
    batch = _batch(3, 5)
    logits, mode_logits = policy.forward_with_mode(batch)
    assert mode_logits.shape == (3, len(REFLEXES))
    # acting (no mode given) uses the predicted mode: the same as forcing the argmax
    forced = policy.forward_with_mode({**batch, "mode": mode_logits.argmax(-1)})[0]
    torch.testing.assert_close(logits, forced)
    # the action head reads the mode: another mode gives other logits, the mode logits stay
    other, other_mode = policy.forward_with_mode(
        {**batch, "mode": (mode_logits.argmax(-1) + 1) % len(REFLEXES)}
    )
    assert not torch.allclose(other, logits)
    torch.testing.assert_close(other_mode, mode_logits)
    assert (
        GOAPPolicy(GOAPConfig(map_radius=4, history=5, d_model=32, heads=2)).forward_with_mode(batch)[1]
        is None
    )


def test_reflex_mode_training_logs_the_mode_loss(tmp_path, goap_data):
    recipe = write_recipe(tmp_path, goap_data, **{"model.reflex_mode": True, "rollout.every": 0})
    assert main(["train", str(recipe)]) == 0
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert all(r["mode_loss"] > 0 for r in rows)
    # the logged loss is the sum: cloning cross-entropy + the mode's, so it exceeds the mode's
    assert all(r["loss"] > r["mode_loss"] for r in rows)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert 0.0 <= summary["val_mode_accuracy"] <= 1.0
    assert "reflex mode predicted" in (tmp_path / "run" / "report.md").read_text()
    assert GOAPPolicy.load(tmp_path / "run" / "final").config.reflex_mode


def test_craft_goals_relabel_a_sword_made_under_a_pickaxe_goal():
    g = {name: GOALS.index(tuple(name.split())) for name in
         ("make wood_pickaxe", "make wood_sword", "make stone_pickaxe", "make stone_sword", "collect tree")}  # fmt: skip
    a = {
        name: ACTIONS.index(name)
        for name in ("make_wood_sword", "make_wood_pickaxe", "make_stone_sword", "do")
    }
    goal = np.array([g["make wood_pickaxe"]] * 3 + [g["make stone_pickaxe"]] * 2 + [g["collect tree"], -1])
    expert = np.array([a["make_wood_sword"], a["make_wood_pickaxe"], a["do"], a["make_stone_sword"], a["do"],
                       a["do"], a["make_wood_sword"]])  # fmt: skip
    want = [g["make wood_sword"], g["make wood_pickaxe"], g["make wood_pickaxe"], g["make stone_sword"],
            g["make stone_pickaxe"], g["collect tree"], g["make wood_sword"]]  # fmt: skip
    assert craft_goals(goal, expert).tolist() == want
    assert goal[0] == g["make wood_pickaxe"]  # the input is left alone


def write_recipe(directory: Path, data: Path, **overrides) -> Path:
    recipe = yaml.safe_load((REPO / "recipes/agents/goap_crafter.yaml").read_text())
    recipe.update(run_dir=str(directory / "run"), resume=None)
    recipe["data"].update(path=str(data), val_fraction=0.25)
    recipe["model"].update(d_model=32, heads=2, history=4)
    recipe["train"].update(steps=6, batch_size=16, save_every=3, eval_every=3)
    recipe["rollout"].update(every=3, episodes=1, budget=20, task="collect_wood")
    for key, value in overrides.items():
        section, _, leaf = key.rpartition(".")
        (recipe[section] if section else recipe)[leaf] = value
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory, goap_data) -> Path:
    directory = tmp_path_factory.mktemp("goap-run")
    assert main(["train", str(write_recipe(directory, goap_data))]) == 0
    return directory / "run"


def test_training_writes_final_report_and_rollouts(trained):
    summary = json.loads((trained / "summary.json").read_text())
    assert summary["trainer"] == "goap" and summary["variant"] == "goap"
    assert 0.0 <= summary["val_accuracy"] <= 1.0 and summary["val_per_goal"] and summary["val_per_reflex"]
    rows = [json.loads(line) for line in (trained / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "rollout/success" in r] == [3, 6]
    assert "rollout/collect tree" in rows[-1]
    assert (trained / "report.md").read_text().startswith("# GOAP run")
    assert GOAPPolicy.load(trained / "final").config.history == 4


def test_resume_continues_from_checkpoint(tmp_path, goap_data, trained, weights_of, assert_same_weights):
    recipe = write_recipe(tmp_path, goap_data, **{"train.steps": 3})
    assert main(["train", str(recipe)]) == 0
    assert main(["train", str(write_recipe(tmp_path, goap_data, resume="latest"))]) == 0
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]
    assert_same_weights(weights_of(trained / "final"), weights_of(tmp_path / "run" / "final"), atol=1e-5)


def test_night_routine_repeat_lists_routine_rows_again_in_training(tmp_path, goap_data, trained):
    # the fixture's short episodes reach no night: label every non-noop step a sleep-reflex step
    data = tmp_path / "data"
    shutil.copytree(goap_data, data)
    a = load_goap_data(str(data)).arrays
    routine = a["expert"] != ACTIONS.index("noop")
    np.save(
        data / "reflex.npy", np.where(routine, REFLEXES.index("sleep"), a["reflex"]).astype(a["reflex"].dtype)
    )
    recipe = write_recipe(tmp_path, data, **{"train.night_routine_repeat": 3, "rollout.every": 0})
    assert main(["train", str(recipe)]) == 0

    def last_epoch_and_examples(run: Path) -> tuple[float, int]:
        rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        return rows[-1]["epoch"], json.loads((run / "summary.json").read_text())["train_examples"]

    epoch, examples = last_epoch_and_examples(tmp_path / "run")
    epoch_1, examples_1 = last_epoch_and_examples(trained)
    assert examples == examples_1  # the report counts each step once
    held_out = split_episodes(a["episode"], 0.25, 0)  # as write_recipe's recipe splits
    rows, _ = training_rows(craft_goals(a["goal"], a["expert"]), a["expert"], held_out)
    k = int(routine[rows].sum())
    assert k > 0 and epoch == pytest.approx(epoch_1 * examples / (examples + 2 * k))


def test_goap_controller_in_eval_minecraft(tmp_path, trained):
    suite = tmp_path / "suite.yaml"
    suite.write_text(yaml.safe_dump({"name": "wood", "env": "crafter", "tasks": [
        {"id": "collect_wood", "goal": {"achievement": "collect_wood"}, "tier": 1, "budget": 60}]}))  # fmt: skip
    out = tmp_path / "eval"
    argv = ["eval", "minecraft", "--suite", str(suite), "--controller", f"goap:{trained / 'final'}",
            "--episodes", "2", "--workers", "2", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["config"]["controller"]["name"] == "goap"
    assert results["config"]["controller"]["variant"] == "goap"
    assert results["tasks"]["collect_wood"]["episodes"] == 2


def test_controller_spec_errors(tmp_path, trained):
    with pytest.raises(UserError, match="no directory"):
        make_controller(f"goap:{tmp_path / 'missing'}")
    with pytest.raises(UserError, match="valid: .*goap:PATH"):
        make_controller("goap")
    gcbc_like = tmp_path / "gcbc"
    gcbc_like.mkdir()
    (gcbc_like / "config.json").write_text(json.dumps({"kind": "gcbc"}))
    (gcbc_like / "model.safetensors").write_bytes(b"")
    with pytest.raises(UserError, match="holds a gcbc policy"):
        make_controller(f"goap:{gcbc_like}")


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"model.heads": 3}, "'model.heads': 3 heads do not divide d_model 32"),
        ({"rollout.task": "fly"}, "'rollout.task': unknown task 'fly'"),
        ({"model.variant": "steve"}, "model.variant"),
        ({"model.compass": False, "model.goal_compass": True}, "'model.goal_compass': reads the compass"),
        (
            {"model.compass": False, "model.goal_compass": False, "model.survival": True},
            "'model.survival': reads",
        ),
    ],
)
def test_bad_recipe_is_one_line_error(tmp_path, goap_data, capsys, override, message):
    assert main(["check", str(write_recipe(tmp_path, goap_data, **override))]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and message in err and "\n" not in err


def test_missing_data_is_one_line_error(tmp_path, capsys):
    assert main(["check", str(write_recipe(tmp_path, tmp_path / "nothing"))]) == 2
    err = capsys.readouterr().err.strip()
    assert "telos data crafter-goap" in err and "\n" not in err


def test_dagger_collection_lets_the_policy_act_and_the_expert_label(tmp_path, trained):
    out = tmp_path / "dagger"
    args = goap_args(out, episodes=2, workers=1, policy=f"goap:{trained / 'final'}", beta=0.0, noise=0.0,
                     policy_option=["temperature=1.0"])  # fmt: skip
    assert crafter_goap_command(args) == 0
    meta = json.loads((out / "meta.json").read_text())
    assert meta["policy"] == f"goap:{trained / 'final'}" and meta["learner_steps"] == meta["steps"] > 0
    assert meta["policy_options"] == {"temperature": 1.0}  # it acts as it is evaluated: sampling
    data = load_goap_data(str(out))
    a = data.arrays
    assert a["learner"].all() and (a["expert"] >= 0).all()
    # the 6-step policy does not act like the scripted controller: labels differ from what was done
    assert (a["expert"] != a["actions"]).any()
    with pytest.raises(UserError, match="controller"):
        crafter_goap_command(goap_args(tmp_path / "bad", policy="goap:/nowhere"))
    with pytest.raises(UserError, match="no option bogus; valid: temperature, seed"):
        crafter_goap_command(
            goap_args(tmp_path / "bad", policy=f"goap:{trained / 'final'}", policy_option=["bogus=1"])
        )
    with pytest.raises(UserError, match="--policy-option needs --policy"):
        crafter_goap_command(goap_args(tmp_path / "bad", policy_option=["temperature=1"]))


def _view(rows: list[list[str]]) -> AgentView:
    return AgentView(local_view=rows, inventory={}, vitals={"health": 9, "food": 9, "drink": 9, "energy": 9},
                     achievements=(), facing=None, daylight=1.0, sleeping=False, step=0, text="")  # fmt: skip


def test_compass_points_to_the_nearest_remembered_cell():
    grass = [["grass"] * 3 for _ in range(3)]
    m = SpatialMap()
    view = [row[:] for row in grass]
    view[0][0], view[2][2], view[1][2] = "water", "water", "cow"  # water at (-1,-1), (1,1); cow (1,0)
    m.observe(_view(view))
    m.pos = (3, 0)  # walked 3 east: the water at (1, 1) is nearer than (-1, -1)
    c = encode_compass(m)
    assert c[COMPASS_TARGETS.index("water")].tolist() == [-2, 1]
    assert c[COMPASS_TARGETS.index("cow")].tolist() == [-2, 0]
    assert (c[COMPASS_TARGETS.index("iron")] == COMPASS_UNKNOWN).all()
    # a cell rewritten (the water became path) leaves its old name's index
    view[2][2], view[1][2] = "path", "grass"
    m.pos = (0, 0)
    m.observe(_view(view))
    assert m.where["water"] == {(-1, -1)} and (1, 1) in m.where["path"]
    # the cow is gone from where it was seen (the cell is in view, with no cow): forgotten at once
    assert (encode_compass(m)[COMPASS_TARGETS.index("cow")] == COMPASS_UNKNOWN).all()
    # features: dx/16, dy/16, known
    f = compass_vector(c)
    i = 3 * COMPASS_TARGETS.index("water")
    assert f[i : i + 3].tolist() == [-2 / 16, 1 / 16, 1.0]
    assert f[3 * COMPASS_TARGETS.index("iron") : 3 * COMPASS_TARGETS.index("iron") + 3].tolist() == [0, 0, 0]


def test_goal_compass_reads_out_the_goals_target():
    assert GOAL_TARGETS[GOALS.index(("collect", "iron"))] == COMPASS_TARGETS.index("iron")
    assert GOAL_TARGETS[GOALS.index(("make", "stone_pickaxe"))] == COMPASS_TARGETS.index("table")
    assert GOAL_TARGETS[GOALS.index(("make", "iron_pickaxe"))] == COMPASS_TARGETS.index("furnace")
    assert GOAL_TARGETS[GOALS.index(("place", "furnace"))] == COMPASS_TARGETS.index("table")
    assert GOAL_TARGETS[GOALS.index(("collect", "grass"))] == -1
    offsets = np.full((3, len(COMPASS_TARGETS), 2), COMPASS_UNKNOWN, dtype=np.int8)
    table = COMPASS_TARGETS.index("table")
    offsets[0, table] = (-1, 1)  # diagonal neighbour: within reach
    offsets[1, table] = (5, -2)  # five cells east: not
    compass = torch.from_numpy(compass_vector(offsets))
    target = torch.tensor([table, table, -1])
    f = goal_compass_features(compass, target)
    assert f[0].tolist() == [-1 / 16, 1 / 16, -1.0, 1.0, 1.0, 1.0]
    assert f[1].tolist() == [5 / 16, -2 / 16, 1.0, -1.0, 1.0, 0.0]
    assert f[2].tolist() == [0.0] * GOAL_COMPASS_DIM  # no target
    # an unknown table reads as unknown and out of reach, not as "here"
    unknown = goal_compass_features(torch.from_numpy(compass_vector(offsets[2:])), torch.tensor([table]))
    assert unknown.tolist() == [[0.0] * GOAL_COMPASS_DIM]


def test_policy_with_goal_compass_reads_it():
    torch.manual_seed(0)
    policy = GOAPPolicy(GOAPConfig(map_radius=4, history=5, d_model=32, heads=2, goal_compass=True)).eval()
    batch = _batch(2, 5)
    table = 3 * COMPASS_TARGETS.index("table")
    batch["goal"] = torch.tensor([GOALS.index(("make", "stone_pickaxe"))] * 2)
    far, near = batch["compass"].clone(), batch["compass"].clone()
    far[:, table : table + 3] = torch.tensor([5 / 16, 0.0, 1.0])
    near[:, table : table + 3] = torch.tensor([1 / 16, 0.0, 1.0])
    plain = GOAPPolicy(GOAPConfig(map_radius=4, history=5, d_model=32, heads=2)).eval()
    plain.load_state_dict(policy.state_dict(), strict=False)
    plain.compass.weight.data[:, table : table + 3] = 0  # the full compass no longer sees the table
    policy.compass.weight.data[:, table : table + 3] = 0
    # only the read-out sees it now: the goal compass moves the logits, the plain policy's do not
    assert not torch.allclose(policy({**batch, "compass": far}), policy({**batch, "compass": near}))
    torch.testing.assert_close(plain({**batch, "compass": far}), plain({**batch, "compass": near}))


def test_cow_sightings_expire():
    m = SpatialMap()
    view = [["grass"] * 3 for _ in range(3)]
    view[1][0] = "cow"
    m.observe(_view(view))
    m.pos = (100, 0)  # far away: the sighting's cell is out of view from now on
    far = [["grass"] * 3 for _ in range(3)]
    for _ in range(COW_MEMORY - 1):  # seen at observation 1; still remembered at observation 40
        m.observe(_view(far))
    assert m.sighted("cow", COW_MEMORY) == [(-1, 0)]
    m.observe(_view(far))
    assert m.sighted("cow", COW_MEMORY) == []


def test_do_loops_are_runs_of_fruitless_do_facing_one_cell():
    from benchmarks.goap_failures import do_loops, gains

    do, water, tree = 5, 2, 7
    actions = np.array([do] * 5 + [1] + [do] * 4 + [do] * 3)
    facing = np.array([water] * 5 + [water] + [water] * 4 + [tree] * 3)
    inventory = np.zeros((len(actions), 16), dtype=np.int64)
    inventory[3:, 2] = 1  # step 2 raised drink: it was not fruitless
    inventory[8:, 0] = 5  # health recovering on its own is no gain
    gained = gains(inventory)
    assert np.flatnonzero(gained).tolist() == [2]
    assert do_loops(actions, facing, gained, do, min_len=2) == [
        (0, 2, water),
        (3, 2, water),
        (6, 4, water),
        (10, 3, tree),
    ]
    assert do_loops(actions, facing, gained, do, min_len=4) == [(6, 4, water)]
