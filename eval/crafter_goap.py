"""``telos data crafter-goap``: goal-observation-action data for GOAP (the MGOA analogue).

The oracle planner and the scripted controller play the suite's tasks, and every step is
recorded from the agent's own side: local view, inventory, daylight, sleeping, the faced cell,
the agent's own remembered map (dead reckoning, ``agents.encoding.encode_map``) and its compass
(``encode_compass``: the nearest remembered water, tree, ore, table, furnace, cow), the action,
and the subgoal the planner had dispatched — on *every* step, the scripted controller's survival
reflexes included (``reflex`` says which one acted), so a policy cloned on it learns to eat,
drink, sleep and fight while it works on a goal. With probability ``noise`` an action is random
(recorded, never trained on), so the data also shows recoveries.

Generation runs in worker processes, a shard of episodes per job; shards are files written
atomically, so a killed run resumes where it stopped, and a larger ``--steps`` later grows the
same data (shard i is always the same episodes). The result is one directory of ``.npy`` arrays
(memory-mapped by the trainer) and ``meta.json``, written last.
"""

from __future__ import annotations

import argparse
import json
import os
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from agents.encoding import COMPASS_TARGETS, REFLEXES, encode_compass, encode_map, encode_status, goal_index
from agents.navigation import SpatialMap
from agents.types import AgentView, Controller
from eval.crafter_play import RecordingController, play_episodes, stack
from telos.errors import UserError

META = "meta.json"
SHARDS = "shards"
FORMAT = 2  # 2: with the compass
# name → (dtype, shape after the step axis; "map" is [2r+1, 2r+1])
ARRAYS: dict[str, tuple[type, tuple[int, ...]]] = {
    "views": (np.int8, (7, 9)),
    "inventory": (np.int8, (16,)),
    "daylight": (np.uint8, ()),
    "sleeping": (bool, ()),
    "facing": (np.int8, ()),
    "map": (np.int8, ()),
    "compass": (np.int8, (len(COMPASS_TARGETS), 2)),
    "actions": (np.int8, ()),  # executed (the history a policy sees)
    "expert": (np.int8, ()),  # the scripted controller's choice (the label)
    "learner": (bool, ()),  # executed by the learned policy (DAgger collection)
    "goal": (np.int16, ()),
    "reflex": (np.int8, ()),
    "noise": (bool, ()),
    "events": (np.int16, ()),
    "episode": (np.int32, ()),
}
GOAP_DTYPES = {k: dt for k, (dt, _) in ARRAYS.items()}


class GOAPRecorder(RecordingController):
    """``RecordingController`` plus what GOAP reads: the agent's own map, daylight, sleeping,
    the dispatched subgoal and acting reflex of every step, and the expert's (scripted) action.

    With an ``executor`` (a learned controller) this is DAgger's collection step: with probability
    1 − ``beta`` the executor's action is the one taken, while the scripted controller, shadowing
    the same episode, still labels every step with what it would have done (``expert``)."""

    def __init__(
        self, inner: Controller, noise: float, seed: int, map_radius: int,
        executor: Controller | None = None, beta: float = 1.0,
    ) -> None:  # fmt: skip
        super().__init__(inner, noise, seed)
        self.map_radius, self.executor, self.beta = map_radius, executor, beta
        for k in ("map", "compass", "daylight", "sleeping", "goal", "reflex", "expert", "learner"):
            self.rows[k] = []
        self.map = SpatialMap()
        self._by_learner = False

    def reset(self) -> None:
        super().reset()
        self.map = SpatialMap()
        if self.executor is not None:
            self.executor.reset()

    def start(self, subgoal, view: AgentView) -> None:
        super().start(subgoal, view)
        if self.executor is not None:
            self.executor.start(subgoal, view)

    def choose(self, view: AgentView, action: int) -> tuple[int, bool]:
        self._by_learner = False
        if self.executor is not None:
            learned = self.executor.act(view)  # every step: the executor's own state stays in step
            if self.rng.random() >= self.beta:
                action, self._by_learner = learned, True
        return super().choose(view, action)

    def act(self, view: AgentView) -> int:
        action = super().act(view)
        r = self.rows
        _, daylight, sleeping = encode_status(view)
        r["map"].append(encode_map(self.map, self.map_radius))
        r["compass"].append(encode_compass(self.map))
        r["daylight"].append(daylight)
        r["sleeping"].append(sleeping)
        sub = getattr(self.inner, "subgoal", None)
        r["goal"].append(goal_index(sub) if sub is not None else -1)
        r["reflex"].append(REFLEXES.index(getattr(self.inner, "mode", "") or ""))
        r["expert"].append(self.expert_action)
        r["learner"].append(self._by_learner)
        return action

    def observe(self, view: AgentView, action: int | None = None) -> None:
        if action is not None and self._view is not None:
            from envs.crafter.env import action_names

            self.map.apply(self._view, action_names()[action])
        self.map.observe(view)
        super().observe(view, action)
        if self.executor is not None:
            self.executor.observe(view, action)


