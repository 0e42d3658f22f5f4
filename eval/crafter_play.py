"""``telos data crafter-play``: trajectories for goal-conditioned behaviour cloning.

The oracle planner and the scripted controller play the suite's tasks; with probability
``noise`` an action is replaced by a random one (marked, never trained on, but its effects
are recorded), so the data also shows recoveries from states the scripted skills never reach
by themselves. Everything is recorded from the agent's own view (no privileged state) as the
arrays ``trainers.agents.gcbc.load_play_data`` reads.
"""

from __future__ import annotations

import argparse
import os
import random
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from agents.encoding import encode_facing, encode_inventory, encode_view, goal_index
from agents.progress import step_events
from agents.types import AgentView, Controller, SubgoalStatus
from envs.crafter.techtree import Subgoal
from telos.errors import UserError


class RecordingController(Controller):
    """Wraps a controller: injects noise actions and records every step it is asked for."""

    def __init__(self, inner: Controller, noise: float, seed: int, num_actions: int = 17) -> None:
        self.inner, self.noise, self.num_actions = inner, noise, num_actions
        self.rng = random.Random(seed)
        self.rows: dict[str, list] = {
            k: [] for k in ("views", "inventory", "facing", "actions", "commanded", "noise", "events")
        }
        self.name = f"{inner.name}+noise{noise}"
        self._view: AgentView | None = None

    def reset(self) -> None:
        self.inner.reset()
        self._view = None

    def start(self, subgoal: Subgoal, view: AgentView) -> None:
        self.inner.start(subgoal, view)

    def status(self, view: AgentView) -> SubgoalStatus:
        return self.inner.status(view)

    def known_stations(self) -> frozenset[str]:
        return getattr(self.inner, "known_stations", lambda: frozenset())()

    def choose(self, view: AgentView, action: int) -> tuple[int, bool]:
        """The action executed instead of ``action`` and whether it is a random (noise) one."""
        noisy = self.rng.random() < self.noise
        return (self.rng.randrange(self.num_actions), True) if noisy else (action, False)

    def act(self, view: AgentView) -> int:
        self.expert_action = self.inner.act(view)
        action, noisy = self.choose(view, self.expert_action)
        sub = getattr(self.inner, "subgoal", None)
        commanded = goal_index(sub) if sub is not None and not getattr(self.inner, "mode", "") else -1
        r = self.rows
        r["views"].append(encode_view(view.local_view))
        r["inventory"].append(encode_inventory(view))
        r["facing"].append(encode_facing(view.facing))
        r["actions"].append(action)
        r["commanded"].append(-1 if noisy else commanded)
        r["noise"].append(noisy)
        return action

    def observe(self, view: AgentView, action: int | None = None) -> None:
        if action is not None and self._view is not None:
            from envs.crafter.env import action_names

            events = step_events(self._view, action_names()[action], view)
            self.rows["events"].append(goal_index(events[0]) if events else -1)
        self.inner.observe(view, action)
        self._view = view


def play_episodes(
    episodes: Iterable[int],
    suite: str,
    recorder: Callable[[int], RecordingController],
    seed: int,
    budget: int | None = None,
    on_episode: Callable[[int], None] | None = None,
) -> list[dict[str, np.ndarray]]:
    """Play each episode id (task ``id % len(tasks)``, world seed ``seed + id``) with the oracle
    planner and ``recorder(id)``; returns each non-empty episode's rows as arrays, with
    ``episode`` = its id. ``on_episode(steps)`` is called after each one (a progress bar)."""
    from agents.loop import run_episode
    from agents.planners import OraclePlanner
    from agents.types import Goal
    from envs.crafter.env import CrafterEnv
    from envs.crafter.techtree import RULES
    from eval.suites import load_suite

    tasks = load_suite(suite, RULES().achievements).tasks
    env, planner = CrafterEnv(), OraclePlanner()
    parts: list[dict[str, np.ndarray]] = []
    for ep in episodes:
        task = tasks[ep % len(tasks)]
        rec = recorder(ep)
        run_episode(
            env, Goal(task.id, task.achievement, dict(task.inventory)),
            lambda v, t=task: t.done(v.achievements, v.inventory),
            planner, rec, seed=seed + ep, budget=budget or task.budget,
        )  # fmt: skip
        n = len(rec.rows["actions"])
        if n:
            part = {k: np.asarray(v) for k, v in rec.rows.items()}
            part["episode"] = np.full(n, ep, dtype=np.int32)
            parts.append(part)
        if on_episode is not None:
            on_episode(n)
    return parts


def stack(parts: list[dict[str, np.ndarray]], dtypes: dict[str, type]) -> dict[str, np.ndarray]:
    """Concatenate episodes' rows array by array, cast to the file's dtypes."""
    return {k: np.concatenate([p[k] for p in parts]).astype(dt) for k, dt in dtypes.items()}


PLAY_DTYPES = {"views": np.int8, "inventory": np.int8, "facing": np.int8, "actions": np.int8,
               "commanded": np.int16, "noise": bool, "events": np.int16, "episode": np.int32}  # fmt: skip


def collect_play(
    episodes: int, suite: str, noise: float, seed: int, budget: int | None = None
) -> dict[str, np.ndarray]:
    """Play ``episodes`` episodes cycling over the suite's tasks; returns the stacked arrays."""
    from agents.scripted import ScriptedController
    from telos.tracking import progress

    steps = 0
    with progress(episodes, "play episodes") as bar:

        def advance(n: int) -> None:
            nonlocal steps
            steps += n
            bar.advance(1, steps=steps)

        parts = play_episodes(
            range(episodes), suite,
            lambda ep: RecordingController(ScriptedController(), noise, seed=seed * 100_003 + ep),
            seed, budget, advance,
        )  # fmt: skip
    return stack(parts, PLAY_DTYPES)


def crafter_play_command(args: argparse.Namespace) -> int:
    if args.episodes < 1 or not 0.0 <= args.noise < 1.0:
        raise UserError("--episodes must be ≥ 1 and --noise in [0, 1)")
    data = collect_play(args.episodes, args.suite, args.noise, args.seed, args.budget)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.stem + ".tmp.npz")
    np.savez_compressed(tmp, **data)
    os.replace(tmp, out)
    labelled = int((data["events"] >= 0).sum())
    print(
        f"done: {out} — {len(data['actions'])} steps, {int(data['episode'].max()) + 1} episodes, {labelled} subgoal events"
    )
    return 0
