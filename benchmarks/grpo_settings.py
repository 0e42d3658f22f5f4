"""The GRPO settings ``benchmarks/grpo_vs_trl.py`` gives both sides (telos and
``benchmarks/trl_grpo.py``), in a module of its own so neither imports the other back."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Settings:
    """The GRPO settings both systems run with (from the recipe after overrides)."""

    recipe: str
    model: str
    data_train: str
    num_train: int | None
    template: str
    reward: str
    num_generations: int
    prompts_per_step: int
    max_completion_tokens: int
    temperature: float
    top_p: float
    top_k: int
    num_iterations: int
    beta: float
    epsilon: float
    epsilon_high: float | None
    loss_type: str
    scale_rewards: str
    advantage: str
    dynamic_sampling: bool
    lr: float
    lr_scheduler: str
    warmup_steps: int
    weight_decay: float
    max_grad_norm: float
    micro_batch_size: int
    dtype: str
    chat: bool = False  # prompts rendered with the tokenizer's chat template (as text, both sides)

    @property
    def completions_per_step(self) -> int:
        return self.num_generations * self.prompts_per_step
