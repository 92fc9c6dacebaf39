"""Held-out scoring: the one batched loop every measurement of perplexity goes through, and `evaluate`.

* `scoring`: the loop over held-out blocks in batches (`scoring_batches`), the token-weighted tallies, and
  `score`, which runs many scorers over shared passes (with subsets, agreement and timing).
* `evaluate`: the superposed model and every comparison from `compare`, scored per held-out set, sweeps chosen
  on separate selection data.

Training's validation, distillation's measurements, `superpose eval` and the benchmarks all call `scoring`.
Tables and reports of the results live in `report`.
"""
