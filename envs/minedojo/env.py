"""MineDojo (real Minecraft, Fan et al. 2022) behind the Crafter wrapper's interface, so telos
planners and controllers run on it unchanged where the two games agree.

``reset(seed) → (obs, info)``, ``step(action) → (obs, reward, terminated, truncated, info)``,
``obs = {"image": uint8 [H, W, 3], "text": str}`` and ``info`` with the keys of
``envs.crafter.env.CrafterEnv``. As there, agents see only what is around them: the voxel
window (``text.VOXEL_SIZE``), inventory, vitals, daylight and what they face; the absolute
position, yaw, pitch and the raw MineDojo data stay in ``info["privileged"]``.

MineDojo needs Java 8 and builds Minecraft on first use; it is imported only here, in the
constructor (see INSTALL_NOTES.md for what installing it involved).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from envs.minedojo import actions as A
from envs.minedojo import text as T
from envs.minedojo.tasks import TASKS, MineDojoTask, counts, item_name, minedojo_task, reached
from telos.errors import UserError

INSTALL = (
    "MineDojo is not installed: pip install minedojo (needs Java 8 / JDK 1.8 on PATH, and network "
    "on first use to build Minecraft; see envs/minedojo/INSTALL_NOTES.md)"
)


def _minedojo():
    try:
        import minedojo
    except ImportError:
        raise UserError(INSTALL) from None
    return minedojo


def craft_index(minedojo) -> dict[str, int]:
    """Craft-argument indices from the installed MineDojo, the 0.1 table where it differs in
    layout."""
    try:
        from minedojo.sim.mc_meta import mc

        items = list(mc.ALL_CRAFT_SMELT_ITEMS)
        return {item: items.index(item) for item in A.CRAFT_INDEX}
    except (ImportError, AttributeError, ValueError):
        return dict(A.CRAFT_INDEX)


def counters(obs: dict, info: dict | None) -> dict[str, dict[str, int]]:
    """What task conditions count: items held, and times each item was used (placed) from
    ``info["stat"]["use_item"]["minecraft"]``, the statistic MineDojo's own checks read."""
    inv = obs.get("inventory", {})
    used = ((info or {}).get("stat") or {}).get("use_item", {}).get("minecraft", {}) or {}
    return {
        "inventory": counts(inv.get("name", []), inv.get("quantity", [])),
        "use_item": {str(k): int(v) for k, v in dict(used).items()},
    }


@dataclass
class MineDojoConfig:
    task_id: str = "collect_wood"  # a telos task id (tasks.TASKS)
    seed: int | None = None
    length: int = 10_000  # Crafter actions before truncation
    image_size: tuple[int, int] = (160, 256)  # (height, width), MineDojo's argument
    programmatic: bool = False  # build MineDojo's benchmark task (3×3×3 voxels) instead
    move_repeat: int = 5  # game ticks walked per Crafter move (~1 block)
    attack_repeat: int = 20  # game ticks of attacking per ``do``
    break_speed_multiplier: float = 1.0  # MineDojo's option; >1 breaks blocks faster


