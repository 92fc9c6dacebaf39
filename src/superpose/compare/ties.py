"""`ties:density[@λ]`: TIES-merging (Yadav et al., 2023) through PEFT's ``ties``: θ_b + λ·TIES({τ_i}).

Per tensor: keep the top-``density`` fraction of each τ_i by magnitude, elect the sign with the larger total
mass, and average only the entries agreeing with it (disjoint mean). With one expert the election is trivial,
so the result is θ_b + λ·trim(τ); at density 1 it is task arithmetic.
"""
from __future__ import annotations

import torch
from peft.utils import merge_utils as peft_merge

from superpose.compare.weight_merge import (
    Experts,
    MergedSD,
    StateDict,
    as_expert_list,
    check_density,
    check_finite,
    density_at_scale,
    merge_state_dicts,
    quiet_full_density,
    uniform_weights,
    weight_merge,
    with_scale,
)


def ties(base_sd: StateDict, experts: Experts, density: float, lam: float = 1.0) -> MergedSD:
    density = check_density(density)
    lam = check_finite("lam", lam)

    def merge(_key: str, b: torch.Tensor, es: list[torch.Tensor]) -> torch.Tensor:
        taus = [e - b for e in es]  # each: same shape as b
        # Unit weights keep PEFT's sign election and disjoint mean on the raw τ_i (as in the paper); λ scales
        # the merged task vector afterwards.
        merged_tau = peft_merge.ties(taus, uniform_weights(len(taus), b), density, "total")
        return b + lam * merged_tau

    with quiet_full_density():
        return merge_state_dicts(base_sd, as_expert_list(experts), merge)


def _merge(base_sd: StateDict, experts: Experts, point, seed: int = 0) -> MergedSD:
    return ties(base_sd, experts, *with_scale(point))


METHOD = weight_merge("ties", _merge, sweep=(0.2, 0.5), parse=density_at_scale)
