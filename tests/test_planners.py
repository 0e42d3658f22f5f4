"""Planners: the oracle, the shared parse / self-check / re-ask loop driven through a real tiny
HF model and a real local OpenAI-compatible HTTP server, ``make_planner`` specs, and a short
planner-SFT run whose ``final/`` the LLM planner loads."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch
import yaml

from agents.planners import (
    SETTINGS_FILE,
    LLMPlanner,
    OpenAIPlanner,
    OraclePlanner,
    execute_on_paper,
    make_planner,
)
from agents.plans import check_plan, format_plan, parse_plan
from agents.types import AgentView, Goal, MemoryEntry, PlanRequest
from envs.crafter.env import CrafterEnv
from envs.crafter.techtree import Subgoal, oracle_plan
from telos.errors import UserError

REPO = Path(__file__).resolve().parents[1]
VALID = "1. collect tree x3\n2. place table\n3. make wood_pickaxe"
GOAL = Goal("make_wood_pickaxe", "make_wood_pickaxe")


@pytest.fixture(scope="module")
def view() -> AgentView:
    obs, info = CrafterEnv().reset(seed=3)
    return AgentView.from_env(obs, info)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory, view) -> Path:
    """An untrained tiny causal LM saved like a planner_sft ``final/`` (random output)."""
    from telos.models import TinyModelConfig, build_tiny_model
    from trainers.agents.planner_sft import build_plan_tokenizer, make_examples
    from trainers.agents.planner_sft_recipe import PlannerDataSection

    examples = make_examples(PlannerDataSection(), [view], 60, seed=0)
    tokenizer = build_plan_tokenizer([e.prompt + e.target for e in examples], 400)
    cfg = TinyModelConfig(hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1, intermediate_size=64)
    model = build_tiny_model(cfg, tokenizer)
    out = tmp_path_factory.mktemp("planner") / "model"
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    settings = {"instructions": False, "max_memories": 2}
    (out / SETTINGS_FILE).write_text(json.dumps(settings))
    return out


def request(view: AgentView, goal: Goal = GOAL, **kw) -> PlanRequest:
    return PlanRequest(goal=goal, view=view, **kw)


# ----------------------------------------------------------------------------- oracle


def test_oracle_plans_from_the_inventory_and_ignores_memories(view):
    planner = OraclePlanner()
    memory = MemoryEntry("make_wood_pickaxe", "state", ("collect diamond",))
    result = planner.plan(request(view, memories=[memory]))
    assert result.subgoals == oracle_plan("make_wood_pickaxe", {}) and result.text == format_plan(
        result.subgoals
    )
    held = dataclasses.replace(view, inventory={"wood": 1})
    assert [str(s) for s in planner.plan(request(held, stations=frozenset({"table"}))).subgoals] == [
        "make wood_pickaxe"
    ]
    assert planner.describe() == {"name": "oracle"}


def test_oracle_plans_inventory_goals_item_by_item(view):
    goal = Goal("kit", inventory={"wood": 2, "stone_pickaxe": 1, "sapling": 1})
    plan = OraclePlanner().plan(request(view, goal=goal)).subgoals
    assert check_plan(plan, None, {}, frozenset(), goal.inventory) == []
    inventory, _ = execute_on_paper(plan, {})
    assert all(inventory.get(k, 0) >= v for k, v in goal.inventory.items())


# ----------------------------------------------------------------------------- LLM planner


class ScriptedLLM(LLMPlanner):
    """A real LLMPlanner (real engine call, real token counts) whose reply text is scripted."""

    def __init__(self, path: Path, replies: list[str], **kw) -> None:
        super().__init__(str(path), max_tokens=4, **kw)
        self.replies, self.prompts = list(replies), []

    def _complete(self, prompt: str) -> tuple[str, int, int]:
        _, prompt_tokens, completion_tokens = super()._complete(prompt)
        self.prompts.append(prompt)
        return self.replies.pop(0), prompt_tokens, completion_tokens


def test_llm_planner_real_model_gives_up_without_raising(tiny_dir, view):
    planner = make_planner(f"llm:{tiny_dir}", max_tokens=12, max_retries=1)
    result = planner.plan(request(view))
    assert result.llm_calls in (1, 2) and result.prompt_tokens > 0 and result.completion_tokens > 0
    if not result.ok:  # an untrained model's text: rejected, both attempts reported
        assert result.subgoals == [] and result.errors and result.llm_calls == 2
    d = planner.describe()
    assert d["name"] == "llm" and d["model"] == str(tiny_dir) and d["temperature"] == 0.0
    assert d["instructions"] is False  # from telos_planner.json


def test_llm_planner_accepts_a_valid_plan_first_time(tiny_dir, view):
    planner = ScriptedLLM(tiny_dir, [VALID])
    result = planner.plan(request(view))
    assert result.ok and result.subgoals == oracle_plan("make_wood_pickaxe") and result.errors == []
    assert result.llm_calls == 1 and result.text == VALID and result.completion_tokens >= 1
    assert "Task: make_wood_pickaxe" in planner.prompts[0] and "You play Crafter" not in planner.prompts[0]


def test_llm_planner_reasks_with_the_problems(tiny_dir, view):
    planner = ScriptedLLM(tiny_dir, ["1. build a house", "1. make wood_pickaxe", VALID])
    result = planner.plan(request(view, failure="subgoal 'collect tree' timed out"))
    assert result.ok and result.llm_calls == 3 and len(planner.prompts) == 3
    assert "Your last plan was rejected: not a subgoal: '1. build a house'" in planner.prompts[1]
    assert "subgoal 'collect tree' timed out" in planner.prompts[1]  # the loop's own failure stays
    assert "needs a table nearby" in planner.prompts[2]
    assert any("not a subgoal" in e for e in result.errors) and all(
        e.startswith("attempt") for e in result.errors
    )
    assert result.prompt_tokens > 0 and result.completion_tokens >= 3  # three real engine calls


def test_llm_planner_uses_valid_lines_only_after_retries(tiny_dir, view):
    partial = VALID + "\nthen celebrate"
    planner = ScriptedLLM(tiny_dir, [partial, partial, partial], max_retries=2)
    result = planner.plan(request(view))
    assert result.llm_calls == 3 and result.subgoals == oracle_plan("make_wood_pickaxe")
    assert any("celebrate" in e for e in result.errors)


def test_llm_planner_gives_up_on_infeasible_or_empty_plans(tiny_dir, view):
    planner = ScriptedLLM(tiny_dir, ["1. make wood_pickaxe\nnonsense", ""], max_retries=1)
    result = planner.plan(request(view))
    assert not result.ok and result.subgoals == [] and result.llm_calls == 2
    assert any("the plan is empty" in e for e in result.errors)
    once = ScriptedLLM(tiny_dir, ["1. collect diamond"], max_retries=0).plan(request(view))
    assert once.llm_calls == 1 and not once.ok and any("iron_pickaxe" in e for e in once.errors)


def test_llm_planner_rejects_unknown_engines_and_paths(tiny_dir):
    with pytest.raises(UserError, match="unknown engine backend 'nope'; valid: .*hf"):
        make_planner(f"llm:{tiny_dir}", engine="nope")
    with pytest.raises(UserError, match="model path not found"):
        make_planner("llm:./no/such/model")


# ----------------------------------------------------------------------------- OpenAI planner


@contextlib.contextmanager
def chat_server(replies: list[str], status: int = 200) -> Iterator[tuple[str, list[dict]]]:
    """A real OpenAI-compatible endpoint on localhost answering ``replies`` in turn."""
    calls: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 — http.server's name
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            calls.append({"path": self.path, "body": body, "auth": self.headers.get("Authorization")})
            content = replies[min(len(calls), len(replies)) - 1]
            reply = {
                "choices": [{"index": 0, "message": {"role": "assistant", "content": content}}],
                "usage": {"prompt_tokens": 100, "completion_tokens": 7, "total_tokens": 107},
            }
            ok = self.path == "/v1/chat/completions"
            data = json.dumps(reply if ok else {"error": "not found"}).encode()
            self.send_response(status if ok else 404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/v1", calls
    finally:
        server.shutdown()
        server.server_close()


def test_openai_planner_valid_reply(view, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    with chat_server([VALID]) as (url, calls):
        planner = make_planner(f"openai:{url}#Qwen/Qwen2.5-7B-Instruct", temperature=0.2)
        result = planner.plan(request(view))
    assert result.ok and result.subgoals == oracle_plan("make_wood_pickaxe")
    assert (result.llm_calls, result.prompt_tokens, result.completion_tokens) == (1, 100, 7)
    body = calls[0]["body"]
    assert calls[0]["path"] == "/v1/chat/completions" and calls[0]["auth"] == "Bearer sk-test"
    assert body["model"] == "Qwen/Qwen2.5-7B-Instruct" and body["temperature"] == 0.2
    assert [m["role"] for m in body["messages"]] == ["system", "user"]
    assert "You play Crafter" in body["messages"][0]["content"]
    assert body["messages"][1]["content"].endswith("Plan:\n")
    assert planner.describe()["url"] == url and planner.describe()["model"] == "Qwen/Qwen2.5-7B-Instruct"


def test_openai_planner_invalid_replies_reask_then_give_up(view, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with chat_server(["Sure! First, find a tree."]) as (url, calls):
        result = OpenAIPlanner(url, "m", max_retries=2).plan(request(view))
    assert not result.ok and result.llm_calls == 3 and len(calls) == 3 and calls[0]["auth"] is None
    assert (result.prompt_tokens, result.completion_tokens) == (300, 21)
    assert "Your last plan was rejected" in calls[1]["body"]["messages"][1]["content"]


def test_openai_planner_server_errors_are_one_line_user_errors(view):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1"
    with pytest.raises(UserError, match=f"cannot reach the planner server at {url}/chat/completions"):
        OpenAIPlanner(url, "m").plan(request(view))
    with chat_server([VALID], status=500) as (url, _), pytest.raises(UserError, match="HTTP 500"):
        OpenAIPlanner(url, "m").plan(request(view))


# ----------------------------------------------------------------------------- make_planner


@pytest.mark.parametrize(
    "spec", ["", "gpt", "llm:", "oracle:x", "openai:localhost:8000#m", "openai:http://x/v1", "openai:#m"]
)
def test_make_planner_bad_specs(spec):
    with pytest.raises(UserError, match="valid: oracle, llm:PATH_OR_HUB_ID, openai:URL#MODEL"):
        make_planner(spec)


def test_make_planner_options():
    assert isinstance(make_planner("oracle"), OraclePlanner)
    p = make_planner("openai:http://h:1/v1/#a/b", max_retries=0)
    assert (p.url, p.model, p.max_retries) == ("http://h:1/v1", "a/b", 0)
    with pytest.raises(UserError, match="no option 'temprature'; valid: .*temperature"):
        make_planner("openai:http://h:1/v1#m", temprature=0.5)
    with pytest.raises(UserError, match="no option 'temperature'; valid: none"):
        make_planner("oracle", temperature=0.5)


# ----------------------------------------------------------------------------- planner SFT


def test_planner_sft_data_is_consistent(view):
    """The target is the oracle's plan for exactly what the prompt shows (task, inventory
    line, stations line): the text observation was regenerated from the sampled inventory."""
    from trainers.agents.planner_sft import make_examples
    from trainers.agents.planner_sft_recipe import PlannerDataSection

    kinds = set()
    for e in make_examples(PlannerDataSection(failure_prob=0.5, memory_prob=0.5), [view], 80, seed=1):
        assert parse_plan(e.target) == (e.subgoals, []) and e.prompt.endswith("Plan:\n")
        lines = e.prompt.splitlines()
        task = next(x for x in lines if x.startswith("Task: ")).removeprefix("Task: ")
        held = next(x for x in lines if x.startswith("Inventory: ")).removeprefix("Inventory: ").rstrip(".")
        inventory = {} if held == "empty" else {k: int(v) for k, v in (i.split() for i in held.split(", "))}
        placed = next((x for x in lines if x.startswith("Placed nearby: ")), "Placed nearby: .")
        stations = {s for s in placed.removeprefix("Placed nearby: ").rstrip(".").split(", ") if s}
        assert e.subgoals == oracle_plan(task, inventory, stations)
        assert all(isinstance(s, Subgoal) for s in e.subgoals) and "You play Crafter" not in e.prompt
        kinds |= {
            "stations" * bool(stations),
            "memory" * ("Example (" in e.prompt),
            "failure" * ("failed" in e.prompt),
        }
    assert {"stations", "memory", "failure"} <= kinds


def test_planner_sft_recipe_checks():
    from trainers.run import load_recipe

    recipe, _ = load_recipe(str(REPO / "recipes/agents/planner_sft_tiny.yaml"))
    assert recipe.trainer == "planner_sft" and recipe.run_dir == "runs/planner-sft-tiny"
    with pytest.raises(UserError, match="'data.stations_prob' must be in"):
        load_recipe(str(REPO / "recipes/agents/planner_sft_tiny.yaml"), ["data.stations_prob=2"])
    with pytest.raises(UserError, match="'data.suite'.*unknown suite"):
        load_recipe(str(REPO / "recipes/agents/planner_sft_tiny.yaml"), ["data.suite=nope"])


def test_planner_sft_short_run_then_llm_planner_loads_it(tmp_path, view):
    from trainers.agents.planner_sft import train_planner_sft
    from trainers.run import load_recipe

    raw = yaml.safe_load((REPO / "recipes/agents/planner_sft_tiny.yaml").read_text())
    raw["output_dir"] = str(tmp_path / "run")
    raw["model"]["tiny"].update(
        hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1, intermediate_size=64
    )
    raw["data"].update(num_train=64, num_test=6, episodes=1, states_per_episode=4)
    raw["train"].update(steps=4, batch_size=8, save_every=2, eval_max_tokens=24)
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(raw))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # two spinning OpenMP threads on a shared 2-core box are slower
    try:
        recipe, raw_loaded = load_recipe(str(path))
        summary = train_planner_sft(recipe, raw_loaded)
    finally:
        torch.set_num_threads(threads)
    run = tmp_path / "run"
    for f in ("summary.json", "report.md", "plots/loss.png", "metrics.jsonl", "final/config.json"):
        assert (run / f).is_file(), f
    assert json.loads((run / "final" / SETTINGS_FILE).read_text())["instructions"] is False
    assert (run / "checkpoints" / "step-4").is_dir() and 0.0 <= summary["eval_exact_match"] <= 1.0
    assert summary["test_examples"] == 6 and json.loads((run / "summary.json").read_text())["steps"] == 4

    planner = make_planner(f"llm:{run / 'final'}", max_tokens=24, max_retries=1)
    result = planner.plan(request(view))
    assert result.llm_calls >= 1 and (result.ok or result.errors)
    # the planner reads text split exactly as in training (AutoTokenizer would swap in Qwen2's
    # pre-tokenizer for a qwen2 model directory)
    from tokenizers import Tokenizer

    trained = Tokenizer.from_file(str(run / "final" / "tokenizer.json"))
    prompt = planner.prompt(request(view))
    assert planner.tokenizer(prompt)["input_ids"] == trained.encode(prompt).ids

    # resuming a finished run trains nothing more and still writes the outputs
    recipe, raw_loaded = load_recipe(str(path), ["resume=latest"])
    again = train_planner_sft(recipe, raw_loaded)
    assert again["steps"] == 4 and again["eval_exact_match"] == summary["eval_exact_match"]
