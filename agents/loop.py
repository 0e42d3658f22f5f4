"""The planner → controller loop (JARVIS-1 style) for one episode.

Plan with retrieved memories; the planner self-checks its plan against the recipes; each
subgoal goes to the controller until it is met, fails or the step budget ends; a failure is
explained to the planner, which re-plans from the current state (bounded); a successful
(task, state, plan) is returned for the memory.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from agents.memory import PlanMemory
from agents.progress import SubgoalTracker
from agents.types import AgentView, Controller, Goal, MemoryEntry, Planner, PlanRequest


@dataclass
class SubgoalRecord:
    subgoal: str
    outcome: str  # done | failed | unfinished
    steps: int
    reason: str = ""


@dataclass
class EpisodeResult:
    task_id: str
    seed: int
    success: bool
    steps: int
    replans: int
    plan_failures: int  # plans the planner could not produce (unparseable after re-asks)
    llm_calls: int
    prompt_tokens: int
    completion_tokens: int
    achievements: list[str]
    subgoals: list[SubgoalRecord]
    died: bool
    seconds: float
    new_memory: MemoryEntry | None = None
    frames: list = field(default_factory=list)  # (image, caption) when recording


def run_episode(
    env,
    goal: Goal,
    done: Callable[[AgentView], bool],
    planner: Planner,
    controller: Controller,
    seed: int,
    budget: int,
    memory: PlanMemory | None = None,
    max_replans: int = 4,
    record: bool = False,
) -> EpisodeResult:
    """Run one episode of at most ``budget`` steps; ``done(view)`` says the task is met."""
    t0 = time.perf_counter()
    obs, info = env.reset(seed=seed)
    view = AgentView.from_env(obs, info)
    controller.reset()
    controller.observe(view, None)
    frames = [(obs["image"], "planning")] if record else []
    records: list[SubgoalRecord] = []
    counts = {"llm_calls": 0, "prompt_tokens": 0, "completion_tokens": 0}
    failure, replans, plan_failures, steps, died = None, 0, 0, 0, False
    last_plan: tuple[str, tuple[str, ...]] | None = None
    success = done(view)
    while not success and steps < budget and not died:
        stations = getattr(controller, "known_stations", lambda: frozenset())()
        memories = memory.retrieve(goal.describe(), view.text) if memory is not None else []
        result = planner.plan(PlanRequest(goal, view, memories, failure, frozenset(stations)))
        for k in counts:
            counts[k] += getattr(result, k)
        if not result.ok:
            plan_failures += 1
            failure = "the planner gave no valid plan: " + "; ".join(result.errors[-3:])
        else:
            # the plan in force when the task is met is the one memory keeps
            last_plan = (view.text, tuple(str(s) for s in result.subgoals))
            failure = None
            for sg in result.subgoals:
                controller.start(sg, view)
                # the loop's own count of the subgoal, whatever the controller does beyond it
                tracker = SubgoalTracker(sg)
                rec = SubgoalRecord(str(sg), "unfinished", 0)
                records.append(rec)
                while steps < budget:
                    status = controller.status(view)
                    if status.state != "running":
                        rec.outcome, rec.reason = status.state, status.reason
                        break
                    action = controller.act(view)
                    obs, _, terminated, _, info = env.step(action)
                    steps += 1
                    rec.steps += 1
                    before, view = view, AgentView.from_env(obs, info)
                    tracker.update(before, env.actions[action], view)
                    controller.observe(view, action)
                    if record:
                        frames.append((obs["image"], f"{goal.task_id}: {sg}"))
                    success = done(view)
                    if success or terminated:
                        died = bool(terminated)
                        break
                if rec.outcome == "unfinished" and tracker.met:  # met by the step that ended it
                    rec.outcome = "done"
                if success or died or steps >= budget:
                    break
                if rec.outcome == "failed":
                    failure = f"{sg} failed: {rec.reason}"
                    break
            if not success and failure is None and not died and steps < budget:
                failure = "the plan finished but the task is not done"
        if success or died or steps >= budget:
            break
        replans += 1
        if replans > max_replans:
            break
    new_memory = None
    if success and last_plan is not None:
        new_memory = MemoryEntry(goal.describe(), last_plan[0], last_plan[1], True)
    return EpisodeResult(
        task_id=goal.task_id,
        seed=seed,
        success=success,
        steps=steps,
        replans=replans,
        plan_failures=plan_failures,
        achievements=list(view.achievements),
        subgoals=records,
        died=died,
        seconds=time.perf_counter() - t0,
        new_memory=new_memory,
        frames=frames,
        **counts,
    )
