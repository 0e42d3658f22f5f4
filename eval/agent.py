"""``telos eval agent``: an LLM actor plays every game of a text-world pool, K episodes each,
through the batched episode collector; writes results.json, report.md and success.png.

With ``--strategist MODEL`` a second LLM writes a thought before each action (EPO); with
``--trials K`` a game the actor failed is replayed up to K times, and with ``--retrospective
MODEL`` a reflection on the failed trial rides in the actor's instruction (Retroformer; without
it the replays are the no-reflection baseline). The report then shows success by trial.

Workers are processes, each with its own copy of the models and its own share of the games
(game i goes to worker i mod W); inside a worker every live episode's next action comes from
one engine call. Episode k of a game uses sampling seed ``seed + k`` (trial t of it ``seed + k
+ 1000·t``), so runs with other models are compared on the same games.
"""

from __future__ import annotations

import argparse
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from pathlib import Path

from agents.strategist import STRATEGIST_INSTRUCTION, StrategistSettings
from envs.text.pools import load_pool, parse_env_spec
from rollout.episodes import EpisodeSettings
from telos.errors import UserError
from telos.tracking import progress
from trainers.common.frozen import model_dir, parse_openai

TRIAL_SEED_STRIDE = 1000


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
    strategist: str | None = None
    strategist_chat: bool = False
    thought_tokens: int = 24
    retrospective: str | None = None
    retrospective_chat: bool = False
    reflection_tokens: int = 64
    trials: int = 1


def play_games(spec: AgentEvalSpec, rows: list[dict], on_turn=None) -> list[dict]:
    """Play ``spec.episodes`` episodes (× up to ``spec.trials`` trials) of each row; one record
    per episode played, in row order."""
    from agents.reflection import Reflector, run_trials
    from agents.strategist import Strategist
    from rollout.episodes import collect_episodes
    from telos.types import SamplingParams
    from trainers.common.frozen import load_frozen

    actor = load_frozen(spec.actor, "--actor", spec.engine, spec.seed)
    strategist = (
        load_frozen(spec.strategist, "--strategist", spec.engine, spec.seed) if spec.strategist else None
    )
    retro = (
        load_frozen(spec.retrospective, "--retrospective", spec.engine, spec.seed)
        if spec.retrospective
        else None
    )
    settings = spec.settings
    if not settings.max_context:
        settings.max_context = actor.max_context
    greedy = SamplingParams(temperature=0.0)

    def play(rows: list[dict], instructions: list[str] | None, seed: int):
        guide = None
        if strategist is not None:  # greedy thoughts: the actor's sampling is what episodes vary
            s = StrategistSettings(
                STRATEGIST_INSTRUCTION, spec.strategist_chat, spec.thought_tokens, strategist.max_context
            )
            guide = Strategist(strategist.engine, strategist.tokenizer, s, greedy)
        params = SamplingParams(temperature=spec.temperature, seed=seed)
        return collect_episodes(
            actor.engine, actor.tokenizer, rows, params, settings,
            batched=spec.batched, on_turn=on_turn, guide=guide, instructions=instructions,
        )  # fmt: skip

    reflect = None
    if retro is not None:
        reflector = Reflector(
            retro.engine, retro.tokenizer, spec.retrospective_chat, spec.reflection_tokens, retro.max_context
        )

        def reflect(failed, past):
            return reflector(failed, past, greedy)[1]

    records: list[dict] = []
    for k in range(spec.episodes):  # episode k of every game together, seeded by k
        result = run_trials(
            rows,
            lambda rows, instructions, t, k=k: play(
                rows, instructions, spec.seed + k + TRIAL_SEED_STRIDE * t
            ),
            reflect,
            spec.trials,
            settings.instruction,
        )
        for t, episodes in enumerate(result.episodes):
            for i, ep in enumerate(episodes):
                if ep is not None:
                    notes = result.reflections[i][:t]
                    records.append(
                        {
                            **ep.record(),
                            "episode": k,
                            "trial": t,
                            "reflections": notes,
                            "transcript": ep.transcript,
                        }
                    )
    for model in (actor, strategist, retro):
        if model is not None:
            model.close()
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
    if args.trials < 1:
        raise UserError(f"--trials must be >= 1, got {args.trials}")
    if args.retrospective and args.trials < 2:
        raise UserError("--retrospective needs --trials 2 or more: a reflection is read on the next trial")
    spec = AgentEvalSpec(
        args.env, args.actor, args.episodes, args.temperature, args.seed, args.engine, settings,
        strategist=args.strategist, strategist_chat=args.strategist_chat,
        retrospective=args.retrospective, retrospective_chat=args.retrospective_chat, trials=args.trials,
    )  # fmt: skip
    for flag, name in (
        ("--actor", args.actor),
        ("--strategist", args.strategist),
        ("--retrospective", args.retrospective),
    ):
        if name and name.startswith("openai:"):
            model_dir(parse_openai(name, flag)[1], flag)
        elif name:
            model_dir(name, flag)  # builds a tiny model once, here, not in every worker
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
        records.sort(key=lambda r: (order[r["game_id"]], r["episode"], r["trial"]))
    wall = time.perf_counter() - start
    config = {**asdict(spec), "workers": workers, "games": len(rows)}
    summary = write_outputs(Path(args.out), config, records, wall)
    print(
        f"success {summary['success_rate']:.3f} {summary['success_ci95']}, score {summary['score_mean']:.3f} "
        f"± {summary['score_ci95_half']:.3f} over {summary['episodes']} episodes ({wall:.0f} s) → {args.out}"
    )
    return 0