def _shard_name(index: int, episodes: int) -> str:
    return f"shard-{index:05d}-{episodes}.npz"


def _play_shard(job: dict) -> tuple[int, int]:
    """Worker: play one shard's episodes and write its file atomically → (index, steps)."""
    from agents.scripted import ScriptedController

    first, count = job["index"] * job["per_shard"], job["episodes"]
    executor = None
    if job["policy"]:
        import torch

        from agents.controllers import make_controller

        torch.set_num_threads(1)
        executor = make_controller(job["policy"], **job["policy_options"])

    def recorder(ep: int) -> GOAPRecorder:
        return GOAPRecorder(ScriptedController(), job["noise"], job["seed"] * 100_003 + ep, job["map_radius"],
                            executor, job["beta"])  # fmt: skip

    parts = play_episodes(range(first, first + count), job["suite"], recorder, job["seed"], job["budget"])
    data = stack(parts, GOAP_DTYPES)
    out = Path(job["dir"]) / _shard_name(job["index"], count)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp.npz")
    np.savez(tmp, **data)
    os.replace(tmp, out)
    return job["index"], len(data["actions"])


def _shard_steps(path: Path) -> int:
    with np.load(path) as z:
        return len(z["actions"])


def _settings(args: argparse.Namespace) -> dict:
    settings = {
        "format": FORMAT, "suite": args.suite, "noise": args.noise, "seed": args.seed,
        "budget": args.budget, "map_radius": args.map_radius, "episodes_per_shard": args.episodes_per_shard,
        "policy": args.policy, "beta": args.beta if args.policy else 1.0,
    }  # fmt: skip
    options = policy_options(args)
    return {**settings, "policy_options": options} if options else settings  # older shards have none


def policy_options(args: argparse.Namespace) -> dict:
    from eval.minecraft import key_value_options

    return key_value_options(getattr(args, "policy_option", None), "--policy-option")


def _check_args(args: argparse.Namespace) -> None:
    if (args.steps is None) == (args.episodes is None):
        raise UserError("give one of --steps N (at least N steps, whole shards) or --episodes N")
    if (args.steps or 1) < 1 or (args.episodes or 1) < 1:
        raise UserError("--steps / --episodes must be ≥ 1")
    if not 0.0 <= args.noise < 1.0:
        raise UserError(f"--noise must be in [0, 1), got {args.noise}")
    if not 0.0 <= args.beta <= 1.0:
        raise UserError(f"--beta must be in [0, 1], got {args.beta}")
    if args.workers < 1 or args.episodes_per_shard < 1 or not 1 <= args.map_radius <= 32:
        raise UserError("--workers and --episodes-per-shard must be ≥ 1, --map-radius in [1, 32]")


