"""Reward models as standard transformers checkpoints, and the API that scores text with them.

- ``RewardModel``: an ``AutoModelForSequenceClassification`` (one label) — the Bradley–Terry
  outcome RM; vLLM and TRL load the same directory.
- ``GoalConditionedRM``: the same checkpoint plus a goal vector g (``goal_vector.safetensors``);
  Q_t = cos(h_t, g) per response token, h_t the trunk's final hidden state (the head's input).
- ``ProcessRM``: an ``AutoModelForTokenClassification`` scoring the last token of each step.

``HeadedLM`` is the module the trainer optimises: one forward gives the head's output on every
token *and* the hidden states, so the contrastive loss needs no second pass, and DDP sees one
module.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from rewards.preferences import appends_eos, response_ids
from rewards.rm_losses import q_values as cosine_q_values
from telos.errors import UserError

GOAL_FILE = "goal_vector.safetensors"
GOAL_META = "goal_vector.json"
RM_KINDS = ("bt", "gcrm", "prm")


def load_head_model(name_or_path: str, kind: str, num_labels: int = 1, dtype: str = "float32", lora=None):
    """A transformers model with a fresh (or saved) head on top of a causal-LM checkpoint:
    sequence classification for bt/gcrm, token classification for prm."""
    from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification
    from transformers.utils import logging as hf_logging

    from telos.models import DTYPES, quiet_transformers
    from telos.pretrained import resolve_model

    quiet_transformers()
    name_or_path = resolve_model(name_or_path)
    cls = AutoModelForTokenClassification if kind == "prm" else AutoModelForSequenceClassification
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # "score.weight newly initialized" is the point, not a warning
    try:
        model = cls.from_pretrained(name_or_path, num_labels=num_labels, dtype=DTYPES[dtype])
    finally:
        hf_logging.set_verbosity(verbosity)
    if lora is not None:
        from peft import LoraConfig as PeftLora
        from peft import TaskType, get_peft_model

        task = TaskType.TOKEN_CLS if kind == "prm" else TaskType.SEQ_CLS
        model = get_peft_model(
            model,
            PeftLora(
                task_type=task,
                r=lora.r,
                lora_alpha=lora.alpha,
                lora_dropout=lora.dropout,
                target_modules=lora.target_modules,
            ),
        )
    return model


def _parts(model) -> tuple[nn.Module, nn.Module]:
    """(trunk, head) of a transformers *ForSequenceClassification / *ForTokenClassification."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    trunk = getattr(inner, inner.base_model_prefix)
    head = getattr(inner, "score", None) or getattr(inner, "classifier", None)
    if head is None:
        raise UserError(f"{type(inner).__name__} has no 'score' or 'classifier' head")
    return trunk, head


def freeze_lower_layers(trunk: nn.Module, trainable: int) -> int:
    """Freeze a decoder trunk's embeddings and all but its top ``trainable`` layers (the final
    norm stays trainable), so backward stops ``trainable`` layers down: on a 30-layer
    SmolLM2 trunk with 4 trainable layers an RM step costs ~2.4x less. Returns the number of
    frozen parameters; a trunk without a ``layers`` list is a UserError."""
    from telos.errors import UserError

    layers = getattr(trunk, "layers", None)
    if not isinstance(layers, nn.ModuleList):
        raise UserError(
            f"'rm.train_layers' needs a decoder with a 'layers' list; {type(trunk).__name__} has none"
        )
    if trainable > len(layers):
        raise UserError(f"'rm.train_layers' is {trainable} but the model has {len(layers)} layers")
    frozen = [*layers[: len(layers) - trainable]]
    for name, module in trunk.named_children():
        if name != "layers" and any(isinstance(m, nn.Embedding) for m in module.modules()):
            frozen.append(module)
    count = 0
    for module in frozen:
        for p in module.parameters():
            if p.requires_grad:
                p.requires_grad_(False)
                count += p.numel()
    return count


