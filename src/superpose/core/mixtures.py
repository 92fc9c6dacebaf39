"""Causal output mixtures of M models' next-token distributions, in log space.

Position t's logits predict token t+1. The weight of model m at position t may depend only on the
tokens x_1..x_t already seen, through the log-likelihood each model gave them:

* Bayes: log w_m(t) = log π_m + Σ_{i<t} log p_m(x_{i+1} | x_≤i), normalised (uniform π, reset per sequence).
* Fixed share (Herbster & Warmuth): after each Bayesian update, w ← (1 − ρ) w + ρ / M, so the weights can
  follow a switch inside a sequence; ρ = 0 is Bayes.
* Rate mixture: a Bayesian mixture, uniform prior, over fixed-share filters at a grid of rates. Each filter is
  weighted by how well it predicted the tokens seen so far, so the mixture learns the switching rate as it
  reads; it is still a mixture of the M models, with weights Σ_k β_k(t) w_k(t).

Padding (label -100) adds no evidence.
"""
from __future__ import annotations

import math

import torch

from superpose.core.metrics import IGNORE_INDEX


def scored_positions(labels: torch.Tensor) -> torch.Tensor:
    """(B, T) labels -> (B, T) bool: positions whose next token is scored (the last position never is)."""
    return torch.nn.functional.pad(labels[:, 1:] != IGNORE_INDEX, (0, 1), value=False)


