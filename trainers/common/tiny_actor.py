"""``tiny:textworld-cooking``: a tiny text-world actor built locally, behaviour-cloned from the
games' walkthroughs with harmless mistakes left in (``envs.text.experts``).

``tiny:textworld-guided`` is the same actor taught to read guidance, so a strategist (EPO) or a
reflection (Retroformer) has something to steer: on ``hint_rate`` of the turns its
observation ends with ``Thought: <the next walkthrough step>`` and the expert takes that step;
in ``plan_rate`` of the episodes the instruction holds the walkthrough as a plan from an earlier
attempt and the expert follows it without mistakes. Otherwise it is the noisy expert.

The demonstrations are played through the episode collector's own loop (``rollout.episodes``),
so their token layout — prompt, action tokens, masked environment tokens — is exactly what the
RL loop later samples and trains; the loss covers the action tokens only. The demonstration
games come from the train split with their own seed, apart from the RL pools' seeds.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from agents.reflection import memory_instruction
from envs.text.experts import NoisyWalkthrough
from envs.text.pools import load_pool
from rollout.episodes import EpisodeSettings, play, scripted_actor
from telos.cache import atomic_path
from telos.models import TinyModelConfig, build_tiny_model, build_tokenizer, count_parameters
from trainers.common.sft import SFTConfig, masked_batch, train_sft

# the cooking games of the tiny actor and of its recipes (recipes/agents/*_tiny.yaml)
TINY_COOKING = "recipe=1&take=1&go=1"


@dataclass
class TinyActorConfig:
    env: str = f"env:textworld-cooking?{TINY_COOKING}&split=train&games=48&seed=1000&max_steps=12"
    episodes_per_game: int = 4
    mistake_rate: float = 0.3
    hint_rate: float = 0.0  # turns whose observation carries the next step as a thought
    plan_rate: float = 0.0  # episodes whose instruction carries the walkthrough as a plan
    settings: EpisodeSettings = field(default_factory=EpisodeSettings)
    model: TinyModelConfig = field(
        default_factory=lambda: TinyModelConfig(vocab_size=1024, max_position_embeddings=1024)
    )
    sft: SFTConfig = field(
        default_factory=lambda: SFTConfig(steps=400, batch_size=8, lr=2e-3, warmup_steps=30)
    )


class _CharTokens:
    """A stand-in tokenizer for the first pass, before the real one exists (only the texts
    are kept from that pass)."""

    eos_token_id = None

    def __call__(self, text: str, add_special_tokens: bool = False) -> dict:
        return {"input_ids": [ord(c) for c in text]}


def demonstrations(cfg: TinyActorConfig, tokenizer, seed: int = 0):
    rows = load_pool(cfg.env)
    expert = NoisyWalkthrough({r["game_id"]: r["walkthrough"] for r in rows}, cfg.mistake_rate, seed)
    rng = random.Random(seed + 1)
    played = [r for r in rows for _ in range(cfg.episodes_per_game)]
    planned = [rng.random() < cfg.plan_rate for _ in played]
    instructions = [
        memory_instruction(cfg.settings.instruction, [", ".join(r["walkthrough"])] if p else [])
        for r, p in zip(played, planned, strict=True)
    ]

    def guide(live) -> list[str]:
        return [(expert.next_step(ep) or "") if rng.random() < cfg.hint_rate else "" for ep in live]

    def choose(ep) -> str:
        if planned[ep.row_index] or (ep.thoughts and ep.thoughts[-1]):
            return expert.take_step(ep)
        return expert(ep)

    # no context cap here: the first pass counts characters; long ones are dropped afterwards
    settings = replace(cfg.settings, max_context=10**9)
    return play(
        played,
        scripted_actor(tokenizer, choose),
        tokenizer,
        settings,
        guide=guide if cfg.hint_rate > 0 else None,
        instructions=instructions,
    )


def build_text_actor(cfg: TinyActorConfig, out_dir: Path, seed: int = 0) -> dict:
    """Play the demonstrations, train a BPE tokenizer on their text, replay them tokenised by
    it (same seed: the same actions), clone the action tokens; save to ``out_dir`` atomically."""
    texts = ["\n".join(ep.transcript) for ep in demonstrations(cfg, _CharTokens(), seed)]
    tokenizer = build_tokenizer(texts, cfg.model.vocab_size)
    episodes = demonstrations(cfg, tokenizer, seed)
    examples = [
        (ep.prompt_ids + ep.token_ids, [0] * len(ep.prompt_ids) + ep.loss_mask)
        for ep in episodes
        if ep.length <= cfg.model.max_position_embeddings
    ]
    model = build_tiny_model(cfg.model, tokenizer, seed=seed)
    from telos.tracking import progress

    bar = progress(cfg.sft.steps, "tiny actor SFT on walkthroughs")
    losses = train_sft(
        model,
        tokenizer,
        examples,
        cfg.sft,
        on_step=lambda step, m: bar.advance(loss=round(m["loss"], 4)),
        collate=lambda items: masked_batch(tokenizer.pad_token_id, items),
    )
    bar.close()
    with atomic_path(Path(out_dir)) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "telos_tiny.json").write_text(json.dumps(asdict(cfg), indent=1))
    won = sum(ep.won for ep in episodes) / len(episodes)
    return {
        "parameters": count_parameters(model),
        "sft_final_loss": losses[-1],
        "demo_success": won,
        "demonstrations": len(examples),
        "longest_tokens": max(len(ids) for ids, _ in examples),
    }
