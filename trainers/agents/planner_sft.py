"""Planner SFT (``trainer: planner_sft``): a causal LM learns to write the oracle's Crafter plans.

Why generated data: the oracle labels any state exactly, so the only question is whether the
prompts look like what the agent loop sends. They are built with the loop's own prompt builder
from views of real ``CrafterEnv`` episodes (random walks, so the text varies), with a task of the
suite, an inventory of consistent partial progress (the inventory after executing a random
prefix of the oracle plan on paper, sometimes mid-collection, sometimes with a stray item),
stations sometimes still in reach, and sometimes a failure line and 0–2 retrieved plans for the
same task. The text observation is regenerated from the sampled inventory so it never
contradicts it. The held-out set comes from other worlds; its score is the exact match of the
greedy plan with the oracle's.
"""

from __future__ import annotations

import dataclasses
import json
import random
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from agents.planners import SETTINGS_FILE, execute_on_paper, goal_plan
from agents.plans import check_plan, format_plan, parse_plan
from agents.prompts import planner_prompt
from agents.types import AgentView, Goal, MemoryEntry, PlanRequest
from envs.crafter.env import CrafterConfig, CrafterEnv, text_observation
from envs.crafter.techtree import RULES, Subgoal
from eval.suites import load_suite
from telos.checkpoint import resolve_resume, write_directory_atomically
from telos.config import to_dict
from telos.errors import UserError
from telos.plots import plot_metrics
from telos.tracking import progress, read_metrics
from trainers.agents.planner_sft_recipe import PlannerDataSection, PlannerSFTRecipe
from trainers.common.sft_loop import run_sft_loop

WALK_ACTIONS = ("noop", "move_left", "move_right", "move_up", "move_down", "do")
# what agents hold beyond a plan's progress: spare materials, and the swords the scripted
# controller makes from them (unseen items made the tiny planner's re-plans fail)
STRAY_ITEMS = ("sapling", "wood", "stone", "coal", "wood_sword", "stone_sword")
FAILURES = (  # the forms agents/loop.py and the planner's own re-ask write
    "{s} failed: no {t} collected in {n} steps",
    "{s} failed: explored {n} cells without finding {t}",
    "{s} failed: found no free cell to place {t} on",
    "the plan finished but the task is not done",
    "the planner gave no valid plan: attempt 3: step {i} ({s}): needs {t} first",
    "Your last plan was rejected: step {i} ({s}): needs {t} first",
)
PLOT_GROUPS = {"loss": ["loss"], "exact_match": ["eval_exact_match"]}


@dataclass
class PlanExample:
    prompt: str
    target: str  # format_plan of the oracle plan: the completion trained on
    subgoals: list[Subgoal]
    request: PlanRequest  # what the prompt shows, to self-check a predicted plan against

    @property
    def state(self) -> tuple:
        """What the oracle plan depends on: task, inventory, stations."""
        r = self.request
        held = tuple(sorted((k, v) for k, v in r.view.inventory.items() if v > 0))
        return r.goal.task_id, held, tuple(sorted(r.stations))


# ----------------------------------------------------------------------------- data


def record_views(episodes: int, per_episode: int, max_gap: int, seed: int) -> list[AgentView]:
    """Views along random walks in ``episodes`` Crafter worlds (seeded; a world costs ~1.5 s
    to generate, so each gives many views)."""
    rng = random.Random(seed)
    env = CrafterEnv(CrafterConfig(seed=seed))
    views: list[AgentView] = []
    for e in progress(range(episodes), "crafter worlds"):
        obs, info = env.reset(seed=seed * 1000 + e)
        for _ in range(per_episode):
            for _ in range(rng.randint(1, max_gap)):
                obs, _, terminated, truncated, info = env.step(rng.choice(WALK_ACTIONS))
                if terminated or truncated:
                    obs, info = env.reset(seed=seed * 1000 + e + 500_000)
            views.append(AgentView.from_env(obs, info))
    return views


def sample_progress(
    rng: random.Random, goal: Goal, d: PlannerDataSection
) -> tuple[dict[str, int], frozenset[str]]:
    """An inventory and stations some way along the oracle plan from scratch."""
    full = goal_plan(goal, {}, frozenset())
    done = full[: rng.randrange(len(full))]
    nxt = full[len(done)]
    if nxt.verb == "collect" and nxt.count > 1 and rng.random() < 0.5:
        done = [*done, Subgoal("collect", nxt.target, rng.randint(1, nxt.count - 1))]
    inventory, placed = execute_on_paper(done, {}, frozenset())
    while rng.random() < d.extra_item_prob:  # 0, 1, 2, ... stray items, geometrically
        item = rng.choice(STRAY_ITEMS)
        inventory[item] = min(
            9, inventory.get(item, 0) + (1 if item.endswith("sword") else rng.randint(1, 3))
        )
    return inventory, frozenset(s for s in sorted(placed) if rng.random() < d.stations_prob)


def _failure(rng: random.Random, plan: list[Subgoal]) -> str:
    i = rng.randrange(len(plan))
    s = plan[i]
    return rng.choice(FAILURES).format(s=s, t=s.target, i=i + 1, n=rng.randint(20, 400))


