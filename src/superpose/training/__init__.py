"""Training the blend weights, gates and autoencoders of a superposed model.

* `settings`: `LoopSettings` (what every trainer shares) and `TrainSettings` (defaults: the dynamic preset).
* `presets`: the named starting settings (`paper`, `dynamic`) and a flat mapping split into model and train settings.
* `loop`: `train()` as named steps, and `run_epochs`, the loop any trainer here shares (steps, checkpoints, resume).
* `blocks`: labelled training blocks (and synthetic code-switched ones).
* `losses`: the objective: reconstruction, LM, spline regulariser, gate labels, load balance; and
  distillation's KL (full or top-k) and replay LM loss.
* `step`: one optimiser step, identical over processes and gradient accumulation (shared by `distill`).
* `resume`: what makes a resumed run the same run (the data order).
* `checkpoint`: atomic safetensors + JSON checkpoints and exact resume.
* `distributed`: one process or several (accelerate / torchrun), devices and placement.
* `distill`: `distill()`, one stack trained on the superposed model's next-token distributions (or replay).
* `student`: the one-stack student: a copy of a stack (or a LoRA adapter on it), its optimiser and schedule.
* `distill_folder`: the run `distill` reads and the folder it writes, checked before any work.
* `distill_report`: the student against its teacher on held-out text, `distill.json` and the model card.
* `teacher_cache`: the teacher's top-k log-probabilities, computed once into safetensors shards.
"""
