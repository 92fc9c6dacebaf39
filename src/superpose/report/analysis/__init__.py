"""The paper's analyses of a trained run.

* `collect`: batched hidden-state collection, keeping only what the analyses need.
* `stats`: the statistics, on plain numpy arrays so they run without any model.
* `plots`: one PNG figure per function.
* `run`: `analyze()`: every figure and number of a run.
"""
