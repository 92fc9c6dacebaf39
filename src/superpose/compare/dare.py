"""`dare:density[@λ]`: DARE (Yu et al., 2024) through PEFT's ``dare_linear``: θ_b + λ·Σ_i rescale(drop(τ_i)).

Each entry of τ_i is kept with probability ``density`` and survivors are divided by ``density``, so
E[result] = task arithmetic; density 1 reproduces it exactly. Masks are drawn per tensor from a seed derived
from ``(seed, key)``, so the same seed always gives the same merge, whatever the order of the keys, and the
caller's global RNG state is left untouched.
"""
from __future__ import annotations

import contextlib
import zlib
from collections.abc import Iterator

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


def _tensor_seed(seed: int, key: str) -> int:
    """A per-tensor seed, so a tensor's drop mask depends only on (seed, key), not on order."""
    return (int(seed) * 0x9E3779B97F4A7C15 + zlib.crc32(key.encode("utf-8"))) % (2**63)


@contextlib.contextmanager
def _seeded_rng(device: torch.device, seed: int) -> Iterator[None]:
    """Seed the global RNG that ops on ``device`` draw from, restoring it on exit.

    PEFT's ``random_pruning`` calls ``torch.bernoulli`` without a generator, so reproducibility needs the
    global RNG seeded without leaking into the caller.
    """
    if device.type == "cpu":
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(seed)
            yield
        return
    device_mod = torch.get_device_module(device.type)
    index = device.index if device.index is not None else device_mod.current_device()
    with torch.random.fork_rng(devices=[index], device_type=device.type):
        with device_mod.device(index):
            device_mod.manual_seed(seed)
        yield


def dare(base_sd: StateDict, experts: Experts, density: float, seed: int, lam: float = 1.0) -> MergedSD:
    density = check_density(density)
    lam = check_finite("lam", lam)

    def merge(key: str, b: torch.Tensor, es: list[torch.Tensor]) -> torch.Tensor:
        taus = [e - b for e in es]  # each: same shape as b
        with _seeded_rng(b.device, _tensor_seed(seed, key)):
            merged_tau = peft_merge.dare_linear(taus, uniform_weights(len(taus), b), density)
        return b + lam * merged_tau

    with quiet_full_density():
        return merge_state_dicts(base_sd, as_expert_list(experts), merge)


def _merge(base_sd: StateDict, experts: Experts, point, seed: int = 0) -> MergedSD:
    density, lam = with_scale(point)
    return dare(base_sd, experts, density, seed, lam)


METHOD = weight_merge("dare", _merge, sweep=(0.5,), parse=density_at_scale)
