"""Steered generation through ``telos serve``, method by method, on held-out problems.

Starts ``telos serve`` (a subprocess, as a user runs it) with the setting's policy and RMs,
then for plain sampling, majority@n, best-of-n, weighted vote, ``gcrm_prune`` (a τ sweep) and
``prm_beam`` sends every held-out question through the OpenAI SDK (all 40 in flight) and
records, per method and n: accuracy of the returned answer, completion tokens generated per
question (pruned samples included: the server's own ``usage``), RM calls, latency p50 / p95,
the all-pruned rate and the false-prune rate — a pruned sample that would have been right,
read from the majority@n run with the same seeds (sample i of a question draws from seed + i
in both runs, so it is the same sample until the prune).

    python benchmarks/steering.py                     # smollm2: SmolLM2 + its GC-RM and PRM
    python benchmarks/steering.py --ns 4,8 --seeds 0  # a shorter run

Writes benchmarks/results/steering_<setting>.{json,md,png}; finished (method, n, seed) runs are
kept in a partial file, so a killed run resumes. The RMs come from ``recipes/serve/`` (trained
first when their final/ is missing).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import REPO_ROOT, append_partial, machine_info, read_partial, set_offline, write_json  # noqa: E402
from trainers.common.recipe_data import ADDITIONS, STEP_BY_STEP  # noqa: E402

set_offline()

SETTINGS: dict[str, dict[str, Any]] = {
    "smollm2": {
        "policy": "smollm2:135m-instruct",
        "test_spec": f"reasoning-gym:basic_arithmetic?size=40&seed=7&{ADDITIONS}",
        "template": STEP_BY_STEP,
        "rms": {"gcrm": "recipes/serve/gcrm_smollm2.yaml", "prm": "recipes/serve/prm_smollm2.yaml"},
        "max_tokens": 64,
        "temperature": 0.7,
        "taus": [0.15, 0.25],
    },
    # the tests' smoke setting: the tiny policy, RMs given by --rm
    "tiny": {
        "policy": "tiny:arith",
        "test_spec": "procedural:arith:test?n=40&max_value=50&max_operand=9",
        "template": "{prompt}",
        "rms": {"gcrm": "recipes/rm/gcrm_tiny.yaml", "prm": "recipes/rm/prm_tiny.yaml"},
        "max_tokens": 24,
        "temperature": 1.0,
        "taus": [0.5],
    },
}
IN_FLIGHT = (
    40  # every held-out question at once: a 2-core CPU decodes a 135M model memory-bound, so rows are cheap
)


def methods(ns: list[int], taus: list[float]) -> list[tuple[str, int, dict | None]]:
    """(label, n, steering) for every measured configuration: majority and the largest τ at every
    n; the other τ values at n ≤ 8; the RM selections at n = 8 and beam search at the smallest
    n (every RM-scored answer costs a forward as large as the policy's on a CPU)."""
    mid = 8 if 8 in ns else ns[len(ns) // 2]
    small = [n for n in ns if n <= mid]
    out: list[tuple[str, int, dict | None]] = [("plain", 1, None)]
    out += [("majority", n, {"method": "majority", "n": n}) for n in ns]
    out += [
        ("best_of_n gcrm", mid, {"method": "best_of_n", "n": mid, "rm": "gcrm"}),
        ("weighted_vote gcrm", mid, {"method": "weighted_vote", "n": mid, "rm": "gcrm"}),
    ]
    middle = taus[-1]
    for t in taus:
        for n in ns if t == middle else small:
            prune = {
                "method": "gcrm_prune",
                "n": n,
                "rm": "gcrm",
                "threshold": t,
                "skip": 5,
                "check_every": 4,
            }
            out.append((f"gcrm_prune τ={t}", n, prune))
    beam = {"width": 2, "iterations": 6, "step_delimiter": "\n", "step_max_tokens": 32}
    out.append(("prm_beam", small[0], {"method": "prm_beam", "n": small[0], "rm": "prm", "beam": beam}))
    return out


def ensure_rm(recipe: str) -> str:
    """The final/ directory a serve recipe trains, training it first if it is missing."""
    import yaml

    out = REPO_ROOT / yaml.safe_load((REPO_ROOT / recipe).read_text())["output_dir"] / "final"
    if not (out / "config.json").is_file():
        subprocess.run([sys.executable, "-m", "telos", "train", recipe], cwd=REPO_ROOT, check=True)
    return str(out)


class Server:
    """``telos serve`` in a subprocess on a free port."""

    def __init__(self, policy: str, rms: dict[str, str]) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        cmd = [sys.executable, "-m", "telos", "serve", "--policy", policy, "--port", str(self.port),
               "--served-model-name", "policy", "--max-n", "64"]  # fmt: skip
        for name, path in rms.items():
            cmd += ["--rm", f"{name}={path}"]
        self.proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=os.environ.copy())
        import httpx

        deadline = time.monotonic() + 600
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("telos serve did not start")
            time.sleep(0.5)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=60)


