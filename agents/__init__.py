"""Agents: planners, controllers, plan memory and the planner → controller loop (JARVIS-1 style)."""
