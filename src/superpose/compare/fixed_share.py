"""Fixed-share mixture (Herbster & Warmuth): Bayes, with a share `rate` of the weight mixed back to uniform
after each token, so the weights can follow a switch of language inside a sequence. `fixed_share:0` is `bayes`."""
from __future__ import annotations

import torch

from superpose.compare.bayes import BayesScorer
from superpose.compare.common import BaselineContext, Method, Point, References
from superpose.core.mixtures import fixed_share_log_weights, scored_positions


class FixedShareScorer(BayesScorer):
    def __init__(self, rate: float):
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"fixed_share rate must be in [0, 1], got {rate}")
        self.rate = rate

    @classmethod
    def build(cls, context: BaselineContext, point: Point) -> FixedShareScorer:
        return cls(point)

    def log_weights(self, refs: References) -> torch.Tensor:
        return fixed_share_log_weights(refs.evidence(), self.rate, scored_positions(refs.labels))


METHOD = Method("fixed_share", FixedShareScorer.build, sweep=(0.005, 0.02, 0.1))