def grade(text: str, gold: str) -> bool:
    from envs.math.answers import extract_answer
    from rewards.verifiers import verify_numeric

    return bool(verify_numeric(extract_answer(text), str(gold)))


async def run_config(port: int, rows: list[dict], cfg: tuple[str, int, dict | None], seed: int, args) -> dict:
    import openai

    label, n, steering = cfg
    client = openai.AsyncOpenAI(
        base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0, timeout=900
    )
    gate = asyncio.Semaphore(IN_FLIGHT)

    async def one(i: int, row: dict) -> dict:
        content = args.template.replace("{prompt}", row["prompt"])
        extra = {} if steering is None else {"steering": {**steering, "return": {"candidates": True}}}
        async with gate:
            start = time.perf_counter()
            r = await client.chat.completions.create(
                model="policy", messages=[{"role": "user", "content": content}], max_tokens=args.max_tokens,
                temperature=args.temperature, seed=seed * 1000 + i, extra_body=extra,
            )  # fmt: skip
            latency = time.perf_counter() - start
        s = (r.model_extra or {}).get("steering") or {}
        cands = s.get("candidates", [])
        return {
            "correct": grade(r.choices[0].message.content, row["answer"]),
            "tokens": r.usage.completion_tokens,
            "rm_calls": s.get("rm_calls", 0),
            "latency_s": latency,
            "all_pruned": bool(s.get("all_pruned", False)),
            "candidates": [
                {
                    "status": c["status"],
                    "tokens": c["tokens"],
                    "correct": grade(c.get("text", ""), row["answer"]),
                }
                for c in cands
            ],
        }

    try:
        per_question = await asyncio.gather(*(one(i, r) for i, r in enumerate(rows)))
    finally:
        await client.close()
    return {"label": label, "n": n, "seed": seed, "questions": per_question}


def summarize_run(run: dict, shadow: dict | None) -> dict:
    q = run["questions"]
    lat = sorted(x["latency_s"] for x in q)
    out = {
        "label": run["label"],
        "n": run["n"],
        "seed": run["seed"],
        "accuracy": statistics.fmean(x["correct"] for x in q),
        "tokens_per_question": statistics.fmean(x["tokens"] for x in q),
        "rm_calls_per_question": statistics.fmean(x["rm_calls"] for x in q),
        "latency_p50_s": statistics.median(lat),
        "latency_p95_s": lat[min(len(lat) - 1, round(0.95 * (len(lat) - 1)))],
        "all_pruned_rate": statistics.fmean(x["all_pruned"] for x in q),
    }
    if shadow is not None and run["label"].startswith("gcrm_prune"):
        pruned = wrong_prunes = 0
        for mine, full in zip(q, shadow["questions"], strict=True):
            for c, f in zip(mine["candidates"], full["candidates"], strict=True):
                if c["status"] in ("pruned", "filtered"):
                    pruned += 1
                    wrong_prunes += f["correct"]
        out["pruned_share"] = pruned / max(1, sum(len(x["candidates"]) for x in q))
        out["false_prune_rate"] = wrong_prunes / pruned if pruned else 0.0
    return out


def aggregate(rows: list[dict]) -> list[dict]:
    """Mean ± std over seeds per (label, n)."""
    keys = sorted({(r["label"], r["n"]) for r in rows}, key=lambda k: (k[0] != "plain", k[0], k[1]))
    out = []
    for label, n in keys:
        group = [r for r in rows if r["label"] == label and r["n"] == n]
        entry: dict[str, Any] = {"label": label, "n": n, "seeds": len(group)}
        for metric in group[0]:
            if metric in ("label", "n", "seed"):
                continue
            vals = [g[metric] for g in group]
            entry[metric] = statistics.fmean(vals)
            entry[f"{metric}_std"] = statistics.stdev(vals) if len(vals) > 1 else 0.0
        out.append(entry)
    return out


