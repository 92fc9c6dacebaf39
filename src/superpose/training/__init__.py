"""Training the blend weights, gates and autoencoders of a superposed model.

* `loop`: `train()`, the training loop and its named steps.
* `checkpoint`: atomic safetensors + JSON checkpoints and exact resume.
* `distributed`: one process or several (accelerate / torchrun), devices and placement.
"""
