"""What a person reads about a model: tables of scores, settings, gates, analyses and the HTML report.

* `eval_tables`: the tables `superpose eval` prints (the scores come from `superpose.evaluation`).
* `info`: what a run holds (settings, parameters, blend weights per layer).
* `gate_view`: which stack each token is routed to, layer by layer.
* `analysis/`: the paper's analyses (statistics, figures, hidden-state collection).
* `html`, `run_report`: one self-contained HTML page of a run.
"""