def plot(summary: list[dict], path: Path) -> None:
    from telos.plots import new_figure, save_figure

    fig = new_figure()
    ax = fig.add_subplot(1, 1, 1)
    families: dict[str, list[dict]] = {}
    for s in summary:
        families.setdefault(s["label"], []).append(s)
    for label, pts in families.items():
        pts.sort(key=lambda p: p["tokens_per_question"])
        ax.plot(
            [p["tokens_per_question"] for p in pts], [p["accuracy"] for p in pts], marker="o", label=label
        )
        for p in pts:
            ax.annotate(f"n={p['n']}", (p["tokens_per_question"], p["accuracy"]), fontsize=7)
    ax.set_xscale("log")
    ax.set_xlabel("generated tokens per question (pruned samples included)")
    ax.set_ylabel("accuracy")
    ax.set_title("Steered generation through telos serve")
    ax.legend(fontsize=7)
    save_figure(fig, path)


def markdown(summary: list[dict], settings: dict) -> str:
    head = "| method | n | accuracy | tokens / question | RM calls / q | p50 s | p95 s | pruned | false prunes | all pruned |"
    lines = ["# Steering benchmark", "", f"Settings: {settings}", "", head, "|" + "---|" * 10]
    for s in summary:
        lines.append(
            f"| {s['label']} | {s['n']} | {s['accuracy']:.3f} ± {s['accuracy_std']:.3f} | "
            f"{s['tokens_per_question']:.0f} | {s['rm_calls_per_question']:.1f} | {s['latency_p50_s']:.2f} | "
            f"{s['latency_p95_s']:.2f} | {s.get('pruned_share', 0):.2f} | {s.get('false_prune_rate', 0):.2f} | "
            f"{s['all_pruned_rate']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--setting", choices=sorted(SETTINGS), default="smollm2")
    p.add_argument("--ns", default="4,8,16")
    p.add_argument("--seeds", default="0,1")
    p.add_argument("--limit", type=int, default=None, help="first N held-out questions")
    p.add_argument(
        "--large-n-seeds",
        default=None,
        help="seeds for the configs with n > 8 (default: every seed; they cost most)",
    )
    p.add_argument("--policy", default=None, help="policy (default: the setting's)")
    p.add_argument(
        "--rm", action="append", default=[], metavar="NAME=PATH", help="use this RM, not the recipe's"
    )
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    preset = SETTINGS[args.setting]
    args.template, args.max_tokens, args.temperature = (
        preset["template"],
        preset["max_tokens"],
        preset["temperature"],
    )
    ns = [int(x) for x in args.ns.split(",")]
    seeds = [int(x) for x in args.seeds.split(",")]
    large_seeds = seeds if args.large_n_seeds is None else [int(x) for x in args.large_n_seeds.split(",")]
    out = Path(args.out or REPO_ROOT / "benchmarks" / "results" / f"steering_{args.setting}.json")

    from envs.math.sources import load_rows
    from telos.tracking import progress

    rows = load_rows(preset["test_spec"], limit=args.limit)
    given = dict(v.split("=", 1) for v in args.rm)
    rms = {name: given.get(name) or ensure_rm(recipe) for name, recipe in preset["rms"].items()}
    configs = methods(ns, preset["taus"])
    partial = out.with_suffix(".partial.jsonl")
    key = {"setting": args.setting, "questions": len(rows)}
    done = {
        (r["label"], r["n"], r["seed"]): r for r in read_partial(partial) if r.pop("settings", None) == key
    }
    policy = args.policy or preset["policy"]
    server = Server(policy, rms)
    runs: list[dict] = []
    try:
        todo = [(seed, cfg) for seed in seeds for cfg in configs if cfg[1] <= 8 or seed in large_seeds]
        with progress(len(todo), "steering configs") as bar:
            for seed, cfg in todo:
                k = (cfg[0], cfg[1], seed)
                if k not in done:
                    done[k] = asyncio.run(run_config(server.port, rows, cfg, seed, args))
                    append_partial(partial, done[k] | {"settings": key})
                runs.append(done[k])
                bar.advance(1, **{"acc": statistics.fmean(x["correct"] for x in done[k]["questions"])})
    finally:
        server.stop()
    per_run = [summarize_run(r, done.get(("majority", r["n"], r["seed"]))) for r in runs]
    summary = aggregate(per_run)
    settings = {"setting": args.setting, "policy": policy, "questions": len(rows), "ns": ns,
                "seeds": seeds, "large_n_seeds": large_seeds, "max_tokens": args.max_tokens, "temperature": args.temperature,
                "in_flight": IN_FLIGHT}  # fmt: skip
    result = {"benchmark": "steering", "settings": settings, "summary": summary, "per_run": per_run,
              "machine": machine_info()}  # fmt: skip
    write_json(out, result)
    out.with_suffix(".md").write_text(markdown(summary, settings))
    plot(summary, out.with_suffix(".png"))
    partial.unlink(missing_ok=True)
    print(markdown(summary, settings))
    return result


if __name__ == "__main__":
    main()
