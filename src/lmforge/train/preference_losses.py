"""Preference losses as the papers write them, each returning `(loss, metrics)`.

Every loss takes per-sequence log-probabilities of the completions (prompt tokens masked out):
summed over tokens for DPO, KTO and the reward model's inputs, averaged over tokens for SimPO and
ORPO (their papers define the likelihood per token). `sequence_logps` turns a model's logits and
labels into the sums and token counts; divide one by the other for the averages.

Metrics are plain floats under TRL's names and with TRL's meaning, so runs compare line by line:
`rewards/chosen`, `rewards/rejected`, `rewards/accuracies`, `rewards/margins`, `logps/chosen`,
`logps/rejected` (+ `kl` for KTO, `nll_loss`/`log_odds_*` for ORPO, `accuracy`/`margin` and the
reward range for the reward model). Metrics that need the logits themselves (`logits/chosen`,
entropy) belong to the trainer. Each loss is averaged over the pairs (or examples) of the batch.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

from lmforge.data.examples import IGNORE_INDEX
from lmforge.errors import LmforgeError

DPO_LOSS_TYPES = ("sigmoid", "ipo", "hinge")
DpoLossType = Literal["sigmoid", "ipo", "hinge"]
Metrics = dict[str, float]


def sequence_logps(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed log-probability of each row's labelled tokens, and how many tokens were summed.

    `labels` is unshifted (as the collator gives it): the logits at position t score label t+1;
    positions labelled IGNORE_INDEX are left out. The log-softmax runs one row at a time in
    float32, so a bf16 batch never holds a full float32 copy of its logits.
    """
    if logits.shape[:-1] != labels.shape:
        raise LmforgeError(
            f"sequence_logps: logits {tuple(logits.shape)} and labels {tuple(labels.shape)} disagree on "
            "(batch, length); pass the labels of the same batch the logits came from"
        )
    logits, labels = logits[:, :-1], labels[:, 1:]
    mask = labels != IGNORE_INDEX
    safe_labels = labels.masked_fill(~mask, 0).unsqueeze(-1)
    rows = []
    for row_logits, row_labels in zip(logits, safe_labels):
        row_logits = row_logits.float()
        picked = row_logits.gather(-1, row_labels).squeeze(-1)
        rows.append(picked - torch.logsumexp(row_logits, dim=-1))
    per_token = torch.stack(rows) * mask
    return per_token.sum(-1), mask.sum(-1)


def reward_pairwise_loss(
    chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor, margin: torch.Tensor | None = None
) -> tuple[torch.Tensor, Metrics]:
    """Bradley-Terry loss of a reward model: -log σ(r_chosen - r_rejected - margin).

    InstructGPT (Ouyang et al. 2022, eq. 1); the optional per-pair `margin` is Llama 2's (Touvron
    et al. 2023, eq. 2). `margin` in the metrics is the mean r_chosen - r_rejected, without it.
    """
    _same_shape(chosen_rewards, rejected_rewards, "reward_pairwise_loss")
    diff = chosen_rewards - rejected_rewards
    shifted = diff if margin is None else diff - margin.to(diff)
    loss = -F.logsigmoid(shifted).mean()
    with torch.no_grad():
        both = torch.cat([chosen_rewards, rejected_rewards]).float()
        metrics = {
            "accuracy": _mean(diff > 0),
            "margin": _mean(diff),
            "min_reward": both.min().item(),
            "mean_reward": both.mean().item(),
            "max_reward": both.max().item(),
        }
    return loss, metrics


def dpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    reference_chosen_logps: torch.Tensor,
    reference_rejected_logps: torch.Tensor,
    *,
    beta: float = 0.1,
    loss_type: DpoLossType = "sigmoid",
    label_smoothing: float = 0.0,
    chosen_lengths: torch.Tensor | None = None,
    rejected_lengths: torch.Tensor | None = None,
) -> tuple[torch.Tensor, Metrics]:
    """DPO and its siblings on h = log πθ(y_w)/π_ref(y_w) - log πθ(y_l)/π_ref(y_l) (summed log-probs).

    - sigmoid: -log σ(β h) (Rafailov et al. 2023, eq. 7). With `label_smoothing` ε it is
      conservative DPO (Mitchell 2023, "A note on DPO with noisy preferences"):
      -(1-ε) log σ(β h) - ε log σ(-β h), the expected loss when each label is flipped with probability ε.
    - ipo: (h - 1/(2β))², β being τ (Azar et al. 2023, eq. 17). Given `chosen_lengths` and
      `rejected_lengths` (completion token counts), each log-ratio is divided by its length first,
      the per-token form TRL uses (TRL notes that the IPO authors' experiments used it).
    - hinge: max(0, 1 - β h), SLiC's hinge (Zhao et al. 2023) on DPO's log-ratios, as in RSO (Liu et al. 2023).

    Rewards in the metrics are β · log πθ/π_ref, the paper's implicit reward.
    """
    _check_dpo_args(beta, loss_type, label_smoothing, chosen_lengths, rejected_lengths)
    for t in (policy_rejected_logps, reference_chosen_logps, reference_rejected_logps):
        _same_shape(policy_chosen_logps, t, "dpo_loss")
    chosen_logratios = policy_chosen_logps - reference_chosen_logps
    rejected_logratios = policy_rejected_logps - reference_rejected_logps
    h = chosen_logratios - rejected_logratios
    if loss_type == "sigmoid":
        losses = -(1 - label_smoothing) * F.logsigmoid(beta * h) - label_smoothing * F.logsigmoid(-beta * h)
    elif loss_type == "ipo":
        if chosen_lengths is not None and rejected_lengths is not None:
            h = chosen_logratios / chosen_lengths.clamp(min=1) - rejected_logratios / rejected_lengths.clamp(min=1)
        losses = (h - 1 / (2 * beta)) ** 2
    else:
        losses = torch.relu(1 - beta * h)
    metrics = _reward_metrics(beta * chosen_logratios, beta * rejected_logratios)
    metrics.update(_logps_metrics(policy_chosen_logps, policy_rejected_logps))
    return losses.mean(), metrics


