"""The ``telos`` command line.

Commands are looked up by dotted name and imported only when run, so ``telos`` (the core)
never imports the packages built on it and ``telos check`` starts fast.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from telos.errors import UserError

# command → "module:function"; each function takes the parsed argparse namespace
COMMANDS = {
    "quickstart": "trainers.quickstart:quickstart_command",
    "train": "trainers.run:train_command",
    "check": "trainers.run:check_command",
    "recipe schema": "trainers.run:recipe_schema_command",
    "rollout-server": "rollout.server:rollout_server_command",
    "serve": "serve.cli:serve_command",
    "eval math": "eval.math_search:eval_math_or_search_command",
    "eval rm": "eval.rm:eval_rm_command",
    "eval minecraft": "eval.minecraft:eval_minecraft_command",
    "eval agent": "eval.agent:eval_agent_command",
    "data crafter-play": "eval.crafter_play:crafter_play_command",
    "data crafter-goap": "eval.crafter_goap:crafter_goap_command",
    "data preferences": "eval.rm_data:preferences_command",
    "data process-labels": "eval.rm_data:process_labels_command",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="telos", description="Train LLM reasoners and agents.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    sub = parser.add_subparsers(dest="command", required=True)

    q = sub.add_parser("quickstart", help="SFT warm-up (tiny model) or a real model, then RL, on arithmetic")
    q.add_argument("--out", default="runs/quickstart", help="output directory (default: runs/quickstart)")
    q.add_argument("--algo", default="grpo", help="RL algorithm: grpo, nft or oreal (default: grpo)")
    q.add_argument(
        "--model",
        default="tiny",
        help="tiny (built here, default) or smollm2 (SmolLM2-135M-Instruct, offline: make install has it)",
    )
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--scale", type=float, default=1.0, help="shrink steps/problems (tests use < 1)")

    for name, help_text in (("train", "run a recipe"), ("check", "validate a recipe without running it")):
        p = sub.add_parser(name, help=help_text)
        p.add_argument("recipe", help="path to a recipe YAML")
        p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.lr=1e-5 resume=latest")
        if name == "check":
            p.add_argument(
                "--explain", action="store_true", help="print every key: type, default, valid range, meaning"
            )

    rc = sub.add_parser("recipe", help="what recipes can say")
    rc_sub = rc.add_subparsers(dest="recipe_kind", required=True)
    sc = rc_sub.add_parser("schema", help="a trainer's recipe keys with types, defaults and ranges")
    sc.add_argument("trainer", nargs="?", default=None, help="trainer name (omit to list the trainers)")
    sc.add_argument(
        "--markdown", action="store_true", help="every trainer's keys as Markdown (recipes/README.md)"
    )

    rs = sub.add_parser("rollout-server", help="serve a vLLM rollout engine that trainers reach by URL")
    rs.add_argument("--model", required=True, help="model directory or hub id (the trainer's starting model)")
    rs.add_argument("--host", default="127.0.0.1")
    rs.add_argument("--port", type=int, default=8008)
    rs.add_argument("--dtype", default="auto", help="auto | float32 | bfloat16 (use float32 on CPU)")
    rs.add_argument("--max-model-len", type=int, default=None)
    rs.add_argument(
        "--gpu-memory-utilization", type=float, default=0.3, help="share of GPU memory vLLM takes"
    )
    rs.add_argument("--kv-cache-gb", type=float, default=None, help="KV cache size (default 1 on CPU)")
    rs.add_argument("--seed", type=int, default=0)
    rs.add_argument(
        "--api-key",
        default=None,
        help="shared secret the trainer sends as a Bearer token (default: $TELOS_ROLLOUT_KEY; "
        "required unless --host is loopback; prefer the variable: flags show in `ps`)",
    )
    rs.add_argument("--max-prompts", type=int, default=4096, help="prompts per /generate request")
    rs.add_argument("--max-n", type=int, default=64, help="largest sampling.n")
    rs.add_argument("--max-tokens", type=int, default=32768, help="largest sampling.max_tokens")
    rs.add_argument("--max-request-mb", type=int, default=64, help="largest /generate body (MiB)")
    rs.add_argument("--max-bucket-mb", type=int, default=1024, help="largest /weights/bucket body (MiB)")

    s = sub.add_parser(
        "serve", help="an OpenAI-compatible generation API, optionally steered by reward models"
    )
    s.add_argument(
        "--policy", required=True, help="tiny:arith, smollm2:135m-instruct, a model directory or a hub id"
    )
    s.add_argument("--rm", action="append", metavar="NAME=PATH",
                   help="a reward model (BT, GC-RM or PRM final/ directory) served as NAME; repeatable")  # fmt: skip
    s.add_argument("--engine", default="hf", help="hf (continuous batching over the lean decoder) or vllm")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument(
        "--api-key", default=None, help="Bearer key every route but /health needs (default: $TELOS_SERVE_KEY)"
    )
    s.add_argument("--served-model-name", default=None, help="the model id clients send (default: --policy)")
    s.add_argument("--max-queue", type=int, default=256, help="generation requests in flight before 429")
    s.add_argument("--max-n", type=int, default=64, help="largest n and steering.n")
    s.add_argument("--max-tokens", type=int, default=4096, help="largest max_tokens")
    s.add_argument("--default-max-tokens", type=int, default=256, help="max_tokens when a request gives none")
    s.add_argument("--max-prompt-tokens", type=int, default=8192, help="longest prompt (413 beyond)")
    s.add_argument("--max-body-kb", type=int, default=1024, help="largest request body (KiB)")
    s.add_argument("--max-batch-size", type=int, default=256, help="samples decoded together (hf engine)")
    s.add_argument("--max-model-len", type=int, default=None, help="vLLM's context length (vllm engine)")

    ev = sub.add_parser("eval", help="evaluate a model")
    ev_sub = ev.add_subparsers(dest="eval_kind", required=True)
    m = ev_sub.add_parser("math", help="pass@1, pass@k and maj@k on a math data set")
    m.add_argument("--model", required=True, help="model directory or hub id")
    m.add_argument(
        "--data",
        required=True,
        help="data spec: procedural:arith:test, file.jsonl, hf:openai/gsm8k:main@test",
    )
    m.add_argument("--samples", type=int, default=1, help="k: samples per problem for pass@k / maj@k")
    m.add_argument("--temperature", type=float, default=None, help="default 0 for k=1, else 1.0")
    m.add_argument("--top-p", type=float, default=1.0)
    m.add_argument("--max-tokens", type=int, default=256)
    m.add_argument("--limit", type=int, default=None, help="evaluate the first N problems")
    m.add_argument("--template", default="plain", help="prompt template name or string with {prompt}")
    m.add_argument("--chat", action="store_true", help="wrap prompts in the tokenizer's chat template")
    m.add_argument("--reward", default="accuracy", help="verifier: accuracy | gsm8k | numeric | module:fn")
    m.add_argument("--engine", default="hf", help="generation backend (default: hf)")
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--out", default=None, help="directory for results.json and report.md")
    m.add_argument(
        "--search",
        default=None,
        help="test-time search at a token budget: greedy | majority | best_of_n | weighted_vote | prm_beam | mcts",
    )
    m.add_argument("--budget", type=int, default=None, help="--search: generated tokens per question")
    m.add_argument("--value", default=None, help="--search: value model / PRM directory (a prm final/)")
    m.add_argument(
        "--save-trees", default=None, help="--search mcts: write each question's tree as JSON here"
    )
    m.add_argument(
        "--search-option",
        action="append",
        metavar="KEY=VALUE",
        help="search settings: batch, beams, expand, aggregate, mcts.branch, mcts.exploration, ...",
    )

    r = ev_sub.add_parser("rm", help="evaluate a reward model (pairs, graded samples or step labels)")
    r.add_argument("--model", required=True, help="RM directory (final/ of a `trainer: rm` run)")
    r.add_argument(
        "--data",
        required=True,
        help="pairs, graded samples (telos data preferences --samples-out) or stepwise rows",
    )
    r.add_argument("--limit", type=int, default=None, help="use the first N rows")
    r.add_argument("--tau", type=float, default=0.0, help="goal filter: prune at the first Q_t < tau")
    r.add_argument("--skip", type=int, default=5, help="goal filter: response tokens ignored at the start")
    r.add_argument("--aggregate", default="min", help="PRM solution score: min | last | prod")
    r.add_argument("--out", default=None, help="directory for results.json, report.md and PNGs")

    mc = ev_sub.add_parser("minecraft", help="planner + controller agents on a Crafter/MineDojo task suite")
    mc.add_argument("--suite", default="crafter-techtree", help="suite name (eval/suites) or a .yaml file")
    mc.add_argument("--planner", default="oracle", help="oracle | llm:PATH_OR_HUB_ID | openai:URL#MODEL")
    mc.add_argument("--controller", default="scripted", help="scripted | learned:PATH | goap:PATH")
    mc.add_argument("--episodes", type=int, default=20, help="episodes per task (seeds SEED..SEED+N-1)")
    mc.add_argument("--workers", type=int, default=1, help="parallel worker processes")
    mc.add_argument("--out", required=True, help="directory for results.json, report.md, success.png")
    mc.add_argument("--record", type=int, default=0, help="write GIFs of the first K episodes")
    mc.add_argument("--seed", type=int, default=0, help="first world seed")
    mc.add_argument("--env", default="crafter", help="crafter | minedojo")
    mc.add_argument("--memory", default=None, help="plan memory (.jsonl): read, and extended with successes")
    mc.add_argument("--max-replans", type=int, default=4)
    mc.add_argument("--budget", type=int, default=None, help="override every task's step budget")
    mc.add_argument("--balrog", type=int, default=0, help="also run N open-ended 2,000-step episodes")
    mc.add_argument("--planner-option", action="append", help="KEY=VALUE (temperature=0.7, max_tokens=96)")
    mc.add_argument(
        "--controller-option", action="append", help="KEY=VALUE (see ScriptedConfig / LearnedController)"
    )

    ag = ev_sub.add_parser("agent", help="an LLM actor on a pool of text-world games (multi-turn episodes)")
    ag.add_argument(
        "--env", required=True, help="games: env:textworld-cooking?split=valid&games=32, env:twx-..."
    )
    ag.add_argument(
        "--actor",
        required=True,
        help="model directory, hub id, tiny:textworld-cooking, llm:PATH, openai:URL#MODEL",
    )
    ag.add_argument("--episodes", type=int, default=1, help="episodes per game (seeds SEED..SEED+K-1)")
    ag.add_argument(
        "--workers", type=int, default=1, help="parallel worker processes (games split among them)"
    )
    ag.add_argument("--temperature", type=float, default=0.0, help="actor sampling temperature (0: greedy)")
    ag.add_argument("--seed", type=int, default=0)
    ag.add_argument("--engine", default="hf", help="hf | vllm (colocated)")
    ag.add_argument("--admissible", action="store_true", help="list the valid actions after each observation")
    ag.add_argument("--instruction", default=None, help="text put before the first observation")
    ag.add_argument("--chat", action="store_true", help="the actor's chat template (instruction = system)")
    ag.add_argument("--action-tokens", type=int, default=24, help="action length cap per turn")
    ag.add_argument("--max-context", type=int, default=None, help="episode token cap (default: the model's)")
    ag.add_argument("--strategist", default=None, help="EPO: a model writing a thought before each action")
    ag.add_argument("--strategist-chat", action="store_true", help="the strategist's chat template")
    ag.add_argument("--trials", type=int, default=1, help="replay a failed game up to K trials in all")
    ag.add_argument(
        "--retrospective", default=None, help="Retroformer: a model reflecting on each failed trial"
    )
    ag.add_argument(
        "--retrospective-chat", action="store_true", help="the retrospective model's chat template"
    )
    ag.add_argument("--out", required=True, help="directory for results.json, report.md, success.png")

    data = sub.add_parser("data", help="build training data (reward models, agents)")
    d_sub = data.add_subparsers(dest="data_kind", required=True)
    cp = d_sub.add_parser("crafter-play", help="oracle + scripted play with noise, for GCBC (trainer: gcbc)")
    cp.add_argument("--out", required=True, help="output .npz")
    cp.add_argument("--episodes", type=int, default=200)
    cp.add_argument("--suite", default="crafter-techtree", help="tasks to play, cycled")
    cp.add_argument("--noise", type=float, default=0.1, help="probability of a random action")
    cp.add_argument("--seed", type=int, default=0)
    cp.add_argument("--budget", type=int, default=None, help="override the tasks' step budgets")
    cg = d_sub.add_parser(
        "crafter-goap", help="goal-observation-action data with a subgoal on every step, for trainer: goap"
    )
    cg.add_argument("--out", required=True, help="output directory (.npy arrays + meta.json)")
    cg.add_argument("--steps", type=int, default=None, help="at least N steps (whole shards of episodes)")
    cg.add_argument("--episodes", type=int, default=None, help="exactly N episodes (instead of --steps)")
    cg.add_argument("--workers", type=int, default=2, help="processes playing shards in parallel")
    cg.add_argument("--episodes-per-shard", type=int, default=8, help="episodes per resumable shard file")
    cg.add_argument("--suite", default="crafter-techtree", help="tasks to play, cycled")
    cg.add_argument("--noise", type=float, default=0.05, help="probability of a random action")
    cg.add_argument("--seed", type=int, default=0, help="world seeds are seed + episode id")
    cg.add_argument("--budget", type=int, default=None, help="override the tasks' step budgets")
    cg.add_argument("--map-radius", type=int, default=10, help="the remembered-map window: (2r+1)² cells")
    cg.add_argument(
        "--policy",
        default=None,
        help="DAgger: a controller spec (goap:PATH) that acts; scripted still labels",
    )
    cg.add_argument(
        "--beta", type=float, default=0.5, help="with --policy: probability the scripted action is taken"
    )
    cg.add_argument(
        "--policy-option", action="append", help="KEY=VALUE for the --policy controller (temperature=1.0)"
    )
    for kind, help_text in (
        ("preferences", "correct-vs-wrong answer pairs for the same prompt"),
        ("process-labels", "Math-Shepherd step labels from completions of each step prefix"),
    ):
        d = d_sub.add_parser(kind, help=help_text)
        d.add_argument("--model", required=True, help="policy directory or hub id")
        d.add_argument("--data", required=True, help="math problems: procedural:arith, file.jsonl, hf:...")
        d.add_argument("--out", required=True, help="output .jsonl")
        d.add_argument("--limit", type=int, default=None, help="first N problems")
        d.add_argument("--reward", default="numeric", help="verifier: numeric | gsm8k | accuracy | module:fn")
        d.add_argument("--template", default="plain")
        d.add_argument("--chat", action="store_true", help="wrap prompts with the tokenizer's chat template")
        d.add_argument("--max-tokens", type=int, default=64)
        d.add_argument("--seed", type=int, default=0)
        if kind == "preferences":
            d.add_argument("--samples", type=int, default=8, help="answers sampled per problem")
            d.add_argument("--pairs-per-prompt", type=int, default=2)
            d.add_argument("--temperature", type=float, default=1.0)
            d.add_argument("--samples-out", default=None, help="also write every graded sample here")
        else:
            d.add_argument("--solutions", type=int, default=2, help="solutions sampled per problem")
            d.add_argument("--rollouts", type=int, default=8, help="N completions per step prefix")
            d.add_argument("--label", choices=["soft", "hard"], default="soft", help="what `labels` holds")
    return parser


def command_handler(args: argparse.Namespace):
    """The function that runs the parsed command (`COMMANDS` names it; imported on demand)."""
    nested = {"eval": "eval_kind", "data": "data_kind", "recipe": "recipe_kind"}
    key = f"{args.command} {getattr(args, nested[args.command])}" if args.command in nested else args.command
    module, func = COMMANDS[key].split(":")
    return getattr(importlib.import_module(module), func)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(command_handler(args)(args) or 0)
    except UserError as e:
        if args.debug or os.environ.get("TELOS_DEBUG"):
            raise
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
