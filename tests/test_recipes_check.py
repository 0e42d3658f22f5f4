"""Every shipped recipe passes ``telos check`` on a fresh checkout, as written.

The repository's files (``git ls-files``: tracked, plus new files not ignored — what a clone
holds once they are committed) are copied to a temporary directory with no ``runs/`` and an
empty ``TELOS_CACHE``; one Python process imports telos *from the copy* and runs ``telos
check`` on each recipe. ``check`` must not build anything: the cache stays empty (data named
``tiny-data:`` is built by ``telos train``, see trainers/common/recipe_data.py).

Hub recipes (``*qwen2.5*``) are checked offline (``HF_HUB_OFFLINE=1``): schema, ranges and
semantic checks all run; their hub model id and ``hf:`` data set are not fetched, which only
the hub can confirm. ``recipes/accelerate/`` holds accelerate configs, not telos recipes.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from telos.cli import build_parser
from trainers.common.recipe_data import BUILDS, build_command_line, parse_recipe_data, resolve_recipe_data

REPO = Path(__file__).resolve().parents[1]

CHECK_ALL = textwrap.dedent(
    """
    import contextlib, io, json, sys
    from pathlib import Path
    import telos
    from telos.cli import main

    assert Path(telos.__file__).resolve().is_relative_to(Path.cwd().resolve()), telos.__file__
    results = {}
    for recipe in sys.argv[1:]:
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            rc = main(["check", recipe])
        results[recipe] = [rc, err.getvalue()]
    print("RESULTS " + json.dumps(results))
    """
)


def _fresh_checkout(dest: Path) -> Path:
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for name in filter(None, files):
        src = REPO / name.decode()
        if src.is_file():  # a file deleted in the working tree is not in the clone either
            (dest / name.decode()).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name.decode())
    return dest


def test_every_shipped_recipe_checks_on_a_fresh_checkout(tmp_path, subprocess_env):
    clone = _fresh_checkout(tmp_path / "clone")
    assert not (clone / "runs").exists()
    recipes = sorted(
        str(p.relative_to(clone))
        for p in (clone / "recipes").rglob("*.yaml")
        if p.parent.name != "accelerate"
    )
    assert len(recipes) >= 12 and "recipes/rm/bt_tiny.yaml" in recipes
    cache = tmp_path / "cache"
    env = {**subprocess_env, "TELOS_CACHE": str(cache), "PYTHONPATH": str(clone), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", CHECK_ALL, *recipes],
        cwd=clone,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    results = json.loads(proc.stdout.split("RESULTS ", 1)[1])
    failed = {r: err.strip() for r, (rc, err) in results.items() if rc != 0}
    assert failed == {}, failed
    # check validated without building: no tiny model, no recipe data, no run directory
    assert not cache.exists() or not any(cache.iterdir())
    assert not (clone / "runs").exists()


def test_recipe_data_builds_are_valid_telos_data_command_lines(tmp_path):
    """Each build is exactly a ``telos data`` command line the CLI accepts (so the build is
    what the recipe comments document), and every shipped ``tiny-data:`` name exists."""
    parser = build_parser()
    for build in BUILDS.values():
        args = parser.parse_args(
            build_command_line(build, "MODEL" if build.uses_tiny_model else None, tmp_path)
        )
        assert args.command == "data"
    named = []
    for recipe in (REPO / "recipes").rglob("*.yaml"):
        data = (yaml.safe_load(recipe.read_text()) or {}).get("data", {})
        named += [v for v in data.values() if isinstance(v, str) and v.startswith("tiny-data:")]
    # bt, gcrm: train + test; prm, value: train + test; gcbc: play; goap: goal-observation-action
    assert len(named) == 10
    for spec in named:
        parse_recipe_data(spec)


@pytest.mark.skipif(__import__("importlib").util.find_spec("crafter") is None, reason="needs crafter")
def test_recipe_data_is_built_on_first_use_then_reused(tmp_path, monkeypatch, capsys):
    """The build path end to end on a small play build (the shipped ones take minutes)."""
    from trainers.common import recipe_data

    small = recipe_data.DataBuild(
        "crafter-play", ("--episodes", "2", "--budget", "40"), {"play.npz": "--out"}, uses_tiny_model=False
    )
    monkeypatch.setitem(recipe_data.BUILDS, "small-play", small)
    monkeypatch.setenv("TELOS_CACHE", str(tmp_path / "cache"))
    path = Path(resolve_recipe_data("tiny-data:small-play/play.npz"))
    assert path.is_file() and path.is_relative_to(tmp_path / "cache")
    assert "building recipe data tiny-data:small-play once" in capsys.readouterr().out
    from trainers.agents.gcbc_recipe import check_play_file

    check_play_file(str(path))  # a complete play archive
    stamp = path.stat().st_mtime_ns
    assert resolve_recipe_data("tiny-data:small-play/play.npz") == str(path)
    assert path.stat().st_mtime_ns == stamp and "building" not in capsys.readouterr().out
    assert resolve_recipe_data("runs/my.jsonl") == "runs/my.jsonl"  # a plain path passes through
