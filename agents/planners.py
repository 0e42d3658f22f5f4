"""Planners for the Crafter agent loop: the oracle, a local LM, and an OpenAI-compatible server.

``make_planner(spec)`` builds one from a string so a command line or results.json can name it:
``oracle``, ``llm:PATH_OR_HUB_ID`` or ``openai:URL#MODEL``. Both language-model planners share
one loop (:class:`LMPlanner`): prompt → raw text → strict parse → self-check against Crafter's
rules → re-ask with the problems → give up with an empty plan. Bad model output never raises:
the agent loop must be able to count a planner's failures, not crash on them.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
from abc import abstractmethod
from pathlib import Path
from typing import Any

from agents.plans import MAX_COUNT, check_plan, format_plan, parse_plan
from agents.prompts import INSTRUCTIONS, planner_prompt
from agents.types import Goal, Planner, PlanRequest, PlanResult
from envs.crafter.techtree import RULES, Subgoal, oracle_plan
from telos.errors import UserError
from telos.openai_http import post_json

SETTINGS_FILE = "telos_planner.json"  # prompt settings a planner model was trained with
SPEC_FORMS = "oracle, llm:PATH_OR_HUB_ID, openai:URL#MODEL"


# ----------------------------------------------------------------------------- on paper


def execute_on_paper(
    subgoals: list[Subgoal], inventory: dict[str, int], stations: frozenset[str] | set[str] = frozenset()
) -> tuple[dict[str, int], frozenset[str]]:
    """The inventory and placed stations after executing ``subgoals`` with Crafter's rules
    (steps whose ingredients are missing are skipped). Used to plan inventory goals item by
    item and to sample consistent partial progress for planner training data."""
    rules = RULES()
    inv, placed = dict(inventory), set(stations)
    for s in subgoals:
        for _ in range(s.count):
            if s.verb == "collect":
                rule = rules.collect[s.target]
                if all(inv.get(t, 0) >= k for t, k in rule["require"].items()):
                    for item, k in rule["receive"].items():
                        inv[item] = min(MAX_COUNT, inv.get(item, 0) + k)
                continue
            rule = rules.place[s.target] if s.verb == "place" else rules.make[s.target]
            if any(st not in placed for st in rule.get("nearby", [])):
                continue
            if any(inv.get(t, 0) < k for t, k in rule["uses"].items()):
                continue
            for t, k in rule["uses"].items():
                inv[t] -= k
            if s.verb == "make":
                inv[s.target] = inv.get(s.target, 0) + rule["gives"]
            else:
                placed.add(s.target)
    return {k: v for k, v in inv.items() if v > 0}, frozenset(placed)


def _merge(steps: list[Subgoal]) -> list[Subgoal]:
    out: list[Subgoal] = []
    for s in steps:
        if out and s.verb == "collect" and out[-1].verb == "collect" and out[-1].target == s.target:
            out[-1] = Subgoal("collect", s.target, min(MAX_COUNT, out[-1].count + s.count))
        else:
            out.append(s)
    return out


def inventory_plan(
    want: dict[str, int], inventory: dict[str, int], stations: frozenset[str] | set[str] = frozenset()
) -> list[Subgoal]:
    """Subgoals that end holding at least ``want``: each missing crafted item through the
    oracle, then each missing material collected (tools first, so crafting them cannot spend
    the materials the goal asks for); a final pass tops up anything crafting used up."""
    rules = RULES()
    inv, placed = dict(inventory), frozenset(stations)
    steps: list[Subgoal] = []

    def run(part: list[Subgoal]) -> None:
        nonlocal inv, placed
        steps.extend(part)
        inv, placed = execute_on_paper(part, inv, placed)

    def material_of(item: str) -> str:
        for material, rule in rules.collect.items():
            if item in rule["receive"]:
                return material
        raise UserError(f"no Crafter rule yields {item!r}; an inventory goal lists items to hold")

    for item, n in sorted(want.items(), key=lambda kv: kv[0] not in rules.make):
        for _ in range(n - inv.get(item, 0)):
            if item in rules.make:
                run(oracle_plan(f"make_{item}", inv, set(placed)))
        if item not in rules.make and inv.get(item, 0) < n:
            material = material_of(item)
            for tool, k in rules.collect[material]["require"].items():
                if inv.get(tool, 0) < k:
                    run(oracle_plan(f"make_{tool}", inv, set(placed)))
            run([Subgoal("collect", material, min(MAX_COUNT, n - inv.get(item, 0)))])
    for item, n in want.items():  # crafting a later tool may have spent an earlier material
        if item not in rules.make and inv.get(item, 0) < n:
            run([Subgoal("collect", material_of(item), min(MAX_COUNT, n - inv.get(item, 0)))])
    return _merge(steps)


def goal_plan(goal: Goal, inventory: dict[str, int], stations: frozenset[str] | set[str]) -> list[Subgoal]:
    """The oracle's plan for an achievement or an inventory goal."""
    if goal.achievement:
        return oracle_plan(goal.achievement, dict(inventory), set(stations))
    return inventory_plan(goal.inventory, inventory, stations)


