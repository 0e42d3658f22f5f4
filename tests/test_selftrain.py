"""``trainer: rest_mcts`` and ``trainer: bstar`` end to end on the tiny model, small: phases,
outputs, resume of a finished phase, the continued optimizer, and recipe errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from telos.cli import main as cli_main
from trainers.run import load_recipe

RECIPES = Path(__file__).resolve().parents[1] / "recipes" / "math"
SMALL = ["data.num_test=8", "sft.steps=2", "sft.batch_size=4", "sft.save_every=2", "report_to=[]"]


@pytest.fixture(scope="module")
def value_init_rows(tmp_path_factory) -> Path:
    from envs.math.procedural import generate
    from envs.math.prompts import format_prompt

    path = tmp_path_factory.mktemp("v0") / "steps.jsonl"
    rows = generate("arith", "train", 24, max_value=50, max_operand=9)
    path.write_text("".join(json.dumps({"prompt": format_prompt(r), "completions": r["solution"].split("\n"),
                                        "labels": [1.0] * len(r["solution"].split("\n"))}) + "\n" for r in rows))  # fmt: skip
    return path


def rest_overrides(tiny_model_dir, value_init_rows, out: Path, iterations: int) -> list[str]:
    return [
        f"model.name_or_path={tiny_model_dir}", f"value.name_or_path={tiny_model_dir}",
        f"value.init_data={value_init_rows}", "value.init_test=null", "value.train.steps=2",
        "value.train.batch_size=8", "value.train.micro_batch_size=8", f"output_dir={out}",
        f"rest.iterations={iterations}", "rest.questions_per_iteration=8", "rest.search_batch=4",
        "search.rounds=3", *SMALL,
    ]  # fmt: skip


def test_rest_mcts_runs_two_iterations_and_resumes_done_phases(tiny_model_dir, value_init_rows, tmp_path):
    from trainers.selftrain.rest_mcts import train_rest_mcts

    out = tmp_path / "rest"
    recipe, raw = load_recipe(
        str(RECIPES / "rest_mcts_tiny.yaml"), rest_overrides(tiny_model_dir, value_init_rows, out, 1)
    )
    first = train_rest_mcts(recipe, raw)
    search = out / "iter-1" / "search"
    assert (search / "summary.json").is_file() and (search / "trees.jsonl").is_file()
    assert len(list((search / "chunks").glob("chunk-*.jsonl"))) == 2  # 8 questions, 4 per chunk
    trees = [json.loads(line) for line in (search / "trees.jsonl").read_text().splitlines()]
    assert len(trees) == 8 and all(t["tree"]["visits"] >= 1 for t in trees)
    traces = [json.loads(line) for line in (search / "traces.jsonl").read_text().splitlines()]
    for t in traces:  # every policy trace is a graded, correct solution of its question
        assert t["solution"].strip().endswith(t["answer"])
    for row in (json.loads(line) for line in (search / "value_rows.jsonl").read_text().splitlines()):
        assert len(row["completions"]) == len(row["labels"]) and all(0 <= v <= 1 for v in row["labels"])
    assert first["per_iteration"][0]["questions"] == 8

    # a search killed after its first chunk: resume=latest redoes only the missing chunk
    chunk0, chunk1 = sorted((search / "chunks").glob("chunk-*.jsonl"))
    kept_stamp = chunk0.stat().st_mtime_ns
    (search / "summary.json").unlink()
    chunk1.unlink()
    recipe, raw = load_recipe(
        str(RECIPES / "rest_mcts_tiny.yaml"),
        [*rest_overrides(tiny_model_dir, value_init_rows, out, 1), "resume=latest"],
    )
    train_rest_mcts(recipe, raw)
    assert chunk0.stat().st_mtime_ns == kept_stamp and chunk1.is_file()
    assert len((search / "trees.jsonl").read_text().splitlines()) == 8
    stamp = (search / "summary.json").stat().st_mtime_ns

    # resume=latest with one more iteration: iteration 1's phases are reused, not redone
    recipe, raw = load_recipe(
        str(RECIPES / "rest_mcts_tiny.yaml"),
        [*rest_overrides(tiny_model_dir, value_init_rows, out, 2), "resume=latest"],
    )
    second = train_rest_mcts(recipe, raw)
    assert (search / "summary.json").stat().st_mtime_ns == stamp
    assert len(second["per_iteration"]) == 2 and (out / "iter-2" / "search" / "summary.json").is_file()
    assert (out / "report.md").is_file() and (out / "plots").is_dir()
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1, 2]


def test_bstar_picks_a_configuration_and_continues_one_optimizer(tiny_model_dir, tmp_path):
    from telos.checkpoint import latest_checkpoint
    from trainers.selftrain.bstar import train_bstar

    out = tmp_path / "bstar"
    recipe, raw = load_recipe(str(RECIPES / "bstar_tiny.yaml"), [
        f"model.name_or_path={tiny_model_dir}", "reward_model=null", f"output_dir={out}", "bstar.iterations=2",
        "bstar.questions_per_iteration=8", "bstar.dev_queries=4", "bstar.samples_per_query=4",
        "bstar.temperatures=[0.5,1.0]", "bstar.thresholds=[0.0,0.5]", *SMALL,
    ])  # fmt: skip
    summary = train_bstar(recipe, raw)
    rows = summary["per_iteration"]
    assert len(rows) == 2
    for row in rows:
        assert row["temperature"] in (0.5, 1.0) and row["threshold"] in (0.0, 0.5)
        assert 0.0 <= row["balance_score"] <= 1.0 and 0.0 <= row["pass_at_k"] <= 1.0
    selection = json.loads((out / "iter-1" / "samples" / "selection.json").read_text())
    assert len(selection["grid"]) == 4  # 2 temperatures x 2 thresholds
    # iteration 2 continued iteration 1's optimizer: its checkpoint is at step 2 + 2
    if rows[1]["kept"]:
        step = json.loads((latest_checkpoint(out / "iter-2" / "policy") / "trainer_state.json").read_text())[
            "step"
        ]
        assert step == 4


@pytest.mark.parametrize(
    "override, message",
    [
        ("bstar.temperatures=[]", "at least one value"),
        ("data.test=null", "held-out"),
        ("reward_model=/nonexistent/prm", "not found"),
    ],
)
def test_bstar_recipe_errors(override, message, capsys):
    code = cli_main(["check", str(RECIPES / "bstar_tiny.yaml"), override])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and message in err


def test_rest_mcts_recipe_errors(capsys):
    code = cli_main(
        ["check", str(RECIPES / "rest_mcts_tiny.yaml"), "value.init_data=tiny-data:nope/steps.jsonl"]
    )
    err = capsys.readouterr().err
    assert code == 2 and "unknown recipe data" in err


def test_self_training_refuses_several_processes(monkeypatch, tmp_path):
    from telos.errors import UserError
    from trainers.selftrain.bstar import train_bstar

    recipe, raw = load_recipe(
        str(RECIPES / "bstar_tiny.yaml"), [f"output_dir={tmp_path}", "reward_model=null"]
    )
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(UserError, match="one process"):
        train_bstar(recipe, raw)
