"""What both self-training trainers share: an iteration's directory layout, phases that a
resumed run skips once done, the policy SFT step (a ``trainer: sft`` run), the value-model
step (a ``trainer: rm`` run), the per-iteration log, plots and summary.

Layout of a run directory::

    iter-1/search/      (rest_mcts) trees.jsonl, traces.jsonl, value_rows.jsonl, summary.json
    iter-1/samples/     (bstar) selection.json, kept.jsonl, summary.json
    iter-1/policy/      a trainer: sft run (checkpoints, final/, summary.json)
    iter-1/value/       (rest_mcts) a trainer: rm run
    metrics.jsonl, plots/, summary.json, report.md

Each phase writes its outputs atomically and its ``summary.json`` last: a phase with a summary
is done. With ``resume: latest`` done phases are skipped and a sub-run resumes from its own
latest checkpoint, so a killed run loses at most the phase step it was in.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from telos.checkpoint import latest_checkpoint, write_json_atomically
from telos.config import from_dict
from trainers.common.math_data import DataSection
from trainers.sft.recipe import SFTTrainSection


def single_process(trainer: str) -> None:
    """The self-training loops run in one process (their SFT and RM steps are single-process
    runs); under ``accelerate launch`` every rank would write the same run directory."""
    import os

    from telos.errors import UserError

    if os.environ.get("WORLD_SIZE", "1") != "1":
        raise UserError(
            f"trainer {trainer} runs in one process: start it with `telos train`, not accelerate launch"
        )


def start_run(trainer: str, recipe, raw_config: dict | None) -> tuple[Path, bool, float]:
    """(run directory, resume?, start time): one process, the directory made, config.yaml saved."""
    import time

    from telos.config import save_yaml, to_dict

    single_process(trainer)
    run_dir = Path(recipe.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    save_yaml(raw_config if raw_config is not None else to_dict(recipe), run_dir / "config.yaml")
    return run_dir, recipe.resume == "latest", time.perf_counter()


def iteration_dir(run_dir: Path, iteration: int) -> Path:
    return run_dir / f"iter-{iteration}"


def phase_done(directory: Path) -> dict | None:
    """The phase's summary when it finished, else None."""
    path = directory / "summary.json"
    return json.loads(path.read_text()) if path.is_file() else None


def run_phase(directory: Path, skip_done: bool, work: Callable[..., dict], /, **kwargs: Any) -> dict:
    """``work(**kwargs)`` unless ``skip_done`` (a resumed run) and the phase is done; returns
    the phase summary."""
    if skip_done:
        done = phase_done(directory)
        if done is not None:
            return done
    summary = work(**kwargs)
    directory.mkdir(parents=True, exist_ok=True)
    write_json_atomically(directory / "summary.json", summary)
    return summary


