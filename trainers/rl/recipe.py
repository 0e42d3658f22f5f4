"""The RL recipes (``trainer: grpo | nft | oreal | epo``): one YAML file = one run.

Sections map to dataclasses; an algorithm adds its own section (``grpo:``, ``nft:``,
``oreal:``) and everything else (model, data, rewards, engine, sampling, train, logging) is
shared: switching algorithm means changing ``trainer:`` and that one section. Every field
declares its type, range and meaning beside it (``telos.schema``); ``telos recipe schema grpo``
prints them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Literal

from telos.schema import flag, number, one_of, text
from trainers.common.fields import (
    EvalEvery,
    KeepLast,
    LearningRate,
    LrScheduler,
    MaxGradNorm,
    OutputDir,
    Resume,
    RunName,
    SaveEvery,
    WarmupSteps,
    WeightDecay,
)
from trainers.common.math_data import DataSection
from trainers.common.model_section import ModelSection
from trainers.rl.epo import EPOConfig
from trainers.rl.nft import NFTConfig
from trainers.rl.oreal import OREALConfig


def _loss_names() -> list[str]:
    from trainers.rl.losses import policy_loss_names

    return policy_loss_names()


@dataclass
class RewardSpec:
    name: Annotated[str, text("registered reward name or module:function")] = "accuracy"
    weight: Annotated[float, number("weight in the summed reward", ge=0)] = 1.0


@dataclass
class EngineSection:
    """Where rollouts come from. ``hf``: the trainer's own model (no weight sync). ``vllm``:
    an in-process engine (``colocated``) or ``telos rollout-server`` at ``url`` (``server``),
    both given the trainer's weights after every optimizer step."""

    backend: Annotated[Literal["hf", "vllm"], text("generation backend")] = "hf"
    mode: Annotated[Literal["colocated", "server"], text("vllm in this process, or a rollout server")] = (
        "colocated"
    )
    max_batch_size: Annotated[int, number("sequences generated at once", ge=1)] = 512
    url: Annotated[str | None, text("server mode: http://host:port of `telos rollout-server`")] = None
    gpu_memory_utilization: Annotated[
        float, number("vLLM's memory share: of GPU memory, or of RAM on a CPU build", gt=0, le=1)
    ] = 0.3
    kv_cache_gb: Annotated[
        float | None, number("vLLM KV cache size (default: 1 GiB on CPU, the share above on GPU)", gt=0)
    ] = None
    sleep: Annotated[bool, flag("colocated vLLM on GPU: release its memory while the trainer trains")] = False
    max_model_len: Annotated[int | None, number("default: the model's max_position_embeddings", ge=1)] = None
    correction: Annotated[
        Literal["auto", "none", "token_truncate", "token_mask", "sequence_truncate", "sequence_mask"],
        text("sampler/trainer mismatch weight; auto = sequence_mask for vllm, none for hf"),
    ] = "auto"
    correction_cap: Annotated[float, number("cap C of the mismatch importance weight", gt=0)] = 3.0

    def correction_mode(self) -> str:
        if self.correction != "auto":
            return self.correction
        return "sequence_mask" if self.backend == "vllm" else "none"


@dataclass
class SamplingSection:
    num_generations: Annotated[
        int, number("G, answers per prompt (group advantages need at least two)", ge=2)
    ] = 8
    temperature: Annotated[float, number("sampling temperature (0: greedy)", ge=0)] = 1.0
    top_p: Annotated[float, number("nucleus sampling mass", gt=0, le=1)] = 1.0
    top_k: Annotated[int, number("sample among the k likeliest tokens (0: all)", ge=0)] = 0
    max_tokens: Annotated[int, number("completion length cap, in tokens", ge=1)] = 256
    stop: Annotated[list[str], text("strings that end a completion")] = field(default_factory=list)


@dataclass
class RolloutReuse:
    """How a rollout batch is consumed; several optimizer steps per rollout are where the
    likelihood ratio departs from 1 (and NFT differs from Dr. GRPO)."""

    num_iterations: Annotated[int, number("μ: optimizer passes over each rollout batch", ge=1)] = 1
    mini_batches: Annotated[int, number("optimizer steps per pass (the batch is split)", ge=1)] = 1


@dataclass
class GroupFilter:
    dynamic_sampling: Annotated[
        bool, flag("drop all-correct/all-wrong groups and sample more prompts to refill the batch")
    ] = True
    max_resample_rounds: Annotated[int, number("refill rounds per step at most", ge=0)] = 3


