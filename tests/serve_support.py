"""Helpers for the ``telos serve`` tests: a live server on a free localhost port, and tiny
reward models of every kind trained for 2 steps by ``trainer: rm``."""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path

import openai

from envs.math.procedural import generate
from envs.math.prompts import format_prompt
from telos.cli import build_parser

KEY = "test-key"
RM_RECIPES = Path(__file__).resolve().parents[1] / "recipes" / "rm"
QUESTIONS = [format_prompt(r) for r in generate("arith", "test", 6, max_value=30)]


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def train_tiny_rms(tiny_model_dir: Path, root: Path) -> dict[str, Path]:
    root.mkdir(parents=True, exist_ok=True)
    from trainers.rm.train import train_rm
    from trainers.run import load_recipe

    rows = generate("arith", "train", 16, max_value=30)
    pairs = _jsonl(root / "pairs.jsonl", [
        {"prompt": format_prompt(r), "chosen": r["solution"], "rejected": r["solution"] + "1"} for r in rows
    ])  # fmt: skip
    steps = _jsonl(root / "steps.jsonl", [
        {"prompt": format_prompt(r), "completions": r["solution"].split("\n"),
         "labels": [1.0] * len(r["solution"].split("\n"))} for r in rows
    ])  # fmt: skip
    out = {}
    for kind in ("bt", "gcrm", "prm"):
        data = steps if kind == "prm" else pairs
        overrides = [f"model.name_or_path={tiny_model_dir}", f"data.train={data}", "data.test=null",
                     f"output_dir={root / kind}", "train.steps=2", "train.batch_size=4",
                     "train.micro_batch_size=4", "report_to=[]"]  # fmt: skip
        recipe, raw = load_recipe(str(RM_RECIPES / f"{kind}_tiny.yaml"), overrides)
        train_rm(recipe, raw)
        out[kind] = root / kind / "final"
    return out


class LiveServer:
    def __init__(self, argv: list[str], start_timeout: float = 60.0) -> None:
        import uvicorn

        from serve.app import build_app
        from serve.cli import build_state

        self.state = build_state(build_parser().parse_args(["serve", *argv]))
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        config = uvicorn.Config(build_app(self.state), host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + start_timeout
        while not self.server.started:
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.05)
        self.url = f"http://127.0.0.1:{self.port}"

    def client(self, key: str | None = KEY, **kw) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=key or "none", max_retries=0, **kw)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
