"""Reward-model training losses: Bradley–Terry, the goal-conditioned contrastive loss, PRM losses.

Pure torch functions (no model, no I/O). Notation: r⁺ / r⁻ the scalar rewards of the preferred
(chosen) and dispreferred (rejected) response of a pair, h_t the final-layer hidden state of the RM
trunk at position t (the input of the value head), σ the logistic function.

Goal-conditioned RM ("goal-conditioned reward model", official code
``vaskarnathscale/goal-conditioned-rm``, read at commit 9daaf8d): the RM is trained with
Bradley–Terry plus a contrastive term that pulls hidden states of the preferred response towards
each other and pushes them away from the dispreferred one, so that Q_t = cos(h_t, g) against a
goal vector g (mean last-token state of correct responses) becomes a dense, per-token value.

Where the official code differs from the plain description ("16 (source, goal) pairs, cosine →
sigmoid → mean, weight 0.5"), this module follows the code; each function says where.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from telos.errors import UserError

CONTRASTIVE_STRATEGIES = ("cosine", "cosine_avg")
PRM_KINDS = ("soft_ce", "hard_ce", "mse")


# ---------------------------------------------------------------------------------------------
# Bradley–Terry
# ---------------------------------------------------------------------------------------------


def bt_loss(
    chosen: Tensor, rejected: Tensor, margin: Tensor | None = None, center_coef: float = 0.0
) -> tuple[Tensor, dict[str, float]]:
    """Bradley–Terry pairwise loss, mean over pairs:

        L = mean_i −log σ(r⁺_i − r⁻_i − m_i)  +  c · mean_i (r⁺_i + r⁻_i)²      (second term iff c > 0)

    ``chosen``, ``rejected`` (and ``margin``, default 0) are [B] rewards. The centering term is
    TRL's ``center_rewards_coefficient`` exactly as ``trl.RewardTrainer.compute_loss`` adds it:
    ``coef * torch.mean((rewards_chosen + rewards_rejected) ** 2)``; it pins the reward scale's
    free offset near 0. The BT term matches both TRL and the goal-conditioned RM's
    ``openrlhf/models/loss.py::PairWiseLoss``.

    Metrics: ``loss``, ``accuracy`` (share with r⁺ > r⁻, ties count as wrong), ``reward_margin``
    (mean r⁺ − r⁻), ``chosen_reward``, ``rejected_reward`` and, when c > 0, ``center_penalty``.
    """
    diff = chosen - rejected
    logits = diff if margin is None else diff - margin
    # logsigmoid, not log(sigmoid(·)): exact for large negative logits instead of log(0) = −inf
    loss = -F.logsigmoid(logits).mean()
    metrics: dict[str, float] = {}
    if center_coef > 0:
        penalty = torch.mean((chosen + rejected) ** 2)
        loss = loss + center_coef * penalty
        metrics["center_penalty"] = penalty.item()
    d = diff.detach()
    metrics.update(
        loss=loss.item(),
        accuracy=(d > 0).float().mean().item(),
        reward_margin=d.mean().item(),
        chosen_reward=chosen.detach().mean().item(),
        rejected_reward=rejected.detach().mean().item(),
    )
    return loss, metrics


# ---------------------------------------------------------------------------------------------
# Goal-conditioned contrastive RM
# ---------------------------------------------------------------------------------------------


def _positions_from_end(u: Tensor, percentile: float, span_len: int, span_start: int) -> Tensor:
    """Official position draw for uniforms u ∈ [0, 1): p = (percentile − 1)·u + 1 ∈ (percentile, 1],
    k = ⌊p·n + 1⌋ counted from the END of the span (k = 1 is its last token), position = start + n − k.
    """
    pct = (percentile - 1.0) * u + 1.0
    # float32 arithmetic and floor, as the official code (chosen_na is a float32 tensor)
    k = (pct * float(span_len) + 1.0).floor().long()
    # k = n + 1 only when u == 0 exactly (p = 1): the official code then reads the token just
    # before the window; here it is clamped into the span so every position stays inside it
    k = k.clamp(1, span_len)
    return span_start + span_len - k


def sample_goal_positions(
    chosen_len: int,
    rejected_len: int,
    num_pairs: int = 16,
    generator: torch.Generator | None = None,
    chosen_start: int = 0,
    rejected_start: int = 0,
    *,
    num_negatives: int | None = None,
    source_percentile: float = 0.0,
    goal_percentile: float = 0.0,
) -> tuple[Tensor, Tensor]:
    """Sample the positions of the contrastive goal loss for ONE preference pair.

    The chosen response occupies positions [chosen_start, chosen_start + chosen_len) of its
    sequence, the rejected one [rejected_start, rejected_start + rejected_len). Returns

        positives [num_pairs, 2]      (source, goal), both in the chosen span, source ≤ goal
        negatives [num_negatives, 2]  (chosen-span position, rejected-span position)

    as int64 absolute positions (``num_negatives`` defaults to ``num_pairs``; official:
    ``sim_samples`` = ``unsim_samples`` = 16).

    Follows ``openrlhf/models/loss.py::ContrastiveGoalLoss.forward`` of the official code, which
    draws in this order (so one generator state gives the official draw, batch size 1):

    * positives: u = rand(2, S) sorted along the first axis (u₀ ≤ u₁);
      source p = (ps − 1)·u₀ + 1, goal p = (pg − 1)·u₁ + 1; each p maps to k = ⌊p·n + 1⌋ tokens
      from the end of the span. With ps = pg (the released recipe ``train_contrastive_rm.sh``
      uses ``--source_state_percentile 0 --goal_state_percentile 0``) p_source ≥ p_goal, so the
      source is never after the goal. With percentile 0 the positions are uniform over the span.
    * negatives: u = rand(S') for the chosen side (with ps), then u = rand(S') for the rejected
      side (with pg).

    Differences from the plain spec, all from the official code:

    * The official span is not exactly "the response tokens": it is the last ``n`` positions of
      the left-padded sequence, where ``n`` is the response's token count when tokenized alone
      (``openrlhf/datasets/reward_dataset.py``: ``chosen_num_actions``) and the sequence is
      ``prompt + response + " " + eos``. So the window ends at the EOS token and is shifted right
      by the separator/EOS tokens. To reproduce it, pass ``start = seq_end − n``, ``len = n``.
    * ``source_percentile`` / ``goal_percentile`` (official ``source_state_percentile`` /
      ``goal_state_percentile``) restrict p to (percentile, 1], i.e. to the EARLY 1 − percentile
      share of the span. The negatives' chosen side uses the source percentile, the rejected side
      the goal percentile. With ps ≠ pg, source ≤ goal is not guaranteed (official behaviour).
    * Position k = n + 1 (only when a uniform is exactly 0) is clamped into the span here.
    """
    if chosen_len < 1 or rejected_len < 1:
        raise ValueError(f"spans must be non-empty, got chosen_len={chosen_len}, rejected_len={rejected_len}")
    if num_pairs < 1:
        raise ValueError(f"num_pairs must be >= 1, got {num_pairs}")
    n_neg = num_pairs if num_negatives is None else num_negatives
    if n_neg < 1:
        raise ValueError(f"num_negatives must be >= 1, got {n_neg}")

    u = torch.rand(2, num_pairs, generator=generator).sort(dim=0).values
    source = _positions_from_end(u[0], source_percentile, chosen_len, chosen_start)
    goal = _positions_from_end(u[1], goal_percentile, chosen_len, chosen_start)
    u_c = torch.rand(n_neg, generator=generator)
    u_r = torch.rand(n_neg, generator=generator)
    neg_c = _positions_from_end(u_c, source_percentile, chosen_len, chosen_start)
    neg_r = _positions_from_end(u_r, goal_percentile, rejected_len, rejected_start)
    return torch.stack([source, goal], dim=-1), torch.stack([neg_c, neg_r], dim=-1)


def contrastive_goal_loss_batch(
    h_chosen: Tensor,
    h_rejected: Tensor,
    positives: Tensor,
    negatives: Tensor,
    beta: float = 0.5,
    strategy: str = "cosine",
) -> tuple[Tensor, dict[str, float]]:
    """The goal-conditioned contrastive loss over a micro-batch of B pairs, as the official
    ``openrlhf/models/loss.py::ContrastiveGoalLoss`` computes it:

        P = mean_{b,i,j} σ(cos(h⁺_b[src_bi], h⁺_b[goal_bj]))
        N = mean_{b,i,j} σ(cos(h⁺_b[c_bi],   h⁻_b[r_bj]))
        L = β · ( −log P − log(1 − N) )                                     β = 0.5

    ``h_chosen`` [B, T, H], ``h_rejected`` [B, T', H] (rows may be padded: positions are absolute
    column indices), ``positives`` [B, S, 2] = (src, goal), ``negatives`` [B, S', 2] = (c, r), as
    stacked from ``sample_goal_positions``. ``trainers`` add L to the Bradley–Terry loss
    (``openrlhf/trainer/rm_trainer.py``: ``preference_loss += contrastive_loss``; β is inside L).

    Differences from the plain spec ("16 pairs, cosine → sigmoid → mean"), all official:

    * ALL S × S combinations (i, j) enter the means, not the S sampled pairs: the code takes
      ``cosine_similarity(src.unsqueeze(2), goal.unsqueeze(1))`` → [B, S, S]. So only the S
      diagonal pairs have source ≤ goal; off-diagonal ones may have the goal first. Likewise the
      negatives compare every sampled chosen state with every sampled rejected state.
    * The mean runs over the whole micro-batch BEFORE the log (−log of a batch mean, not a batch
      mean of per-pair losses). The released recipe uses ``micro_train_batch_size 1`` with
      gradient accumulation, where the two coincide; for B > 1 they do not.
    * No eps in the logs: σ(cos) ∈ [σ(−1), σ(1)] = [0.269, 0.731], so neither log can see 0.
      The cosine is ``F.cosine_similarity`` (eps 1e-8), as in the official code.
    * ``strategy="cosine_avg"`` (official option, not the released recipe): the goal states (and,
      for N, the rejected states) are first averaged over the S samples of each pair.

    Computed in float32 (the official code uses the trunk's dtype, bf16 in its recipe): cosines
    of bf16 vectors lose ~3 digits, and the loss is a small difference of logs.

    Metrics: ``contrastive_loss``, ``pos_sigmoid`` (P), ``neg_sigmoid`` (N), ``pos_cos``,
    ``neg_cos`` (mean cosines).
    """
    if strategy not in CONTRASTIVE_STRATEGIES:
        raise UserError(
            f"contrastive strategy {strategy!r} is not valid; valid: {', '.join(CONTRASTIVE_STRATEGIES)}"
        )
    rows = torch.arange(h_chosen.size(0), device=h_chosen.device).unsqueeze(1)
    hc, hr = h_chosen.float(), h_rejected.float()
    positives, negatives = positives.to(h_chosen.device), negatives.to(h_chosen.device)

    source = hc[rows, positives[..., 0]]  # [B, S, H]
    goal = hc[rows, positives[..., 1]]  # [B, S, H]
    if strategy == "cosine_avg":
        goal = goal.mean(dim=1, keepdim=True)
    pos_cos = F.cosine_similarity(source.unsqueeze(2), goal.unsqueeze(1), dim=-1)  # [B, S, S]
    pos_sig = torch.sigmoid(pos_cos).mean()

    neg_c = hc[rows, negatives[..., 0]]  # [B, S', H]
    neg_r = hr[rows, negatives[..., 1]]  # [B, S', H]
    if strategy == "cosine_avg":
        neg_r = neg_r.mean(dim=1, keepdim=True)
    neg_cos = F.cosine_similarity(neg_c.unsqueeze(2), neg_r.unsqueeze(1), dim=-1)  # [B, S', S']
    neg_sig = torch.sigmoid(neg_cos).mean()

    loss = beta * (-torch.log(pos_sig) - torch.log(1.0 - neg_sig))
    metrics = {
        "contrastive_loss": loss.item(),
        "pos_sigmoid": pos_sig.item(),
        "neg_sigmoid": neg_sig.item(),
        "pos_cos": pos_cos.detach().mean().item(),
        "neg_cos": neg_cos.detach().mean().item(),
    }
    return loss, metrics


def contrastive_goal_loss(
    h_chosen: Tensor,
    h_rejected: Tensor,
    positives: Tensor,
    negatives: Tensor,
    beta: float = 0.5,
    strategy: str = "cosine",
) -> tuple[Tensor, dict[str, float]]:
    """``contrastive_goal_loss_batch`` for ONE pair: ``h_chosen`` [T, H], ``h_rejected`` [T', H],
    ``positives`` [S, 2], ``negatives`` [S', 2]:

        L = β · ( −log mean_{i,j} σ(cos(h⁺[src_i], h⁺[goal_j]))
                  − log(1 − mean_{i,j} σ(cos(h⁺[c_i], h⁻[r_j]))) )

    (all S × S combinations, as the official code; see the batched function).
    """
    return contrastive_goal_loss_batch(
        h_chosen.unsqueeze(0),
        h_rejected.unsqueeze(0),
        positives.unsqueeze(0),
        negatives.unsqueeze(0),
        beta=beta,
        strategy=strategy,
    )


def goal_vector(last_hidden: Tensor) -> Tensor:
    """Goal state g = (1/N) Σ_n h_n from the last-token hidden states [N, H] of N preferred
    (correct) responses; float32 [H].

    As ``examples/get_representation.py`` of the official code: a plain mean of the raw states
    (it accumulates ``sum(axis=0) / len(sequences)``), with no normalisation before or after
    averaging; Q_t is a cosine, so the scale of g does not matter but the unnormalised mean
    weights long-norm states more. There the sequences are ``template + correct solution``
    WITHOUT the ``" " + eos`` appended in training, left-padded, so "last token" is the last
    solution token; which position the caller takes is its choice.
    """
    return last_hidden.float().mean(dim=0)


def q_values(hidden: Tensor, goal: Tensor) -> Tensor:
    """Q_t = cos(h_t, g) for hidden [..., T, H] and goal [H]; returns [..., T] (float32).

    As the official ``examples/eval_rm.py``: ``cosine_similarity(hidden_states, goal[None, None, :],
    dim=2)`` (eps 1e-8), then the caller keeps the last ``num_actions`` positions (the response).
    """
    return F.cosine_similarity(hidden.float(), goal.float(), dim=-1)


# ---------------------------------------------------------------------------------------------
# Process reward model (step labels)
# ---------------------------------------------------------------------------------------------


def hard_step_label(y):
    """Math-Shepherd's hard label of a step: 1[y > 0], "some completion from this step reaches
    the answer", where y, the soft label, is the share of the step's completions that do.

    One definition for PRM training (``hard_ce``), its step accuracy, ``telos eval rm`` and the
    labels ``eval/rm_data.py`` writes. Works on a float (→ bool) and on a tensor (→ bool tensor).
    """
    return y > 0


def prm_loss(
    logits: Tensor, labels: Tensor, mask: Tensor, kind: str = "soft_ce"
) -> tuple[Tensor, dict[str, float]]:
    """Process-RM loss, mean over the labelled positions (the last token of each step, ``mask``).

    ``labels`` y ∈ [0, 1] (hard labels are 0/1), same shape as ``mask``; values where ``mask`` is
    0 are never read (may be −100 or NaN), nor are the logits there. ``kind``:

        "soft_ce": logits [..., 2],  ℓ = −(1 − y)·log softmax(z)₀ − y·log softmax(z)₁
        "hard_ce": logits [..., 2],  the same with y replaced by 1[y > 0] (``hard_step_label``)
        "mse":     logits [...],     ℓ = (σ(z) − y)²

        L = Σ_t m_t ℓ_t / Σ_t m_t          (0 when no position is labelled)

    Metrics: ``loss``, ``step_accuracy`` (1[p > 0.5] == 1[y > 0], p = softmax(z)₁ or σ(z);
    0.0 when no position is labelled) and ``num_steps``.
    """
    if kind not in PRM_KINDS:
        raise UserError(f"prm loss kind {kind!r} is not valid; valid: {', '.join(PRM_KINDS)}")
    two_class = kind != "mse"
    value_shape = logits.shape[:-1] if two_class else logits.shape
    if two_class and logits.shape[-1] != 2:
        raise ValueError(f"prm {kind} needs logits [..., 2], got {tuple(logits.shape)}")
    if value_shape != labels.shape or labels.shape != mask.shape:
        raise ValueError(
            f"prm shapes do not match: logits {tuple(logits.shape)}, labels {tuple(labels.shape)}, "
            f"mask {tuple(mask.shape)}"
        )
    keep = mask.bool()
    # boolean indexing, not multiply-by-mask: unlabelled positions may hold NaN/inf (0·NaN = NaN)
    z = logits[keep].float()
    y = labels[keep].float()
    n = int(y.numel())
    if two_class:
        if kind == "hard_ce":
            y = hard_step_label(y).float()
        logp = F.log_softmax(z, dim=-1)
        per_step = -((1.0 - y) * logp[:, 0] + y * logp[:, 1])
        p = logp[:, 1].exp()
    else:
        p = torch.sigmoid(z)
        per_step = (p - y) ** 2
    loss = per_step.sum() / max(n, 1)
    correct = ((p.detach() > 0.5) == hard_step_label(labels[keep])).float()
    metrics = {
        "loss": loss.item(),
        "step_accuracy": correct.mean().item() if n else 0.0,
        "num_steps": float(n),
    }
    return loss, metrics