@dataclass
class GRPOSection(RolloutReuse, GroupFilter):
    loss_type: Annotated[str, text("policy loss (a registered name)"), one_of(_loss_names)] = "dapo"
    scale_rewards: Annotated[Literal["group", "batch", "none"], text("advantage divided by this std")] = (
        "group"
    )
    advantage: Annotated[Literal["grpo", "rloo"], text("group baseline: mean, or leave-one-out mean")] = (
        "grpo"
    )
    epsilon: Annotated[float, number("PPO clip ε (low side)", gt=0)] = 0.2
    epsilon_high: Annotated[float | None, number("PPO clip high side (DAPO clip-higher; null: ε)", gt=0)] = (
        None
    )
    beta: Annotated[float, number("k3 KL to a frozen reference; 0 = no reference model loaded", ge=0)] = 0.0
    step_advantage_weight: Annotated[
        float, number("GiGPO w: per-turn step-group advantage added (env data; 0 = episode-level only)", ge=0)
    ] = 0.0
    step_gamma: Annotated[float, number("GiGPO discount of the per-turn returns", ge=0, le=1)] = 0.95
    step_mode: Annotated[Literal["mean_std_norm", "mean_norm"], text("GiGPO step-group normalisation")] = (
        "mean_std_norm"
    )


@dataclass
class EpisodeSection:
    """Multi-turn episodes, when ``data.train`` is an ``env:`` spec (rollout/episodes.py): each
    prompt group is G episodes of one game; an episode's reward is its score."""

    instruction: Annotated[str, text("text put before the first observation")] = ""
    admissible: Annotated[bool, flag("list the game's valid actions after each observation")] = False
    chat: Annotated[
        bool, flag("the tokenizer's chat template: instruction = system, observations = user")
    ] = False
    action_tokens: Annotated[int, number("action length cap per turn, in tokens", ge=1)] = 24
    max_context: Annotated[
        int | None, number("episode length cap in tokens (null: the model's max_position_embeddings)", ge=1)
    ] = None
    reward: Annotated[
        Literal["score", "won"], text("episode reward: score / max_score, or 1 if won else 0")
    ] = "score"
    eval_temperature: Annotated[
        float, number("held-out episodes' sampling temperature (0: greedy)", ge=0)
    ] = 0.0
    eval_episodes: Annotated[
        int, number("held-out episodes per game (seeds 0..k-1; >1 needs T > 0)", ge=1)
    ] = 1


@dataclass
class AgentSection:
    """Which model of a planner method the run trains on ``env:`` data. ``actor`` (default): the
    policy acts. ``strategist`` (EPO): the policy writes a thought before each action of the
    frozen ``agent.actor``. ``retrospective`` (Retroformer): the policy writes a reflection on a
    failed trial of the frozen actor; its reward is the next trial's return minus the failed
    one's. The actor's prompt settings are the ``episodes:`` section."""

    role: Annotated[
        Literal["actor", "strategist", "retrospective"], text("what the trained model is in the episodes")
    ] = "actor"
    actor: Annotated[
        str | None, text("strategist / retrospective: the frozen actor model (directory, hub id, tiny:...)")
    ] = None
    actor_temperature: Annotated[
        float, number("the frozen actor's sampling temperature (0: greedy)", ge=0)
    ] = 0.0
    instruction: Annotated[
        str | None, text("the strategist's / retrospective model's task text (null: the built-in one)")
    ] = None
    chat: Annotated[bool, flag("the trained model reads its tokenizer's chat template")] = False
    thought_tokens: Annotated[int, number("strategist: thought length cap per turn", ge=1)] = 24
    reflection_tokens: Annotated[int, number("retrospective: reflection length cap", ge=1)] = 64
    eval_trials: Annotated[int, number("retrospective: trials per held-out game in evaluations", ge=2)] = 2


@dataclass
class NFTSection(NFTConfig, RolloutReuse, GroupFilter):
    """NFT's loss settings (``NFTConfig``) plus how the rollout batch is consumed (official
    NFT: 16 mini-batches = 512 prompts / 32)."""


