"""One explicit registry of the alternatives the superposed model is compared with.

Each entry is labelled `method:parameter` (e.g. `linear:0.5`). A scorer turns a batch into
next-token logits; it may reuse the base's and expert's logits of the same batch (`References`),
so that the two experts run once per batch whatever the number of baselines. Weight merges are
the exception: each holds a model as large as the base, so evaluation builds and scores them one
at a time (`holds_model`).
"""
from __future__ import annotations

from .common import BaselineContext, References, Scorer
from .ensemble import EnsembleScorer
from .oracle import OracleScorer
from .router import RouterScorer
from .weight_merge import WEIGHT_MERGES, MergedModelScorer

# method -> (builder(context, parameter) -> Scorer, takes a parameter, default sweep)
REGISTRY: dict[str, tuple] = {
    **{name: (MergedModelScorer.build, True, sweep) for name, sweep in WEIGHT_MERGES.items()},
    "ensemble": (EnsembleScorer.build, True, (0.5,)),
    "router": (RouterScorer.build, False, ()),
    "oracle": (OracleScorer.build, False, ()),
}

DEFAULT_BASELINES = [
    "linear:0.1,0.3,0.5,0.7,0.9",
    "task_arithmetic:0.5,1.0",
    "ties:0.2,0.5",
    "dare:0.5",
    "slerp:0.5",
    "ensemble:0.5",
    "router",
    "oracle",
]


def parse_baselines(values: list[str] | None) -> dict[str, list[float | None]]:
    """`method` or `method:p1,p2,...` (a sweep) -> {method: [parameters]}; None = the default set, [] = none."""
    sweeps: dict[str, list[float | None]] = {}
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
        try:
            points = [float(p) for p in params.split(",") if p.strip()] if params else list(default)
        except ValueError as err:
            raise ValueError(f"baseline parameters must be numbers, got {value!r}") from err
        sweeps.setdefault(method, [])
        sweeps[method].extend(p for p in points if p not in sweeps[method])
    return sweeps


def label(method: str, parameter: float | None) -> str:
    return method if parameter is None else f"{method}:{parameter:g}"


def holds_model(method: str) -> bool:
    """True for methods whose scorer owns a whole model (a weight merge): too large to keep several alive."""
    return method in WEIGHT_MERGES


def build_scorer(method: str, parameter: float | None, context: BaselineContext, **options) -> Scorer:
    """`options` go to the builder (e.g. `into=` a model that a weight merge may overwrite)."""
    builder, _, _ = REGISTRY[method]
    return builder(context, (method, parameter), **options)


__all__ = ["REGISTRY", "DEFAULT_BASELINES", "WEIGHT_MERGES", "parse_baselines", "label", "holds_model",
           "build_scorer", "BaselineContext", "References", "Scorer", "MergedModelScorer"]
