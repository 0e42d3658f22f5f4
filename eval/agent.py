"""``telos eval agent``: an LLM actor plays every game of a text-world pool, K episodes each,
through the batched episode collector; writes results.json, report.md and success.png.

Workers are processes, each with its own copy of the actor and its own share of the games
(game i goes to worker i mod W); inside a worker every live episode's next action comes from
one engine call. Episode k of a game uses sampling seed ``seed + k``, so runs with other actors
are compared on the same games.
"""

from __future__ import annotations

import argparse
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from pathlib import Path

from envs.text.pools import load_pool, parse_env_spec
from rollout.episodes import EpisodeSettings
from telos.errors import UserError
from telos.tracking import progress


@dataclass
class AgentEvalSpec:
    env: str
    actor: str
    episodes: int
    temperature: float
    seed: int
    engine: str
    settings: EpisodeSettings
    batched: bool = True


def actor_path(actor: str) -> str:
    """``llm:PATH`` or a plain model (directory, hub id, ``tiny:...``) → what ``load_model`` takes."""
    from trainers.common.start_model import start_model_dir  # builds a tiny actor once per machine

    name = actor.removeprefix("llm:")
    if not name:
        raise UserError(
            "--actor is empty; valid: a model directory, a hub id, tiny:textworld-cooking, llm:PATH"
        )
    path = start_model_dir(name)
    looks_local = name.startswith((".", "/", "~")) or name.startswith(("tiny:", "smollm2:"))
    if looks_local and not (Path(path).expanduser() / "config.json").is_file():
        raise UserError(f"--actor {actor!r}: {path} holds no model (no config.json)")
    return path


def play_games(spec: AgentEvalSpec, rows: list[dict], on_turn=None) -> list[dict]:
    """Play ``spec.episodes`` episodes of each row; one record per episode, in row order."""
    from rollout.backends import make_engine
    from rollout.episodes import collect_episodes
    from telos.models import load_model, load_tokenizer
    from telos.types import SamplingParams

    path = actor_path(spec.actor)
    tokenizer = load_tokenizer(path)
    model = load_model(path, "float32", None)
    model.eval()
    engine = make_engine(spec.engine, model, tokenizer, seed=spec.seed)
    settings = spec.settings
    if not settings.max_context:
        settings.max_context = int(getattr(model.config, "max_position_embeddings", 2048))
    records: list[dict] = []
    for k in range(spec.episodes):  # episode k of every game together, seeded by k
        params = SamplingParams(temperature=spec.temperature, seed=spec.seed + k)
        episodes = collect_episodes(
            engine, tokenizer, rows, params, settings, batched=spec.batched, on_turn=on_turn
        )
        records += [{**ep.record(), "episode": k, "transcript": ep.transcript} for ep in episodes]
    engine.close()
    return records


def _worker(spec: AgentEvalSpec, rows: list[dict]) -> list[dict]:
    import torch

    torch.set_num_threads(1)  # W workers share the cores
    return play_games(spec, rows)


def eval_agent_command(args: argparse.Namespace) -> int:
    from eval.agent_report import write_outputs

    if args.episodes < 1 or args.workers < 1:
        raise UserError(f"--episodes and --workers must be >= 1, got {args.episodes} and {args.workers}")
    if args.temperature < 0:
        raise UserError(f"--temperature must be >= 0, got {args.temperature}")
    if args.engine not in ("hf", "vllm"):
        raise UserError(f"--engine {args.engine!r} is not valid; valid: hf, vllm")
    parse_env_spec(args.env)  # a bad spec fails before any model loads
    settings = EpisodeSettings(
        instruction=args.instruction or "",
        admissible=args.admissible,
        chat=args.chat,
        action_tokens=args.action_tokens,
        max_context=args.max_context or 0,
    )
    spec = AgentEvalSpec(
        args.env, args.actor, args.episodes, args.temperature, args.seed, args.engine, settings
    )
    actor_path(args.actor)  # builds a tiny actor once, here, not in every worker
    rows = load_pool(args.env)
    start = time.perf_counter()
    workers = min(args.workers, len(rows))
    if workers == 1:
        bar = progress(None, f"eval agent: {len(rows)} games × {args.episodes}")
        records = play_games(spec, rows, on_turn=lambda turn, live: bar.advance(live=live))
        bar.close()
    else:
        shares = [[r for i, r in enumerate(rows) if i % workers == w] for w in range(workers)]
        records, bar = (
            [],
            progress(workers, f"eval agent: {len(rows)} games × {args.episodes}, {workers} workers"),
        )
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
            for fut in as_completed([pool.submit(_worker, spec, share) for share in shares]):
                records += fut.result()
                bar.advance()
        bar.close()
        order = {r["game_id"]: i for i, r in enumerate(rows)}
        records.sort(key=lambda r: (order[r["game_id"]], r["episode"]))
    wall = time.perf_counter() - start
    config = {**asdict(spec), "workers": workers, "games": len(rows)}
    summary = write_outputs(Path(args.out), config, records, wall)
    print(
        f"success {summary['success_rate']:.3f} {summary['success_ci95']}, score {summary['score_mean']:.3f} "
        f"± {summary['score_ci95_half']:.3f} over {summary['episodes']} episodes ({wall:.0f} s) → {args.out}"
    )
    return 0
