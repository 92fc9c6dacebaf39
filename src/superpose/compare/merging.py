"""Weight-merging baselines over state dicts: linear, task arithmetic, TIES, DARE, SLERP.

Superposition blends a frozen base model and its fine-tune at run time; these
functions are the static alternatives it is compared against. All of them work
on plain state dicts with identical keys and shapes (base θ_b and expert(s) θ_e,
task vector τ = θ_e − θ_b) and return a new state dict that loads with
``load_state_dict(strict=True)`` into the same architecture.

Shared conventions:

* Non-floating tensors (integer buffers, bool masks) and tensors whose values are
  identical in base and every expert are copied (cloned) from the base unchanged.
* Arithmetic runs in at least float32 and the result is cast back to the base
  tensor's dtype, so bf16/fp16 models keep their dtype without compounding
  rounding error in τ.
* TIES and DARE delegate to PEFT's reference implementations in
  :mod:`peft.utils.merge_utils` rather than re-deriving them.
"""

from __future__ import annotations

import contextlib
import math
import warnings
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Protocol

import torch
from peft.utils import merge_utils as peft_merge

StateDict = Mapping[str, torch.Tensor]
Experts = StateDict | Sequence[StateDict]
MergedSD = dict[str, torch.Tensor]

# Below this cosine distance from ±1, SLERP's sin(θ) is too small to divide by.
_SLERP_COLINEAR_EPS = 1e-6
# Below this L2 norm a tensor has no meaningful direction for SLERP.
_SLERP_NORM_EPS = 1e-12


# --------------------------------------------------------------------------- validation


def _check_finite(name: str, value: float) -> float:
    """Reject NaN/inf coefficients early: they would silently poison every weight."""
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return value


def _check_density(density: float) -> float:
    """Density is the kept fraction of τ; 0 would drop everything (and DARE divides by it)."""
    density = float(density)
    if not (math.isfinite(density) and 0.0 < density <= 1.0):
        raise ValueError(f"density must be in (0, 1], got {density}")
    return density


def _check_compatible(base_sd: StateDict, expert_sd: StateDict) -> None:
    """Raise ValueError naming the first key that is missing or has a different shape."""
    for key, tensor in base_sd.items():
        if key not in expert_sd:
            raise ValueError(f"key {key!r} is in the base state dict but not in the expert")
        if tuple(expert_sd[key].shape) != tuple(tensor.shape):
            raise ValueError(
                f"shape mismatch for key {key!r}: base {tuple(tensor.shape)} "
                f"vs expert {tuple(expert_sd[key].shape)}"
            )
    for key in expert_sd:
        if key not in base_sd:
            raise ValueError(f"key {key!r} is in the expert state dict but not in the base")


def _as_expert_list(experts: Experts) -> list[StateDict]:
    """Accept one expert state dict or a sequence of them."""
    if isinstance(experts, Mapping):
        return [experts]
    expert_list = list(experts)
    if not expert_list:
        raise ValueError("at least one expert state dict is required")
    return expert_list


# --------------------------------------------------------------------------- per-tensor driver


def _work_dtype(dtype: torch.dtype) -> torch.dtype:
    """float32 for half types, otherwise keep (float64 stays float64)."""
    return torch.promote_types(dtype, torch.float32)


def _is_unchanged(base: torch.Tensor, expert_tensors: list[torch.Tensor]) -> bool:
    """True when no expert touched this tensor (frozen during fine-tuning): nothing to merge."""
    return all(
        torch.equal(base, e.to(device=base.device, dtype=base.dtype)) for e in expert_tensors
    )


def _merge_state_dicts(
    base_sd: StateDict,
    experts: Sequence[StateDict],
    merge_tensor: Callable[[str, torch.Tensor, list[torch.Tensor]], torch.Tensor],
) -> MergedSD:
    """Validate, then apply ``merge_tensor(key, base, experts)`` to every mergeable tensor.

    ``merge_tensor`` receives tensors already upcast to the working dtype on the
    base tensor's device; its result is cast back to the base dtype.
    """
    for expert_sd in experts:
        _check_compatible(base_sd, expert_sd)

    merged: MergedSD = {}
    with torch.no_grad():
        for key, base in base_sd.items():
            expert_tensors = [expert_sd[key] for expert_sd in experts]
            if not base.is_floating_point() or _is_unchanged(base, expert_tensors):
                merged[key] = base.detach().clone()
                continue
            work = _work_dtype(base.dtype)
            b = base.detach().to(dtype=work)
            es = [e.detach().to(device=base.device, dtype=work) for e in expert_tensors]
            merged[key] = merge_tensor(key, b, es).to(dtype=base.dtype)
    return merged