def chosen_nll(policy_chosen_logps: torch.Tensor, chosen_lengths: torch.Tensor) -> torch.Tensor:
    """The chosen replies' negative log-likelihood per token, over all of the batch's chosen tokens
    (RPO's NLL term; TRL's DPO loss_type "sft")."""
    _same_shape(policy_chosen_logps, chosen_lengths, "chosen_nll")
    return -policy_chosen_logps.sum() / chosen_lengths.sum().clamp(min=1)


def simpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    *,
    beta: float = 2.0,
    gamma: float = 0.5,
) -> tuple[torch.Tensor, Metrics]:
    """SimPO (Meng et al. 2024, eq. 6): -log σ(β/|y_w| log πθ(y_w) - β/|y_l| log πθ(y_l) - γ).

    Takes the length-averaged log-probs (sum / completion tokens); no reference model. `gamma` is the
    paper's target reward margin γ (TRL's CPOConfig calls it `simpo_gamma`).
    """
    _check_positive(beta, "beta", "simpo_loss")
    _same_shape(policy_chosen_logps, policy_rejected_logps, "simpo_loss")
    chosen_rewards = beta * policy_chosen_logps
    rejected_rewards = beta * policy_rejected_logps
    losses = -F.logsigmoid(chosen_rewards - rejected_rewards - gamma)
    metrics = _reward_metrics(chosen_rewards, rejected_rewards)
    metrics.update(_logps_metrics(policy_chosen_logps, policy_rejected_logps))
    return losses.mean(), metrics


def orpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    *,
    beta: float = 0.1,
) -> tuple[torch.Tensor, Metrics]:
    """ORPO (Hong et al. 2024, eq. 6): L_SFT + λ · L_OR, with `beta` standing for λ as in TRL.

    Takes the length-averaged log-probs of the completions, log P(y|x) = (1/m) Σ log πθ(y_t|…)
    (the paper's eq. 2 defines the likelihood per token). L_OR = -log σ(log odds(y_w) - log odds(y_l))
    with odds(y) = P/(1-P) (eqs. 4 and 7); L_SFT is the chosen completion's mean token NLL, averaged
    over the batch (eq. 1), i.e. -mean(policy_chosen_logps). No reference model.
    """
    _check_positive(beta, "beta", "orpo_loss")
    _same_shape(policy_chosen_logps, policy_rejected_logps, "orpo_loss")
    chosen, rejected = policy_chosen_logps.float(), policy_rejected_logps.float()
    log_odds = (chosen - rejected) - (_log1mexp(chosen) - _log1mexp(rejected))
    log_sigmoid_odds = F.logsigmoid(log_odds)
    nll = -chosen.mean()
    loss = nll - beta * log_sigmoid_odds.mean()
    metrics = _reward_metrics(beta * chosen, beta * rejected)
    metrics.update(_logps_metrics(chosen, rejected))
    metrics["nll_loss"] = nll.item()
    metrics["log_odds_ratio"] = log_sigmoid_odds.mean().item()  # TRL's name for mean log σ(log odds ratio)
    metrics["log_odds_chosen"] = log_odds.mean().item()  # and for the mean log odds ratio itself
    return loss, metrics


