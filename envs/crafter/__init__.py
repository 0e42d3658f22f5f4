"""Crafter, the embedded Minecraft-like world (see env.py)."""
