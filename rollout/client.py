"""The trainer's side of ``telos rollout-server``: an ``Engine`` that generates over HTTP and
pushes the trainer's weights to the server in safetensors buckets."""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import asdict

import torch

from rollout.engine import ENGINES, Engine
from rollout.vllm import completions_from
from rollout.weights import SyncTimer, bucket_to_bytes, buckets, exported_weights
from telos.errors import UserError
from telos.types import Completion, SamplingParams

BUCKET_BYTES = 256 << 20


class ServerError(RuntimeError):
    """The rollout server answered with an error (its message included)."""


@ENGINES.register("vllm-server")
class VLLMServerEngine(Engine):
    """Generation on a remote vLLM; rank 0 pushes weights after each optimizer step and every
    rank waits for that push (``shared_across_ranks``) before its next request.

    ``api_key`` (default ``$TELOS_ROLLOUT_KEY``) is the server's shared secret, sent as a Bearer
    token on every request. It is read from the environment rather than the recipe so the
    secret never lands in a run directory's ``config.yaml``."""

    shared_across_ranks = True

    def __init__(
        self,
        model,
        tokenizer,
        url: str | None = None,
        rank: int = 0,
        timeout_s: float = 600.0,
        connect_timeout_s: float = 120.0,
        bucket_bytes: int = BUCKET_BYTES,
        api_key: str | None = None,
        **_,
    ) -> None:
        if not url:
            raise UserError("engine.mode 'server' needs engine.url, e.g. http://127.0.0.1:8008")
        self.url = url.rstrip("/")
        self.tokenizer, self.rank = tokenizer, rank
        self.timeout_s, self.bucket_bytes = timeout_s, bucket_bytes
        self.api_key = api_key or os.environ.get("TELOS_ROLLOUT_KEY") or None
        self.timer = SyncTimer()
        self.health = self._wait_until_up(connect_timeout_s)
        self.sync_weights(model)

    def _request(self, path: str, payload: dict | bytes | None = None, timeout: float | None = None) -> dict:
        data, headers = None, {}
        if isinstance(payload, bytes):
            data, headers = payload, {"Content-Type": "application/octet-stream"}
        elif payload is not None:
            data, headers = json.dumps(payload).encode(), {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        req = urllib.request.Request(
            self.url + path,
            data=data,
            headers=headers,
            method="GET" if payload is None else "POST",
        )
        try:
            with urllib.request.urlopen(req, timeout=timeout or self.timeout_s) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as e:
            if e.code == 401:
                raise UserError(
                    f"engine.url {self.url}: the rollout server refused the API key; set TELOS_ROLLOUT_KEY "
                    "to the server's --api-key / TELOS_ROLLOUT_KEY"
                ) from None
            raise ServerError(f"{self.url}{path}: HTTP {e.code}: {e.read().decode(errors='replace')}") from e
        except urllib.error.URLError as e:
            if path == "/health":
                raise
            raise ServerError(f"{self.url}{path}: the rollout server did not answer ({e.reason})") from e

    def _wait_until_up(self, timeout_s: float) -> dict:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                return self._request("/health", timeout=5)
            except (urllib.error.URLError, ConnectionError, TimeoutError) as e:
                if time.monotonic() > deadline:
                    raise UserError(
                        f"engine.url {self.url}: no rollout server answered within {timeout_s:.0f} s ({e}); "
                        "start one with `telos rollout-server --model DIR --port PORT`"
                    ) from e
                time.sleep(1.0)

    def generate_ids(self, prompt_ids: Sequence[Sequence[int]], params: SamplingParams) -> list[Completion]:
        ids = [list(p) for p in prompt_ids]
        body = {"prompt_token_ids": ids, "sampling": asdict(params)}
        groups = self._request("/generate", body)["groups"]
        return completions_from(groups, ids, self.tokenizer, params.stop)

    @torch.no_grad()
    def sync_weights(self, model) -> None:
        if self.rank != 0:
            return
        self.timer.reset()
        with self.timer.time("gather"):
            named = exported_weights(model)
        self._request("/weights/begin", {})
        for bucket in buckets(named, self.bucket_bytes):
            with self.timer.time("gather"):
                blob = bucket_to_bytes(bucket)
            self.timer.bytes += len(blob)
            with self.timer.time("transfer"):
                self._request("/weights/bucket", blob)
        with self.timer.time("load"):
            self._request("/weights/commit", {})

    def sync_metrics(self) -> dict[str, float]:
        return self.timer.metrics()