def make_example(
    rng: random.Random, view: AgentView, goals: list[Goal], d: PlannerDataSection
) -> PlanExample:
    goal = rng.choice(goals)
    while True:
        inventory, stations = sample_progress(rng, goal, d)
        subgoals = goal_plan(goal, inventory, stations)
        if subgoals:
            break
    # the game's own item order (the view's), zeros included, as the agent loop's views hold it
    inventory = {k: inventory.get(k, 0) for k in [*view.inventory, *inventory]}
    held = {**inventory, **view.vitals}
    text = text_observation(view.local_view, held, view.facing, view.daylight, view.sleeping)
    shown = dataclasses.replace(view, text=text, inventory=inventory)
    memories = []
    if rng.random() < d.memory_prob:
        for _ in range(rng.randint(1, max(1, d.max_memories))):
            inv, st = sample_progress(rng, goal, d)
            plan = goal_plan(goal, inv, st) or subgoals
            memories.append(MemoryEntry(goal.task_id, view.text, tuple(str(s) for s in plan)))
    failure = _failure(rng, subgoals) if rng.random() < d.failure_prob else None
    request = PlanRequest(goal, shown, memories, failure, stations)
    prompt = planner_prompt(request, instructions=d.instructions, max_memories=d.max_memories)
    return PlanExample(prompt, format_plan(subgoals), subgoals, request)


def make_examples(
    d: PlannerDataSection, views: list[AgentView], n: int, seed: int, max_copies: int = 0
) -> list[PlanExample]:
    """``n`` examples, or fewer when ``max_copies`` (> 0) caps how many share one
    (task, inventory, stations) state. Why cap the training set: sampled naturally, a few
    states (every task from scratch) take a large share while the states that need careful
    counting (mid-collection, stray items) appear a handful of times each — and those are the
    plans a small model gets wrong."""
    suite = load_suite(d.suite, RULES().achievements)
    goals = [Goal(t.id, t.achievement, dict(t.inventory)) for t in suite.tasks]
    rng = random.Random(seed)
    out: list[PlanExample] = []
    copies: dict[tuple, int] = {}
    for i in range(n * (5 if max_copies else 1)):  # bounded: the capped pool may run dry
        e = make_example(rng, views[i % len(views)], goals, d)
        if max_copies and copies.get(e.state, 0) >= max_copies:
            continue
        copies[e.state] = copies.get(e.state, 0) + 1
        out.append(e)
        if len(out) == n:
            break
    return out


# ----------------------------------------------------------------------------- evaluation


@torch.no_grad()
def evaluate_plans(model, tokenizer, examples: list[PlanExample], max_tokens: int, batch_size: int) -> dict:
    """Greedy plans for ``examples``: exact match (parsed plan == oracle plan), the share that
    parses cleanly, the share the LLM planner would accept on its first try (clean and
    feasible by ``check_plan``: a plan can differ from the oracle's and still work), and the
    predictions (for the report)."""
    from rollout.backends import make_engine
    from telos.types import SamplingParams

    engine = make_engine("hf", model, tokenizer, max_batch_size=batch_size)
    params = SamplingParams(temperature=0.0, max_tokens=max_tokens, stop=["\nTask:"])
    texts = [c.text for c in engine.generate([e.prompt for e in examples], params)]
    parsed = [parse_plan(t) for t in texts]
    exact = [subgoals == e.subgoals for (subgoals, _), e in zip(parsed, examples, strict=True)]
    clean = [not errors and bool(subgoals) for subgoals, errors in parsed]
    accepted = [
        ok and not check_plan(sub, r.goal.achievement, r.view.inventory, r.stations, r.goal.inventory or None)
        for ok, (sub, _), r in zip(clean, parsed, [e.request for e in examples], strict=True)
    ]
    n = max(1, len(examples))
    return {
        "exact_match": sum(exact) / n,
        "parse_ok": sum(clean) / n,
        "accepted": sum(accepted) / n,
        "texts": texts,
        "exact": exact,
    }


# ----------------------------------------------------------------------------- training


def build_plan_tokenizer(corpus: list[str], vocab_size: int):
    """Byte-level BPE whose merges may cross spaces (not newlines or digits), unlike the
    tiny math model's: prompt lines such as ``Vitals: health`` and plan steps such as
    ``. make wood_pickaxe\n`` become single tokens, so sequences are ~2.6x shorter (55 vs
    146 tokens on average) and the tiny model trains ~2.5x faster to a better plan accuracy."""
    from telos.models import build_tokenizer

    return build_tokenizer(corpus, vocab_size, cross_spaces=True)


def _model_and_tokenizer(recipe: PlannerSFTRecipe, corpus: list[str], resume_from: Path | None):
    from telos.models import build_tiny_model, load_model, load_tokenizer

    m = recipe.model
    if m.name_or_path == "tiny":
        # a resumed run reads the tokenizer it trained with (the corpus would give the same one)
        tokenizer = (
            load_tokenizer(str(resume_from))
            if resume_from
            else build_plan_tokenizer(corpus, m.tiny.vocab_size)
        )
        return build_tiny_model(m.tiny, tokenizer, seed=recipe.train.seed), tokenizer
    tokenizer = load_tokenizer(m.name_or_path)
    model = load_model(m.name_or_path, m.dtype, m.lora)
    if m.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    return model, tokenizer


