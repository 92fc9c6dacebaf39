"""`slerp:t`: per-tensor spherical interpolation from θ_b (t = 0) to θ_e (t = 1), the common model-soup
alternative to `linear`; between two models only, so it takes exactly one expert.

Each tensor is flattened and interpolated along the great circle between the two directions (norms are
interpolated implicitly, as in mergekit). It falls back to linear interpolation when the vectors are nearly
colinear or either has ~zero norm, where the spherical formula is numerically undefined.
"""
from __future__ import annotations

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

_COLINEAR_EPS = 1e-6  # below this distance of the cosine from ±1, sin(θ) is too small to divide by
_NORM_EPS = 1e-12  # below this L2 norm a tensor has no meaningful direction


def _slerp_tensor(b: torch.Tensor, e: torch.Tensor, t: float) -> torch.Tensor:
    """Spherical interpolation of two tensors viewed as flat vectors (linear when ill-posed)."""
    v0, v1 = b.reshape(-1).double(), e.reshape(-1).double()  # (N,), (N,)
    n0, n1 = v0.norm(), v1.norm()
    if n0 < _NORM_EPS or n1 < _NORM_EPS:
        return (1.0 - t) * b + t * e
    cos = torch.clamp(torch.dot(v0 / n0, v1 / n1), -1.0, 1.0)
    if 1.0 - cos.abs() < _COLINEAR_EPS:
        return (1.0 - t) * b + t * e
    theta = torch.arccos(cos)
    sin_theta = torch.sin(theta)
    s0 = torch.sin((1.0 - t) * theta) / sin_theta
    s1 = torch.sin(t * theta) / sin_theta
    return (s0 * v0 + s1 * v1).reshape(b.shape).to(dtype=b.dtype)


def slerp(base_sd: StateDict, expert_sd: StateDict, t: float) -> MergedSD:
    t = check_finite("t", t)
    return merge_state_dicts(base_sd, [expert_sd], lambda _key, b, es: _slerp_tensor(b, es[0], t))


def _merge(base_sd: StateDict, experts: Experts, point, seed: int = 0) -> MergedSD:
    expert_list = as_expert_list(experts)
    if len(expert_list) != 1:
        raise ValueError(f"slerp interpolates between the base and one expert; got {len(expert_list)} experts")
    return slerp(base_sd, expert_list[0], single(point, "slerp"))


METHOD = weight_merge("slerp", _merge, sweep=(0.5,))
