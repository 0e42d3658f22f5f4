"""Behaviour cloning of the GOAP controller (``trainer: goap``) on goal-observation-action data.

Every non-noise step is trained toward the subgoal the planner had dispatched at that step —
survival reflexes included, so the policy learns to eat, drink, sleep and fight under any goal.

Output: ``RUN/final/`` (a ``GOAPPolicy`` directory, the ``goap:PATH`` controller),
``checkpoints/step-N/`` (resumable), ``metrics.jsonl`` (with per-subgoal rollout success when
``rollout.every`` is set), ``plots/*.png``, ``summary.json`` and ``report.md`` with the held-out
action accuracy overall, per goal and per reflex.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from agents.encoding import ACTIONS, GOALS, REFLEXES
from agents.goap import GOAPConfig, GOAPController, GOAPPolicy
from telos.errors import UserError
from telos.tracking import read_metrics
from trainers.agents.cloning import (
    clone,
    evaluate,
    majority_correct,
    per_goal_accuracy,
    split_episodes,
    write_results,
)
from trainers.agents.goap_data import GOAPBatcher, concat, load_goap_data
from trainers.agents.goap_recipe import GOAPRecipe
from trainers.common.recipe_data import resolve_recipe_data


def training_rows(
    goal: np.ndarray, expert: np.ndarray, held_out: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(train rows, val rows): steps with a dispatched goal and an expert action (a noise step of
    data that did not record the expert's choice has none), split by episode."""
    usable = (goal >= 0) & (expert >= 0)
    return np.flatnonzero(usable & ~held_out), np.flatnonzero(usable & held_out)


def repeat_routine_rows(rows: np.ndarray, reflex: np.ndarray, expert: np.ndarray, repeat: int) -> np.ndarray:
    """Training rows with each step of the expert's night routine listed ``repeat`` times::

        routine[t] = reflex[t] is sleep and expert[t] is not noop
        rows'      = rows ++ (repeat − 1) copies of {t ∈ rows : routine[t]}

    The routine (walk to a pocket site, dig two cells, seal the mouth with stone, sleep) is 6 % of
    the 200k-step data, against 17 % for the noop steps inside the same reflex; listing its steps again weights
    them ``repeat``× in every epoch's cross-entropy, as a per-row loss weight would in expectation."""
    if repeat == 1:
        return rows
    routine = rows[(reflex[rows] == REFLEXES.index("sleep")) & (expert[rows] != ACTIONS.index("noop"))]
    return np.concatenate([rows] + [routine] * (repeat - 1))


# action id of make_X → GOALS id of ("make", X)
_CRAFTS = {ACTIONS.index(f"make_{item}"): g for g, (verb, item) in enumerate(GOALS) if verb == "make"}


def craft_goals(goal: np.ndarray, expert: np.ndarray) -> np.ndarray:
    """The goal each step is trained toward, a crafting step relabelled by what it makes::

        goal'[t] = GOALS.index(("make", X))   if expert[t] is make_X
                 = goal[t]                    otherwise

    The scripted expert gathers wood and stone beyond the plan ("bank") and, standing at the table
    for a pickaxe, makes a sword first from it. The bank is its hidden state: a policy cloned
    with the dispatched goal learns "make a sword under make wood_pickaxe" without the spare
    wood (the learned controller stops collecting at the plan's count), and then lacks the wood
    for the stone pickaxe. Relabelled, the sword is taught only under its own goal (hindsight,
    as GCBC's labels do), and every other step keeps the dispatched goal."""
    out = np.array(goal, dtype=np.int64, copy=True)
    for action, g in _CRAFTS.items():
        out[np.asarray(expert) == action] = g
    return out


