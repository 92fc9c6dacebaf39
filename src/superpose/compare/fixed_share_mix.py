"""`fixed_share_mix`: a causal Bayesian mixture, uniform prior, over fixed-share mixtures at a grid of switching
rates. It learns how often the text switches as it reads, so it needs no rate chosen on selection data: the
strongest training-free yardstick here. `fixed_share_mix:0.001,0.01,0.1` replaces the default grid."""
from __future__ import annotations

import torch

from superpose.compare.bayes import BayesScorer
from superpose.compare.common import BaselineContext, Method, Point, References
from superpose.core.mixtures import RATE_GRID, rate_mixture_log_weights, scored_positions


def parse_grid(text: str) -> tuple[float, ...]:
    """`0.001,0.01,0.1` -> the rates, each in [0, 1]; raises ValueError naming the accepted form."""
    try:
        rates = tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise ValueError("comma-separated rates in [0, 1]") from None
    if not rates or not all(0.0 <= rate <= 1.0 for rate in rates):
        raise ValueError("comma-separated rates in [0, 1]")
    return tuple(dict.fromkeys(rates))  # a rate given twice would count twice in the prior


class FixedShareMixScorer(BayesScorer):
    def __init__(self, rates: tuple[float, ...] = RATE_GRID):
        self.rates = tuple(rates)

    @classmethod
    def build(cls, context: BaselineContext, point: Point) -> FixedShareMixScorer:
        return cls(RATE_GRID if point is None else point)

    def log_weights(self, refs: References) -> torch.Tensor:
        return rate_mixture_log_weights(refs.evidence(), self.rates, scored_positions(refs.labels))


METHOD = Method("fixed_share_mix", FixedShareMixScorer.build, parse=parse_grid, one_setting=True)