@dataclass
class OREALSection(OREALConfig, GroupFilter):
    """OREAL's loss settings (``OREALConfig``) plus the token-level reward model's. One
    optimizer step per rollout batch (on-policy), so no iteration settings."""

    token_rm: Annotated[bool, flag("train the token-level RM (false: every token weight is 1)")] = True
    rm_lr: Annotated[float, number("the token RM's AdamW lr (official 7B: 2e-6 vs policy 5e-7)", ge=0)] = 2e-6
    rm_weight_decay: Annotated[float, number("the token RM's weight decay", ge=0)] = 0.0
    pair_seed: Annotated[int, number("seeds which correct/wrong answer of a group is trained", ge=0)] = 0


@dataclass
class EPOSection(EPOConfig, RolloutReuse):
    """EPO's reward-weighted fine-tuning; one loop step is one self-play iteration."""

    num_iterations: Annotated[int, number("epochs over each self-play batch (official: 3)", ge=1)] = 3
    mini_batches: Annotated[int, number("optimizer steps per epoch (the batch is split)", ge=1)] = 4


@dataclass
class TrainSection:
    steps: Annotated[int, number("optimizer-step horizon (also the lr schedule's length)", ge=1)] = 100
    max_generated_tokens: Annotated[
        int, number("stop once this many completion tokens were sampled; 0 = no cap", ge=0)
    ] = 0
    prompts_per_step: Annotated[int, number("prompts per step, across all processes", ge=1)] = 16
    micro_batch_size: Annotated[int, number("sequences per forward/backward", ge=1)] = 64
    lr: LearningRate = 1e-6
    lr_scheduler: LrScheduler = "constant"
    warmup_steps: WarmupSteps = 0
    weight_decay: WeightDecay = 0.0
    max_grad_norm: MaxGradNorm = 1.0
    seed: Annotated[int, number("seeds prompt order, sampling and init", ge=0)] = 0
    save_every: SaveEvery = 50
    keep_last: KeepLast = 2
    eval_every: EvalEvery = 0
    eval_before_training: Annotated[bool, flag("greedy eval of the starting model, logged at step 0")] = False


@dataclass
class RLRecipe:
    """The sections every RL trainer shares; ``GRPORecipe`` etc. add their own."""

    trainer: Annotated[str, text("which trainer runs the recipe")]
    model: Annotated[ModelSection, text("the policy")]
    data: Annotated[DataSection, text("training and held-out problems")]
    name: RunName = "run"
    output_dir: OutputDir = None
    resume: Resume = None
    report_to: Annotated[list[str], text("trackers (any accelerate knows), or none")] = field(
        default_factory=list
    )
    rewards: Annotated[list[RewardSpec], text("reward functions, summed with their weights")] = field(
        default_factory=lambda: [RewardSpec()]
    )
    engine: Annotated[EngineSection, text("where rollouts come from")] = field(default_factory=EngineSection)
    sampling: Annotated[SamplingSection, text("how answers are sampled")] = field(
        default_factory=SamplingSection
    )
    train: Annotated[TrainSection, text("optimization")] = field(default_factory=TrainSection)
    episodes: Annotated[EpisodeSection, text("multi-turn episodes (env: data only)")] = field(
        default_factory=EpisodeSection
    )
    agent: Annotated[AgentSection, text("what the policy is in the episodes (env: data only)")] = field(
        default_factory=AgentSection
    )

    @property
    def run_dir(self) -> str:
        return self.output_dir or f"runs/{self.name}"


@dataclass
class GRPORecipe(RLRecipe):
    trainer: Literal["grpo"]
    grpo: Annotated[GRPOSection, text("GRPO-family loss and advantage")] = field(default_factory=GRPOSection)


@dataclass
class NFTRecipe(RLRecipe):
    trainer: Literal["nft"]
    nft: Annotated[NFTSection, text("NFT loss and rollout reuse")] = field(default_factory=NFTSection)


@dataclass
class OREALRecipe(RLRecipe):
    trainer: Literal["oreal"]
    oreal: Annotated[OREALSection, text("OREAL loss and token-level RM")] = field(
        default_factory=OREALSection
    )


@dataclass
class EPORecipe(RLRecipe):
    trainer: Literal["epo"]
    epo: Annotated[EPOSection, text("EPO reward-weighted loss and self-play iterations")] = field(
        default_factory=EPOSection
    )


RECIPES: dict[str, type[RLRecipe]] = {
    "grpo": GRPORecipe,
    "nft": NFTRecipe,
    "oreal": OREALRecipe,
    "epo": EPORecipe,
}