def subgoal_rollouts(policy: GOAPPolicy, task_id: str, episodes: int, budget: int) -> dict:
    """Play ``episodes`` episodes of a tech-tree task with the oracle planner and ``policy``:
    task success and, per subgoal the planner dispatched, the fraction met."""
    from agents.loop import run_episode
    from agents.planners import OraclePlanner
    from agents.types import Goal
    from envs.crafter.env import CrafterEnv
    from envs.crafter.techtree import RULES
    from eval.suites import load_suite

    task = next(t for t in load_suite("crafter-techtree", RULES().achievements).tasks if t.id == task_id)
    env, planner = CrafterEnv(), OraclePlanner()
    met: dict[str, list[int]] = {}
    wins = deaths = 0
    for ep in range(episodes):
        ctl = GOAPController(policy=policy)
        res = run_episode(
            env, Goal(task.id, task.achievement, dict(task.inventory)),
            lambda v: task.done(v.achievements, v.inventory), planner, ctl, seed=10_000 + ep, budget=budget,
        )  # fmt: skip
        wins += res.success
        deaths += res.died
        for rec in res.subgoals:
            name = rec.subgoal.split(" ×", 1)[0]  # "collect tree ×5" → "collect tree"
            met.setdefault(name, []).append(rec.outcome == "done")
    out = {"rollout/success": wins / episodes, "rollout/deaths": deaths / episodes}
    out.update({f"rollout/{k}": float(np.mean(v)) for k, v in met.items()})
    return out


