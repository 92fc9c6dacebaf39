"""Weight-space merges (linear, task arithmetic, TIES, DARE, SLERP): one ordinary model per point.

A merged model is as large as the base, so evaluation holds at most one at a time: each point is
written into one reusable copy of the base, tensor by tensor (`MergedModelScorer.build(..., into=)`).
"""
from __future__ import annotations

import copy

import torch

from superpose.compare.merging import MERGE_METHODS
from superpose.compare.common import BaselineContext, References, Scorer

# method -> default sweep. With one expert, task_arithmetic:λ equals linear:t with t = λ; TIES at density d
# keeps the top-d share of the task vector by magnitude (no sign conflict to elect), and DARE drops entries at
# random and rescales, so at density 1 both are task arithmetic. `ties:d@λ` / `dare:d@λ` scale the merged vector.
WEIGHT_MERGES = {
    "linear": (0.1, 0.3, 0.5, 0.7, 0.9),
    "task_arithmetic": (0.5, 1.0),
    "ties": (0.2, 0.5),
    "dare": (0.5,),
    "slerp": (0.5,),
}


@torch.no_grad()
def merge_into(target: torch.nn.Module, context: BaselineContext, method: str, parameter) -> torch.nn.Module:
    """Overwrite `target` (a model of the base's architecture) with the merge of the base and every expert.

    Every method in MERGE_METHODS works tensor by tensor (DARE seeds its mask from the tensor's key), so merging
    one key at a time gives the same weights as merging whole state dicts while holding one merged tensor, not a
    second state dict. Keys are written in state-dict order, as `load_state_dict` would: for tied tensors (a
    GPT-2 head and its embeddings) the last key wins there too.
    """
    merge = MERGE_METHODS[method]
    base_sd = context.base.state_dict()
    expert_sds = [expert.state_dict() for expert in context.experts.values()]
    target_sd = target.state_dict()
    if target_sd.keys() != base_sd.keys():
        missing, extra = sorted(base_sd.keys() - target_sd.keys()), sorted(target_sd.keys() - base_sd.keys())
        raise ValueError(f"the merge target is not the base's architecture (missing {missing[:3]}, extra {extra[:3]})")
    for key, dest in target_sd.items():
        merged = merge({key: base_sd[key]}, [{key: sd[key]} for sd in expert_sds], parameter, seed=context.seed)[key]
        dest.copy_(merged)
        del merged  # before the next key's merge: one merged tensor alive at a time
    return target


class MergedModelScorer(Scorer):
    """Scores with an ordinary causal LM of its own (a weight merge, or a model the caller passes in)."""

    uses_references = False

    def __init__(self, model: torch.nn.Module):
        self.model = model

    def stacks(self, models: int) -> float:
        return 1.0

    @classmethod
    def build(cls, context: BaselineContext, method_and_parameter, into: torch.nn.Module | None = None
              ) -> "MergedModelScorer":
        """The merged model, written into `into` when given (reused across points), else into a copy of the base."""
        method, parameter = method_and_parameter
        model = into if into is not None else copy.deepcopy(context.base)
        return cls(merge_into(model, context, method, parameter).eval())

    @torch.no_grad()
    def logits(self, input_ids, attention_mask, refs: References) -> torch.Tensor:
        return self.model(input_ids, attention_mask=attention_mask).logits