def crafter_goap_command(args: argparse.Namespace) -> int:
    from envs.crafter.techtree import RULES
    from eval.suites import load_suite
    from telos.tracking import progress

    _check_args(args)
    load_suite(args.suite, RULES().achievements)  # a bad suite or policy fails before any worker starts
    if args.policy:
        from agents.controllers import make_controller

        make_controller(args.policy, **policy_options(args))
    elif getattr(args, "policy_option", None):
        raise UserError("--policy-option needs --policy")
    out = Path(args.out)
    shards = out / SHARDS
    shards.mkdir(parents=True, exist_ok=True)
    settings = _settings(args)
    params = shards / "settings.json"
    if params.is_file() and json.loads(params.read_text()) != settings:
        raise UserError(
            f"{out} holds shards made with other settings ({params.read_text().strip()}); "
            "use another --out or the same --suite/--noise/--seed/--budget/--map-radius/--episodes-per-shard"
        )
    _write_json(params, settings)
    per = args.episodes_per_shard

    def shard_size(i: int) -> int:  # episodes in shard i
        return per if args.episodes is None else min(per, args.episodes - i * per)

    done: dict[int, int] = {}  # shard index → steps, for the shards on disk

    def prefix() -> tuple[int, int]:  # (shards in the contiguous finished prefix, their steps)
        n, steps = 0, 0
        while n in done:
            steps += done[n]
            n += 1
        return n, steps

    def enough() -> bool:
        n, steps = prefix()
        return steps >= args.steps if args.steps is not None else n * per >= args.episodes

    total = args.steps if args.steps is not None else args.episodes
    unit = "steps" if args.steps is not None else "episodes"
    with progress(total, f"crafter-goap {unit}") as bar:
        _generate(args, shards, done, shard_size, enough, bar)
    if args.episodes is not None:
        n = -(-args.episodes // per)
    else:  # the fewest shards that hold --steps; later ones stay on disk for a larger run
        n, steps = 0, 0
        while steps < args.steps:
            steps, n = steps + done[n], n + 1
    files = [shards / _shard_name(k, shard_size(k)) for k in range(n)]
    meta = _consolidate(out, files, settings)
    print(
        f"done: {out} — {meta['steps']} steps, {meta['episodes']} episodes "
        f"({meta['reflex_steps']} reflex steps, {meta['noise_steps']} noise steps), {len(files)} shards"
    )
    return 0


def _generate(args, shards: Path, done: dict[int, int], shard_size, enough, bar) -> None:
    """Keep ``args.workers`` shard jobs in flight, in index order, until ``enough()``."""
    per = args.episodes_per_shard
    job = {
        "per_shard": per, "suite": args.suite, "noise": args.noise, "seed": args.seed,
        "budget": args.budget, "map_radius": args.map_radius, "dir": str(shards),
        "policy": args.policy, "beta": args.beta, "policy_options": policy_options(args),
    }  # fmt: skip
    max_shards = None if args.episodes is None else -(-args.episodes // per)
    nxt = 0
    with ProcessPoolExecutor(args.workers, mp_context=get_context("spawn")) as pool:
        running = set()
        while True:
            while len(running) < args.workers and not enough() and (max_shards is None or nxt < max_shards):
                path = shards / _shard_name(nxt, shard_size(nxt))
                if path.is_file():  # finished by an earlier run: resume after it
                    done[nxt] = _shard_steps(path)
                    bar.advance(done[nxt] if args.steps is not None else shard_size(nxt), shards=len(done))
                else:
                    running.add(pool.submit(_play_shard, {**job, "index": nxt, "episodes": shard_size(nxt)}))
                nxt += 1
            if not running:
                return
            finished, running = wait(running, return_when=FIRST_COMPLETED)
            for f in finished:
                index, steps = f.result()
                done[index] = steps
                bar.advance(steps if args.steps is not None else shard_size(index), shards=len(done))
            if enough():
                for f in running:
                    f.cancel()
                wait(running)  # shards already started finish and are kept for a later, larger run
                return


def _write_json(path: Path, obj: dict) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, indent=2))
    os.replace(tmp, path)


def _consolidate(out: Path, files: list[Path], settings: dict) -> dict:
    """One memory-mappable ``.npy`` per array from ``files`` in order; ``meta.json`` last (it is
    removed first, so a killed consolidation never leaves a meta that disagrees with the arrays)."""
    (out / META).unlink(missing_ok=True)
    sizes = [_shard_steps(f) for f in files]
    total = sum(sizes)
    radius = settings["map_radius"]
    counts = {"episodes": 0, "reflex_steps": 0, "noise_steps": 0, "learner_steps": 0,
              "goal_steps": np.zeros(17, dtype=np.int64)}  # fmt: skip
    for name, (dtype, tail) in ARRAYS.items():
        shape = (total, 2 * radius + 1, 2 * radius + 1) if name == "map" else (total, *tail)
        tmp = out / f".{name}.{os.getpid()}.tmp.npy"
        arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=shape)
        at = 0
        for f, n in zip(files, sizes, strict=True):
            with np.load(f) as z:
                a = z[name]
                arr[at : at + n] = a
                if name == "episode":
                    counts["episodes"] += len(np.unique(a))
                elif name == "reflex":
                    counts["reflex_steps"] += int((a > 0).sum())
                elif name == "noise":
                    counts["noise_steps"] += int(a.sum())
                elif name == "learner":
                    counts["learner_steps"] += int(a.sum())
                elif name == "goal":
                    counts["goal_steps"] += np.bincount(a[a >= 0], minlength=17)[:17]
            at += n
        arr.flush()
        del arr
        os.replace(tmp, out / f"{name}.npy")
    from agents.encoding import GOALS

    meta = {
        **settings,
        "steps": total,
        "episodes": counts["episodes"],
        "reflex_steps": counts["reflex_steps"],
        "noise_steps": counts["noise_steps"],
        "learner_steps": counts["learner_steps"],
        "steps_per_goal": {
            " ".join(g): int(c) for g, c in zip(GOALS, counts["goal_steps"], strict=True) if c
        },
        "reflexes": list(REFLEXES),
        "arrays": list(ARRAYS),
        "shards": len(files),
    }
    _write_json(out / META, meta)
    return meta
