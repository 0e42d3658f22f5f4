"""``telos quickstart``: the whole pipeline on a laptop in minutes, no downloads.

Tiny model built locally → SFT warm-up on procedural arithmetic → greedy eval → RL with a
verifier reward (recipes/math/<algo>_tiny.yaml) → eval → summary.json, plots, a table.
"""

from __future__ import annotations

import argparse
import hashlib
import platform
import shutil
import time
from dataclasses import replace
from importlib import metadata
from pathlib import Path

from telos.checkpoint import write_json_atomically
from telos.config import from_dict, load_yaml
from telos.errors import UserError
from telos.plots import bar_chart
from telos.pretrained import resolve_model
from telos.tracking import progress
from trainers.common.tiny import TinyTaskConfig, build_sft_model
from trainers.run import trainer_spec

RECIPE_DIR = Path(__file__).resolve().parents[1] / "recipes" / "math"


# --model → the recipes' suffix: the tiny model is built and SFT-warmed here; SmolLM2 is a real
# pretrained instruct model (telos.pretrained) trained as it is
MODELS = ("tiny", "smollm2")


def quickstart_recipe(algo: str, out: Path, scale: float, seed: int, model: str = "tiny"):
    if model not in MODELS:
        raise UserError(f"--model {model!r} is not valid; valid: {', '.join(MODELS)}")
    path = RECIPE_DIR / f"{algo}_{model}.yaml"
    if not path.exists():
        valid = sorted(p.name.removesuffix(f"_{model}.yaml") for p in RECIPE_DIR.glob(f"*_{model}.yaml"))
        raise UserError(f"--algo {algo!r} has no recipe {path.name}; valid: {', '.join(valid)}")
    raw = load_yaml(path)
    raw["output_dir"] = str(out / algo)
    raw["name"] = f"quickstart-{algo}"
    raw.setdefault("train", {})["seed"] = seed
    spec = trainer_spec(raw["trainer"])
    recipe = from_dict(spec.recipe, raw)  # validated as written (tiny:arith) ...
    if scale != 1.0:  # tests run the same pipeline smaller
        t = recipe.train
        recipe.train = replace(
            t, steps=max(2, int(t.steps * scale)), save_every=max(1, int(t.save_every * scale))
        )
        recipe.data = replace(recipe.data, num_test=max(8, int(recipe.data.num_test * scale)))
        if recipe.trainer == "oreal":  # keep at least one step in which the policy trains
            frozen = min(int(recipe.oreal.freeze_policy_steps * scale), recipe.train.steps - 1)
            recipe.oreal = replace(recipe.oreal, freeze_policy_steps=frozen)
    spec.check(recipe)
    if model == "tiny":  # ... then pointed at the SFT model this quickstart is about to build
        recipe.model.name_or_path = raw["model"]["name_or_path"] = str(out / "sft")
    return recipe, raw