class MineDojoEnv:
    """The Crafter wrapper's interface over a MineDojo task (see the module docstring).

    Actions: Crafter's ids 0–16 or names, or the extra names in ``actions.EXTRA_ACTIONS``;
    ``sleep`` raises UserError. ``achievements`` lists the telos task ids reached this episode
    (``tasks.reached``), plus the configured one once MineDojo's own success check passes.
    """

    def __init__(self, config: MineDojoConfig | None = None) -> None:
        self.config = config or MineDojoConfig()
        self.task: MineDojoTask = minedojo_task(self.config.task_id)  # bad ids fail before the import
        self._md = _minedojo()
        self._craft = craft_index(self._md)
        self.actions = list(A.ACTIONS)
        self._world_seed = self.config.seed
        self._env = self._make(self.config.seed)
        self._step = 0

    def _make(self, seed: int | None):
        c, t = self.config, self.task
        if c.programmatic:
            self._origin = (1, 1, 1)  # tasks_specs.yaml: voxel_size -1..1 on each axis
            return self._md.make(t.programmatic_id, image_size=c.image_size, seed=seed)
        self._origin = T.ORIGIN
        extra = {} if seed is None else {"seed": seed, "world_seed": str(seed)}
        return self._md.make(
            t.meta_task,
            **t.meta_kwargs,
            image_size=c.image_size,
            use_voxel=True,
            voxel_size=dict(T.VOXEL_SIZE),
            break_speed_multiplier=c.break_speed_multiplier,
            **extra,
        )

    def reset(self, seed: int | None = None) -> tuple[dict, dict]:
        if seed is not None and seed != self._world_seed:  # MineDojo fixes the world at make()
            self.close()
            self._world_seed = seed
            self._env = self._make(seed)
        raw = self._env.reset()
        self._step = 0
        self._unlocked: set[str] = set()
        self._start = counters(raw, getattr(self._env, "prev_info", None))
        return self._observe(raw, getattr(self._env, "prev_info", None) or {}, success=False)

    def action_id(self, action: int | str) -> int:
        return self.actions.index(A.action_name(action))

    def step(self, action: int | str) -> tuple[dict, float, bool, bool, dict]:
        name = A.action_name(action)
        if not hasattr(self, "_last"):
            raise UserError("MineDojoEnv.step() before reset()")
        raw, info = self._last
        voxels = raw.get("voxels", {})
        names = np.asarray(voxels.get("block_name", np.full((1, 1, 1), "air")))
        loc = raw.get("location_stats", {})
        yaw, pitch = T.scalar(loc.get("yaw")), T.scalar(loc.get("pitch"))
        target_yaw = T.YAWS[A.MOVES[name]] if name in A.MOVES else yaw
        moving = voxels.get("blocks_movement")
        jump = moving is not None and T.needs_jump(np.asarray(moving), target_yaw, self._origin)
        plan = A.compile_action(
            name,
            yaw=yaw,
            pitch=pitch,
            slots=[item_name(n) for n in raw.get("inventory", {}).get("name", [])],
            craft_index=self._craft,
            move_repeat=self.config.move_repeat,
            attack_repeat=self.config.attack_repeat,
            jump=jump,
            do_pitch=T.aim_pitch(names, yaw, self._origin),
        )
        reward, done = 0.0, False
        for vec in plan:
            raw, r, done, info = self._env.step(np.asarray(vec))
            reward += float(r)
            if done:
                break
        self._step += 1
        success = bool(getattr(self._env, "is_successful", False))
        obs, out = self._observe(raw, info, success)
        terminated = bool(done)  # death, or MineDojo's success check ended the episode
        truncated = self._step >= self.config.length and not terminated
        return obs, reward, terminated, truncated, out

    def close(self) -> None:
        env, self._env = getattr(self, "_env", None), None
        if env is not None:
            env.close()

    def _observe(self, raw: dict, info: dict, success: bool) -> tuple[dict, dict]:
        self._last = (raw, info)
        names = np.asarray(raw["voxels"]["block_name"])
        life, loc = raw.get("life_stats", {}), raw.get("location_stats", {})
        yaw, pitch = T.scalar(loc.get("yaw")), T.scalar(loc.get("pitch"))
        now = counters(raw, info)
        self._unlocked |= set(reached(self._start, now))
        if success:
            self._unlocked.add(self.task.task_id)
        image = np.transpose(np.asarray(raw["rgb"]), (1, 2, 0)).astype(np.uint8)  # MineDojo: (3, H, W)
        out: dict[str, Any] = {
            "inventory": now["inventory"],
            "vitals": T.vitals(life),
            "achievements": [t for t in TASKS if t in self._unlocked],  # tech-tree order
            "local_view": T.local_view(names, self._origin),
            "facing": T.facing_block(names, yaw, pitch, self._origin),
            "daylight": T.daylight(loc),
            "sleeping": False,
            "step": self._step,
            "privileged": {
                "player_pos": [float(v) for v in np.asarray(loc.get("pos", [0, 0, 0])).reshape(-1)],
                "yaw": yaw,
                "pitch": pitch,
                "voxels": names,
                "minedojo_success": success,
                "minedojo_info": info,
            },
        }
        text = T.text_observation(names, now["inventory"], life, loc, self._origin)
        return {"image": image, "text": text}, out