def pick(values: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(..., V) values and (...) token ids -> (...) the values at those ids: the next token's log-prob."""
    return values.gather(-1, targets.unsqueeze(-1)).squeeze(-1)


def log_prob_of(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(..., V) logits and (...) token ids -> (...) log-softmax at those ids, in at least float32."""
    # log_softmax is one fused kernel; torch.logsumexp on the CPU is several passes, about 4x slower here
    return pick(torch.log_softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)), dim=-1), targets)


def token_log_probs(log_probs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(M, B, T, V) log-probs and (B, T) labels -> (M, B, T): log p_m(x_{t+1} | x_≤t), 0 where nothing is scored.

    The last position predicts nothing inside the sequence, so it is 0 too.
    """
    targets = labels[:, 1:]  # (B, T-1)
    valid = targets != IGNORE_INDEX
    picked = pick(log_probs[:, :, :-1], targets.clamp(min=0).expand(log_probs.shape[0], -1, -1))  # (M, B, T-1)
    picked = picked.masked_fill(~valid[None], 0.0)
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
                     state: torch.Tensor | None = None,
                     prior: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Fixed-share weights *after* each position's evidence, continuing from `state` (M, B) log-weights.

    `prior` (M,) log-probabilities: where each step shares its `rate` to (default uniform; a caller with another
    prior starts `state` there too).

    (M, B, T) evidence, (B, T) observed -> ((M, B, T) log-weights, (M, B) the last of them): the form a
    cache carries from one generation step to the next. A position with no evidence leaves the weights alone.
    `rate` is one number or one per column (B,), so several rates run as one batch.

    One update is linear in probability space: w' ∝ K diag(exp(e_t)) w with K = (1 - ρ) I + ρ/M 11ᵀ (a Bayes
    step, then the share; normalising commutes with it). So the weights after position t are the normalised
    product A_t ⋯ A_1 w_0, and the products for every t come from an associative (Hillis-Steele) scan of log
    M×M matrices: log2(T) batched steps instead of a Python loop over positions. It runs in float64, each
    partial product rescaled so its largest entry is 1, and matches the step-by-step update to rounding.
    """
    models, columns, length = evidence.shape
    work = torch.float64
    rate = torch.as_tensor(rate, dtype=work, device=evidence.device).expand(columns)  # (B,)
    eye = torch.eye(models, dtype=torch.bool, device=evidence.device)
    keep = torch.log1p(-rate)[:, None, None]  # log 0 = -inf: rate 0 is Bayes, 1 forgets all
    if prior is None:
        share = torch.log(rate / models)[:, None, None]
    else:  # K[i, j] = (1 - rate) δ_ij + rate π_i: the share lands on row i in proportion to its prior
        share = (torch.log(rate)[:, None] + prior.to(evidence.device, work)[None])[:, :, None]  # (B, M, 1)
    log_k = torch.where(eye, torch.logaddexp(keep, share), share).expand(columns, models, models)  # (B, M, M)
    steps = log_k[:, None] + evidence.to(work).permute(1, 2, 0)[:, :, None, :]  # (B, T, M, M): K diag(e^{e_t})
    identity = torch.zeros(models, models, dtype=work, device=evidence.device).masked_fill(~eye, -math.inf)
    products = torch.where(observed[:, :, None, None], steps, identity)  # a position without evidence: I
    offset = 1
    while offset < length:  # products[t] = A_t ⋯ A_{max(t - 2·offset + 1, 1)} after this step
        later, earlier = products[:, offset:], products[:, :-offset]
        combined = torch.logsumexp(later[..., :, :, None] + earlier[..., None, :, :], dim=-2)  # (B, T-s, M, M)
        combined = combined - combined.amax(dim=(-2, -1), keepdim=True)  # rescale: the scale cancels below
        products = torch.cat([products[:, :offset], combined], dim=1)
        offset *= 2
    start = state if state is not None else torch.full_like(evidence[:, :, 0], -math.log(models))  # (M, B)
    log_w = torch.logsumexp(products + start.to(work).T[:, None, None, :], dim=-1)  # (B, T, M)
    log_w = torch.log_softmax(log_w, dim=-1).permute(2, 0, 1).to(evidence.dtype)  # (M, B, T)
    last = log_w[:, :, -1] if length else start
    return log_w, last


RATE_GRID = (0.0, 0.001, 0.005, 0.02, 0.05, 0.1, 0.2)  # the rate mixture's default switching rates


def filter_log_likelihoods(log_w: torch.Tensor, evidence: torch.Tensor, observed: torch.Tensor) -> torch.Tensor:
    """(K, M, B, T) each filter's weights *before* position t's evidence, (M, B, T) evidence, (B, T) observed
    -> (K, B, T) log-likelihood each filter gave that evidence (0 where it does not count)."""
    likelihood = torch.logsumexp(log_w.float() + evidence.float()[None], dim=1)
    return likelihood.masked_fill(~observed.bool()[None], 0.0)


def mix_rates(log_w: torch.Tensor, seen: torch.Tensor) -> torch.Tensor:
    """(K, M, B, T) the filters' log-weights and (K, B, T) each filter's log-likelihood of what it has seen ->
    (M, B, T) log-weights of the rate mixture: log Σ_k β_k w_k with β = softmax over filters (uniform prior)."""
    log_beta = torch.log_softmax(seen.float(), dim=0)
    return torch.logsumexp(log_beta[:, None] + log_w.float(), dim=0)


def rate_mixture_log_weights(evidence: torch.Tensor, rates=RATE_GRID,
                             observed: torch.Tensor | None = None) -> torch.Tensor:
    """(M, B, T) -> (M, B, T) log-weights of the rate mixture used at each position (before its own target)."""
    if not rates:
        raise ValueError("the rate mixture needs at least one rate")
    if observed is None:
        observed = (evidence != 0).any(dim=0)
    filters = torch.stack([fixed_share_log_weights(evidence, rate, observed) for rate in rates])  # (K, M, B, T)
    likelihood = filter_log_likelihoods(filters, evidence, observed)
    seen = torch.cumsum(likelihood, dim=-1) - likelihood  # Σ_{i<t}: position t has not seen its own target yet
    return mix_rates(filters, seen)


def mix(log_probs, log_weights: torch.Tensor) -> torch.Tensor:
    """M log-probs (B, T, V): a sequence, or stacked (M, B, T, V); (M, B, T) log weights (or broadcastable, e.g.
    (M, 1, 1)) -> (B, T, V) float32 log-probs of the mixture, log Σ_m w_m p_m: the one home of this sum.

    One model at a time, on the first one's device: no (M, B, T, V) float32 copy is made."""
    home = log_probs[0].device
    mixed = log_probs[0].float() + log_weights[0].to(home).unsqueeze(-1)
    # a fold of logaddexp: torch.logsumexp over the models' dimension is several passes, about 3x slower on CPU
    for m in range(1, len(log_probs)):
        mixed = torch.logaddexp(mixed, log_probs[m].float().to(home) + log_weights[m].to(home).unsqueeze(-1))
    return mixed