def _lengths(recipe: PlannerSFTRecipe, tokenizer, examples: list[PlanExample]) -> list[int]:
    """Token count of every example (for batching); the tiny model must fit the longest."""
    lengths = [len(ids) + 1 for ids in tokenizer([e.prompt + e.target for e in examples])["input_ids"]]
    limit = recipe.model.tiny.max_position_embeddings
    if recipe.model.name_or_path == "tiny" and max(lengths) > limit:
        raise UserError(
            f"examples reach {max(lengths)} tokens but 'model.tiny.max_position_embeddings' is {limit}; raise it"
        )
    return lengths


def train_planner_sft(recipe: PlannerSFTRecipe, raw_config: dict | None = None) -> dict:
    r, d, t = recipe, recipe.data, recipe.train
    run_dir = Path(r.run_dir)
    started = time.perf_counter()
    torch.manual_seed(t.seed)
    views = record_views(d.episodes, d.states_per_episode, d.steps_between_states, d.seed)
    test_views = record_views(
        max(1, d.episodes // 4), d.states_per_episode, d.steps_between_states, d.seed + 7919
    )
    train = make_examples(d, views, d.num_train, d.seed, d.max_copies)
    test = make_examples(d, test_views, d.num_test, d.seed + 104_729)
    data_seconds = time.perf_counter() - started

    resume_from = resolve_resume(r.resume, run_dir)
    model, tokenizer = _model_and_tokenizer(r, [e.prompt + e.target for e in train[:3000]], resume_from)
    lengths = _lengths(r, tokenizer, train)
    pairs = [(e.prompt, e.target) for e in train]

    def final_eval() -> tuple[dict, dict[str, float]]:
        res = evaluate_plans(model, tokenizer, test, t.eval_max_tokens, t.eval_batch_size)
        return res, {"eval_exact_match": res["exact_match"]}

    result, train_seconds = run_sft_loop(
        model,
        tokenizer,
        pairs,
        lengths,
        t,
        run_dir,
        resume_from,
        config=raw_config if raw_config is not None else to_dict(r),
        report_to=r.report_to,
        progress_keys=["loss", "eval_exact_match"],
        description=f"planner_sft {r.name}",
        final_eval=final_eval,
    )
    if result is None:  # resumed from the final checkpoint: nothing was left to train
        result, _ = final_eval()
    final = _save_final(r, model, tokenizer, run_dir)
    summary = {
        "name": r.name,
        "trainer": "planner_sft",
        "model": r.model.name_or_path,
        "parameters": sum(p.numel() for p in model.parameters()),
        "steps": t.steps,
        "train_examples": len(train),
        "test_examples": len(test),
        "mean_example_tokens": round(sum(lengths) / len(lengths), 1),
        "longest_example_tokens": max(lengths),
        "eval_exact_match": result["exact_match"],
        "eval_accuracy": result["exact_match"],
        "eval_parse_ok": result["parse_ok"],
        "eval_accepted": result["accepted"],
        "data_seconds": round(data_seconds, 1),
        "train_seconds": round(train_seconds, 1),
        "total_seconds": round(time.perf_counter() - started, 1),
        "model_dir": str(final),
    }
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    plots = plot_metrics(read_metrics(run_dir), run_dir / "plots", PLOT_GROUPS)
    _write_report(run_dir, summary, test, result, plots)
    return summary


def _save_final(r: PlannerSFTRecipe, model, tokenizer, run_dir: Path) -> Path:
    """``final/`` = model + tokenizer + the prompt settings, written atomically."""
    to_save = model.merge_and_unload() if hasattr(model, "merge_and_unload") else model
    settings = {"instructions": r.data.instructions, "max_memories": r.data.max_memories, "chat": False}

    def write(tmp: Path) -> None:
        to_save.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / SETTINGS_FILE).write_text(json.dumps(settings, indent=1))

    return write_directory_atomically(run_dir / "final", write)


def _write_report(
    run_dir: Path, summary: dict, test: list[PlanExample], result: dict, plots: list[Path]
) -> None:
    lines = [f"# Planner SFT: {summary['name']}", "", "| metric | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in summary.items()]
    lines += ["", *[f"![{p.stem}](plots/{p.name})" for p in plots], ""]
    wrong = [i for i, ok in enumerate(result["exact"]) if not ok]
    shown = (wrong + [i for i in range(len(test)) if i not in wrong])[:4]
    lines.append("## Held-out examples (mismatches first)")
    for i in shown:
        verdict = "exact" if result["exact"][i] else "MISMATCH"
        prompt_tail = test[i].prompt.split("Task:", 1)[-1]
        lines += ["", f"### {verdict}", "```", "Task:" + prompt_tail.rstrip(), "```"]
        lines += ["oracle:", "```", test[i].target, "```", "model:", "```", result["texts"][i].strip(), "```"]
    (run_dir / "report.md").write_text("\n".join(lines) + "\n")
