"""The TRL side of ``benchmarks/grpo_vs_trl.py``: TRL 1.16's ``GRPOTrainer`` configured to
mirror a telos GRPO recipe, with a callback that times each optimizer step."""

from __future__ import annotations

import gc
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from benchmarks.grpo_settings import Settings


def trl_config(s: Settings, steps: int, seed: int, output_dir: str, use_vllm: bool = False):
    """TRL's GRPOConfig with the recipe's settings; one optimizer step = P prompts × G answers,
    generated as one batch and trained as one batch (no gradient accumulation). ``use_vllm``:
    TRL's colocate mode (an in-process vLLM synced after each step, TRL's default importance
    correction on)."""
    from trl import GRPOConfig

    vllm = (
        dict(
            use_vllm=True,
            vllm_mode="colocate",
            vllm_gpu_memory_utilization=0.3,
            vllm_enable_sleep_mode=False,
        )
        if use_vllm
        else dict(use_vllm=False)
    )
    return GRPOConfig(
        **vllm,
        output_dir=output_dir,
        # batch shape: one generation batch = one optimizer step = G·P completions
        per_device_train_batch_size=s.completions_per_step,
        gradient_accumulation_steps=1,
        steps_per_generation=1,
        num_generations=s.num_generations,
        shuffle_dataset=False,  # the dataset is already in telos's sampling order
        max_steps=steps,
        # generation
        max_completion_length=s.max_completion_tokens,
        temperature=s.temperature,
        top_p=s.top_p,
        top_k=s.top_k,
        min_p=None,
        repetition_penalty=1.0,
        # GRPO
        beta=s.beta,
        num_iterations=s.num_iterations,
        epsilon=s.epsilon,
        epsilon_high=s.epsilon_high,
        loss_type=s.loss_type,
        scale_rewards=s.scale_rewards,
        mask_truncated_completions=False,
        # optimiser: torch AdamW, constant lr, no warm-up, the same clipping (telos: torch.optim.AdamW)
        learning_rate=s.lr,
        lr_scheduler_type="constant",
        warmup_steps=0,
        weight_decay=s.weight_decay,
        max_grad_norm=s.max_grad_norm,
        optim="adamw_torch",
        # precision / device: fp32 on CPU; GRPOConfig defaults gradient checkpointing on, telos off
        bf16=False,
        fp16=False,
        use_cpu=True,
        gradient_checkpointing=False,
        # bookkeeping
        seed=seed,
        logging_steps=1,
        save_strategy="no",
        eval_strategy="no",
        report_to="none",
        log_completions=False,
        include_num_input_tokens_seen="no",
        dataloader_num_workers=0,
        disable_tqdm=False,
    )


def run_trl(
    s: Settings,
    seed: int,
    steps: int,
    rows: list[dict],
    order: list[int],
    workdir: Path,
    use_vllm: bool = False,
) -> dict:
    """One TRL run; with ``use_vllm``, a colocate run that fails is recorded (``vllm_error``)
    and replaced by a run on TRL's default generation."""
    if use_vllm:
        try:
            return _run_trl(s, seed, steps, rows, order, workdir, use_vllm=True)
        except Exception as e:  # TRL's vLLM path is not ours to fix; say why it did not run
            error = f"{type(e).__name__}: {' '.join(str(e).split())}"[:600]
            print(f"TRL vLLM colocate failed ({error}); rerunning on TRL's default generation", flush=True)
            gc.collect()
            return {**_run_trl(s, seed, steps, rows, order, workdir), "vllm_error": error}
    return _run_trl(s, seed, steps, rows, order, workdir)


def _run_trl(
    s: Settings,
    seed: int,
    steps: int,
    rows: list[dict],
    order: list[int],
    workdir: Path,
    use_vllm: bool = False,
) -> dict:
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOTrainer

    from envs.math.prompts import format_prompt
    from rewards.functions import resolve_reward_function
    from telos.models import load_model, load_tokenizer

    class StepRecorder(TrainerCallback):
        """Wall time of each optimizer step (generation + scoring + update) and TRL's step logs."""

        def __init__(self) -> None:
            self.step_seconds: list[float] = []
            self.logs: list[dict] = []
            self._t0: float | None = None

        def on_step_begin(self, args, state, control, **kwargs):
            self._t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            self.step_seconds.append(time.perf_counter() - self._t0)

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "reward" in logs:
                self.logs.append(dict(logs))

    t0 = time.perf_counter()
    tokenizer = load_tokenizer(s.model)
    dataset = Dataset.from_list(
        [
            {
                "prompt": format_prompt(rows[i], s.template, tokenizer=tokenizer, chat=s.chat),
                "answer": rows[i]["answer"],
            }
            for i in order
        ]
    )
    model = load_model(s.model, s.dtype)
    recorder = StepRecorder()
    out_dir = workdir / f"trl-seed{seed}"
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=[resolve_reward_function(s.reward)],
        args=trl_config(s, steps, seed, str(out_dir), use_vllm=use_vllm),
        train_dataset=dataset,
        processing_class=tokenizer,
        callbacks=[recorder],
    )
    trainer.train()
    wall = time.perf_counter() - t0
    logs = recorder.logs
    if len(logs) != steps or len(recorder.step_seconds) != steps:
        raise RuntimeError(
            f"TRL logged {len(logs)} steps / timed {len(recorder.step_seconds)}, expected {steps}"
        )
    n = s.completions_per_step
    generated = [round(lg["completions/mean_length"] * n) for lg in logs]
    seen = [int(lg["num_tokens"]) for lg in logs]  # cumulative prompt + completion tokens
    prompt_tokens = [c - p - g for c, p, g in zip(seen, [0, *seen[:-1]], generated, strict=True)]
    result = {
        "step_seconds": recorder.step_seconds,
        "generated_tokens": generated,
        "prompt_tokens": prompt_tokens,
        "reward_mean": [float(lg["reward"]) for lg in logs],
        "completion_length_mean": [float(lg["completions/mean_length"]) for lg in logs],
        "wall_seconds_incl_setup": wall,
    }
    del trainer, model
    gc.collect()
    return result
