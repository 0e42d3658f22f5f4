"""Transformers backend: batched sampling with a KV cache, written as a plain decode loop.

Why not ``model.generate``: we need the sampler's per-token log-probs of the *processed*
distribution (after temperature / top-k / top-p) for importance weights, and a bare loop
avoids generate's per-step overhead, which dominates on tiny models.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from rollout.engine import ENGINES, Engine
from telos.types import Completion, SamplingParams


def process_logits(logits: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """Temperature, then top-k, then top-p (nucleus) filtering; filtered entries become -inf."""
    if params.greedy:
        return logits
    logits = logits / params.temperature
    if params.top_k and params.top_k < logits.shape[-1]:
        kth = torch.topk(logits, params.top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if params.top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        cum = sorted_logits.softmax(-1).cumsum(-1)
        # keep the smallest prefix whose mass reaches top_p (the first token always stays)
        drop_sorted = (cum - sorted_logits.softmax(-1)) >= params.top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


@ENGINES.register("hf")
class HFEngine(Engine):
    """Samples from the trainer's own model object, so weight sync is free."""

    def __init__(self, model, tokenizer, max_batch_size: int = 512, **_) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.max_batch_size = max_batch_size

    def generate(self, prompts: Sequence[str], params: SamplingParams) -> list[Completion]:
        encoded = self.tokenizer(list(prompts), add_special_tokens=True)["input_ids"]
        rows = [(i, ids) for i, ids in enumerate(encoded) for _ in range(params.n)]
        device = next(self.model.parameters()).device
        gen = torch.Generator(device=device).manual_seed(params.seed) if params.seed is not None else None
        was_training = self.model.training
        self.model.eval()
        out: list[Completion] = []
        try:
            for start in range(0, len(rows), self.max_batch_size):
                out.extend(self._generate_batch(rows[start : start + self.max_batch_size], params, gen))
        finally:
            self.model.train(was_training)
        return out

    @torch.no_grad()
    def _generate_batch(self, rows, params: SamplingParams, gen) -> list[Completion]:
        from transformers import DynamicCache

        device = next(self.model.parameters()).device
        pad = self.tokenizer.pad_token_id
        eos = self.tokenizer.eos_token_id
        width = max(len(ids) for _, ids in rows)
        input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for r, (_, ids) in enumerate(rows):  # left padding keeps every last token aligned
            input_ids[r, width - len(ids) :] = torch.tensor(ids)
            mask[r, width - len(ids) :] = 1
        input_ids, mask = input_ids.to(device), mask.to(device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        cache = DynamicCache()
        logits = (
            self.model(
                input_ids=input_ids,
                attention_mask=mask,
                position_ids=positions,
                past_key_values=cache,
                use_cache=True,
                logits_to_keep=1,
            )
            .logits[:, -1]
            .float()
        )
        positions = positions[:, -1:]

        n = len(rows)
        tokens = torch.empty((n, params.max_tokens), dtype=torch.long, device=device)
        logps = torch.empty((n, params.max_tokens), dtype=torch.float32, device=device)
        lengths = torch.full((n,), params.max_tokens, dtype=torch.long, device=device)
        done = torch.zeros(n, dtype=torch.bool, device=device)
        stopped_by_string: dict[int, int] = {}
        for t in range(params.max_tokens):
            processed = process_logits(logits, params)
            logprobs = processed.log_softmax(-1)
            if params.greedy:
                next_tok = processed.argmax(-1)
            else:
                next_tok = torch.multinomial(logprobs.exp(), 1, generator=gen).squeeze(-1)
            tokens[:, t] = next_tok
            logps[:, t] = logprobs.gather(-1, next_tok[:, None]).squeeze(-1)
            newly = (~done) & (next_tok == eos)
            lengths[newly] = t + 1
            done |= newly
            if params.stop:
                for r in (~done).nonzero().flatten().tolist():
                    tail = self.tokenizer.decode(tokens[r, max(0, t - 15) : t + 1])
                    if any(s in tail for s in params.stop):
                        lengths[r] = t + 1
                        done[r] = True
                        stopped_by_string[r] = t + 1
            if bool(done.all()) or t == params.max_tokens - 1:
                break
            mask = torch.cat([mask, torch.ones((n, 1), dtype=mask.dtype, device=device)], dim=1)
            positions = positions + 1
            logits = (
                self.model(
                    input_ids=next_tok[:, None],
                    attention_mask=mask,
                    position_ids=positions,
                    past_key_values=cache,
                    use_cache=True,
                )
                .logits[:, -1]
                .float()
            )

        tokens_l, logps_l, lengths_l = tokens.tolist(), logps.tolist(), lengths.tolist()
        result = []
        for r, (prompt_index, prompt_ids) in enumerate(rows):
            length = lengths_l[r]
            ids = tokens_l[r][:length]
            finished = bool(done[r])
            text_ids = ids[:-1] if finished and ids and ids[-1] == eos and r not in stopped_by_string else ids
            text = self.tokenizer.decode(text_ids, skip_special_tokens=True)
            if r in stopped_by_string:  # like vLLM: the text ends before the stop string
                cut = min((text.find(s) for s in params.stop if s in text), default=len(text))
                text = text[:cut]
            result.append(
                Completion(
                    prompt_index=prompt_index,
                    prompt_token_ids=list(prompt_ids),
                    token_ids=ids,
                    text=text,
                    logprobs=logps_l[r][:length],
                    finish_reason="stop" if finished else "length",
                )
            )
        return result