def write_jsonl_atomically(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tmp.replace(path)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def policy_sft(
    *,
    out: Path,
    start: str,
    traces: Path,
    data: DataSection,
    verifier: str,
    model_dtype: str,
    sft: SFTTrainSection,
    resume: bool,
    name: str,
    eval_before: bool,
    continue_from: Path | None = None,
    step_offset: int = 0,
    schedule_steps: int | None = None,
) -> dict:
    """A ``trainer: sft`` run on ``traces`` (rows {prompt, answer, solution}) from ``start``.

    ``continue_from`` (a previous iteration's sft run) makes it continue that run's optimizer,
    LR schedule and step count: it trains steps ``step_offset+1 .. step_offset+sft.steps``."""
    from trainers.sft.recipe import SFTRecipe
    from trainers.sft.train import train_math_sft

    own = latest_checkpoint(out) if resume else None
    resume_from = own or (latest_checkpoint(continue_from) if continue_from is not None else None)
    train = replace(
        sft,
        steps=step_offset + sft.steps,
        schedule_steps=schedule_steps,
        eval_before_training=eval_before and resume_from is None,
    )
    raw = {
        "trainer": "sft",
        "name": name,
        "output_dir": str(out),
        "model": {"name_or_path": start, "dtype": model_dtype},
        "data": {
            "train": str(traces),
            "test": data.test,
            "template": data.template,
            "chat": data.chat,
            "num_test": data.num_test,
            "target": "solution",
        },
        "verifier": verifier,
        "resume": str(resume_from) if resume_from is not None else None,
        "train": asdict(train),
    }
    return train_math_sft(from_dict(SFTRecipe, raw), raw)


def value_training(
    *,
    out: Path,
    start: str,
    rows: str,
    test: str | None,
    train,
    max_length: int,
    resume: bool,
    name: str,
) -> dict:
    """A ``trainer: rm`` run (kind prm, MSE: V regressed on the targets) from ``start``."""
    from trainers.rm.recipe import RMRecipe
    from trainers.rm.train import train_rm

    raw = {
        "trainer": "rm",
        "name": name,
        "output_dir": str(out),
        "model": {"name_or_path": start},
        "data": {"train": rows, "test": test, "max_length": max_length},
        "rm": {"kind": "prm", "prm_loss": "mse", "step_separator": "\n"},
        "resume": "latest" if resume else None,
        "train": asdict(train),
    }
    train_rm(from_dict(RMRecipe, raw), raw)
    summary = json.loads((out / "summary.json").read_text())
    metrics = read_jsonl(out / "metrics.jsonl") if (out / "metrics.jsonl").is_file() else []
    losses = [m["loss"] for m in metrics if "loss" in m]
    summary["final_loss"] = losses[-1] if losses else None
    return summary


def policy_phase(
    recipe, directory: Path, iteration: int, start: str, traces: Path, resume: bool, **extra: Any
) -> dict:
    """The iteration's policy SFT (``directory``, skipped when a resumed run finished it) from
    ``start`` on ``traces``, with the recipe's data, verifier, dtype and ``sft:`` settings."""
    return run_phase(
        directory,
        resume,
        policy_sft,
        out=directory,
        start=start,
        traces=traces,
        data=recipe.data,
        verifier=recipe.verifier,
        model_dtype=recipe.model.dtype,
        sft=recipe.sft,
        resume=resume,
        name=f"{recipe.name}-policy-{iteration}",
        **extra,
    )


def log_iteration(tracker, row: dict) -> None:
    tracker.log(
        row["iteration"],
        {k: float(x) for k, x in row.items() if isinstance(x, (int, float)) and k != "iteration"},
    )


def finish_run(run_dir: Path, title: str, summary: dict, rows: list[dict], plot_groups: dict) -> dict:
    """summary.json (with the per-iteration rows), the plots and report.md."""
    from telos.plots import plot_metrics
    from telos.tracking import read_metrics

    summary = {**summary, "per_iteration": rows}
    write_json_atomically(run_dir / "summary.json", summary)
    plots = plot_metrics(read_metrics(run_dir), run_dir / "plots", plot_groups)
    write_run_report(run_dir, title, summary, rows, plots)
    return summary


def question_rows(spec: str, count: int, iteration: int, seed: int, limit: int | None) -> list[dict]:
    """The ``count`` training questions of ``iteration``: consecutive slices of a seeded order of
    the training set, wrapping around (each iteration sees new questions while any are left)."""
    import random

    from envs.math.sources import load_rows

    rows = load_rows(spec, limit=limit, seed=seed)
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    start = (iteration - 1) * count
    return [rows[order[(start + i) % len(rows)]] for i in range(min(count, len(rows)))]


def write_run_report(
    run_dir: Path, title: str, summary: dict, rows: list[dict[str, Any]], plots: list[Path]
) -> None:
    """``report.md``: the summary, one table row per iteration and the plots."""
    keys = [k for k in rows[0] if k != "iteration"] if rows else []
    lines = [f"# {title}", "", "| metric | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in summary.items() if not isinstance(v, (list, dict))]
    if rows:
        lines += ["", "| iteration | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
        for r in rows:
            cells = [f"{r[k]:.4g}" if isinstance(r.get(k), float) else str(r.get(k)) for k in keys]
            lines.append(f"| {r['iteration']} | " + " | ".join(cells) + " |")
    lines += ["", *[f"![{p.stem}](plots/{p.name})" for p in plots], ""]
    (run_dir / "report.md").write_text("\n".join(lines) + "\n")