class OraclePlanner(Planner):
    """Crafter's tech tree, planned exactly from the agent's inventory (memories are ignored):
    the upper bound a learned planner is compared against."""

    name = "oracle"

    def plan(self, request: PlanRequest) -> PlanResult:
        subgoals = goal_plan(request.goal, request.view.inventory, request.stations)
        return PlanResult(subgoals=subgoals, text=format_plan(subgoals))


# ----------------------------------------------------------------------------- LM planners


class LMPlanner(Planner):
    """The loop every language-model planner shares; subclasses only turn a prompt into text.

    Acceptance rule: a reply is used when every line parses, it is non-empty and
    :func:`check_plan` finds no problem. Otherwise the planner re-asks (up to ``max_retries``
    times) with the problems in the prompt's failure line. When the retries are exhausted, the
    latest reply whose *valid* lines form a plan that passes ``check_plan`` is used (invalid
    lines dropped); failing that the result is empty (``subgoals=[]``) with every problem seen
    in ``errors``. ``max_retries`` bounds the cost of a confused model; the partial-plan rule
    keeps a plan whose only fault is, say, a trailing comment line.
    """

    def __init__(
        self,
        *,
        temperature: float = 0.0,
        max_tokens: int = 192,
        max_retries: int = 2,
        instructions: bool = True,
        max_memories: int = 2,
    ) -> None:
        if temperature < 0 or max_tokens < 1 or max_retries < 0 or max_memories < 0:
            raise UserError(
                "planner options: temperature ≥ 0, max_tokens ≥ 1, max_retries ≥ 0, max_memories ≥ 0"
            )
        self.temperature, self.max_tokens, self.max_retries = float(temperature), max_tokens, max_retries
        self.instructions, self.max_memories = instructions, max_memories

    @abstractmethod
    def _complete(self, prompt: str) -> tuple[str, int, int]:
        """Raw reply text, prompt tokens, completion tokens for one prompt."""

    def prompt(self, request: PlanRequest) -> str:
        return planner_prompt(request, self.instructions, self.max_memories)

    def plan(self, request: PlanRequest) -> PlanResult:
        goal, inv = request.goal, request.view.inventory
        result = PlanResult(subgoals=[])
        fallback: tuple[list[Subgoal], str] | None = None
        asked = request
        for attempt in range(1, self.max_retries + 2):
            text, prompt_tokens, completion_tokens = self._complete(self.prompt(asked))
            result.llm_calls += 1
            result.prompt_tokens += prompt_tokens
            result.completion_tokens += completion_tokens
            result.text = text
            subgoals, parse_errors = parse_plan(text)
            checked = (
                check_plan(subgoals, goal.achievement, inv, request.stations, goal.inventory or None)
                if subgoals
                else ["the plan is empty"]
            )
            problems = parse_errors + checked
            if not problems:
                result.subgoals = subgoals
                return result
            result.errors += [f"attempt {attempt}: {p}" for p in problems]
            if subgoals and not checked:
                fallback = (subgoals, text)
            asked = dataclasses.replace(request, failure=_failure_line(request.failure, problems))
        if fallback is not None:
            result.subgoals, result.text = fallback
        return result

    def describe(self) -> dict:
        return {
            "name": self.name,
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            "max_retries": self.max_retries,
            "instructions": self.instructions,
            "max_memories": self.max_memories,
        }


def _failure_line(previous: str | None, problems: list[str]) -> str:
    shown = "; ".join(problems[:3]) + (f" (+{len(problems) - 3} more)" if len(problems) > 3 else "")
    head = f"{previous}. " if previous else ""
    return f"{head}Your last plan was rejected: {shown}"


