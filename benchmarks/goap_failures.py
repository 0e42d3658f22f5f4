"""Where a cloned controller fails in closed loop: it plays, the scripted controller labels.

Plays ``--episodes`` episodes of ``benchmarks/suites/crafter-long.yaml`` with the learned
controller acting on every step (``telos data crafter-goap --policy SPEC --beta 0``: DAgger's
collection, so the scripted controller shadows each step and records what it would have done
and which reflex it would be serving), then reports

- agreement of the executed action with the expert's, per expert reflex (subgoal work, fight,
  sleep, drink, eat): a survival reflex the policy does not follow is where it dies;
- the end of every episode: vitals, daylight, whether it slept, the subgoal in force;
- loops: runs of ≥ 20 ``do`` actions facing the same kind of cell that gain nothing.

    python benchmarks/goap_failures.py --policy goap:runs/goap-crafter/final --out runs/goap-failures

Writes OUT/failures.{json,md}; the collected steps stay in OUT/data (a DAgger round's data).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import REPO_ROOT, write_json  # noqa: E402

SUITE = REPO_ROOT / "benchmarks" / "suites" / "crafter-long.yaml"
LOOP = 20  # fruitless `do` steps in a row, facing one kind of cell, that count as a loop


def gains(inventory: np.ndarray) -> np.ndarray:
    """bool [T]: step t raised food, drink or an item (health and energy recover on their own; the
    last step has no next one to compare with)."""
    from agents.encoding import INVENTORY_KEYS

    kept = [i for i, k in enumerate(INVENTORY_KEYS) if k not in ("health", "energy")]
    out = np.zeros(len(inventory), dtype=bool)
    out[:-1] = (inventory[1:, kept] > inventory[:-1, kept]).any(axis=1)
    return out


def do_loops(
    actions: np.ndarray, facing: np.ndarray, gained: np.ndarray, do: int, min_len: int = LOOP
) -> list:
    """[(start, length, facing id)] of runs of ``do`` of at least ``min_len`` steps facing the same
    cell kind, none of which gained anything (``gains``): the policy repeating itself where
    nothing happens (drinking at full drink, hitting iron without a stone pickaxe)."""
    runs, t, n = [], 0, len(actions)
    while t < n:
        if actions[t] != do or gained[t]:
            t += 1
            continue
        s = t
        while t < n and actions[t] == do and not gained[t] and facing[t] == facing[s]:
            t += 1
        if t - s >= min_len:
            runs.append((s, t - s, int(facing[s])))
    return runs


def analyse(data_dir: Path) -> dict:
    from agents.encoding import ACTIONS, GOALS, INVENTORY_KEYS, REFLEXES, VIEW_NAMES

    names = ("actions", "expert", "reflex", "inventory", "episode", "goal", "daylight", "sleeping", "facing")
    a = {n: np.load(data_dir / f"{n}.npy") for n in names}
    agree = a["actions"] == a["expert"]
    per_reflex = {}
    for i, r in enumerate(REFLEXES):
        sel = a["reflex"] == i
        if sel.any():
            per_reflex[r or "subgoal"] = {"steps": int(sel.sum()), "agreement": float(agree[sel].mean())}
    vit = {k: INVENTORY_KEYS.index(k) for k in ("health", "food", "drink", "energy")}
    episodes, loops = [], []
    for e in np.unique(a["episode"]):
        rows = np.flatnonzero(a["episode"] == e)
        last = rows[-1]
        g = int(a["goal"][last])
        episodes.append(
            {
                "episode": int(e),
                "steps": len(rows),
                **{k: int(a["inventory"][last, i]) for k, i in vit.items()},
                "daylight": round(int(a["daylight"][last]) / 255, 2),
                "sleeping": bool(a["sleeping"][last]),
                "subgoal": " ".join(GOALS[g]) if g >= 0 else "",
            }
        )
        gained = gains(a["inventory"][rows].astype(np.int64))
        for start, n, face in do_loops(a["actions"][rows], a["facing"][rows], gained, ACTIONS.index("do")):
            loops.append({"episode": int(e), "start": start, "steps": n, "facing": VIEW_NAMES[face]})
    return {
        "steps": int(len(agree)),
        "agreement": float(agree.mean()),
        "per_reflex": per_reflex,
        "episodes": episodes,
        "do_loops": loops,
        "do_loop_steps": int(sum(x["steps"] for x in loops)),
    }


def report(r: dict) -> str:
    lines = [f"# Where `{r['policy']}` fails (it acts, the scripted controller labels)", "",
             f"{len(r['episodes'])} episodes, {r['steps']} steps; agreement with the expert's action "
             f"{r['agreement']:.3f}.", "", "| expert is serving | steps | agreement |", "|---|---:|---:|"]  # fmt: skip
    lines += [f"| {k} | {v['steps']} | {v['agreement']:.3f} |" for k, v in r["per_reflex"].items()]
    lines += ["", "| episode | steps | health | food | drink | energy | daylight | asleep | subgoal |",
              "|---:|---:|---:|---:|---:|---:|---:|---|---|"]  # fmt: skip
    for e in r["episodes"]:
        lines.append(f"| {e['episode']} | {e['steps']} | {e['health']} | {e['food']} | {e['drink']} | "
                     f"{e['energy']} | {e['daylight']} | {'yes' if e['sleeping'] else ''} | {e['subgoal']} |")  # fmt: skip
    kinds: dict[str, int] = {}
    for x in r["do_loops"]:
        kinds[x["facing"]] = kinds.get(x["facing"], 0) + x["steps"]
    facing = "".join(f", facing {k}: {v}" for k, v in sorted(kinds.items(), key=lambda kv: -kv[1]))
    lines += ["", f"`do` loops (≥ {LOOP} steps facing one cell kind, nothing gained): {len(r['do_loops'])}, "
              f"{r['do_loop_steps']} steps ({r['do_loop_steps'] / max(1, r['steps']):.0%} of all){facing}."]  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    from telos.cli import main as telos_main

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--policy", required=True, help="goap:PATH or learned:PATH")
    ap.add_argument("--episodes", type=int, default=16)
    ap.add_argument(
        "--seed", type=int, default=100_000, help="first world seed (unseen in the training data)"
    )
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    out = Path(args.out)
    data = out / "data"
    if not (data / "meta.json").is_file():
        code = telos_main(["data", "crafter-goap", "--episodes", str(args.episodes), "--workers", str(args.workers),
                           "--suite", str(SUITE), "--seed", str(args.seed), "--policy", args.policy, "--beta", "0",
                           "--out", str(data)])  # fmt: skip
        if code:
            raise SystemExit(code)
    result = {"policy": args.policy, "seed": args.seed, **analyse(data)}
    write_json(out / "failures.json", result)
    (out / "failures.md").write_text(report(result))
    print(report(result))
    return result


if __name__ == "__main__":
    main()
