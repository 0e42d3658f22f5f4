"""The batched MCTS* driver and the test-time search methods on the real tiny model.

The value function of the driver tests is a real one, not a stand-in for a model: it checks
the arithmetic of every step (1 when all steps so far are right), which makes the expected
search behaviour known. ``telos eval math --search`` runs end to end with a value model trained
here by the rm trainer.
"""

from __future__ import annotations

import json
import re

import pytest

from envs.math.procedural import generate
from envs.math.prompts import format_prompt
from rollout.search.mcts import MCTSConfig, chosen_node, run_mcts
from rollout.search.steps import StepProposer, StepRequest, split_steps
from rollout.search.tree import grade, value_targets
from telos.cli import main as cli_main

ARITH = {"max_value": 50, "max_operand": 9}
_EQ = re.compile(r"^\s*(\d+)\s*([+-])\s*(\d+)\s*=\s*(\d+)\s*$")


def arithmetic_value(prompts, steps):
    """1.0 when every step is a true a±b=c line (answer lines count as true), else 0.0."""
    out = []
    for s in steps:
        ok = True
        for step in s:
            m = _EQ.match(step)
            if m:
                a, op, b, c = int(m[1]), m[2], int(m[3]), int(m[4])
                ok &= (a + b if op == "+" else a - b) == c
        out.append(1.0 if ok else 0.0)
    return out


@pytest.fixture(scope="module")
def engine(tiny_model_dir):
    from rollout.backends import make_engine
    from telos.models import load_model, load_tokenizer

    tok = load_tokenizer(str(tiny_model_dir))
    return make_engine("hf", load_model(str(tiny_model_dir), "float32").eval(), tok), tok


def prompts(n: int) -> list[str]:
    return [format_prompt(r) for r in generate("arith", "test", n, seed=3, **ARITH)]


def test_step_proposer_stops_at_the_separator_and_marks_answers(engine):
    eng, tok = engine
    proposer = StepProposer(eng, tok.eos_token_id, max_step_tokens=16, max_steps=6)
    out = proposer.propose([StepRequest(p, (), 4) for p in prompts(3)], temperature=1.0, seed=0)
    assert proposer.calls == 1  # three questions x four samples: one engine call
    assert [len(x) for x in out] == [4, 4, 4]
    for props in out:
        for p in props:
            assert "\n" not in p.step and p.tokens >= 1
            if p.answer is not None or p.step.startswith("####"):
                assert p.terminal and p.answer is not None
    assert split_steps("1+2=3\n\n#### 3\n") == ["1+2=3", "#### 3"]


@pytest.mark.parametrize("batched", [True, False])
def test_mcts_rounds_grow_valid_trees(engine, batched):
    eng, tok = engine
    proposer = StepProposer(eng, tok.eos_token_id, max_step_tokens=16, max_steps=6, batched=batched)
    cfg = MCTSConfig(rounds=4, temperature=1.0, branch=3, roll_forward_steps=1)
    trees, counters = run_mcts(prompts(4), proposer, arithmetic_value, cfg, mode="data", seed=0)
    assert counters.expanded == sum(t.created for t in trees) > 0
    for t in trees:
        assert t.rounds <= 4 and t.root.visits >= 1
        for node in t.root.walk():
            assert 0.0 <= node.value <= 1.0
            assert len(node.children) <= cfg.branch
            if node.children:
                assert node.expanded
    if batched:
        # per round: one call expands every tree's leaf, one per roll-forward step
        assert counters.proposal_calls <= 4 * (1 + cfg.roll_forward_steps)
    else:
        assert counters.proposal_calls > 4 * (1 + cfg.roll_forward_steps)


def test_eval_mode_stops_at_the_end_gate_and_budget_bounds_tokens(engine):
    eng, tok = engine
    proposer = StepProposer(eng, tok.eos_token_id, max_step_tokens=16, max_steps=6)
    cfg = MCTSConfig(rounds=50, temperature=0.7, end_gate=0.9)
    trees, _ = run_mcts(prompts(6), proposer, arithmetic_value, cfg, mode="eval", seed=1)
    for t in trees:
        if t.done and t.rounds < 50 and chosen_node(t) is not None and chosen_node(t).value >= 0.9:
            assert chosen_node(t).terminal  # the gate stops on a finished solution only
    budget = 20
    trees, _ = run_mcts(prompts(6), proposer, arithmetic_value, MCTSConfig(rounds=50, end_gate=1.1), mode="eval",
                        budget=budget, seed=1)  # fmt: skip
    for t in trees:
        # a tree stops after the round that reached the budget: one round at most beyond it
        assert t.tokens < budget + (3 + 1) * 16 + 1


