"""`linear:t`: (1 − t)·θ_b + t·mean_i θ_i, the plain weight average (t = 0 the base, t = 1 the experts' mean).

Its core, a weighted per-key sum Σ_m w_m θ_m (`weighted_merge`), is also the superposed model's hard-merge
export, each layer with its own weights.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from superpose.compare.weight_merge import (
    Experts,
    MergedSD,
    StateDict,
    as_expert_list,
    check_finite,
    merge_state_dicts,
    single,
    weight_merge,
)


def weighted_sum(tensors: Sequence[torch.Tensor], weights: Sequence[float]) -> torch.Tensor:
    """Σ_m w_m θ_m as a new tensor. Zero weights are skipped, so a one-hot weighting returns that tensor exactly
    (both endpoints of `linear` are bit-exact) and a zero weight never multiplies an inf into NaN."""
    terms = [(w, x) for w, x in zip(weights, tensors, strict=True) if w != 0.0]
    if not terms:
        return torch.zeros_like(tensors[0])
    total = terms[0][0] * terms[0][1]
    for w, x in terms[1:]:
        total = total + w * x
    return total


def weighted_merge(state_dicts: Sequence[StateDict],
                   weights_of: Callable[[str], Sequence[float] | None]) -> MergedSD:
    """Per key, Σ_m w_m θ_m^key over the state dicts (base first) with that key's weights; a key whose weights
    are None keeps the base's tensor."""

    def merge(key: str, b: torch.Tensor, es: list[torch.Tensor]) -> torch.Tensor:
        weights = weights_of(key)
        return b.clone() if weights is None else weighted_sum([b, *es], weights)

    return merge_state_dicts(state_dicts[0], list(state_dicts[1:]), merge)


def linear(base_sd: StateDict, experts: Experts, t: float) -> MergedSD:
    """(1 − t)·θ_b + t·mean_i θ_i."""
    t = check_finite("t", t)
    expert_list = as_expert_list(experts)
    weights = [1.0 - t] + [t / len(expert_list)] * len(expert_list)
    return weighted_merge([base_sd, *expert_list], lambda key: weights)


def _merge(base_sd: StateDict, experts: Experts, point, seed: int = 0) -> MergedSD:
    return linear(base_sd, experts, single(point, "linear"))


METHOD = weight_merge("linear", _merge, sweep=(0.1, 0.3, 0.5, 0.7, 0.9))
