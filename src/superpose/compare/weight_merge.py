"""What every weight merge shares: checks, the per-tensor driver, and the scorer that holds the merged model.

Each merge method (`linear`, `task_arithmetic`, `ties`, `dare`, `slerp`) is a file of its own that declares
itself with `weight_merge(...)`. All of them work on plain state dicts with identical keys and shapes (base
θ_b and experts θ_i, task vectors τ_i = θ_i − θ_b) and return a new state dict that loads with
``load_state_dict(strict=True)`` into the same architecture. Shared conventions:

* Non-floating tensors (integer buffers, bool masks) and tensors whose values are identical in the base and
  every expert are copied (cloned) from the base unchanged.
* Arithmetic runs in at least float32 and the result is cast back to the base tensor's dtype, so bf16/fp16
  models keep their dtype without compounding rounding error in τ.
* Every method works tensor by tensor (DARE seeds its mask from the tensor's key), so evaluation can write a
  merge key by key into one reusable copy of the base (`merge_into`): one merged model alive at a time.
"""
from __future__ import annotations

import contextlib
import copy
import math
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence

import torch

from superpose.compare.common import BaselineContext, Method, Point, References, Scorer, number

StateDict = Mapping[str, torch.Tensor]
Experts = StateDict | Sequence[StateDict]
MergedSD = dict[str, torch.Tensor]
MergeFn = Callable[..., MergedSD]  # (base_sd, experts, point, seed=0) -> merged state dict


# --------------------------------------------------------------------------- checks


def check_finite(name: str, value: float) -> float:
    """Reject NaN/inf coefficients early: they would silently poison every weight."""
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return value


def check_density(density: float) -> float:
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
            raise ValueError(f"shape mismatch for key {key!r}: base {tuple(tensor.shape)} "
                             f"vs expert {tuple(expert_sd[key].shape)}")
    for key in expert_sd:
        if key not in base_sd:
            raise ValueError(f"key {key!r} is in the expert state dict but not in the base")


def as_expert_list(experts: Experts) -> list[StateDict]:
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
    return all(torch.equal(base, e.to(device=base.device, dtype=base.dtype)) for e in expert_tensors)


def merge_state_dicts(base_sd: StateDict, experts: Sequence[StateDict],
                      merge_tensor: Callable[[str, torch.Tensor, list[torch.Tensor]], torch.Tensor]) -> MergedSD:
    """Validate, then apply ``merge_tensor(key, base, experts)`` to every mergeable tensor.

    ``merge_tensor`` receives tensors already upcast to the working dtype on the base tensor's device; its
    result is cast back to the base dtype.
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


def uniform_weights(n: int, like: torch.Tensor) -> torch.Tensor:
    """PEFT's merge functions take one weight per task tensor; we use 1 and scale by λ after."""
    return torch.ones(n, dtype=like.dtype, device=like.device)


@contextlib.contextmanager
def quiet_full_density() -> Iterator[None]:
    """PEFT's ``prune`` warns on density == 1 (a no-op we allow on purpose); silence only that."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"The density .* no pruning will be performed")
        yield


# --------------------------------------------------------------------------- points


def single(point: Point, method: str) -> float:
    if isinstance(point, tuple):
        raise ValueError(f"{method} takes one number per point, got {point!r}")
    return float(point)


def with_scale(point: Point) -> tuple[float, float]:
    """density or (density, λ) -> (density, λ); λ defaults to 1."""
    return (float(point[0]), float(point[1])) if isinstance(point, tuple) else (float(point), 1.0)


def density_at_scale(text: str) -> float | tuple[float, float]:
    """`density` or `density@λ` (λ scales the merged task vector)."""
    density, at, scale = text.partition("@")
    try:
        return (float(density), float(scale)) if at else float(density)
    except ValueError:
        raise ValueError("numbers (or density@λ)") from None


# --------------------------------------------------------------------------- the scorer


@torch.no_grad()
def merge_into(target: torch.nn.Module, context: BaselineContext, merge: MergeFn, point: Point) -> torch.nn.Module:
    """Overwrite `target` (a model of the base's architecture) with the merge of the base and every expert.

    Merging one key at a time gives the same weights as merging whole state dicts while holding one merged
    tensor, not a second state dict. Keys are written in state-dict order, as `load_state_dict` would: for tied
    tensors (a GPT-2 head and its embeddings) the last key wins there too.
    """
    base_sd = context.base.state_dict()
    expert_sds = [expert.state_dict() for expert in context.experts.values()]
    target_sd = target.state_dict()
    if target_sd.keys() != base_sd.keys():
        missing, extra = sorted(base_sd.keys() - target_sd.keys()), sorted(target_sd.keys() - base_sd.keys())
        raise ValueError(f"the merge target is not the base's architecture (missing {missing[:3]}, extra {extra[:3]})")
    for key, dest in target_sd.items():
        merged = merge({key: base_sd[key]}, [{key: sd[key]} for sd in expert_sds], point, seed=context.seed)[key]
        dest.copy_(merged)
        del merged  # before the next key's merge: one merged tensor alive at a time
    return target


class MergedModelScorer(Scorer):
    """Scores with an ordinary causal LM of its own (a weight merge, or a model the caller passes in)."""

    uses_references = False

    def __init__(self, model: torch.nn.Module):
        self.model = model

    @torch.no_grad()
    def logits(self, input_ids, attention_mask, refs: References) -> torch.Tensor:
        return self.model(input_ids, attention_mask=attention_mask).logits


def weight_merge(name: str, merge: MergeFn, sweep: tuple[Point, ...], parse: Callable[[str], Point] = number
                 ) -> Method:
    """The registry entry of a weight merge. Its builder takes `into=`, a model of the base's architecture to
    overwrite (reused across points); without it the merge is written into a copy of the base."""

    def build(context: BaselineContext, point: Point, into: torch.nn.Module | None = None) -> MergedModelScorer:
        model = into if into is not None else copy.deepcopy(context.base)
        return MergedModelScorer(merge_into(model, context, merge, point).eval())

    return Method(name, build, sweep, parse, merge)
