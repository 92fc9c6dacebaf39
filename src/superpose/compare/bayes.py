"""Causal Bayesian mixture: each model weighted by its posterior given the tokens seen so far."""
from __future__ import annotations

import torch

from superpose.compare.common import BaselineContext, Method, Point, References, Scorer
from superpose.core.mixtures import bayes_log_weights, mix


class BayesScorer(Scorer):
    """No training, no labels: uniform prior, reset per sequence, updated after each observed token."""

    returns_log_probs = True

    @classmethod
    def build(cls, context: BaselineContext, point: Point) -> BayesScorer:
        return cls()

    def log_weights(self, refs: References) -> torch.Tensor:
        return bayes_log_weights(refs.evidence())

    def logits(self, input_ids, attention_mask, refs: References) -> torch.Tensor:
        log_weights = self.log_weights(refs)  # (M, B, T)
        self.last_weights = log_weights.exp()
        return mix(refs.log_probs(), log_weights)

    def extra_seconds(self, refs: References) -> float:
        return refs.all_seconds()

    def stacks(self, models: int) -> float:
        return float(models)


METHOD = Method("bayes", BayesScorer.build)
