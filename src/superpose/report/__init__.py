"""What a person reads about a model: scores, the one-stack export, settings, gates and analyses.

* `evaluation`: the superposed model and every comparison scored per held-out set.
* `export`: the paper's hard merge as a plain Hugging Face checkpoint.
* `info`: what a run holds (settings, parameters, blend weights per layer).
* `gate_view`: which stack each token is routed to, layer by layer.
* `analysis/`: the paper's analyses (statistics, figures, hidden-state collection).
* `html`, `run_report`: one self-contained HTML page of a run.
"""
