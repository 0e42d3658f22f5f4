"""``tiny-data:BUILD/FILE`` (or ``recipe-data:BUILD/FILE``): data the shipped recipes train on, built on first use.

The RM and GCBC tiny recipes need data that a policy or a scripted agent has to generate
first (preference pairs the tiny model sampled, Math-Shepherd step labels, Crafter play). So
that every shipped recipe runs from a fresh clone as written, such data is named by a spec
like ``tiny-data:preferences-train/pairs.jsonl``: each BUILD below is exactly one ``telos data
...`` command line (the CLI's own parser and defaults, with ``model: tiny:arith``), run once
per machine into the telos cache (locked: see telos/cache.py) and reused afterwards.

``telos check`` validates the name only (pure, instant); building happens at ``telos train``,
on first use — minutes for the step labels, which a check must never take. To train on data of
your own, run the same ``telos data`` command and point the recipe at its file.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from telos.errors import UserError

SCHEME = "tiny-data:"
SCHEMES = (SCHEME, "recipe-data:")  # the second reads better for builds sampled from a real model
_ARITH = "max_value=50&max_operand=9"  # the tiny model's problem distribution (trainers/common/tiny.py)
ADDITIONS = "min_terms=2&max_terms=2&min_digits=1&max_digits=2&operators=%2B&allow_negation=false&allow_parentheses=false"
STEP_BY_STEP = "{prompt}\nWork it out step by step, then finish with: The answer is <number>."
SMOLLM2_SAMPLING = ("--max-tokens", "64", "--temperature", "0.7", "--chat", "--template", STEP_BY_STEP)


@dataclass(frozen=True)
class DataBuild:
    """One ``telos data COMMAND ARGS...`` run; ``files`` maps each output file to its flag."""

    command: str
    args: tuple[str, ...]
    files: dict[str, str] = field(default_factory=dict)
    uses_tiny_model: bool = True  # samples from a policy (``model``); False: a scripted agent
    model: str = "tiny:arith"


BUILDS: dict[str, DataBuild] = {
    "preferences-train": DataBuild(
        "preferences", ("--data", f"procedural:arith?n=1000&{_ARITH}"), {"pairs.jsonl": "--out"}
    ),
    "preferences-test": DataBuild(
        "preferences",
        ("--data", f"procedural:arith:test?n=200&{_ARITH}", "--seed", "1"),
        {"pairs.jsonl": "--out", "samples.jsonl": "--samples-out"},
    ),
    "steps-train": DataBuild(
        "process-labels",
        ("--data", f"procedural:arith?n=300&{_ARITH}", "--solutions", "2", "--rollouts", "8"),
        {"steps.jsonl": "--out"},
    ),
    "steps-test": DataBuild(
        "process-labels",
        (
            "--data",
            f"procedural:arith:test?n=100&{_ARITH}",
            "--solutions",
            "4",
            "--rollouts",
            "8",
            "--seed",
            "1",
        ),
        {"steps.jsonl": "--out"},
    ),
    # SmolLM2-135M-Instruct answering 1-2-digit additions step by step (recipes/serve/): the
    # same command lines as `benchmarks/rm_goal_experiment.py --setting smollm2`
    "smollm2-preferences-train": DataBuild(
        "preferences",
        ("--data", f"reasoning-gym:basic_arithmetic?size=200&seed=1&{ADDITIONS}", *SMOLLM2_SAMPLING),
        {"pairs.jsonl": "--out"},
        model="smollm2:135m-instruct",
    ),
    "smollm2-steps-train": DataBuild(
        "process-labels",
        (
            "--data",
            f"reasoning-gym:basic_arithmetic?size=30&seed=3&{ADDITIONS}",
            "--solutions",
            "2",
            "--rollouts",
            "4",
            "--max-tokens",
            "64",
            "--chat",
            "--template",
            STEP_BY_STEP,
        ),
        {"steps.jsonl": "--out"},
        model="smollm2:135m-instruct",
    ),  # fmt: skip
    "crafter-play": DataBuild(
        "crafter-play", ("--episodes", "200"), {"play.npz": "--out"}, uses_tiny_model=False
    ),
    # a directory of arrays; 60 episodes (~9k steps): enough to see the recipe learn, not to play well
    "crafter-goap": DataBuild(
        "crafter-goap", ("--episodes", "60", "--workers", "1"), {"data": "--out"}, uses_tiny_model=False
    ),
}


# bumped when a command's output changes for the same command line (v2 of process-labels:
# a step that states the answer is labelled by its correctness, not by completions after it)
# (v2 of crafter-goap: with the compass array)
COMMAND_VERSIONS = {"process-labels": 2, "crafter-goap": 2}


def is_recipe_data(spec: object) -> bool:
    return isinstance(spec, str) and spec.startswith(SCHEMES)


def _valid() -> str:
    return ", ".join(f"{SCHEME}{b}/{f}" for b, build in BUILDS.items() for f in build.files)


def parse_recipe_data(spec: str) -> tuple[str, str]:
    """``tiny-data:BUILD/FILE`` → (BUILD, FILE); an unknown name is a UserError listing the
    valid ones. Pure: touches neither disk nor models."""
    prefix = next(p for p in SCHEMES if spec.startswith(p))
    build, _, name = spec[len(prefix) :].partition("/")
    if build not in BUILDS or name not in BUILDS[build].files:
        raise UserError(f"unknown recipe data {spec!r}; valid: {_valid()}")
    return build, name


def build_command_line(build: DataBuild, model: str | None, out_dir: Path) -> list[str]:
    """The ``telos`` argv of a build writing its files into ``out_dir``."""
    argv = ["data", build.command, *build.args]
    if model is not None:
        argv += ["--model", model]
    for name, flag in build.files.items():
        argv += [flag, str(out_dir / name)]
    return argv


def _run_build(build: DataBuild, model: str | None, out_dir: Path) -> None:
    from telos.cli import build_parser, command_handler

    out_dir.mkdir(parents=True)
    args = build_parser().parse_args(build_command_line(build, model, out_dir))
    command_handler(args)(args)


def resolve_recipe_data(spec: str) -> str:
    """The local file a ``tiny-data:`` spec names, building its data set first if this machine
    has not (concurrent callers wait for one build and share it); other specs pass through."""
    if not is_recipe_data(spec):
        return spec
    from telos.cache import build_cached, cache_dir

    name, file = parse_recipe_data(spec)
    build = BUILDS[name]
    model = None
    if build.uses_tiny_model and build.model.startswith("tiny:"):
        from trainers.common.tiny import resolve_tiny

        model = resolve_tiny(build.model)
    elif build.uses_tiny_model:
        from telos.pretrained import resolve_model

        model = resolve_model(build.model)
    # keyed by the command and the model it samples from: a changed build is a new entry
    key = hashlib.sha1(
        json.dumps(
            [build.command, build.args, model and Path(model).name]
            + ([COMMAND_VERSIONS[build.command]] if build.command in COMMAND_VERSIONS else [])
        ).encode()
    ).hexdigest()
    out = cache_dir() / "recipe-data" / f"{name}-{key[:10]}"

    def make(tmp: Path) -> None:
        print(
            f"building recipe data {SCHEME}{name} once: telos {' '.join(build_command_line(build, model, out))}"
        )
        _run_build(build, model, tmp)

    build_cached(
        out, make, ready=lambda p: all((p / f).exists() for f in build.files), what=f"{SCHEME}{name}"
    )
    return str(out / file)
