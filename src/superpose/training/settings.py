"""`LoopSettings` (what every trainer shares) and `TrainSettings` (training a superposed model).

The defaults are the `dynamic` preset's, what `superpose train` uses without `--preset`; `PAPER_TRAIN` holds the
paper's values where they differ.
"""
from __future__ import annotations

import typing
from dataclasses import asdict, dataclass
from typing import Literal

from superpose.core.settings import (
    Dtype,
    SettingsError,
    check_choices,
    check_counts,
    check_positive,
    coerce_numbers,
    setting,
)

MixedPrecision = Literal["no", "bf16"]
TrainingGraph = Literal["sequential", "parallel"]
MIXED_PRECISION = typing.get_args(MixedPrecision)
# Settings that fix which blocks each step sees: a resumed run must keep them, or its data order breaks.
DATA_ORDER_KEYS = ("batch_size", "block_size", "seed", "max_train_blocks", "training_graph", "grad_accum",
                   "switch_rate")
DEVICE_MAPS = ("auto", "balanced", "balanced_low_0", "sequential")
# Names from the two-model days: they still load (settings files, flags), with a notice.
RENAMED_SETTINGS = {"lr_alpha": "lr_blend", "alpha_reg_weight": "blend_reg_weight"}

# The paper's values where the defaults (the dynamic preset's) differ.
PAPER_TRAIN = {"recon_weight": None, "gate_label_weight": 0.0, "lr_gate": 1e-3, "switch_rate": 0.0}


@dataclass
class LoopSettings:
    """What every trainer here (`train`, `distill`) shares: the loop's length, batches, data order (with
    code-switched blocks), optimiser hygiene, checkpoints, device and autocast. Validated by `check_loop`."""

    epochs: int = setting(1, "passes over the training data (default 1; ignored when --max-steps is given)")
    max_steps: int | None = setting(None, "length of training in optimiser steps: epochs repeat until it is reached")
    batch_size: int = setting(32, "sequences per micro-batch and process (default 32); a step sees batch x "
                                  "processes x grad_accum sequences")
    grad_accum: int = setting(1, "micro-batches per optimiser step (default 1): the same result as a K-times larger "
                                 "batch")
    block_size: int = setting(128, "tokens per sequence (default 128)")
    seed: int = setting(0, "random seed of the data order, the code-switched blocks and the trainable parts' init "
                           "(default 0)")
    weight_decay: float = setting(1e-2, "AdamW weight decay (default 1e-2)")
    grad_clip: float = setting(1.0, "max gradient norm, per parameter group (default 1.0)")
    switch_rate: float = setting(0.0, "share of training blocks replaced by synthetic code-switched blocks: sentences "
                                      "(or code chunks) alternating between the training files (default 0)")
    max_train_blocks: int | None = setting(None, "cap on training blocks per training file")
    max_valid_blocks: int | None = setting(64, "cap on validation blocks per validation file (default 64)")
    save_every: int | None = setting(None, "also checkpoint every N optimiser steps (atomic; default: per epoch only)")
    keep_checkpoints: int = setting(2, "how many of the latest checkpoints to keep (default 2)")
    device: str | None = setting(None, "torch device (default: cuda when available, else cpu); with several "
                                       "processes each takes its own GPU")
    mixed_precision: MixedPrecision | None = setting(None, "bf16: autocast the forward to bfloat16 (trainable parts "
                                                           "and losses stay float32); default bf16 on CUDA (unless "
                                                           "the stacks are float16), no elsewhere")

    def check_loop(self) -> None:
        coerce_numbers(self)
        check_choices(self)
        check_counts(self, ("epochs", "batch_size", "block_size", "keep_checkpoints", "grad_accum"),
                     ("max_steps", "max_train_blocks", "max_valid_blocks", "save_every"))
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise SettingsError(f"seed must be an integer; got {self.seed!r}")
        check_positive("grad_clip", self.grad_clip)
        for name in ("weight_decay", "switch_rate"):
            check_positive(name, getattr(self, name), allow_zero=True)
        if self.switch_rate > 1:
            raise SettingsError(f"switch_rate is a share of the blocks, in [0, 1]; got {self.switch_rate!r}")
        if self.device is not None and (not isinstance(self.device, str) or not self.device.strip()):
            raise SettingsError(f"device must be a device name such as cpu or cuda; got {self.device!r}")


@dataclass
class TrainSettings(LoopSettings):
    """Optimisation; None values take the variant's reference value. The loop's own settings are
    `LoopSettings`'. The defaults are the `dynamic` preset's (`PAPER_TRAIN`: the paper's)."""

    switch_rate: float = setting(0.2, "share of training blocks replaced by synthetic code-switched blocks: sentences "
                                      "(or code chunks) alternating between the training files (default 0.2)")
    lr_blend: float | None = setting(None, "learning rate of the blend's spline (the paper's alpha; default 2e-4 "
                                           "1d, 3e-4 2d)")
    lr_ae: float = setting(1e-4, "learning rate of the autoencoders (default 1e-4)")
    lr_gate: float = setting(1e-2, "learning rate of the token gates (default 1e-2)")
    recon_weight: float | None = setting(0.0, "weight of the reconstruction loss (default 0; null: 3 1d, 1 2d, the "
                                              "paper's)")
    lm_weight: float | None = setting(None, "weight of the language-model loss (default 1 1d, 0.2 2d)")
    blend_reg_weight: float | None = setting(None, "weight of the spline regulariser (default 0 1d, 0.1 2d)")
    gate_label_weight: float = setting(0.1, "weight of the gate cross-entropy towards each labelled token's stack "
                                            "(default 0.1)")
    load_balance_weight: float = setting(0.0, "weight of a load-balance term on unlabelled tokens' gates (default 0)")
    training_graph: TrainingGraph = setting("sequential", "parallel reproduces the reference's training graph")
    device_map: str | None = setting(None, "spread the frozen stacks over the available devices (Hugging Face / "
                                           "accelerate placement: auto, balanced, balanced_low_0, sequential) or "
                                           "load them onto one named device")
    dtype: Dtype = setting("float32", "dtype the frozen stacks are loaded in; the trainable parts stay float32")

    def __post_init__(self) -> None:
        self.check_loop()
        for name in ("lr_blend", "lr_ae", "lr_gate"):
            value = getattr(self, name)
            if value is not None:
                check_positive(name, value)
        for name in ("recon_weight", "lm_weight", "blend_reg_weight", "gate_label_weight", "load_balance_weight"):
            value = getattr(self, name)
            if value is not None:
                check_positive(name, value, allow_zero=True)
        if self.device_map is not None and (not isinstance(self.device_map, str) or not self.device_map.strip()):
            raise SettingsError(f"device_map must be a device name such as cpu or cuda; got {self.device_map!r}")
        if self.device_map is not None and self.device_map not in DEVICE_MAPS:
            import torch

            try:
                torch.device(self.device_map)
            except (RuntimeError, TypeError):
                raise SettingsError(f"device_map must be one of {', '.join(DEVICE_MAPS)} or a device; "
                                    f"got {self.device_map!r}") from None

    def resolved(self, variant: str) -> TrainSettings:
        """A copy with every None replaced by the variant's reference value."""
        defaults = {
            "1d": dict(lr_blend=2e-4, recon_weight=3.0, lm_weight=1.0, blend_reg_weight=0.0),
            "2d": dict(lr_blend=3e-4, recon_weight=1.0, lm_weight=0.2, blend_reg_weight=0.1),
        }[variant]
        values = asdict(self)
        for key, value in defaults.items():
            if values[key] is None:
                values[key] = value
        return TrainSettings(**values)
