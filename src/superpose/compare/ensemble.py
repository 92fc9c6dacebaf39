"""Output-probability ensemble: p = (1 - w) p_base + w · mean_e p_e (every stack runs: superposition's compute)."""
from __future__ import annotations

import math

import torch

from superpose.compare.common import BaselineContext, Method, Point, References, Scorer
from superpose.core.mixtures import mix


class EnsembleScorer(Scorer):
    returns_log_probs = True

    def __init__(self, weight: float):
        if not 0.0 <= weight <= 1.0:
            raise ValueError(f"ensemble weight must be in [0, 1], got {weight}")
        self.weight = weight

    @classmethod
    def build(cls, context: BaselineContext, point: Point) -> EnsembleScorer:
        return cls(point)

    def logits(self, input_ids, attention_mask, refs: References) -> torch.Tensor:
        # log((1-w) p_b + w/N Σ p_e) in log space; log(0) = -inf drops a term exactly
        log_probs = refs.log_probs()  # (M, B, T, V), base first
        experts = len(refs.logits) - 1
        weights = [1 - self.weight] + [self.weight / experts] * experts
        log_w = torch.tensor([math.log(max(w, 1e-300)) for w in weights], device=log_probs.device)
        return mix(log_probs, log_w.view(-1, 1, 1))  # (M, 1, 1): the same weights at every position

    def extra_seconds(self, refs: References) -> float:
        return refs.all_seconds()

    def stacks(self, models: int) -> float:
        return float(models)


METHOD = Method("ensemble", EnsembleScorer.build, sweep=(0.5,))