def train_goap(recipe: GOAPRecipe, raw_config: dict | None = None) -> dict:
    r = recipe
    torch.manual_seed(r.seed)
    data = concat(
        [load_goap_data(resolve_recipe_data(r.data.path), r.data.max_steps)]
        + [load_goap_data(p) for p in r.data.extra_paths]
    )
    a = data.arrays
    if r.data.relabel_crafts:
        a["goal"] = craft_goals(a["goal"], a["expert"]).astype(a["goal"].dtype)
    held_out = split_episodes(a["episode"], r.data.val_fraction, r.seed)
    train_rows, val_rows = training_rows(a["goal"], a["expert"], held_out)
    if len(train_rows) == 0:
        raise UserError(f"{r.data.path}: no step has a dispatched goal outside noise; collect more data")
    config = GOAPConfig(**asdict(r.model), map_radius=int(data.meta["map_radius"]))
    policy = GOAPPolicy(config)
    batcher = GOAPBatcher(
        data, config.history, policy.variant.behaviour, r.train.history_action_dropout, r.seed,
        with_compass=config.compass,
    )  # fmt: skip

    def forward(rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        batch, actions = batcher(rows, training=policy.training)
        if not config.reflex_mode:
            return policy(batch), actions, {}
        if policy.training:  # teacher forcing: the action head learns p(a | s, true mode)
            batch["mode"] = batch["reflex"]
        logits, mode_logits = policy.forward_with_mode(batch)
        mode_loss = F.cross_entropy(mode_logits, batch["reflex"])
        return logits, actions, {"mode_loss": r.train.mode_loss_weight * mode_loss}

    ro = r.rollout
    periodic = (lambda step: subgoal_rollouts(policy, ro.task, ro.episodes, ro.budget)) if ro.every else None
    seconds = clone(
        r, raw_config, policy, forward,
        repeat_routine_rows(train_rows, a["reflex"], a["expert"], r.train.night_routine_repeat),
        val_rows, a["expert"][val_rows],
        description=f"goap {r.name}", periodic=periodic, periodic_every=ro.every,
    )  # fmt: skip
    return _finish(r, policy, data, forward, batcher, train_rows, val_rows, seconds)


def _finish(
    r: GOAPRecipe,
    policy: GOAPPolicy,
    data,
    forward,
    batcher: GOAPBatcher,
    train_rows,
    val_rows,
    seconds: float,
) -> dict:
    run_dir = Path(r.run_dir)
    a = data.arrays
    val_loss, preds = evaluate(policy, forward, val_rows)
    correct = preds == a["expert"][val_rows]
    mode_accuracy = _mode_accuracy(policy, batcher, val_rows, a["reflex"])
    goals = a["goal"].astype(np.int64)
    baseline = majority_correct(a["expert"], goals, train_rows, val_rows)
    reflex = a["reflex"][val_rows]
    per_reflex = {
        (name or "subgoal"): {
            "steps": int((reflex == i).sum()),
            "accuracy": float(correct[reflex == i].mean()),
        }
        for i, name in enumerate(REFLEXES)
        if (reflex == i).any()
    }
    final = policy.save(
        run_dir / "final",
        meta={"data": r.data.path, "data_steps": len(data), "steps": r.train.steps, "seed": r.seed},
    )
    nan = float("nan")
    summary = {
        "name": r.name,
        "trainer": "goap",
        "variant": policy.config.variant,
        "steps": r.train.steps,
        "parameters": policy.num_parameters(),
        "data_steps": len(data),
        "data_episodes": int(len(np.unique(a["episode"]))),
        "data_learner_steps": int(a["learner"].sum()),
        "train_examples": len(train_rows),
        "val_examples": len(val_rows),
        "val_loss": val_loss,
        "val_accuracy": float(correct.mean()) if len(correct) else nan,
        "eval_accuracy": float(correct.mean()) if len(correct) else nan,  # the name `telos train` prints
        "val_majority_baseline": float(baseline.mean()) if len(baseline) else nan,
        "val_per_goal": per_goal_accuracy(goals[val_rows], correct),
        "val_per_reflex": per_reflex,
        "val_mode_accuracy": mode_accuracy,
        "train_seconds": seconds,
        "model_dir": str(final),
    }
    metrics = read_metrics(run_dir / "metrics.jsonl")
    rollouts = [m for m in metrics if "rollout/success" in m]
    if rollouts:
        summary["rollout"] = {k: v for k, v in rollouts[-1].items() if k.startswith("rollout/")}
    write_results(run_dir, summary, _report(summary), metrics)
    return summary


@torch.no_grad()
def _mode_accuracy(
    policy: GOAPPolicy, batcher: GOAPBatcher, rows: np.ndarray, reflex: np.ndarray
) -> float | None:
    """Held-out agreement of the predicted reflex mode with the expert's (None without the head)."""
    if not policy.config.reflex_mode or len(rows) == 0:
        return None
    policy.eval()
    hits = 0
    for s in range(0, len(rows), 4096):
        chunk = rows[s : s + 4096]
        batch, _ = batcher(chunk)
        hits += int((policy.forward_with_mode(batch)[1].argmax(-1).numpy() == reflex[chunk]).sum())
    return hits / len(rows)


def _report(s: dict) -> str:
    lines = [
        f"# GOAP run `{s['name']}` (variant {s['variant']})",
        "",
        f"- steps: {s['steps']}, parameters: {s['parameters']:,}, {s['train_seconds']:.0f} s",
        f"- data: {s['data_steps']} steps in {s['data_episodes']} episodes ({s['data_learner_steps']} "
        "acted by a learned policy, DAgger); train / val examples "
        f"(held-out episodes): {s['train_examples']} / {s['val_examples']}",
        f"- **val action accuracy {s['val_accuracy']:.3f}** (majority action per goal: "
        f"{s['val_majority_baseline']:.3f}), val loss {s['val_loss']:.3f}",
        *(
            [f"- reflex mode predicted on held-out steps: {s['val_mode_accuracy']:.3f}"]
            if s.get("val_mode_accuracy") is not None
            else []
        ),
        "",
        "| goal | val steps | accuracy |",
        "|---|---:|---:|",
    ]
    lines += [f"| {g} | {v['steps']} | {v['accuracy']:.3f} |" for g, v in s["val_per_goal"].items()]
    lines += ["", "| acting for | val steps | accuracy |", "|---|---:|---:|"]
    lines += [f"| {g} | {v['steps']} | {v['accuracy']:.3f} |" for g, v in s["val_per_reflex"].items()]
    if "rollout" in s:
        lines += ["", "Last rollout (oracle planner + this policy): "
                  + ", ".join(f"{k.split('/', 1)[1]} {v:.2f}" for k, v in s["rollout"].items())]  # fmt: skip
    lines += ["", "Action accuracy is agreement with the data's action, not task success.", ""]
    return "\n".join(lines)