class LLMPlanner(LMPlanner):
    """A causal LM loaded with transformers (a local directory or a hub id), sampled through a
    registered rollout engine (``hf`` in process; other backends plug in by name). Greedy by
    default: a plan is an answer, not an exploration. ``telos_planner.json`` in the model
    directory (written by ``trainer: planner_sft``) sets the prompt the model was trained on."""

    name = "llm"

    def __init__(
        self,
        model: str,
        *,
        engine: str = "hf",
        temperature: float = 0.0,
        max_tokens: int = 192,
        max_retries: int = 2,
        instructions: bool | None = None,
        max_memories: int | None = None,
        chat: bool | None = None,
        dtype: str | None = None,
        device: str | None = None,
        hf_model: Any = None,
        tokenizer: Any = None,
    ) -> None:
        import torch

        from rollout.backends import make_engine  # importing it registers every backend
        from rollout.engine import ENGINES
        from telos.models import load_model, load_tokenizer

        ENGINES.get(engine)  # an unknown backend fails before any model is loaded
        settings = _settings(model)
        super().__init__(
            temperature=temperature,
            max_tokens=max_tokens,
            max_retries=max_retries,
            instructions=settings.get("instructions", True) if instructions is None else instructions,
            max_memories=settings.get("max_memories", 2) if max_memories is None else max_memories,
        )
        self.model_name, self.engine_name = model, engine
        cuda = torch.cuda.is_available()
        if tokenizer is None:
            tokenizer = load_tokenizer(model)
        self.tokenizer = tokenizer
        if hf_model is None:
            hf_model = load_model(model, dtype or ("bfloat16" if cuda else "float32"))
            hf_model.to(device or ("cuda" if cuda else "cpu"))
        self.hf_model = hf_model.eval()
        has_template = bool(getattr(self.tokenizer, "chat_template", None))
        self.chat = settings.get("chat", has_template) if chat is None else chat
        self.engine = make_engine(engine, self.hf_model, self.tokenizer)

    def prompt(self, request: PlanRequest) -> str:
        if not self.chat:
            return super().prompt(request)
        user = planner_prompt(request, instructions=False, max_memories=self.max_memories)
        messages = [{"role": "system", "content": INSTRUCTIONS}, {"role": "user", "content": user}]
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def _complete(self, prompt: str) -> tuple[str, int, int]:
        from telos.types import SamplingParams

        params = SamplingParams(temperature=self.temperature, max_tokens=self.max_tokens, stop=["\nTask:"])
        c = self.engine.generate([prompt], params)[0]
        return c.text, len(c.prompt_token_ids), len(c.token_ids)

    def describe(self) -> dict:
        return {**super().describe(), "model": self.model_name, "engine": self.engine_name, "chat": self.chat}


def _settings(model: str) -> dict:
    path = Path(model).expanduser() / SETTINGS_FILE
    if not path.is_file():
        return {}
    try:
        return dict(json.loads(path.read_text()))
    except (ValueError, TypeError):
        raise UserError(f"{path} is not a JSON object of prompt settings") from None


class OpenAIPlanner(LMPlanner):
    """Any OpenAI-compatible chat server (vLLM, SGLang, llama.cpp, OpenAI itself), through
    urllib so no client package is needed. The rules go in the system message; the user
    message is the planner prompt without them. ``OPENAI_API_KEY`` is sent when set."""

    name = "openai"

    def __init__(
        self,
        url: str,
        model: str,
        *,
        temperature: float = 0.0,
        max_tokens: int = 256,
        max_retries: int = 2,
        max_memories: int = 2,
        timeout: float = 120.0,
    ) -> None:
        super().__init__(
            temperature=temperature,
            max_tokens=max_tokens,
            max_retries=max_retries,
            instructions=False,
            max_memories=max_memories,
        )
        self.url, self.model, self.timeout = url.rstrip("/"), model, timeout

    def _complete(self, prompt: str) -> tuple[str, int, int]:
        body = {
            "model": self.model,
            "messages": [{"role": "system", "content": INSTRUCTIONS}, {"role": "user", "content": prompt}],
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
        }
        endpoint = f"{self.url}/chat/completions"
        data = post_json(endpoint, body, self.timeout, "planner server")
        try:
            text = data["choices"][0]["message"]["content"] or ""
        except (KeyError, IndexError, TypeError):
            raise UserError(f"planner server {endpoint} answered without choices[0].message") from None
        usage = data.get("usage") or {}
        return text, int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0))

    def describe(self) -> dict:
        return {**super().describe(), "url": self.url, "model": self.model}


# ----------------------------------------------------------------------------- factory


def _build(cls: type, spec: str, args: tuple, options: dict) -> Planner:
    valid = [n for n, p in inspect.signature(cls.__init__).parameters.items() if p.kind is p.KEYWORD_ONLY]
    valid = [n for n in valid if n not in ("hf_model", "tokenizer")]
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise UserError(f"planner {spec!r} has no option {unknown[0]!r}; valid: {', '.join(valid) or 'none'}")
    return cls(*args, **options)


def make_planner(spec: str, **options: Any) -> Planner:
    """``oracle``, ``llm:PATH_OR_HUB_ID`` or ``openai:URL#MODEL`` → a planner; ``options``
    are the planner's keyword settings (temperature, max_tokens, max_retries, ...)."""
    kind, _, rest = spec.partition(":")
    if spec == "oracle":
        return _build(OraclePlanner, spec, (), options)
    if kind == "llm" and rest:
        return _build(LLMPlanner, spec, (rest,), options)
    if kind == "openai":
        url, _, model = rest.partition("#")
        if url.startswith(("http://", "https://")) and model:
            return _build(OpenAIPlanner, spec, (url, model), options)
    raise UserError(f"planner {spec!r} is not valid; valid: {SPEC_FORMS}")
