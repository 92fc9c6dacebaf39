"""Causal output mixtures of M models' next-token distributions (SPEC §10), in log space.

Position t's logits predict token t+1. The weight of model m at position t may depend only on the
tokens x_1..x_t already seen, through the log-likelihood each model gave them:

* Bayes: log w_m(t) = log π_m + Σ_{i<t} log p_m(x_{i+1} | x_≤i), normalised (uniform π, reset per sequence).
* Fixed share (Herbster & Warmuth): after each Bayesian update, w ← (1 − ρ) w + ρ / M, so the weights can
  follow a switch inside a sequence; ρ = 0 is Bayes.

Padding (label -100) adds no evidence.
"""
from __future__ import annotations

import math

import torch

from superpose.core.metrics import IGNORE_INDEX


def scored_positions(labels: torch.Tensor) -> torch.Tensor:
    """(B, T) labels -> (B, T) bool: positions whose next token is scored (the last position never is)."""
    return torch.nn.functional.pad(labels[:, 1:] != IGNORE_INDEX, (0, 1), value=False)


def token_log_probs(log_probs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(M, B, T, V) log-probs and (B, T) labels -> (M, B, T): log p_m(x_{t+1} | x_≤t), 0 where nothing is scored.

    The last position predicts nothing inside the sequence, so it is 0 too.
    """
    targets = labels[:, 1:]  # (B, T-1)
    valid = targets != IGNORE_INDEX
    picked = log_probs[:, :, :-1].gather(-1, targets.clamp(min=0)[None, ..., None].expand(log_probs.shape[0], -1, -1, 1))
    picked = picked.squeeze(-1).masked_fill(~valid[None], 0.0)  # (M, B, T-1)
    return torch.nn.functional.pad(picked, (0, 1))  # (M, B, T)


def bayes_log_weights(evidence: torch.Tensor) -> torch.Tensor:
    """(M, B, T) per-token log-likelihoods -> (M, B, T) log posterior weights used at each position."""
    seen = torch.cumsum(evidence, dim=-1) - evidence  # Σ_{i<t}: position t has not seen its own target yet
    return torch.log_softmax(seen, dim=0)


def fixed_share_log_weights(evidence: torch.Tensor, rate: float, observed: torch.Tensor | None = None) -> torch.Tensor:
    """(M, B, T) -> (M, B, T): Bayes updates, each followed by mixing a share `rate` back towards uniform.

    `observed` (B, T) marks the positions whose evidence counts (default: every nonzero one).
    """
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"fixed-share rate must be in [0, 1], got {rate}")
    if rate == 0.0:
        return bayes_log_weights(evidence)
    if observed is None:
        observed = (evidence != 0).any(dim=0)
    after, _ = fixed_share_scan(evidence, rate, observed)
    uniform = torch.full_like(evidence[:, :, :1], -math.log(evidence.shape[0]))
    return torch.cat([uniform, after[:, :, :-1]], dim=-1)  # position t has not seen its own target yet


def fixed_share_scan(evidence: torch.Tensor, rate: float | torch.Tensor, observed: torch.Tensor,
                     state: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Fixed-share weights *after* each position's evidence, continuing from `state` (M, B) log-weights.

    (M, B, T) evidence, (B, T) observed -> ((M, B, T) log-weights, (M, B) the last of them): the form a
    cache carries from one generation step to the next. A position with no evidence leaves the weights alone.
    `rate` is one number or one per column (B,), so several rates run as one batch.
    """
    models, _, length = evidence.shape
    rate = torch.as_tensor(rate, dtype=evidence.dtype, device=evidence.device)
    keep, share = torch.log1p(-rate), torch.log(rate / models)  # log 0 = -inf: rate 0 is Bayes, 1 forgets all
    log_w = state if state is not None else torch.full_like(evidence[:, :, 0], -math.log(models))  # (M, B)
    out = []
    for t in range(length):
        posterior = torch.log_softmax(log_w + evidence[:, :, t], dim=0)
        mixed = torch.logaddexp(posterior + keep, share.expand_as(posterior))
        log_w = torch.where(observed[None, :, t], mixed, log_w)
        out.append(log_w)
    return torch.stack(out, dim=-1), log_w


def mix(log_probs: torch.Tensor, log_weights: torch.Tensor) -> torch.Tensor:
    """(M, B, T, V) log-probs and (M, B, T) log weights -> (B, T, V) log-probs of the mixture."""
    return torch.logsumexp(log_probs + log_weights.unsqueeze(-1), dim=0)
