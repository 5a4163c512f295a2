"""Preference losses as pure tensor functions (no Ray, no vLLM).

Notation, one row per preference pair (x, y_w, y_l) and, for SELM, y_ref = the reference model's
own (greedy) answer to x. Every ``*_logps`` argument is a (B,) tensor of SUMMED response-token
log-probabilities, as produced by :func:`sequence_logps`.

    logits_i = (log pi(y_w|x) - log pi(y_l|x)) - (log pi_ref(y_w|x) - log pi_ref(y_l|x))

- DPO  (Rafailov et al., 2023, eq. 7):   loss_i = -logsigmoid(beta * logits_i)
- SELM (Zhang et al., 2024, arXiv 2405.19332, eq. 4.6 as implemented by its reference code):
      loss_i = -logsigmoid(beta * logits_i) + alpha * beta * (log pi(y_ref|x) - log pi_ref(y_ref|x))
  The optimism term lowers the policy's likelihood of the reference answer (exploration bias).
- IPO  (Azar et al., 2023, eq. 17):      loss_i = (logits_i - 1 / (2 * beta))^2
  The paper states IPO on length-normalised log-probs; we keep sums for one convention across
  losses, which makes beta scale with response length.

Every loss returns a scalar (mean over the batch). :func:`compute_loss` picks a loss by name and
also returns the per-batch metrics a trainer logs.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

__all__ = [
    "sequence_logps",
    "scattered_logps",
    "dpo_loss",
    "selm_loss",
    "ipo_loss",
    "preference_metrics",
    "compute_loss",
    "LossSpec",
    "LOSSES",
    "get_loss",
]


def sequence_logps(logits: torch.Tensor, labels: torch.Tensor, loss_mask: torch.Tensor) -> torch.Tensor:
    """Summed log-probability of the masked (response) tokens of each sequence.

    logits: (B, T, V) model outputs for input ids (B, T); position t predicts token t + 1.
    labels: (B, T) the input ids themselves (not pre-shifted).
    loss_mask: (B, T) 1 where labels[t] is a response token to score, 0 for prompt and padding.
    Returns (B,) in float32 (float64 if the logits are float64).
    """
    if logits.shape[:2] != labels.shape or labels.shape != loss_mask.shape:
        raise ValueError(
            f"shape mismatch: logits {tuple(logits.shape)}, labels {tuple(labels.shape)}, "
            f"loss_mask {tuple(loss_mask.shape)}; expected (B, T, V), (B, T), (B, T)"
        )
    dtype = torch.float64 if logits.dtype == torch.float64 else torch.float32
    logits = logits[:, :-1, :].to(dtype)  # (B, T-1, V): predicts tokens 1..T-1
    targets = labels[:, 1:]  # (B, T-1)
    mask = loss_mask[:, 1:].to(dtype)  # (B, T-1)
    # Padding positions may hold ids like -100; gather needs a valid index, the mask zeroes them.
    safe_targets = torch.where(mask > 0, targets, torch.zeros_like(targets))
    # gather - logsumexp == gather of log_softmax, without keeping a second (B, T, V) tensor alive
    picked = torch.gather(logits, 2, safe_targets.unsqueeze(-1)).squeeze(-1)  # (B, T-1)
    token_logps = picked - torch.logsumexp(logits, dim=-1)  # (B, T-1)
    return (token_logps * mask).sum(-1)  # (B,)


def scattered_logps(logits: torch.Tensor, targets: torch.Tensor, row: torch.Tensor, rows: int,
                    also_token: torch.Tensor | None = None, also_row: torch.Tensor | None = None) -> torch.Tensor:
    """Summed log-probabilities per row when the scored tokens are listed one by one.

    logits: (M, V) the logits that predict each scored token (any layout: packed sequences).
    targets: (M,) the token each predicts. row: (M,) the row (sequence) each belongs to.
    also_token, also_row: (K,) scored token also_token[j] counts for row also_row[j] too (a
    sequence that repeats another is scored from its twin's logits, not computed twice).
    Returns (rows,) in float32 (float64 for float64 logits); a row with no token sums to 0.
    """
    if logits.dim() != 2 or logits.shape[0] != targets.shape[0] or targets.shape != row.shape:
        raise ValueError(f"shape mismatch: logits {tuple(logits.shape)}, targets {tuple(targets.shape)}, "
                         f"row {tuple(row.shape)}; expected (M, V), (M,), (M,)")
    dtype = torch.float64 if logits.dtype == torch.float64 else torch.float32
    logits = logits.to(dtype)
    token_logps = torch.gather(logits, 1, targets.unsqueeze(1)).squeeze(1) - torch.logsumexp(logits, dim=-1)
    out = torch.zeros(rows, dtype=dtype, device=logits.device).index_add(0, row, token_logps)
    if also_token is not None and also_token.numel():
        if also_row is None or also_row.shape != also_token.shape:
            raise ValueError("also_token and also_row must have the same shape")
        out = out.index_add(0, also_row, token_logps[also_token])
    return out


def _preference_logits(pc, pr, rc, rr) -> torch.Tensor:
    return (pc - pr) - (rc - rr)  # (B,)


def _dpo_per_pair(pc, pr, rc, rr, beta: float) -> torch.Tensor:
    return -F.logsigmoid(beta * _preference_logits(pc, pr, rc, rr))  # (B,)


def dpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    beta: float,
) -> torch.Tensor:
    """Sigmoid DPO loss, mean over the batch (a scalar)."""
    return _dpo_per_pair(
        policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta
    ).mean()


def selm_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    policy_refresp_logps: torch.Tensor,
    ref_refresp_logps: torch.Tensor,
    beta: float,
    alpha: float,
) -> torch.Tensor:
    """SELM: DPO plus the optimism term on the reference response y_ref (scalar).

    ``ref_refresp_logps`` must carry no gradient (reference model); ``alpha = 0`` returns exactly
    :func:`dpo_loss` (the term is skipped, not multiplied by zero, so a non-finite y_ref log-prob
    cannot leak into plain DPO).
    """
    dpo = _dpo_per_pair(
        policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta
    )
    if alpha == 0:
        return dpo.mean()
    optimism = alpha * beta * (policy_refresp_logps - ref_refresp_logps.detach())  # (B,)
    return (dpo + optimism).mean()


def ipo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    beta: float,
) -> torch.Tensor:
    """IPO: squared distance of the preference logits from 1 / (2 beta), mean over the batch."""
    logits = _preference_logits(
        policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps
    )
    return ((logits - 1.0 / (2.0 * beta)) ** 2).mean()


def preference_metrics(pc, pr, rc, rr, beta: float) -> dict[str, float]:
    """Implicit DPO rewards r = beta * (log pi - log pi_ref) and their margins, batch means."""
    with torch.no_grad():
        chosen = beta * (pc - rc)
        rejected = beta * (pr - rr)
        margins = chosen - rejected
        return {
            "rewards/chosen": chosen.mean().item(),
            "rewards/rejected": rejected.mean().item(),
            "rewards/margins": margins.mean().item(),
            "rewards/accuracy": (margins > 0).float().mean().item(),
            "logps/chosen": pc.mean().item(),
            "logps/rejected": pr.mean().item(),
        }


@dataclass(frozen=True)
class LossSpec:
    """A registered loss: how to call it and whether it needs y_ref log-probs."""

    name: str
    fn: Callable[..., torch.Tensor]
    needs_ref_response: bool


LOSSES: dict[str, LossSpec] = {
    "dpo": LossSpec("dpo", dpo_loss, needs_ref_response=False),
    "selm": LossSpec("selm", selm_loss, needs_ref_response=True),
    "ipo": LossSpec("ipo", ipo_loss, needs_ref_response=False),
}


def get_loss(name: str) -> LossSpec:
    try:
        return LOSSES[name]
    except KeyError:
        raise ValueError(f"unknown loss {name!r}; choose one of {sorted(LOSSES)}") from None


def compute_loss(
    name: str,
    logps: dict[str, torch.Tensor],
    beta: float,
    alpha: float = 0.0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Loss by registry name plus trainer metrics.

    ``logps`` keys: policy_chosen, policy_rejected, ref_chosen, ref_rejected and, for losses that
    need y_ref, policy_refresp and ref_refresp; each a (B,) tensor.
    """
    spec = get_loss(name)
    pc, pr = logps["policy_chosen"], logps["policy_rejected"]
    rc, rr = logps["ref_chosen"], logps["ref_rejected"]
    if spec.needs_ref_response:
        if "policy_refresp" not in logps or "ref_refresp" not in logps:
            raise ValueError(f"loss {name!r} needs policy_refresp and ref_refresp log-probs (y_ref)")
        loss = spec.fn(pc, pr, rc, rr, logps["policy_refresp"], logps["ref_refresp"], beta, alpha)
    else:
        loss = spec.fn(pc, pr, rc, rr, beta)
    metrics = preference_metrics(pc, pr, rc, rr, beta)
    if spec.needs_ref_response:
        with torch.no_grad():
            metrics["logps/ref_response_gap"] = (
                logps["policy_refresp"] - logps["ref_refresp"]
            ).mean().item()
    metrics["loss"] = loss.item()
    return loss, metrics
