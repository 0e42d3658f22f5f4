"""Per-machine cache entries are built once even when two processes ask for them at once.

Two real processes resolve ``tiny:arith`` in the same fresh ``TELOS_CACHE``. The SFT build
itself (~2 min) is replaced, inside each process, by a builder that writes the model directory
in two halves and waits between them until the test says go — so the second process is
guaranteed to arrive while the first is mid-build. The lock, the re-check, the temporary
directory and the rename are the real ``resolve_tiny`` / ``telos.cache`` code.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from telos.cache import atomic_path, build_cached

REPO = Path(__file__).resolve().parents[1]

RESOLVER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    import trainers.common.tiny as tiny

    name, work = sys.argv[1], Path(sys.argv[2])

    def slow_build(cfg, out_dir, **_):
        out_dir = Path(out_dir)
        with open(work / "builds.log", "a") as f:
            f.write(name + "\\n")
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "first_half.txt").write_text(name)
        (work / f"started-{name}").touch()
        deadline = time.monotonic() + 120
        while not (work / "go").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        (out_dir / "config.json").write_text('{"built_by": "%s"}' % name)
        return {}

    tiny.build_sft_model = slow_build
    print("RESOLVED", tiny.resolve_tiny("tiny:arith"), flush=True)
    """
)


def _start(name: str, work: Path, env: dict) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", RESOLVER, name, str(work)],
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_two_processes_resolving_tiny_arith_build_it_once(tmp_path, subprocess_env):
    work, cache = tmp_path / "work", tmp_path / "cache"
    work.mkdir()
    env = {**subprocess_env, "TELOS_CACHE": str(cache)}
    first = _start("A", work, env)
    second = None
    try:
        # wait (without a clock assertion) until A is inside its build
        while not (work / "started-A").exists():
            assert first.poll() is None, first.communicate()
            time.sleep(0.05)
        second = _start("B", work, env)
        # B says it waits for A — read from its stderr before A is allowed to finish
        seen = []
        for line in second.stderr:  # import-time warnings may come first
            seen.append(line)
            if "waiting for another process building tiny:arith" in line:
                break
        assert seen and "waiting for another process" in seen[-1], "".join(seen)
        (work / "go").touch()
        out_a, err_a = first.communicate(timeout=120)
        out_b, err_b = second.communicate(timeout=120)
    finally:
        (work / "go").touch()
        for p in (first, second):
            if p is not None and p.poll() is None:
                p.kill()
    assert first.returncode == 0, err_a
    assert second.returncode == 0, err_b
    assert (work / "builds.log").read_text() == "A\n"  # B reused A's build
    dir_a, dir_b = out_a.split("RESOLVED ")[1].strip(), out_b.split("RESOLVED ")[1].strip()
    assert dir_a == dir_b
    built = Path(dir_a)
    # A's work survived whole: both halves, written by A, and no temporary directory left over
    assert (built / "first_half.txt").read_text() == "A"
    assert (built / "config.json").read_text() == '{"built_by": "A"}'
    leftovers = [p.name for p in cache.iterdir() if p.name != built.name and not p.name.endswith(".lock")]
    assert leftovers == []


def test_failed_build_keeps_the_old_entry_and_leaves_no_temp(tmp_path):
    out = tmp_path / "entry.jsonl"
    out.write_text("old\n")
    with pytest.raises(RuntimeError, match="boom"), atomic_path(out) as tmp:
        tmp.write_text("half")
        raise RuntimeError("boom")
    assert out.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["entry.jsonl"]

    # a file entry is built once and then reused without calling the builder again
    calls = []
    fresh = tmp_path / "data.jsonl"
    for _ in range(2):
        build_cached(fresh, lambda p: (calls.append(p), p.write_text("x\n")))
    assert fresh.read_text() == "x\n" and len(calls) == 1
