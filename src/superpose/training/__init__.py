"""Training the blend weights, gates and autoencoders of a superposed model.

* `loop`: `train()` as named steps, and `run_epochs`, the loop any trainer here shares (steps, checkpoints, resume).
* `blocks`: labelled training blocks (and synthetic code-switched ones).
* `losses`: the objective: reconstruction, LM, spline regulariser, gate labels, load balance.
* `step`: one optimiser step, identical over processes and gradient accumulation.
* `resume`: what makes a resumed run the same run (the data order).
* `checkpoint`: atomic safetensors + JSON checkpoints and exact resume.
* `distributed`: one process or several (accelerate / torchrun), devices and placement.
* `distill`: `distill()`, one stack trained on the superposed model's next-token distributions (or replay).
* `teacher_cache`: the teacher's top-k log-probabilities, computed once into safetensors shards.
* `model_card`: the `README.md` model card of run folders, exports and distilled models.
"""
