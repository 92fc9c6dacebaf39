"""The one list of comparison methods; every default (sweeps, the default baseline set) is derived from it.

Adding a method is one file that declares `METHOD = Method(...)` (or `weight_merge(...)`) and one entry here.
"""
from __future__ import annotations

from superpose.compare import (
    bayes,
    dare,
    ensemble,
    fixed_share,
    fixed_share_mix,
    linear,
    oracle,
    oracle_token,
    router,
    router_lookahead,
    slerp,
    task_arithmetic,
    ties,
)
from superpose.compare.common import BaselineContext, Method, Point, Scorer

METHODS: list[Method] = [
    linear.METHOD, task_arithmetic.METHOD, ties.METHOD, dare.METHOD, slerp.METHOD,  # weight merges
    ensemble.METHOD, bayes.METHOD, fixed_share.METHOD, fixed_share_mix.METHOD,  # output mixtures
    router.METHOD, router_lookahead.METHOD,  # routers
    oracle.METHOD, oracle_token.METHOD,  # bounds that read the answer
]
REGISTRY: dict[str, Method] = {method.name: method for method in METHODS}
WEIGHT_MERGES: dict[str, tuple] = {m.name: m.sweep for m in METHODS if m.holds_model}  # merge -> default sweep
MERGE_METHODS = {m.name: m.merge for m in METHODS if m.holds_model}  # merge -> state-dict function


def label(method: str, point: Point) -> str:
    """`method`, `method:p`, `method:density@λ` or `method:r1,r2,...` (one setting that is a list): how a point is
    written on the command line and in results."""
    if point is None:
        return method
    if REGISTRY[method].one_setting:
        return f"{method}:{','.join(f'{p:g}' for p in point)}"
    if isinstance(point, tuple):
        return f"{method}:{point[0]:g}@{point[1]:g}"
    return f"{method}:{point:g}"


def _default_spec(method: Method) -> str:
    return method.name if not method.takes_parameter else f"{method.name}:{','.join(f'{p:g}' for p in method.sweep)}"


DEFAULT_BASELINES: list[str] = [_default_spec(method) for method in METHODS]


def parse_baselines(values: list[str] | None) -> dict[str, list[Point]]:
    """`method` or `method:p1,p2,...` (a sweep) -> {method: [points]}; None = the default set, [] = none.

    Each method parses its own points (TIES and DARE take `density@λ`, λ scaling the merged task vector).
    """
    sweeps: dict[str, list[Point]] = {}
    for value in DEFAULT_BASELINES if values is None else values:
        name, _, params = value.partition(":")
        name = name.strip()
        if name not in REGISTRY:
            raise ValueError(f"unknown baseline {name!r}; known: {', '.join(REGISTRY)}")
        method = REGISTRY[name]
        if method.one_setting:
            try:
                point = method.parse(params) if params else None
            except ValueError as err:
                raise ValueError(f"the setting of {name} must be {err}, got {value!r}") from None
            sweeps.setdefault(name, [])
            if point not in sweeps[name]:
                sweeps[name].append(point)
            continue
        if not method.takes_parameter:
            if params:
                raise ValueError(f"baseline {name!r} takes no parameter, got {value!r}")
            sweeps[name] = [None]
            continue
        try:
            points = [method.parse(p.strip()) for p in params.split(",") if p.strip()] if params else list(method.sweep)
        except ValueError as err:
            raise ValueError(f"baseline parameters of {name} must be {err}, got {value!r}") from None
        sweeps.setdefault(name, [])
        sweeps[name].extend(p for p in points if p not in sweeps[name])
    return sweeps


def holds_model(method: str) -> bool:
    """True for methods whose scorer owns a whole model (a weight merge): too large to keep several alive."""
    return REGISTRY[method].holds_model


def build_scorer(method: str, point: Point, context: BaselineContext, **options) -> Scorer:
    """`options` go to the builder (e.g. `into=` a model that a weight merge may overwrite)."""
    return REGISTRY[method].build(context, point, **options)
