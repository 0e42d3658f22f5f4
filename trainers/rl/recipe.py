"""The recipe schema shared by every trainer: one YAML file = one run.

Sections map to dataclasses; an algorithm adds its own section (``grpo:``, ``nft:``,
``oreal:``) and everything else (model, data, rewards, engine, sampling, train, logging) is
shared: switching algorithm means changing ``trainer:`` and that one section.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from telos.config import choices_field, path_field
from trainers.agents.gcbc_recipe import GCBCRecipe
from trainers.agents.planner_sft_recipe import PlannerSFTRecipe
from trainers.common.model_section import ModelSection
from trainers.rl.nft import NFTConfig
from trainers.rl.oreal import OREALConfig
from trainers.rm.recipe import RMRecipe


def _loss_names() -> list[str]:
    from trainers.rl.losses import policy_loss_names

    return policy_loss_names()


@dataclass
class DataSection:
    train: str = path_field(kind="data")  # procedural:arith, file.jsonl, hf:openai/gsm8k:main
    test: str | None = path_field(None, kind="data")
    template: str = "plain"  # prompt template name or a string containing {prompt}
    chat: bool = False  # wrap prompts with the tokenizer's chat template
    num_train: int | None = None
    num_test: int = 200


@dataclass
class RewardSpec:
    name: str = "accuracy"  # registered name or "module:function"
    weight: float = 1.0


@dataclass
class EngineSection:
    """Where rollouts come from. ``hf``: the trainer's own model (no weight sync). ``vllm``:
    an in-process engine (``colocated``) or ``telos rollout-server`` at ``url`` (``server``),
    both given the trainer's weights after every optimizer step."""

    backend: Literal["hf", "vllm"] = "hf"
    mode: Literal["colocated", "server"] = "colocated"
    max_batch_size: int = 512
    url: str | None = None  # server mode: http://host:port of `telos rollout-server`
    # vLLM's memory share: of GPU memory, or of system RAM on a CPU build (its KV cache lives there)
    gpu_memory_utilization: float = 0.3
    kv_cache_gb: float | None = None  # vLLM KV cache size; default: 1 GiB on CPU, the share above on GPU
    sleep: bool = False  # colocated vLLM on GPU: release its memory while the trainer trains
    max_model_len: int | None = None  # default: the model's max_position_embeddings
    # sampler/trainer mismatch weight (trainers/rl/correction.py); auto = sequence_mask for vllm, none for hf
    correction: Literal[
        "auto", "none", "token_truncate", "token_mask", "sequence_truncate", "sequence_mask"
    ] = "auto"
    correction_cap: float = 3.0

    def correction_mode(self) -> str:
        if self.correction != "auto":
            return self.correction
        return "sequence_mask" if self.backend == "vllm" else "none"


@dataclass
class SamplingSection:
    num_generations: int = 8  # G, answers per prompt
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    max_tokens: int = 256
    stop: list[str] = field(default_factory=list)


@dataclass
class GRPOSection:
    loss_type: str = choices_field("dapo", _loss_names)
    scale_rewards: Literal["group", "batch", "none"] = "group"
    advantage: Literal["grpo", "rloo"] = "grpo"
    epsilon: float = 0.2
    epsilon_high: float | None = None
    beta: float = 0.0  # k3 KL to a frozen reference; 0 = no reference model loaded
    num_iterations: int = 1  # μ: optimizer passes over each rollout batch
    mini_batches: int = 1  # optimizer steps per pass: the rollout batch is split into this many
    dynamic_sampling: bool = True  # drop zero-variance groups and sample more prompts
    max_resample_rounds: int = 3


@dataclass
class NFTSection(NFTConfig):
    """NFT's loss settings (``NFTConfig``) plus how the rollout batch is consumed. Several
    optimizer steps per rollout (``mini_batches`` > 1 or ``num_iterations`` > 1) are where the
    likelihood ratio R departs from 1 and NFT differs from Dr. GRPO."""

    num_iterations: int = 1  # passes over each rollout batch
    mini_batches: int = 1  # optimizer steps per pass (official NFT: 16 = 512 prompts / 32)
    dynamic_sampling: bool = True  # refill the batch after dropping all-correct/all-wrong groups
    max_resample_rounds: int = 3


@dataclass
class OREALSection(OREALConfig):
    """OREAL's loss settings (``OREALConfig``) plus the token-level reward model's. One
    optimizer step per rollout batch (on-policy), so no iteration settings."""

    token_rm: bool = True  # false: every token weight is 1
    rm_lr: float = 2e-6  # the token RM's own AdamW learning rate (official 7B: 2e-6 vs policy 5e-7)
    rm_weight_decay: float = 0.0
    dynamic_sampling: bool = True  # refill the batch after dropping all-correct/all-wrong groups
    max_resample_rounds: int = 3
    pair_seed: int = 0  # seeds which correct/wrong answer of a group is trained


@dataclass
class TrainSection:
    steps: int = 100  # optimizer-step horizon (also the lr schedule's length)
    max_generated_tokens: int = 0  # stop once this many completion tokens were sampled; 0 = no cap
    prompts_per_step: int = 16  # across all processes
    micro_batch_size: int = 64  # sequences per forward/backward
    lr: float = 1e-6
    lr_scheduler: Literal["constant", "cosine", "linear"] = "constant"
    warmup_steps: int = 0
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    seed: int = 0
    save_every: int = 50
    keep_last: int = 2
    eval_every: int = 0  # 0 = only at the end
    eval_before_training: bool = False  # greedy eval of the starting model, logged at step 0


@dataclass
class RLRecipe:
    """The sections every RL trainer shares; ``GRPORecipe`` etc. add their own."""

    trainer: str
    model: ModelSection
    data: DataSection
    name: str = "run"
    output_dir: str | None = None  # default runs/<name>
    resume: str | None = None  # "latest" or a checkpoint directory
    report_to: list[str] = field(default_factory=list)
    rewards: list[RewardSpec] = field(default_factory=lambda: [RewardSpec()])
    engine: EngineSection = field(default_factory=EngineSection)
    sampling: SamplingSection = field(default_factory=SamplingSection)
    train: TrainSection = field(default_factory=TrainSection)

    @property
    def run_dir(self) -> str:
        return self.output_dir or f"runs/{self.name}"


@dataclass
class GRPORecipe(RLRecipe):
    trainer: Literal["grpo"]
    grpo: GRPOSection = field(default_factory=GRPOSection)


@dataclass
class NFTRecipe(RLRecipe):
    trainer: Literal["nft"]
    nft: NFTSection = field(default_factory=NFTSection)


@dataclass
class OREALRecipe(RLRecipe):
    trainer: Literal["oreal"]
    oreal: OREALSection = field(default_factory=OREALSection)


RECIPES: dict[str, type] = {
    "grpo": GRPORecipe,
    "nft": NFTRecipe,
    "oreal": OREALRecipe,
    "rm": RMRecipe,
    "gcbc": GCBCRecipe,
    "planner_sft": PlannerSFTRecipe,
}