def _uniform_weights(n: int, like: torch.Tensor) -> torch.Tensor:
    """PEFT's merge functions take one weight per task tensor; we use 1 and scale by λ after."""
    return torch.ones(n, dtype=like.dtype, device=like.device)


@contextlib.contextmanager
def _quiet_full_density() -> Iterator[None]:
    """PEFT's ``prune`` warns on density == 1 (a no-op we allow on purpose); silence only that."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=r"The density .* no pruning will be performed"
        )
        yield


# --------------------------------------------------------------------------- merge methods


def linear(base_sd: StateDict, experts: Experts, t: float) -> MergedSD:
    """(1 − t)·θ_b + t·mean_i θ_i: the plain weight-average baseline (t=0 → base, t=1 → the experts' mean)."""
    t = _check_finite("t", t)
    expert_list = _as_expert_list(experts)

    def merge(_key: str, b: torch.Tensor, es: list[torch.Tensor]) -> torch.Tensor:
        # Written as a weighted sum (not b + t·τ) so both endpoints are bit-exact.
        mean = es[0] if len(es) == 1 else torch.stack(es).mean(0)
        return (1.0 - t) * b + t * mean

    return _merge_state_dicts(base_sd, expert_list, merge)


def task_arithmetic(base_sd: StateDict, experts: Experts, lam: float) -> MergedSD:
    """θ_b + λ·Σ_i τ_i (Ilharco et al., 2023) via PEFT's ``task_arithmetic``.

    For a single expert this is θ_b + λ(θ_e − θ_b), i.e. identical to
    ``linear(base_sd, expert_sd, t=lam)`` up to floating-point rounding; it is
    kept as its own entry because λ > 1 (extrapolation) is the usual setting.
    """
    lam = _check_finite("lam", lam)
    expert_list = _as_expert_list(experts)

    def merge(_key: str, b: torch.Tensor, es: list[torch.Tensor]) -> torch.Tensor:
        taus = [e - b for e in es]  # each: same shape as b
        weights = torch.full((len(taus),), lam, dtype=b.dtype, device=b.device)
        return b + peft_merge.task_arithmetic(taus, weights)

    return _merge_state_dicts(base_sd, expert_list, merge)


def ties(
    base_sd: StateDict, experts: Experts, density: float, lam: float = 1.0
) -> MergedSD:
    """TIES-merging (Yadav et al., 2023) via PEFT's ``ties``: θ_b + λ·TIES({τ_i}).

    Per tensor: keep the top-``density`` fraction of each τ_i by magnitude, elect
    the sign with the larger total mass, and average only the entries agreeing
    with it (disjoint mean). With a single expert the election is trivial, so
    the result is θ_b + λ·trim(τ); at density 1 it equals task arithmetic.
    """
    density = _check_density(density)
    lam = _check_finite("lam", lam)
    expert_list = _as_expert_list(experts)

    def merge(_key: str, b: torch.Tensor, es: list[torch.Tensor]) -> torch.Tensor:
        taus = [e - b for e in es]  # each: same shape as b
        # Unit weights keep PEFT's sign election and disjoint mean on the raw τ_i
        # (as in the paper); λ scales the merged task vector afterwards.
        merged_tau = peft_merge.ties(taus, _uniform_weights(len(taus), b), density, "total")
        return b + lam * merged_tau

    with _quiet_full_density():
        return _merge_state_dicts(base_sd, expert_list, merge)


def _tensor_seed(seed: int, key: str) -> int:
    """A per-tensor seed, so a tensor's drop mask depends only on (seed, key), not on order."""
    return (int(seed) * 0x9E3779B97F4A7C15 + zlib.crc32(key.encode("utf-8"))) % (2**63)


@contextlib.contextmanager
def _seeded_rng(device: torch.device, seed: int) -> Iterator[None]:
    """Seed the global RNG that ops on ``device`` draw from, restoring it on exit.

    PEFT's ``random_pruning`` calls ``torch.bernoulli`` without a generator, so
    reproducibility needs the global RNG seeded without leaking into the caller.
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


def dare(
    base_sd: StateDict, experts: Experts, density: float, seed: int, lam: float = 1.0
) -> MergedSD:
    """DARE (Yu et al., 2024) via PEFT's ``dare_linear``: θ_b + λ·Σ_i rescale(drop(τ_i)).

    Each entry of τ_i is kept with probability ``density`` and survivors are
    divided by ``density`` so E[result] = task arithmetic; density 1 reproduces
    it exactly. Masks are drawn per tensor from a seed derived from
    ``(seed, key)``, so the same seed always gives the same merge, and the
    caller's global RNG state is left untouched.
    """
    density = _check_density(density)
    lam = _check_finite("lam", lam)
    expert_list = _as_expert_list(experts)

    def merge(key: str, b: torch.Tensor, es: list[torch.Tensor]) -> torch.Tensor:
        taus = [e - b for e in es]  # each: same shape as b
        with _seeded_rng(b.device, _tensor_seed(seed, key)):
            merged_tau = peft_merge.dare_linear(taus, _uniform_weights(len(taus), b), density)
        return b + lam * merged_tau

    with _quiet_full_density():
        return _merge_state_dicts(base_sd, expert_list, merge)


def _slerp_tensor(b: torch.Tensor, e: torch.Tensor, t: float) -> torch.Tensor:
    """Spherical interpolation of two tensors viewed as flat vectors (linear when ill-posed)."""
    v0, v1 = b.reshape(-1).double(), e.reshape(-1).double()  # (N,), (N,)
    n0, n1 = v0.norm(), v1.norm()
    if n0 < _SLERP_NORM_EPS or n1 < _SLERP_NORM_EPS:
        return (1.0 - t) * b + t * e
    cos = torch.clamp(torch.dot(v0 / n0, v1 / n1), -1.0, 1.0)
    if 1.0 - cos.abs() < _SLERP_COLINEAR_EPS:
        return (1.0 - t) * b + t * e
    theta = torch.arccos(cos)
    sin_theta = torch.sin(theta)
    s0 = torch.sin((1.0 - t) * theta) / sin_theta
    s1 = torch.sin(t * theta) / sin_theta
    return (s0 * v0 + s1 * v1).reshape(b.shape).to(dtype=b.dtype)


def slerp(base_sd: StateDict, expert_sd: StateDict, t: float) -> MergedSD:
    """Per-tensor SLERP from θ_b (t=0) to θ_e (t=1), the common model-soup alternative to linear.

    Each tensor is flattened and interpolated along the great circle between the
    two directions (norms are interpolated implicitly, as in mergekit). Falls
    back to linear interpolation when the vectors are nearly colinear or either
    has ~zero norm, where the spherical formula is numerically undefined.
    """
    t = _check_finite("t", t)

    def merge(_key: str, b: torch.Tensor, es: list[torch.Tensor]) -> torch.Tensor:
        return _slerp_tensor(b, es[0], t)

    return _merge_state_dicts(base_sd, [expert_sd], merge)


# --------------------------------------------------------------------------- registry


class MergeFn(Protocol):
    """Uniform signature for sweeps: every expert, one parameter point, and a seed (ignored where unused).

    A point is a number, or (number, λ) for TIES and DARE, whose merged task vector λ scales.
    """

    def __call__(self, base_sd: StateDict, experts: Experts, param: float | tuple[float, float],
                 seed: int = 0) -> MergedSD: ...


def _with_scale(param: float | tuple[float, float]) -> tuple[float, float]:
    """density or (density, λ) -> (density, λ); λ defaults to 1."""
    return (float(param[0]), float(param[1])) if isinstance(param, tuple) else (float(param), 1.0)


def _single(param: float | tuple[float, float], method: str) -> float:
    if isinstance(param, tuple):
        raise ValueError(f"{method} takes one number per point, got {param!r}")
    return float(param)


def _linear_entry(base_sd: StateDict, experts: Experts, param, seed: int = 0) -> MergedSD:
    """param = t."""
    return linear(base_sd, experts, _single(param, "linear"))


def _task_arithmetic_entry(base_sd: StateDict, experts: Experts, param, seed: int = 0) -> MergedSD:
    """param = λ."""
    return task_arithmetic(base_sd, experts, _single(param, "task_arithmetic"))


def _ties_entry(base_sd: StateDict, experts: Experts, param, seed: int = 0) -> MergedSD:
    """param = density or (density, λ)."""
    density, lam = _with_scale(param)
    return ties(base_sd, experts, density, lam)


def _dare_entry(base_sd: StateDict, experts: Experts, param, seed: int = 0) -> MergedSD:
    """param = density or (density, λ)."""
    density, lam = _with_scale(param)
    return dare(base_sd, experts, density, seed, lam)


def _slerp_entry(base_sd: StateDict, experts: Experts, param, seed: int = 0) -> MergedSD:
    """param = t; SLERP interpolates between two models, so it takes exactly one expert."""
    expert_list = _as_expert_list(experts)
    if len(expert_list) != 1:
        raise ValueError(f"slerp interpolates between the base and one expert; got {len(expert_list)} experts")
    return slerp(base_sd, expert_list[0], _single(param, "slerp"))


MERGE_METHODS: dict[str, MergeFn] = {
    "linear": _linear_entry,
    "task_arithmetic": _task_arithmetic_entry,
    "ties": _ties_entry,
    "dare": _dare_entry,
    "slerp": _slerp_entry,
}
