"""OREAL's token-level reward model, trained online beside the policy.

Each step it scores the packed (correct, wrong) pairs once: the scores — taken *before* this
step's update, so a batch's weights never come from a model that has just fitted its labels —
give the policy's token weights and the batch AUROC, and the same forward's BCE loss trains the
RM with its own AdamW. The RM is a separate copy of the policy trunk (see ``TokenRewardModel``).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import Tensor

from rewards.token_rm import TokenRewardModel, token_rm_loss, token_weights
from telos.errors import UserError
from telos.stats import auroc
from trainers.common.batching import PackedBatch, accumulate

OPTIMIZER_FILE = "optimizer.pt"


class OnlineTokenRM:
    def __init__(self, ctx, section) -> None:
        from accelerate.utils import DistributedType

        acc = ctx.accelerator
        if acc.distributed_type == DistributedType.DEEPSPEED:
            # accelerate routes every backward through the *last* prepared DeepSpeed engine, so a
            # second trained model on one Accelerator would silently train the wrong one
            raise UserError(
                "'oreal.token_rm' is not supported under DeepSpeed (the token RM is a second trained "
                "model); valid: launch with recipes/accelerate/ddp.yaml, or set oreal.token_rm: false"
            )
        policy = acc.unwrap_model(ctx.model)
        # a peft policy: copy the model under the adapters (its LoRA layers come along, trained in full)
        base = policy.get_base_model() if hasattr(policy, "get_base_model") else policy
        rm = TokenRewardModel.from_policy(base).to(next(base.parameters()).device)
        rm.train()
        optimizer = torch.optim.AdamW(rm.parameters(), lr=section.rm_lr, weight_decay=section.rm_weight_decay)
        self.model, self.optimizer = acc.prepare(rm, optimizer)
        self.acc = acc
        self.micro_batch_size = ctx.recipe.train.micro_batch_size
        self.max_grad_norm = ctx.recipe.train.max_grad_norm

    def train_step(self, packed: PackedBatch | None, correct: Tensor | None) -> tuple[Tensor | None, dict]:
        """One RM optimizer step on this rank's pairs. Returns the token weights for the policy
        loss — w⁺ on correct rows, w⁻ on wrong rows, [B, Wc] — and the RM's metrics."""
        n_local = 0 if packed is None else len(packed)
        keep = (
            torch.ones(n_local, dtype=torch.bool, device=self.acc.device)
            if correct is None
            else ~torch.isnan(correct)
        )
        total = self.acc.gather(torch.tensor([float(keep.sum())], device=self.acc.device)).sum().item()
        per_rank = max(1.0, total / self.acc.num_processes)  # DDP averages: this gives the global mean
        scores: list[Tensor] = []
        losses: list[float] = []

        def loss_of(idx: list[int], _num_micro: int) -> Tensor:
            sub = packed.select(idx)
            s = self.model(sub.input_ids, sub.attention_mask, keep_last=sub.completion_mask.shape[1])
            scores.append(s.detach())
            loss = token_rm_loss(s, sub.completion_mask, correct[idx]) * float(keep[idx].sum()) / per_rank
            losses.append(float(loss.detach()))
            return loss

        accumulate(self.acc, self.model, n_local, self.micro_batch_size, loss_of)
        grad_norm = float(self.acc.clip_grad_norm_(self.model.parameters(), self.max_grad_norm))
        if math.isfinite(grad_norm):
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if n_local == 0:
            return None, {"rm_loss": 0.0, "rm_grad_norm": grad_norm}
        s = torch.cat(scores)
        w_pos, w_neg = token_weights(s, packed.completion_mask)
        is_correct = (correct > 0.5)[:, None]
        mask = packed.completion_mask
        seq_score = (s * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)
        return torch.where(is_correct, w_pos, w_neg), {
            "rm_loss": sum(losses),
            "rm_auroc": auroc(seq_score, correct),
            "rm_grad_norm": grad_norm,
        }

    def save(self, directory: Path) -> None:
        self.acc.unwrap_model(self.model).save_pretrained(directory)
        torch.save(self.optimizer.state_dict(), directory / OPTIMIZER_FILE)

    def load(self, directory: Path) -> None:
        saved = TokenRewardModel.from_pretrained(directory)
        self.acc.unwrap_model(self.model).load_state_dict(saved.state_dict())
        self.optimizer.load_state_dict(load_optimizer_state(directory / OPTIMIZER_FILE))


def load_optimizer_state(path: Path) -> dict:
    """An optimizer ``state_dict`` saved by ``torch.save``. ``weights_only=True``: the file may
    come from anywhere (a shared run directory, a download), and a full unpickle would run any
    code it holds; an optimizer's state is only tensors, numbers, lists and dicts."""
    import pickle

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as e:
        raise UserError(f"{path}: not a plain optimizer state (refusing to unpickle code): {e}") from None
