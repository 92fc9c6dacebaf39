"""Output temperature: the model's next-token distribution seen at a few temperatures, mixed causally.

Each expert is calibrated on text like its training data, and overconfident on text none of them was trained on
(package READMEs for a novels base and a code expert): there a flatter distribution scores better than any weighting
of the sharp ones, and no blend weights can supply it. So at inference the output is read at each temperature of
`output_temperatures` and those versions are mixed like the stacks are, by a rate mixture of fixed-share filters
over the tokens seen so far: the temperature is learned as the text is read, with no training and no data. The
filters start with `STAY_PRIOR` on T = 1, so on text the experts know the mixture stays at the plain output at a
small cost, bounded by -log(STAY_PRIOR) nats per sequence.

It applies in evaluation mode only (`model.eval()`, generation, scoring). Training fits the gate on its training
files, where the experts are calibrated and the mixture would sit at T = 1.

The cache carries its state under `CACHE_KEY` (each filter's weights and log-likelihood so far, the last position's
versions to score the next token), so cached decoding equals a full forward.
"""
from __future__ import annotations

import math

import torch

from superpose.core.mixtures import RATE_GRID, mix, mix_rates
from superpose.model.evidence import fixed_share_evidence

STAY_PRIOR = 2 / 3  # the prior weight of T = 1; the other temperatures share the rest
CACHE_KEY = "output_temperature"


def calibrating(model) -> bool:
    return bool(model.settings.output_temperatures) and not model.training


def calibrated(model, logits: torch.Tensor, input_ids: torch.Tensor, token_mask: torch.Tensor | None,
               cache=None) -> torch.Tensor:
    """The model's output logits: their temperature mixture when `calibrating(model)`, else unchanged."""
    if not calibrating(model):
        return logits
    return temperature_mixture(logits, input_ids, token_mask, model.settings.output_temperatures, cache)


def temperature_prior(temperatures: list[float], stay_prior: float = STAY_PRIOR) -> torch.Tensor:
    """(K,) log-probabilities: `stay_prior` on T = 1, the rest shared by the other temperatures."""
    others = len(temperatures) - 1
    return torch.tensor([math.log(stay_prior) if t == 1.0 else math.log((1 - stay_prior) / others)
                         for t in temperatures], dtype=torch.float64)


def _versions(logits: torch.Tensor, temperatures: list[float]) -> list[torch.Tensor]:
    """The logits' float32 log-probabilities at each temperature."""
    log_probs = torch.log_softmax(logits.float(), dim=-1)
    return [log_probs if t == 1.0 else torch.log_softmax(log_probs / t, dim=-1) for t in temperatures]


def temperature_mixture(logits: torch.Tensor, input_ids: torch.Tensor, token_mask: torch.Tensor | None,
                        temperatures: list[float], cache=None, stay_prior: float = STAY_PRIOR) -> torch.Tensor:
    """(B, T, V) next-token logits over a chunk -> (B, T, V) float32 log-probabilities of their temperature
    mixture, continuing from (and updating) the state `cache` carries. `stay_prior` is fixed in the model; the
    benchmarks vary it."""
    versions = _versions(logits, temperatures)
    carried = cache.evidence.get(CACHE_KEY) if cache is not None else None
    evidence, state = fixed_share_evidence(versions, input_ids, token_mask, list(RATE_GRID), carried,
                                           normalised=True, rate_mixture=True,
                                           prior=temperature_prior(temperatures, stay_prior))
    if cache is not None:
        cache.evidence[CACHE_KEY] = state
    log_w = evidence.rows[:, :, -1]  # (B, T, K): the rate mixture's weights after x_≤t, for x_{t+1}
    return mix(versions, log_w.permute(2, 0, 1))


def as_read_so_far(model, logits: torch.Tensor, cache) -> torch.Tensor:
    """(..., V) logits of one position (a speculative draft) -> the same read at the temperatures, weighted as the
    cache's mixture weighs them after the tokens it has seen (unchanged when there is no such state). A draft drawn
    from this is closer to the model's own next-token distribution, so more drafts are kept; any draft distribution
    leaves speculative sampling exact."""
    state = cache.evidence.get(CACHE_KEY) if calibrating(model) and cache is not None else None
    if state is None:
        return logits
    log_w = state["log_w"][0][:, :, None, None]  # (B=1, R, K) -> (R, K, 1, 1): each filter's weights
    weights = mix_rates(log_w, state["seen"][0][:, None, None])[:, 0, 0]  # (K,)
    versions = _versions(logits, model.settings.output_temperatures)
    return mix(versions, weights.reshape(-1, *[1] * (logits.dim() - 1)).to(versions[0]))
