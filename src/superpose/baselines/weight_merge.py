"""Weight-space merges (linear, task arithmetic, TIES, DARE, SLERP): one ordinary model per point."""
from __future__ import annotations

import copy

import torch

from ..merging import MERGE_METHODS
from .common import BaselineContext, References, Scorer

# method -> default sweep (for one expert, task_arithmetic:λ equals linear:t with t = λ)
WEIGHT_MERGES = {
    "linear": (0.1, 0.3, 0.5, 0.7, 0.9),
    "task_arithmetic": (0.5, 1.0),
    "ties": (0.2, 0.5),
    "dare": (0.5,),
    "slerp": (0.5,),
}


class MergedModelScorer(Scorer):
    def __init__(self, model: torch.nn.Module):
        self.model = model

    @classmethod
    def build(cls, context: BaselineContext, method_and_parameter) -> "MergedModelScorer":
        method, parameter = method_and_parameter
        merged = MERGE_METHODS[method](context.base.state_dict(), context.expert.state_dict(), parameter, seed=context.seed)
        model = copy.deepcopy(context.base)
        model.load_state_dict(merged, strict=True)
        return cls(model.eval())

    @torch.no_grad()
    def logits(self, input_ids, attention_mask, refs: References) -> torch.Tensor:
        return self.model(input_ids, attention_mask=attention_mask).logits
