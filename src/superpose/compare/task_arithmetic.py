"""`task_arithmetic:λ`: θ_b + λ·Σ_i τ_i (Ilharco et al., 2023), through PEFT's ``task_arithmetic``.

With one expert this is θ_b + λ(θ_e − θ_b), `linear:t` with t = λ up to rounding; it is its own entry because
λ > 1 (extrapolation) is the usual setting.
"""
from __future__ import annotations

import torch
from peft.utils import merge_utils as peft_merge

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


def task_arithmetic(base_sd: StateDict, experts: Experts, lam: float) -> MergedSD:
    lam = check_finite("lam", lam)

    def merge(_key: str, b: torch.Tensor, es: list[torch.Tensor]) -> torch.Tensor:
        taus = [e - b for e in es]  # each: same shape as b
        weights = torch.full((len(taus),), lam, dtype=b.dtype, device=b.device)
        return b + peft_merge.task_arithmetic(taus, weights)

    return merge_state_dicts(base_sd, as_expert_list(experts), merge)


def _merge(base_sd: StateDict, experts: Experts, point, seed: int = 0) -> MergedSD:
    return task_arithmetic(base_sd, experts, single(point, "task_arithmetic"))


METHOD = weight_merge("task_arithmetic", _merge, sweep=(0.5, 1.0))
