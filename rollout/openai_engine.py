"""A frozen model behind any OpenAI-compatible ``/v1/completions`` server (``telos serve``,
``vllm serve``, SGLang, llama.cpp): the actor of ``openai:URL#MODEL``.

The collector keeps token ids, and so does this engine: the prompt goes as OpenAI's array of
token ids (``telos serve`` and ``vllm serve`` take it as given; re-tokenising the text could
split it differently from what the actor saw), and the answer is re-encoded with a local copy
of the model's tokenizer. Nothing trains through it, so its log-probs are 0.0 placeholders.
The server strips a matched stop string from the text (OpenAI's rule); the collector's only
stop is the newline ending an action, which is put back so the layout is the same as with a
local engine.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from rollout.engine import ENGINES, Engine
from telos.openai_http import post_json
from telos.types import Completion, SamplingParams


@ENGINES.register("openai")
class OpenAICompletionsEngine(Engine):
    def __init__(
        self, model, tokenizer, *, url: str, served_model: str, timeout: float = 120.0, workers: int = 8, **_
    ):
        self.tokenizer, self.url, self.served_model = tokenizer, url.rstrip("/"), served_model
        self.timeout, self.workers = timeout, workers

    def generate_ids(self, prompt_ids: Sequence[Sequence[int]], params: SamplingParams) -> list[Completion]:
        def one(i: int) -> list[Completion]:
            body = {
                "model": self.served_model,
                "prompt": [int(t) for t in prompt_ids[i]],
                "n": params.n,
                "temperature": params.temperature,
                "top_p": params.top_p,
                "max_tokens": params.max_tokens,
                **({"stop": list(params.stop)} if params.stop else {}),
                **({"seed": params.seed + i} if params.seed is not None else {}),
            }
            answer = post_json(f"{self.url}/completions", body, self.timeout, "actor server")
            choices = sorted(answer["choices"], key=lambda c: c.get("index", 0))
            out = []
            for choice in choices:
                text, finish = choice.get("text") or "", choice.get("finish_reason") or "length"
                if finish == "stop" and list(params.stop) == ["\n"]:
                    text += "\n"
                ids = list(self.tokenizer(text, add_special_tokens=False)["input_ids"])
                out.append(Completion(i, list(prompt_ids[i]), ids, text, [0.0] * len(ids), finish))
            return out

        if not prompt_ids:
            return []
        with ThreadPoolExecutor(min(self.workers, len(prompt_ids))) as pool:
            return [c for group in pool.map(one, range(len(prompt_ids))) for c in group]