def quickstart_command(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    out = Path(args.out)
    model = getattr(args, "model", "tiny")
    recipe, raw = quickstart_recipe(args.algo, out, args.scale, args.seed, model)  # fails before any work
    out.mkdir(parents=True, exist_ok=True)
    summary: dict = {"algo": args.algo, "model": model}
    if model == "tiny":
        tiny = TinyTaskConfig()
        if args.scale != 1.0:
            tiny.sft = replace(tiny.sft, steps=max(10, int(tiny.sft.steps * args.scale)))
            tiny.num_train = max(500, int(tiny.num_train * args.scale))
        with progress(tiny.sft.steps, "SFT warm-up") as bar:
            info = build_sft_model(tiny, out / "sft", seed=args.seed, on_step=lambda step, m: bar.advance(1))
        summary.update(parameters=info["parameters"], sft_seconds=round(time.perf_counter() - start, 1))

    # the run evaluates its starting model and its final model on the same held-out rows with
    # the same greedy settings: the two accuracies compare like for like
    recipe.train = replace(recipe.train, eval_before_training=True)
    run = lambda: trainer_spec(recipe.trainer).train(recipe, raw)  # noqa: E731
    # the tiny run on one thread repeats bit for bit; the real model needs both cores
    rl_summary = _run_rl_one_thread(run) if model == "tiny" else run()

    base = rl_summary["initial_eval_accuracy"]
    summary.update(
        base_accuracy=base,
        rl_accuracy=rl_summary["eval_accuracy"],
        improvement=rl_summary["eval_accuracy"] - base,
        num_test=rl_summary["num_test"],
        rl_steps=rl_summary["steps"],
        rl_seconds=round(rl_summary["train_seconds"], 1),
        wall_seconds=round(time.perf_counter() - start, 1),
        model_dir=str(out / args.algo / "final"),
    )
    if model == "tiny":
        summary["sft_accuracy"] = base
    # what decides the float rounding, hence the numbers: the same values here give the
    # same weights bit for bit; another CPU kind or library version gives other numbers
    start_dir = out / "sft" if model == "tiny" else Path(resolve_model(recipe.model.name_or_path))
    summary.update(
        start_weights_sha256=weights_sha256(start_dir),
        rl_weights_sha256=weights_sha256(out / args.algo / "final"),
        numerics=numerics_info(),
    )
    if model == "tiny":
        summary["sft_weights_sha256"] = summary["start_weights_sha256"]
    write_json_atomically(out / "summary.json", summary)
    plots = out / "plots"
    plots.mkdir(exist_ok=True)
    for png in (out / args.algo / "plots").glob("*.png"):
        shutil.copy(png, plots / png.name)
    start_label = "SFT" if model == "tiny" else "base"
    bar_chart(
        {start_label: base, args.algo.upper(): summary["rl_accuracy"]},
        plots / ("sft_vs_rl.png" if model == "tiny" else "base_vs_rl.png"),
        title=f"held-out greedy accuracy ({summary['num_test']} problems)",
        ylabel="accuracy",
    )
    _print_table(summary, out, start_label)
    return 0


def _run_rl_one_thread(run):
    """Run the RL phase on one torch thread, then restore the thread count.

    Measured (benchmarks/quickstart_repro.py): on 2 threads the RL phase is not bit-reproducible
    run to run on one machine (the SFT phase is), on 1 thread it repeats bit for bit; so the
    quickstart's printed numbers are the same every time on a given machine and library stack.
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return run()
    finally:
        torch.set_num_threads(threads)


def weights_sha256(model_dir: Path) -> str | None:
    """SHA-256 of the saved weights file(s): equal digests mean bit-identical weights."""
    files = sorted(Path(model_dir).glob("*.safetensors"))
    if not files:
        return None
    digest = hashlib.sha256()
    for f in files:
        digest.update(f.read_bytes())
    return digest.hexdigest()


def numerics_info() -> dict:
    """The machine and library facts the quickstart's float results depend on."""
    import torch

    def version(name: str) -> str | None:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return None

    cpu = platform.processor() or platform.machine()
    try:  # Linux names the CPU model only here; platform.processor() often says just "x86_64"
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "torch_threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu": cpu,
        "torch": torch.__version__,
        "transformers": version("transformers"),
        "tokenizers": version("tokenizers"),
    }


def _print_table(summary: dict, out: Path, start_label: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"telos quickstart ({summary['algo']}, {summary['model']} model)")
    table.add_column("")
    table.add_column("value", justify="right")
    table.add_row(f"{start_label} accuracy", f"{summary['base_accuracy']:.3f}")
    table.add_row(f"{summary['algo'].upper()} accuracy", f"{summary['rl_accuracy']:.3f}")
    table.add_row("improvement", f"{summary['improvement']:+.3f}")
    table.add_row("held-out problems", str(summary["num_test"]))
    table.add_row("wall time", f"{summary['wall_seconds']:.0f} s")
    Console().print(table)
    print(f"summary: {out / 'summary.json'}   plots: {out / 'plots'}")
