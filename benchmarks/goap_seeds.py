"""Mean ± 95 % (1.96·s/√n) over training seeds of ``telos eval minecraft`` results.

    python benchmarks/goap_seeds.py 'benchmarks/results/goap/eval_goap_relab_s[0-9].json' \
        --out benchmarks/results/goap/relab_3seeds.json

Per task: success and deaths per seed; per subgoal: success (met / dispatched).
"""

from __future__ import annotations

import argparse
import glob
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import write_json  # noqa: E402
from eval.agent_report import mean_interval  # noqa: E402


def summarize(runs: list[dict]) -> dict:
    tasks = list(runs[0]["tasks"])
    subgoals = sorted(set.intersection(*(set(r["controller_subgoals"]) for r in runs)))
    return {
        "tasks": {t: mean_interval([r["tasks"][t]["success_rate"] for r in runs]) for t in tasks},
        "deaths": {t: [r["tasks"][t]["deaths"] for r in runs] for t in tasks},
        "subgoals": {
            s: mean_interval([r["controller_subgoals"][s]["success_rate"] for r in runs]) for s in subgoals
        },
    }


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("pattern", help="a glob of results.json files, one per training seed")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    files = sorted(glob.glob(args.pattern))
    if len(files) < 2:
        print(
            f"error: {args.pattern!r} matches {len(files)} file(s); an interval needs ≥ 2 seeds",
            file=sys.stderr,
        )
        sys.exit(2)
    out = {"files": files, **summarize([json.loads(Path(f).read_text()) for f in files])}
    write_json(Path(args.out), out)
    print(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
