"""The planner prompt: task, retrieved memories, what the agent sees, why the last plan
failed. The same builder serves the oracle-trained tiny planner (planner SFT data) and any
real LLM, so a model fine-tuned on it reads exactly what it will be asked at evaluation."""

from __future__ import annotations

from agents.types import PlanRequest

INSTRUCTIONS = (
    "You play Crafter. Write a plan for the task: one subgoal per line, numbered, each "
    "'collect MATERIAL [xN]', 'place THING' or 'make ITEM'. Materials: tree, stone, coal, iron, "
    "diamond, water, grass. Things: table, furnace, stone, plant. Items: wood_pickaxe, "
    "stone_pickaxe, iron_pickaxe, wood_sword, stone_sword, iron_sword."
)


def planner_prompt(request: PlanRequest, instructions: bool = True, max_memories: int = 2) -> str:
    """Ends with ``Plan:\\n``; the completion is the plan text. ``instructions=False`` drops the
    rules paragraph (the tiny planner learns the format from its training data)."""
    parts = [INSTRUCTIONS] if instructions else []
    for m in request.memories[:max_memories]:
        parts.append(f"Example ({m.task}):\n" + "\n".join(f"{i}. {s}" for i, s in enumerate(m.plan, 1)))
    parts.append(f"Task: {request.goal.describe()}")
    parts.append(request.view.text)
    if request.stations:
        parts.append(f"Placed nearby: {', '.join(sorted(request.stations))}.")
    if request.failure:
        parts.append(f"Last plan failed: {request.failure}")
    parts.append("Plan:\n")
    return "\n".join(parts)
