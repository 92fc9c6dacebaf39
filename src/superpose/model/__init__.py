"""The superposed model and its parts.

* `settings`: `ModelSettings`, how the stacks are blended (defaults: the dynamic preset; the paper's values).
* `architecture`: where each model family keeps its embeddings, layers, final norm and head.
* `blending`: every way of computing the per-layer blend weights over the M stacks (static spline, token gate).
* `evidence`: the gates' fixed-share evidence, each stack's running log-posterior.
* `autoencoders`: the causal autoencoders placed after the blend.
* `cache`: one KV cache per stack plus the convolution and evidence state.
* `graphs`: the sequential and parallel forward graphs, public functions of (model, ids, positions, cache).
* `calibration`: the output read at a few temperatures and mixed causally, at inference.
* `superposed`: `SuperposedModel`: its parts, forward, saving and loading.
* `speculative`: lossless speculative generation across the stacks (the heaviest stack drafts, the dense
  model verifies).
* `model_card`: the `README.md` model card of run folders, exports and distilled models.
"""