class HeadedLM(nn.Module):
    """Wraps a classification model: ``forward`` → (head output [B, T, K], hidden [B, T, H])."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.trunk, self.head = _parts(model)

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> tuple[Tensor, Tensor]:
        positions = (attention_mask.cumsum(-1) - 1).clamp(min=0)
        hidden = self.trunk(  # no KV cache: it is never reused here and costs memory and time
            input_ids=input_ids, attention_mask=attention_mask, position_ids=positions, use_cache=False
        ).last_hidden_state
        return self.head(hidden).float(), hidden


def last_token_values(head_out: Tensor, attention_mask: Tensor) -> Tensor:
    """The head's first output at each row's last attended token (right padding): [B]."""
    last = attention_mask.sum(-1) - 1
    return head_out[torch.arange(head_out.shape[0], device=head_out.device), last, 0]


def pad_right(seqs: list[list[int]], pad_id: int, device=None) -> tuple[Tensor, Tensor]:
    width = max(1, max(len(s) for s in seqs))
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        mask[i, : len(s)] = 1
    return ids.to(device), mask.to(device)


class RewardModel:
    """Scores (prompt, completion) pairs with a saved outcome RM directory."""

    def __init__(self, model, tokenizer, device: str | None = None) -> None:
        self.tokenizer = tokenizer
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.net = HeadedLM(model).to(self.device).eval()
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str | None = None, dtype: str = "float32"):
        from telos.models import check_model_path, load_tokenizer

        check_model_path(str(path))
        return cls(load_head_model(str(path), "bt", dtype=dtype), load_tokenizer(str(path)), device)

    @torch.no_grad()
    def _forward(self, seqs: list[list[int]]) -> tuple[Tensor, Tensor, Tensor]:
        ids, mask = pad_right(seqs, self.pad_id, self.device)
        head, hidden = self.net(ids, mask)
        return head, hidden, mask

    def encode(self, prompts: list[str], completions: list[str]) -> list[tuple[list[int], int]]:
        if len(prompts) != len(completions):
            raise UserError(f"{len(prompts)} prompts but {len(completions)} completions")
        return [response_ids(self.tokenizer, p, c) for p, c in zip(prompts, completions, strict=True)]

    def score(self, prompts: list[str], completions: list[str], batch_size: int = 32) -> list[float]:
        """One scalar reward per completion (the head at its last token, after EOS)."""
        out: list[float] = []
        encoded = self.encode(prompts, completions)
        for s in range(0, len(encoded), batch_size):
            head, _, mask = self._forward([ids for ids, _ in encoded[s : s + batch_size]])
            out += last_token_values(head, mask).tolist()
        return out

    def response_length(self, prompt: str, completion: str) -> int:
        """Tokens of the completion alone (no EOS)."""
        ids, start = response_ids(self.tokenizer, prompt, completion)
        return len(ids) - start - appends_eos(self.tokenizer)

    def score_prefixes(self, prompt: str, completion: str, lengths: list[int]) -> list[float]:
        """The reward of the completion cut after each of ``lengths`` response tokens (no EOS):
        what the RM says of a partial generation."""
        ids, start = response_ids(self.tokenizer, prompt, completion)
        body = ids[:-1] if appends_eos(self.tokenizer) else ids
        seqs = [body[: start + n] or body[:1] for n in lengths]
        head, _, mask = self._forward(seqs)
        return last_token_values(head, mask).tolist()


class GoalConditionedRM(RewardModel):
    """An outcome RM plus its goal vector: ``q_values`` gives cos(h_t, g) per response token."""

    def __init__(self, model, tokenizer, goal: Tensor, device: str | None = None, meta: dict | None = None):
        super().__init__(model, tokenizer, device)
        self.goal = goal.float().to(self.device)
        self.meta = meta or {}

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str | None = None, dtype: str = "float32"):
        from telos.models import check_model_path, load_tokenizer

        path = Path(path)
        check_model_path(str(path))
        if not (path / GOAL_FILE).is_file():
            raise UserError(
                f"{path} has no {GOAL_FILE}: not a goal-conditioned RM (train with rm.kind: gcrm)"
            )
        goal = load_file(str(path / GOAL_FILE))["goal"]
        meta = json.loads((path / GOAL_META).read_text()) if (path / GOAL_META).is_file() else {}
        return cls(
            load_head_model(str(path), "bt", dtype=dtype), load_tokenizer(str(path)), goal, device, meta
        )

    def q_values(self, prompts: list[str], completions: list[str], batch_size: int = 32) -> list[list[float]]:
        """Per completion, Q_t = cos(h_t, g) for every response token t (EOS included last)."""
        out: list[list[float]] = []
        encoded = self.encode(prompts, completions)
        for s in range(0, len(encoded), batch_size):
            chunk = encoded[s : s + batch_size]
            _, hidden, mask = self._forward([ids for ids, _ in chunk])
            q = cosine_q_values(hidden.float(), self.goal)
            for row, (ids, start) in enumerate(chunk):
                out.append(q[row, start : len(ids)].tolist())
        return out


def save_goal_vector(directory: Path, goal: Tensor, meta: dict) -> None:
    save_file({"goal": goal.detach().float().contiguous().cpu()}, str(directory / GOAL_FILE))
    (directory / GOAL_META).write_text(json.dumps(meta, indent=2))


class ProcessRM:
    """Scores each step of a solution: P(step is on a path to the right answer)."""

    def __init__(self, model, tokenizer, separator: str = "\n", device: str | None = None) -> None:
        self.tokenizer, self.separator = tokenizer, separator
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.net = HeadedLM(model).to(self.device).eval()
        self.num_labels = model.config.num_labels
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str | None = None, dtype: str = "float32"):
        from transformers import AutoConfig

        from telos.models import check_model_path, load_tokenizer

        check_model_path(str(path))
        config = AutoConfig.from_pretrained(str(path))
        separator = getattr(config, "telos_step_separator", "\n")
        model = load_head_model(str(path), "prm", num_labels=config.num_labels, dtype=dtype)
        return cls(model, load_tokenizer(str(path)), separator, device)

    def step_probabilities(self, head_out: Tensor) -> Tensor:
        if self.num_labels == 2:
            return head_out.softmax(-1)[..., 1]
        return torch.sigmoid(head_out[..., 0])

    @torch.no_grad()
    def step_scores(
        self, prompts: list[str], steps: list[list[str]], batch_size: int = 16
    ) -> list[list[float]]:
        from rewards.preferences import tokenize_steps

        rows = [
            {"prompt": p, "completions": s, "labels": [0.0] * len(s)}
            for p, s in zip(prompts, steps, strict=True)
        ]
        examples, _ = tokenize_steps(rows, self.tokenizer, self.separator)
        out: list[list[float]] = []
        for s in range(0, len(examples), batch_size):
            chunk = examples[s : s + batch_size]
            ids, mask = pad_right([e.input_ids for e in chunk], self.pad_id, self.device)
            head, _ = self.net(ids, mask)
            probs = self.step_probabilities(head)
            out += [probs[i, e.label_positions].tolist() for i, e in enumerate(chunk)]
        return out

    def values(
        self, prompts: Sequence[str], steps: Sequence[Sequence[str]], batch_size: int = 64
    ) -> list[float]:
        """V of each partial solution: the score of its last step (0 for no steps) — the value
        function tree and beam search call (``rollout.search.steps.ValueFn``)."""
        keep = [i for i, s in enumerate(steps) if s]
        out = [0.0] * len(steps)
        scores = self.step_scores([prompts[i] for i in keep], [list(steps[i]) for i in keep], batch_size)
        for i, s in zip(keep, scores, strict=True):
            out[i] = s[-1]
        return out
