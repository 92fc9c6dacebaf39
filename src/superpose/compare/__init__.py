"""What the superposed model is compared with: one explicit registry of methods, one file per method.

Each result is labelled `method:point` (e.g. `linear:0.5`). A scorer turns a batch into next-token logits; it
may reuse every model's logits of the same batch (`References`), so that the base and each expert run once per
batch whatever the number of baselines. Weight merges are the exception: each holds a model as large as the
base, so evaluation builds and scores them one at a time (`holds_model`). Adding a method is one file that
declares its `METHOD` (name, builder, default sweep, point parsing) plus one entry in `registry`.

* `registry`: the list of methods; the default sweeps and the default baseline set derive from it.
* `common`: what every method shares (`Method`, `Scorer`, the batch's `References`, the models).
* `weight_merge`: what every weight merge shares (checks, the per-tensor driver, the merged model's scorer).
* weight merges, one model each: `linear` (whose weighted sum is also `hard_merge`'s export),
  `task_arithmetic`, `ties`, `dare`, `slerp`.
* output mixtures of the M models: `ensemble`, `bayes`, `fixed_share`, `fixed_share_mix` (a mixture over rates).
* routers that pick one model: `router` (causal), `router_lookahead` (reads the whole sequence: a bound).
* `hard_merge`: the paper's hard merge of a trained model, written as a plain Hugging Face checkpoint.
* bounds that read the answer: `oracle` (one model per sequence), `oracle_token` (one per token).
"""
from __future__ import annotations

from superpose.compare.common import BaselineContext, Method, Point, References, Scorer
from superpose.compare.registry import (
    DEFAULT_BASELINES,
    MERGE_METHODS,
    METHODS,
    REGISTRY,
    WEIGHT_MERGES,
    build_scorer,
    holds_model,
    label,
    parse_baselines,
)
from superpose.compare.weight_merge import MergedModelScorer

__all__ = ["METHODS", "REGISTRY", "DEFAULT_BASELINES", "WEIGHT_MERGES", "MERGE_METHODS", "parse_baselines", "label",
           "holds_model", "build_scorer", "BaselineContext", "Method", "References", "Scorer", "MergedModelScorer",
           "Point"]
