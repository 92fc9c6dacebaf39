"""Output-probability ensemble: p = (1 - w) p_base + w p_expert (both experts run: superposition's compute)."""
from __future__ import annotations

import math

import torch

from .common import BaselineContext, References, Scorer


class EnsembleScorer(Scorer):
    def __init__(self, weight: float):
        if not 0.0 <= weight <= 1.0:
            raise ValueError(f"ensemble weight must be in [0, 1], got {weight}")
        self.weight = weight

    @classmethod
    def build(cls, context: BaselineContext, method_and_parameter) -> "EnsembleScorer":
        return cls(method_and_parameter[1])

    def logits(self, input_ids, attention_mask, refs: References) -> torch.Tensor:
        # log((1-w) p_b + w p_e), computed in log space; log(0) = -inf drops a term exactly
        log_b = torch.log_softmax(refs.base_logits.float(), -1) + math.log(max(1 - self.weight, 1e-300))
        log_e = torch.log_softmax(refs.expert_logits.float(), -1) + math.log(max(self.weight, 1e-300))
        return torch.logaddexp(log_b, log_e)

    def extra_seconds(self, refs: References) -> float:
        return refs.base_seconds + refs.expert_seconds
