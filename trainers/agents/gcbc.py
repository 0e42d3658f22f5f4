"""Goal-conditioned behaviour cloning (``trainer: gcbc``) on Crafter play data, with hindsight
relabelling: every step is labelled with the subgoal the play actually reached next, so the
policy learns "in this state, to get G, do a" from whatever the data collector happened to do.

Output: ``RUN/final/`` (a ``GCBCPolicy`` directory that ``LearnedController`` loads),
``checkpoints/step-N/`` (resumable), ``metrics.jsonl``, ``plots/*.png``, ``summary.json`` and
``report.md`` with the held-out action accuracy overall and per goal.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from agents.encoding import GOALS, INVENTORY_KEYS, VIEW_NAMES
from agents.gcbc import ACTIONS, VIEW_COLS, VIEW_ROWS, GCBCPolicy, PolicyConfig
from telos.errors import UserError
from telos.tracking import read_metrics
from trainers.agents.cloning import (
    clone,
    cloning_loss,
    evaluate,
    majority_correct,
    per_goal_accuracy,
    split_episodes,
    write_results,
)
from trainers.agents.gcbc_recipe import PLAY_ARRAYS, GCBCRecipe, check_play_file, play_data_hint
from trainers.common.recipe_data import resolve_recipe_data

gcbc_loss = cloning_loss  # the name the GCBC tests and docs use


def hindsight_labels(
    events: np.ndarray,
    episode: np.ndarray,
    commanded: np.ndarray,
    noise: np.ndarray,
    horizon: int,
    *,
    commanded_fallback: bool = True,
) -> np.ndarray:
    """The goal each step is trained toward (GOALS index), or -1 for a step not trained.

    With t* = min { t' : t ≤ t' < t + horizon, episode[t'] = episode[t], events[t'] ≥ 0 }::

        goal[t] = events[t*]                     if t* exists   (hindsight: what play reached)
                = commanded[t]                   else, if commanded_fallback and commanded[t] ≥ 0
                = -1                             otherwise
        goal[t] = -1                             whenever noise[t]

    The commanded fallback is on by default because Crafter's rarer goals sit far apart: a
    scripted controller may walk for more than ``horizon`` steps toward iron, and without the
    fallback the policy would only ever see the last ``horizon`` steps of such walks and never
    learn to explore for a goal it cannot see. The scripted controller is the expert being
    cloned, so its goal is a sound label for its own actions. Hindsight still wins where
    both exist: an accidental sapling on the way to a tree teaches "collect grass", which is
    what those actions actually did. Noise actions are random, never the expert's choice, so
    they are not trained on (they still count as the steps that reached an event, for the
    steps before them). Episodes must be contiguous runs of steps (``load_play_data`` checks).
    """
    events = np.asarray(events)
    episode = np.asarray(episode)
    t = len(events)
    if t == 0:
        return np.zeros(0, dtype=np.int64)
    idx = np.arange(t)
    # index of the first event at or after each step (t when none): a reversed running minimum
    nxt = np.minimum.accumulate(np.where(events >= 0, idx, t)[::-1])[::-1]
    at = np.minimum(nxt, t - 1)
    reached = (nxt < t) & (episode[at] == episode) & (nxt - idx < horizon)
    goals = np.where(reached, events[at], -1).astype(np.int64)
    if commanded_fallback:
        goals = np.where((goals < 0) & (np.asarray(commanded) >= 0), commanded, goals)
    goals[np.asarray(noise, dtype=bool)] = -1
    return goals


@dataclass
class PlayData:
    views: np.ndarray  # int8 [T, 7, 9]
    inventory: np.ndarray  # int8 [T, 16]
    actions: np.ndarray  # [T]
    commanded: np.ndarray  # [T]
    noise: np.ndarray  # bool [T]
    events: np.ndarray  # [T]
    episode: np.ndarray  # [T]
    facing: np.ndarray | None = None  # [T], VIEW_NAMES id of the faced cell, when collected

    def __len__(self) -> int:
        return len(self.actions)


def load_play_data(path: str) -> PlayData:
    """The arrays of a ``telos data crafter-play`` file, checked for shape, range and order."""
    check_play_file(path)
    with np.load(Path(path).expanduser()) as npz:
        arrays = {k: npz[k] for k in (*PLAY_ARRAYS, "facing") if k in npz.files}
    t = len(arrays["actions"])
    if t == 0:
        raise UserError(f"{path} holds no steps; {play_data_hint(path)}")
    shapes = {"views": (t, VIEW_ROWS, VIEW_COLS), "inventory": (t, len(INVENTORY_KEYS))}
    for name, a in arrays.items():
        want = shapes.get(name, (t,))
        if a.shape != want:
            raise UserError(f"{path}: '{name}' has shape {list(a.shape)}, expected {list(want)}")
    ranges = {
        "views": (0, len(VIEW_NAMES)),
        "facing": (0, len(VIEW_NAMES)),
        "actions": (0, len(ACTIONS)),
        "commanded": (-1, len(GOALS)),
        "events": (-1, len(GOALS)),
    }
    for name, (lo, hi) in ranges.items():
        a = arrays.get(name)
        if a is not None and (a.min() < lo or a.max() >= hi):
            raise UserError(f"{path}: '{name}' values must be in [{lo}, {hi - 1}], got {a.min()}..{a.max()}")
    ep = arrays["episode"]
    if len(np.unique(ep)) != int((np.diff(ep) != 0).sum()) + 1:
        raise UserError(f"{path}: 'episode' ids must form contiguous runs (steps in time order)")
    arrays["noise"] = arrays["noise"].astype(bool)
    return PlayData(**arrays)


def train_gcbc(recipe: GCBCRecipe, raw_config: dict | None = None) -> dict:
    r = recipe
    torch.manual_seed(r.seed)
    play = load_play_data(resolve_recipe_data(r.data.path))  # a tiny-data: spec is built on first use
    goals = hindsight_labels(
        play.events, play.episode, play.commanded, play.noise, r.data.horizon,
        commanded_fallback=r.data.commanded_fallback,
    )  # fmt: skip
    val_mask = split_episodes(play.episode, r.data.val_fraction, r.seed)
    train_rows = np.flatnonzero((goals >= 0) & ~val_mask)
    val_rows = np.flatnonzero((goals >= 0) & val_mask)
    if len(train_rows) == 0:
        raise UserError(
            f"{r.data.path}: no training step has a goal (no subgoal reached within data.horizon="
            f"{r.data.horizon} and no commanded goal); raise data.horizon or collect more play"
        )
    data = {
        "views": torch.from_numpy(play.views),
        "inventory": torch.from_numpy(play.inventory),
        "goals": torch.from_numpy(np.maximum(goals, 0)),  # rows used are all ≥ 0
        "actions": torch.from_numpy(play.actions.astype(np.int64)),
    }
    if play.facing is not None:
        data["facing"] = torch.from_numpy(play.facing)
    policy = GCBCPolicy(PolicyConfig(**asdict(r.model), use_facing=play.facing is not None))

    def forward(rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        i = torch.from_numpy(rows)
        facing = data["facing"][i] if "facing" in data else None
        return policy(data["views"][i], data["inventory"][i], data["goals"][i], facing), data["actions"][i]

    seconds = clone(
        r,
        raw_config,
        policy,
        forward,
        train_rows,
        val_rows,
        play.actions[val_rows],
        description=f"gcbc {r.name}",
    )
    return _finish(r, policy, play, forward, goals, train_rows, val_rows, seconds)


def _finish(r: GCBCRecipe, policy, play, forward, goals, train_rows, val_rows, seconds: float) -> dict:
    run_dir = Path(r.run_dir)
    val_loss, preds = evaluate(policy, forward, val_rows)
    correct = preds == play.actions[val_rows]
    baseline = majority_correct(play.actions, goals, train_rows, val_rows)
    hindsight = hindsight_labels(
        play.events, play.episode, play.commanded, play.noise, r.data.horizon, commanded_fallback=False
    )
    labels = {
        "steps": len(play),
        "episodes": int(len(np.unique(play.episode))),
        "hindsight": int((hindsight >= 0).sum()),
        "commanded_fallback": int(((goals >= 0) & (hindsight < 0)).sum()),
        "noise": int(play.noise.sum()),
        "unlabelled": int((goals < 0).sum()),
    }
    final = policy.save(
        run_dir / "final",
        meta={"data": r.data.path, "horizon": r.data.horizon, "steps": r.train.steps, "seed": r.seed},
    )
    nan = float("nan")
    summary = {
        "name": r.name,
        "trainer": "gcbc",
        "steps": r.train.steps,
        "parameters": policy.num_parameters(),
        "uses_facing": policy.config.use_facing,
        "labels": labels,
        "train_examples": len(train_rows),
        "val_examples": len(val_rows),
        "val_loss": val_loss,
        "val_accuracy": float(correct.mean()) if len(correct) else nan,
        "eval_accuracy": float(correct.mean()) if len(correct) else nan,  # the name `telos train` prints
        "val_majority_baseline": float(baseline.mean()) if len(baseline) else nan,
        "val_per_goal": per_goal_accuracy(goals[val_rows], correct),
        "val_per_goal_baseline": per_goal_accuracy(goals[val_rows], baseline),
        "train_seconds": seconds,
        "model_dir": str(final),
    }
    write_results(run_dir, summary, _report(summary), read_metrics(run_dir / "metrics.jsonl"))
    return summary


def _report(s: dict) -> str:
    lab = s["labels"]
    lines = [
        f"# GCBC run `{s['name']}`",
        "",
        f"- steps: {s['steps']}, parameters: {s['parameters']:,}, facing input: {s['uses_facing']}",
        f"- play data: {lab['steps']} steps in {lab['episodes']} episodes; labelled by hindsight "
        f"{lab['hindsight']}, by the commanded goal {lab['commanded_fallback']}, noise {lab['noise']}, "
        f"unlabelled {lab['unlabelled']}",
        f"- train / val examples (held-out episodes): {s['train_examples']} / {s['val_examples']}",
        f"- **val action accuracy {s['val_accuracy']:.3f}** (majority action per goal: "
        f"{s['val_majority_baseline']:.3f}), val loss {s['val_loss']:.3f}",
        "",
        "| goal | val steps | accuracy | majority baseline |",
        "|---|---:|---:|---:|",
    ]
    for goal, v in s["val_per_goal"].items():
        base = s["val_per_goal_baseline"][goal]["accuracy"]
        lines.append(f"| {goal} | {v['steps']} | {v['accuracy']:.3f} | {base:.3f} |")
    lines += ["", "Action accuracy is agreement with the play data's action, not task success.", ""]
    return "\n".join(lines)
