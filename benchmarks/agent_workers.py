"""Episodes/s of ``telos eval minecraft`` with 1 and 2 worker processes, same jobs.

The job list is the crafter-techtree suite's tiers ≤ TIER, EPISODES seeds each (oracle
planner + scripted controller by default), run once in-process (1 worker) and once on a
2-process spawn pool; each run starts with empty world caches, so both pay the same world
generation. Writes benchmarks/results/agent_workers.json and prints a table.

    python benchmarks/agent_workers.py --episodes 4 --tier 3
"""

from __future__ import annotations

import argparse
import os
import time

from common import bootstrap_repo_path, format_table, machine_info, write_json

bootstrap_repo_path()
os.environ.setdefault("OMP_NUM_THREADS", "1")


def main() -> None:
    from eval.minecraft import RunSpec, make_jobs, run_jobs
    from eval.suites import load_suite

    ap = argparse.ArgumentParser()
    ap.add_argument("--episodes", type=int, default=4)
    ap.add_argument("--tier", type=int, default=3, help="tasks of tiers ≤ this")
    ap.add_argument("--planner", default="oracle")
    ap.add_argument("--controller", default="scripted")
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--out", default="benchmarks/results/agent_workers.json")
    args = ap.parse_args()

    suite = load_suite("crafter-techtree")
    n = sum(t.tier <= args.tier for t in suite.tasks)  # tiers are in order in the suite
    spec = RunSpec("crafter-techtree", args.planner, args.controller, "crafter", None, 4, {}, {})
    jobs = make_jobs(n, [t.budget for t in suite.tasks[:n]], args.episodes, 0, 0, 0)
    runs = {}
    for w in (int(x) for x in args.workers.split(",")):
        launched = time.time()
        results, wall = run_jobs(spec, jobs, w)
        steps = sum(r["steps"] for r in results)
        busy: dict[int, float] = {}
        for r in results:
            busy[r["timing"]["pid"]] = (
                busy.get(r["timing"]["pid"], 0.0) + r["timing"]["end"] - r["timing"]["start"]
            )
        runs[w] = {
            "workers": w,
            "episodes": len(results),
            "wall_s": wall,
            "episodes_per_s": len(results) / wall,
            "env_steps_per_s": steps / wall,
            "success_rate": sum(r["success"] for r in results) / len(results),
            # where a worker's time goes: before its first episode, in episodes, idle at the end
            "first_episode_after_s": min(r["timing"]["start"] for r in results) - launched,
            "episode_seconds_per_worker": sorted(busy.values(), reverse=True),
            "idle_after_last_episode_s": [
                launched + wall - max(r["timing"]["end"] for r in results if r["timing"]["pid"] == pid)
                for pid in busy
            ],
        }
    base = runs[min(runs)]["episodes_per_s"]
    for r in runs.values():
        r["speedup"] = r["episodes_per_s"] / base
    out = {
        "machine": machine_info(("crafter",)),
        "tasks": [t.id for t in suite.tasks[:n]],
        "runs": runs,
        **vars(args),
    }
    write_json(args.out, out)
    rows = [[r["workers"], r["episodes"], f"{r['wall_s']:.1f}", f"{r['episodes_per_s']:.3f}",
             f"{r['env_steps_per_s']:.0f}", f"{r['speedup']:.2f}×"] for r in runs.values()]  # fmt: skip
    print(format_table(["workers", "episodes", "wall s", "episodes/s", "env steps/s", "speedup"], rows))


if __name__ == "__main__":
    main()