def kto_loss(
    policy_logps: torch.Tensor,
    reference_logps: torch.Tensor,
    desirable: torch.Tensor,
    policy_kl_logps: torch.Tensor | None,
    reference_kl_logps: torch.Tensor | None,
    *,
    beta: float = 0.1,
    desirable_weight: float = 1.0,
    undesirable_weight: float = 1.0,
) -> tuple[torch.Tensor, Metrics]:
    """KTO (Ethayarajh et al. 2024): the mean over examples of λ_y - v(x, y).

    r = log πθ(y|x)/π_ref(y|x) (summed log-probs), v = λ_D σ(β(r - z0)) for a desirable example and
    λ_U σ(β(z0 - r)) for an undesirable one. The reference point z0 estimates KL(πθ || π_ref) from
    mismatched pairs: the caller scores each prompt x_i with another example's completion — the
    batch's completions rotated by one, see `data.pairs.kl_mismatch_order` — under the policy
    (`policy_kl_logps`, computed without gradient) and the reference (`reference_kl_logps`); here
    z0 = max(0, mean(policy_kl_logps - reference_kl_logps)), detached. Pass None for both to use
    z0 = 0. The batch mean is per process; TRL also averages it across processes.
    """
    _check_positive(beta, "beta", "kto_loss")
    _same_shape(policy_logps, reference_logps, "kto_loss")
    _same_shape(policy_logps, desirable, "kto_loss")
    if (policy_kl_logps is None) != (reference_kl_logps is None):
        raise LmforgeError("kto_loss: pass both policy_kl_logps and reference_kl_logps, or neither (z0 = 0)")
    if policy_kl_logps is None:
        kl = policy_logps.new_zeros(())
    else:
        kl = (policy_kl_logps - reference_kl_logps).mean().detach().clamp(min=0)
    desirable = desirable.bool()
    logratios = policy_logps - reference_logps
    losses = torch.where(
        desirable,
        desirable_weight * (1 - torch.sigmoid(beta * (logratios - kl))),
        undesirable_weight * (1 - torch.sigmoid(beta * (kl - logratios))),
    )
    return losses.mean(), _kto_metrics(beta * logratios.detach(), policy_logps.detach(), desirable, kl)


def _kto_metrics(rewards: torch.Tensor, logps: torch.Tensor, desirable: torch.Tensor, kl: torch.Tensor) -> Metrics:
    metrics = {"kl": kl.item()}
    for side, mask in (("chosen", desirable), ("rejected", ~desirable)):
        if mask.any():
            metrics[f"rewards/{side}"] = rewards[mask].float().mean().item()
            metrics[f"logps/{side}"] = logps[mask].float().mean().item()
    if desirable.any() and (~desirable).any():
        metrics["rewards/margins"] = metrics["rewards/chosen"] - metrics["rewards/rejected"]
    return metrics


def _reward_metrics(chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor) -> Metrics:
    chosen, rejected = chosen_rewards.detach(), rejected_rewards.detach()
    return {
        "rewards/chosen": _mean(chosen),
        "rewards/rejected": _mean(rejected),
        "rewards/accuracies": _mean(chosen > rejected),
        "rewards/margins": _mean(chosen - rejected),
    }


def _logps_metrics(chosen_logps: torch.Tensor, rejected_logps: torch.Tensor) -> Metrics:
    return {"logps/chosen": _mean(chosen_logps.detach()), "logps/rejected": _mean(rejected_logps.detach())}


def _mean(t: torch.Tensor) -> float:
    return t.float().mean().item()


def _log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(x)) for x < 0, switching form at -log 2 to keep precision (Mächler 2012)."""
    return torch.where(x < -0.6931471805599453, torch.log1p(-torch.exp(x)), torch.log(-torch.expm1(x)))


def _check_dpo_args(
    beta: float,
    loss_type: str,
    label_smoothing: float,
    chosen_lengths: torch.Tensor | None,
    rejected_lengths: torch.Tensor | None,
) -> None:
    _check_positive(beta, "beta", "dpo_loss")
    if loss_type not in DPO_LOSS_TYPES:
        raise LmforgeError(f"dpo_loss: loss_type {loss_type!r} is unknown; use one of {', '.join(DPO_LOSS_TYPES)}")
    if not 0.0 <= label_smoothing < 0.5:
        raise LmforgeError(
            f"dpo_loss: label_smoothing {label_smoothing} is outside [0, 0.5); it is the probability that a "
            "preference label is flipped (conservative DPO), e.g. 0.1"
        )
    if label_smoothing and loss_type != "sigmoid":
        raise LmforgeError(
            f"dpo_loss: label_smoothing applies to loss_type 'sigmoid' (conservative DPO), not {loss_type!r}; "
            "set it to 0 or use loss_type 'sigmoid'"
        )
    if (chosen_lengths is None) != (rejected_lengths is None):
        raise LmforgeError("dpo_loss: pass both chosen_lengths and rejected_lengths, or neither")
    if chosen_lengths is not None and loss_type != "ipo":
        raise LmforgeError(f"dpo_loss: completion lengths are used by loss_type 'ipo' only, not {loss_type!r}")


def _check_positive(value: float, name: str, where: str) -> None:
    if not value > 0:
        raise LmforgeError(f"{where}: {name} must be > 0, got {value}")


def _same_shape(a: torch.Tensor, b: torch.Tensor, where: str) -> None:
    if a.shape != b.shape or a.dim() != 1:
        raise LmforgeError(
            f"{where}: expected 1-D tensors of one value per sequence with equal shapes, got "
            f"{tuple(a.shape)} and {tuple(b.shape)}"
        )
