"""MineDojo (real Minecraft) behind the Crafter wrapper's interface (see env.py)."""
