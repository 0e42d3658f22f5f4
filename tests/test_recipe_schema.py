"""The declarative recipe schema and the trainer registry.

Every numeric key of every trainer's recipe declares a range, and ``telos check`` rejects a value
just outside each bound of each one, on every shipped recipe, with one line naming the key.
A trainer is one package plus one ``register_trainer`` call: a package dropped on the trainers
path becomes checkable and trainable by name, with no other file edited.
"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from telos.cli import main
from telos.errors import UserError
from telos.schema import describe, range_text
from trainers.registry import trainer_registry
from trainers.run import load_recipe

REPO = Path(__file__).resolve().parents[1]


def _shipped() -> dict[str, list[Path]]:
    by_trainer: dict[str, list[Path]] = {}
    for path in sorted((REPO / "recipes").rglob("*.yaml")):
        if path.parent.name != "accelerate":
            by_trainer.setdefault(yaml.safe_load(path.read_text())["trainer"], []).append(path)
    return by_trainer


SHIPPED = _shipped()


def _outside(bounds: dict[str, float], numeric: type) -> list[float]:
    """One value just past each bound: the bound itself where it is exclusive."""
    step = 1 if numeric is int else 0.5
    out = []
    if "ge" in bounds:
        out.append(bounds["ge"] - step)
    if "gt" in bounds:
        out.append(bounds["gt"])
    if "le" in bounds:
        out.append(bounds["le"] + step)
    if "lt" in bounds:
        out.append(bounds["lt"])
    return [numeric(v) if numeric is int else v for v in out]


def _override(key: str, value: object) -> str:
    if "[]." in key:  # a key inside a list of sections: give a one-item list
        head, leaf = key.split("[].", 1)
        return f"{head}=[{{{leaf}: {value}}}]"
    return f"{key}={value}"


def test_every_trainer_has_a_shipped_recipe():
    assert set(SHIPPED) == set(trainer_registry().names())


@pytest.mark.parametrize("trainer", sorted(SHIPPED))
def test_every_numeric_key_has_a_range_and_check_enforces_it(trainer, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    spec = trainer_registry().get(trainer)
    numeric = [f for f in describe(spec.recipe) if f.numeric is not None]
    assert len(numeric) >= 10
    unbounded = [f.key for f in numeric if not f.bounds]
    assert unbounded == [], f"numeric keys without a range: {unbounded}"
    tried = 0
    for recipe in SHIPPED[trainer]:
        for f in numeric:
            for bad in _outside(f.bounds, f.numeric):
                with pytest.raises(UserError) as e:
                    load_recipe(str(recipe), [_override(f.key, bad)])
                message = str(e.value)
                key = f.key.replace("[].", "[0].")
                assert f"'{key}'" in message and range_text(f.bounds) in message, (recipe.name, message)
                tried += 1
            # YAML's `true` is not a number
            with pytest.raises(UserError, match=f.key.split("[].")[-1]):
                load_recipe(str(recipe), [_override(f.key, "true")])
    assert tried >= len(numeric) * len(SHIPPED[trainer])


def test_error_lines_name_key_value_and_what_is_valid():
    recipe = str(REPO / "recipes/math/grpo_tiny.yaml")
    cases = {
        "train.lr=-1": "'train.lr' must be > 0, got -1",
        "grpo.epsilon=-0.1": "'grpo.epsilon' must be > 0, got -0.1",
        "sampling.top_p=1.5": "'sampling.top_p' must be in (0, 1], got 1.5",
        "train.warmup_steps=-2": "'train.warmup_steps' must be ≥ 0, got -2",
        "engine.kv_cache_gb=0": "'engine.kv_cache_gb' must be > 0, got 0",
        "data.num_train=0": "'data.num_train' must be ≥ 1, got 0",
        "train.lr=1e-5": None,  # YAML 1.1 reads 1e-5 as a string; a recipe means the number
        "data.num_train=null": None,
    }
    for override, expected in cases.items():
        if expected is None:
            recipe_obj, _ = load_recipe(recipe, [override])
            continue
        with pytest.raises(UserError) as e:
            load_recipe(recipe, [override])
        assert str(e.value).startswith(expected), str(e.value)
    assert load_recipe(recipe, ["train.lr=1e-5"])[0].train.lr == 1e-5


def test_recipe_schema_command_lists_trainers_and_keys(capsys):
    assert main(["recipe", "schema"]) == 0
    listing = capsys.readouterr().out
    for name in trainer_registry().names():
        assert f"  {name} " in listing
    assert main(["recipe", "schema", "oreal"]) == 0
    out = capsys.readouterr().out
    keys = [f.key for f in describe(trainer_registry().get("oreal").recipe) if f.key != "trainer"]
    for key in keys:
        assert f"\n{key} " in out, key
    assert "train.lr " in out and "float (default 1e-06); valid > 0" in out
    assert "oreal.freeze_policy_steps" in out and "valid ≥ 0" in out
    assert main(["recipe", "schema", "nope"]) == 2
    assert "'trainer' is 'nope'; valid: bstar, epo, gcbc, goap, grpo" in capsys.readouterr().err


def test_check_explain_shows_the_recipes_values(capsys):
    recipe = str(REPO / "recipes/math/grpo_tiny.yaml")
    assert main(["check", "--explain", recipe, "train.lr=3e-4"]) == 0
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.startswith("train.lr "))
    assert "valid > 0" in line and line.endswith("= 0.0003")


TOY_PACKAGE = {
    "__init__.py": """
        from dataclasses import dataclass, field
        from typing import Annotated, Literal

        from telos.errors import UserError
        from telos.schema import number, text
        from trainers.registry import register_trainer


        @dataclass
        class ToyTrain:
            steps: Annotated[int, number("steps", ge=1)] = 3


        @dataclass
        class ToyRecipe:
            trainer: Literal["toy_registered"]
            out: Annotated[str, text("where the marker goes")]
            train: Annotated[ToyTrain, text("optimization")] = field(default_factory=ToyTrain)
            name: Annotated[str, text("run name")] = "toy"

            @property
            def run_dir(self):
                return self.out


        def check(recipe):
            if recipe.out.endswith(".bad"):
                raise UserError("'out' must not end in .bad")


        register_trainer(
            "toy_registered", recipe=ToyRecipe, check=check,
            entry_point="trainers.toy_registered_trainer.run:train", summary="a toy",
        )
    """,
    "run.py": """
        from pathlib import Path


        def train(recipe, raw):
            Path(recipe.out).write_text(f"trained {recipe.train.steps}")
            return {"eval_accuracy": 1.0}
    """,
}


def test_a_new_trainer_is_one_package_and_one_registration(tmp_path, monkeypatch, capsys):
    import trainers
    import trainers.registry as registry

    root = tmp_path / "plugins"
    package = root / "toy_registered_trainer"
    package.mkdir(parents=True)
    for name, source in TOY_PACKAGE.items():
        (package / name).write_text(textwrap.dedent(source))
    # a package beside trainers/rl, trainers/rm, ...: the registry imports it as trainers.<name>
    monkeypatch.setattr(trainers, "__path__", [*trainers.__path__, str(root)])
    monkeypatch.setattr(registry._TRAINERS, "_items", dict(registry._TRAINERS._items))
    for name in ("trainers.toy_registered_trainer", "trainers.toy_registered_trainer.run"):
        monkeypatch.delitem(sys.modules, name, raising=False)

    recipe = tmp_path / "toy.yaml"
    marker = tmp_path / "marker.txt"
    recipe.write_text(f"trainer: toy_registered\nout: {marker}\ntrain: {{steps: 5}}\n")
    assert main(["check", str(recipe)]) == 0
    assert main(["check", str(recipe), "train.steps=0"]) == 2
    assert "'train.steps' must be ≥ 1, got 0" in capsys.readouterr().err
    assert main(["check", str(recipe), f"out={tmp_path}/x.bad"]) == 2
    assert main(["train", str(recipe)]) == 0
    assert marker.read_text() == "trained 5"
    assert main(["recipe", "schema"]) == 0
    assert "toy_registered" in capsys.readouterr().out


def test_recipe_reference_is_generated_from_the_schema():
    from trainers.schema_docs import markdown

    committed = (REPO / "recipes" / "README.md").read_text()
    assert committed == markdown(trainer_registry()), "recipes/README.md is stale: run `make recipe-docs`"
