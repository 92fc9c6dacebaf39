"""One explicit registry of the alternatives the superposed model is compared with.

Each entry is labelled `method:parameter` (e.g. `linear:0.5`). A scorer turns a batch into
next-token logits; it may reuse every model's logits of the same batch (`References`), so that
the base and each expert run once per batch whatever the number of baselines. Weight merges are
the exception: each holds a model as large as the base, so evaluation builds and scores them one
at a time (`holds_model`).

* `common`: what every scorer gets (the models, the batch's reference logits).
* `merging`: the weight-merge algorithms; `weight_merge`: their scorers and default sweeps.
* `ensemble`, `bayes`, `fixed_share`: output mixtures of the M models.
* `router`: a bag-of-tokens router that picks one model; `oracle`: bounds that read the answer.
"""
from __future__ import annotations

from superpose.compare.bayes import BayesScorer
from superpose.compare.common import BaselineContext, References, Scorer
from superpose.compare.ensemble import EnsembleScorer
from superpose.compare.fixed_share import FixedShareScorer
from superpose.compare.oracle import OracleScorer, OracleTokenScorer
from superpose.compare.router import RouterLookaheadScorer, RouterScorer
from superpose.compare.weight_merge import WEIGHT_MERGES, MergedModelScorer

# method -> (builder(context, (method, parameter)) -> Scorer, takes a parameter, default sweep)
REGISTRY: dict[str, tuple] = {
    **{name: (MergedModelScorer.build, True, sweep) for name, sweep in WEIGHT_MERGES.items()},
    "ensemble": (EnsembleScorer.build, True, (0.5,)),
    "bayes": (BayesScorer.build, False, ()),
    "fixed_share": (FixedShareScorer.build, True, (0.005, 0.02, 0.1)),
    "router": (RouterScorer.build, False, ()),
    "router_lookahead": (RouterLookaheadScorer.build, False, ()),
    "oracle": (OracleScorer.build, False, ()),
    "oracle_token": (OracleTokenScorer.build, False, ()),
}
SCALED = {"ties", "dare"}  # methods whose points may carry a scale: density@λ

DEFAULT_BASELINES = [
    "linear:0.1,0.3,0.5,0.7,0.9",
    "task_arithmetic:0.5,1.0",
    "ties:0.2,0.5",
    "dare:0.5",
    "slerp:0.5",
    "ensemble:0.5",
    "bayes",
    "fixed_share:0.005,0.02,0.1",
    "router",
    "router_lookahead",
    "oracle",
    "oracle_token",
]

Point = float | tuple[float, float] | None


def _parse_point(method: str, text: str, value: str) -> float | tuple[float, float]:
    number, at, scale = text.partition("@")
    try:
        if at:
            if method not in SCALED:
                raise ValueError
            return (float(number), float(scale))
        return float(number)
    except ValueError:
        scaled = " (or density@λ)" if method in SCALED else ""
        raise ValueError(f"baseline parameters of {method} must be numbers{scaled}, got {value!r}") from None


def parse_baselines(values: list[str] | None) -> dict[str, list[Point]]:
    """`method` or `method:p1,p2,...` (a sweep) -> {method: [points]}; None = the default set, [] = none.

    TIES and DARE points may be `density@λ` (λ scales the merged task vector; plain `density` means λ = 1).
    """
    sweeps: dict[str, list[Point]] = {}
    for value in DEFAULT_BASELINES if values is None else values:
        method, _, params = value.partition(":")
        method = method.strip()
        if method not in REGISTRY:
            raise ValueError(f"unknown baseline {method!r}; known: {', '.join(REGISTRY)}")
        _, takes_parameter, default = REGISTRY[method]
        if not takes_parameter:
            if params:
                raise ValueError(f"baseline {method!r} takes no parameter, got {value!r}")
            sweeps[method] = [None]
            continue
        points = [_parse_point(method, p.strip(), value) for p in params.split(",") if p.strip()] if params \
            else list(default)
        sweeps.setdefault(method, [])
        sweeps[method].extend(p for p in points if p not in sweeps[method])
    return sweeps


def label(method: str, parameter: Point) -> str:
    if parameter is None:
        return method
    if isinstance(parameter, tuple):
        return f"{method}:{parameter[0]:g}@{parameter[1]:g}"
    return f"{method}:{parameter:g}"


def holds_model(method: str) -> bool:
    """True for methods whose scorer owns a whole model (a weight merge): too large to keep several alive."""
    return method in WEIGHT_MERGES


def build_scorer(method: str, parameter: Point, context: BaselineContext, **options) -> Scorer:
    """`options` go to the builder (e.g. `into=` a model that a weight merge may overwrite)."""
    builder, _, _ = REGISTRY[method]
    return builder(context, (method, parameter), **options)


__all__ = ["REGISTRY", "DEFAULT_BASELINES", "WEIGHT_MERGES", "parse_baselines", "label", "holds_model",
           "build_scorer", "BaselineContext", "References", "Scorer", "MergedModelScorer", "Point"]
