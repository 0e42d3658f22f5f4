"""Token-level reward model (OREAL): a causal-LM trunk with a scalar head per token.

The model gives a score s_t to every token; it is trained online on outcome labels only, by
binary cross-entropy between the mean score of a completion and its correctness. Its cumulative
mean, squashed, c_t = σ(mean_{j≤t} s_j), estimates how much the prefix up to t already decides
the outcome, and turns into per-token weights for the policy loss (``token_weights``).
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from transformers import AutoModel, PretrainedConfig, PreTrainedModel

HEAD_FILE = "token_rm_head.safetensors"


class TokenRewardModel(nn.Module):
    """``trunk`` (a transformers base model, e.g. ``Qwen2Model``) + ``head = Linear(hidden, 1)``.

    The trunk is a **separate copy** of the policy's trunk (``from_policy`` deep-copies it), not
    shared with the policy, as in the official OREAL (``token_level_rm = actor``, its own
    optimizer and learning rate). Reasons: the RM trains on its own BCE objective with its own
    learning rate — alone during the policy's freeze steps — and sharing the trunk would let the
    RM loss move the policy that the rollout engine samples from (and the policy loss move the
    RM), so neither objective would be what its docstring says; a separate copy also keeps the
    policy checkpoint a plain ``from_pretrained`` model. The cost is a second trunk in memory.
    """

    def __init__(self, trunk: PreTrainedModel) -> None:
        super().__init__()
        self.trunk = trunk
        self.head = nn.Linear(trunk.config.hidden_size, 1, bias=False)

    @classmethod
    def from_policy(cls, policy: PreTrainedModel) -> TokenRewardModel:
        """A token RM whose trunk is a deep copy of the policy's (``AutoModelForCausalLM``) base
        model — everything but the LM head; the new head starts from PyTorch's default init."""
        trunk = copy.deepcopy(policy.base_model)
        trunk.requires_grad_(True)
        return cls(trunk)

    @classmethod
    def from_config(cls, config: PretrainedConfig) -> TokenRewardModel:
        """A randomly initialised token RM from a model config (tests, tiny models)."""
        return cls(AutoModel.from_config(config))

    def token_scores(self, input_ids: Tensor, attention_mask: Tensor, keep_last: int = 0) -> Tensor:
        """s [B, T] float32: ``s[b, j]`` scores token ``input_ids[b, j]`` having read tokens ≤ j.

        Handles left padding (positions count attended tokens only, as in
        ``trainers.common.batching.completion_logps``). ``keep_last > 0`` applies the head to the last
        ``keep_last`` columns only — the completion columns of a ``PackedBatch``.
        """
        positions = (attention_mask.cumsum(-1) - 1).clamp(min=0)
        hidden = self.trunk(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=positions, use_cache=False
        ).last_hidden_state
        if keep_last > 0:
            hidden = hidden[:, -keep_last:]
        return self.head(hidden.to(self.head.weight.dtype)).squeeze(-1).float()

    def forward(self, input_ids: Tensor, attention_mask: Tensor, keep_last: int = 0) -> Tensor:
        return self.token_scores(input_ids, attention_mask, keep_last)

    @staticmethod
    def loss(scores: Tensor, mask: Tensor, correct: Tensor) -> Tensor:
        """BCE-with-logits of each sequence's mean masked score against its correctness."""
        return token_rm_loss(scores, mask, correct)

    def save_pretrained(self, directory: str | Path) -> None:
        """Trunk with ``save_pretrained`` (config + weights), head as ``token_rm_head.safetensors``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.trunk.save_pretrained(directory)
        save_file({"weight": self.head.weight.detach().contiguous().cpu()}, str(directory / HEAD_FILE))

    @classmethod
    def from_pretrained(cls, directory: str | Path, **kwargs) -> TokenRewardModel:
        """Reload what ``save_pretrained`` wrote; ``kwargs`` go to ``AutoModel.from_pretrained``."""
        directory = Path(directory)
        model = cls(AutoModel.from_pretrained(directory, **kwargs))
        weight = load_file(str(directory / HEAD_FILE))["weight"]
        model.head.weight.data.copy_(weight.to(model.head.weight.dtype))
        return model


def _masked_seq_mean(scores: Tensor, mask: Tensor) -> Tensor:
    m = mask.to(scores.dtype)
    s = torch.where(mask > 0, scores, torch.zeros_like(scores))  # padding may hold garbage
    return (s * m).sum(-1) / m.sum(-1).clamp(min=1.0)


def token_rm_loss(scores: Tensor, mask: Tensor, correct: Tensor) -> Tensor:
    """Outcome supervision of the token RM, mean over the sequences that have tokens:

        loss = mean_i BCEWithLogits( Σ_t m_it s_it / Σ_t m_it ,  c_i )

    Sequences with no masked token or NaN correctness (unscorable) are left out.
    """
    keep = (mask > 0).any(-1) & ~torch.isnan(correct)
    if not keep.any():
        return scores.sum() * 0.0
    mean = _masked_seq_mean(scores, mask)
    return F.binary_cross_entropy_with_logits(mean[keep], correct[keep].to(mean.dtype))


@torch.no_grad()
def token_weights(scores: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """Per-token weights of the OREAL policy loss from token-RM scores (detached):

        c_t  = σ( Σ_{j≤t} m_j s_j / Σ_{j≤t} m_j )      cumulative mean over masked tokens
        w⁺_t = clamp(2c_t − 1, 0, 1)                    = max(tanh(mean/2), 0)
        w⁻_t = clamp(1 − 2c_t, 0, 1)                    = max(−tanh(mean/2), 0)

    Both are 0 where the mask is 0. Returns (w_pos, w_neg), each [B, T].
    """
    m = (mask > 0).to(scores.dtype)
    s = torch.where(mask > 0, scores, torch.zeros_like(scores))
    cum_mean = (s * m).cumsum(-1) / m.cumsum(-1).clamp(min=1.0)
    c = torch.sigmoid(cum_mean)
    w_pos = (2.0 * c - 1.0).clamp(0.0, 1.0) * m
    w_neg = (1.0 - 2.0 * c).clamp(0.0, 1.0) * m
    return w_pos, w_neg