def test_data_mode_trees_give_value_targets(engine):
    eng, tok = engine
    rows = generate("arith", "test", 8, seed=3, **ARITH)
    proposer = StepProposer(eng, tok.eos_token_id, max_step_tokens=16, max_steps=6)
    trees, _ = run_mcts(
        [format_prompt(r) for r in rows], proposer, arithmetic_value, MCTSConfig(rounds=8), mode="data"
    )
    any_targets = False
    for row, t in zip(rows, trees, strict=True):
        grade(t.root, lambda steps, row=row: steps[-1].replace("####", "").strip() == row["answer"])
        targets = value_targets(t.root)
        solved = any(n.terminal and n.correct for n in t.root.walk())
        assert bool(targets) == solved
        any_targets |= bool(targets)
        for node, v in targets.items():
            assert 0.0 <= v <= 1.0
            if node.terminal and node.correct:
                assert v == pytest.approx(1.0)
    assert any_targets  # the tiny model solves some of these within 8 rounds


@pytest.fixture(scope="module")
def value_dir(tiny_model_dir, tmp_path_factory):
    """A value model (prm, MSE) trained for a few steps by the rm trainer."""
    from pathlib import Path

    from trainers.rm.train import train_rm
    from trainers.run import load_recipe

    root = tmp_path_factory.mktemp("value")
    rows = generate("arith", "train", 32, **ARITH)
    data = root / "steps.jsonl"
    data.write_text("".join(json.dumps({"prompt": format_prompt(r), "completions": r["solution"].split("\n"),
                                        "labels": [1.0] * len(r["solution"].split("\n"))}) + "\n" for r in rows))  # fmt: skip
    recipe_path = Path(__file__).resolve().parents[1] / "recipes" / "rm" / "value_tiny.yaml"
    recipe, raw = load_recipe(str(recipe_path), [f"model.name_or_path={tiny_model_dir}", f"data.train={data}",
                              "data.test=null", f"output_dir={root / 'run'}", "train.steps=2", "train.batch_size=8",
                              "train.micro_batch_size=8"])  # fmt: skip
    train_rm(recipe, raw)
    return root / "run" / "final"


@pytest.mark.parametrize("method", ["greedy", "majority", "best_of_n", "weighted_vote", "prm_beam", "mcts"])
def test_eval_math_search_end_to_end(method, tiny_model_dir, value_dir, tmp_path, capsys):
    out, trees = tmp_path / "out", tmp_path / "trees"
    code = cli_main([
        "eval", "math", "--model", str(tiny_model_dir), "--data", "procedural:arith:test?n=6&max_value=50&max_operand=9",
        "--search", method, "--value", str(value_dir), "--budget", "64", "--reward", "numeric", "--max-tokens", "32",
        "--out", str(out), "--save-trees", str(trees), "--search-option", "batch=2",
    ])  # fmt: skip
    assert code == 0
    result = json.loads((out / "results.json").read_text())
    m = result["metrics"]
    assert m["num_problems"] == 6 and 0.0 <= m["accuracy"] <= 1.0
    if method != "greedy":
        assert m["mean_tokens_per_question"] >= 1
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 6 and all("solution" in s and "tokens" in s for s in samples)
    if method == "mcts":
        files = sorted(trees.glob("tree-*.json"))
        assert len(files) == 6
        tree = json.loads(files[0].read_text())["tree"]
        assert tree["visits"] >= 1 and "children" in tree
    assert "| accuracy" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--search", "mcts", "--budget", "64"], "needs a value model"),
        (["--search", "bogus", "--budget", "64"], "search method"),
        (["--search", "majority"], "--budget"),
        (["--search", "majority", "--budget", "64", "--search-option", "beamz=3"], "is not an option"),
        (["--search", "majority", "--budget", "64", "--search-option", "beams=x"], "is not a int"),
        (["--search", "majority", "--budget", "64", "--search-option", "batch=0"], "batch must be >= 1"),
    ],
)
def test_eval_math_search_errors_are_one_line(argv, message, tiny_model_dir, capsys):
    code = cli_main(
        ["eval", "math", "--model", str(tiny_model_dir), "--data", "procedural:arith:test?n=2", *argv]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: ") and message in err and "Traceback" not in err


@pytest.mark.vllm
@pytest.mark.slow
def test_eval_math_search_mcts_on_vllm(tiny_model_dir, value_dir, tmp_path, subprocess_env):
    """The step proposer on vLLM: stop at the newline, EOS ends a solution, trees finish. In a
    subprocess, as every vLLM test here: vLLM rebinds kernels across every loaded module and
    pins the process's threads."""
    import subprocess
    import sys

    out = tmp_path / "out"
    done = subprocess.run([
        sys.executable, "-m", "telos", "eval", "math", "--model", str(tiny_model_dir), "--data", "procedural:arith:test?n=4&max_value=50&max_operand=9",
        "--search", "mcts", "--value", str(value_dir), "--budget", "48", "--reward", "numeric", "--max-tokens", "32",
        "--engine", "vllm", "--out", str(out),
    ], env=subprocess_env, capture_output=True, text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 4 and all(s["tokens"] >= 1 for s in samples)
    assert sum(s["extracted"] is not None for s in samples) >= 2  # finished solutions state answers
