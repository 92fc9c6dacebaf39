"""Typed, validated settings of the superposed model and of its training.

Settings come from a YAML file and/or flags; both are validated into these dataclasses at the edge,
and the exact settings are saved beside every run. Each field's metadata holds its command-line help,
so a new setting is one line here and its flag appears on every command that takes settings.
"""
from __future__ import annotations

import math
import types
import typing
import warnings
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import yaml


class SettingsError(ValueError):
    """A setting is unknown or has a bad value."""


def setting(default, help: str, choices: tuple | None = None):
    """A dataclass field whose metadata carries its flag's help text (and choices)."""
    return field(default=default, metadata={"help": help, "choices": choices})


def check_choice(name: str, value: object, allowed: tuple) -> None:
    if value not in allowed:
        raise SettingsError(f"{name} must be one of {', '.join(map(str, allowed))}; got {value!r}")


def check_positive(name: str, value: float, allow_zero: bool = False) -> None:
    ok = value >= 0 if allow_zero else value > 0
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not ok or not math.isfinite(value):
        raise SettingsError(f"{name} must be {'non-negative' if allow_zero else 'positive'}; got {value!r}")


def _scalar_type(annotation) -> type | None:
    """int / float / str for `int`, `float | None`, ...; None for lists and other shapes."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        return members[0] if len(members) == 1 and members[0] in (int, float, str) else None
    return annotation if annotation in (int, float, str) else None


def field_type(cls, name: str) -> type | None:
    """The scalar type of a settings field (None for lists and other shapes)."""
    return _scalar_type(typing.get_type_hints(cls)[name])


def coerce_numbers(settings) -> None:
    """YAML reads `2e-4` as a string (YAML 1.1 needs a dot): accept numeric strings for numeric settings."""
    hints = typing.get_type_hints(type(settings))
    for f in fields(settings):
        kind, value = _scalar_type(hints[f.name]), getattr(settings, f.name)
        if kind not in (int, float) or not isinstance(value, str):
            continue
        try:
            number = float(value.strip())
        except ValueError:
            raise SettingsError(f"{f.name} must be a number; got {value!r}") from None
        if kind is int:
            if not number.is_integer():
                raise SettingsError(f"{f.name} must be an integer; got {value!r}")
            number = int(number)
        setattr(settings, f.name, number)
    for f in fields(settings):  # an integral float (e.g. `epochs: 2.0`) for an int setting
        value = getattr(settings, f.name)
        if _scalar_type(hints[f.name]) is int and isinstance(value, float) and value.is_integer():
            setattr(settings, f.name, int(value))


HEADS = ("base", "first_expert", "blend", "mixture")
GATES = ("static", "token")
GATE_EVIDENCE = ("none", "fixed_share", "fixed_share_mix")
GRAPHS = ("sequential", "parallel")


def check_counts(settings, required: tuple[str, ...], optional: tuple[str, ...] = ()) -> None:
    """Positive integers (`optional` ones may be None); a training block holds at least 2 tokens."""
    for name in (*required, *optional):
        value = getattr(settings, name)
        if value is None and name in optional:
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            null = " or null" if name in optional else ""
            raise SettingsError(f"{name} must be a positive integer{null}; got {value!r}")
    if getattr(settings, "block_size", 2) < 2:
        raise SettingsError("block_size must be at least 2")


def check_choices(settings) -> None:
    """Every field that declares choices (in its metadata) holds one of them (None: the field's default rule)."""
    for f in fields(settings):
        choices, value = f.metadata.get("choices"), getattr(settings, f.name)
        if choices and value is not None:
            check_choice(f.name, value, choices)


# Names from the two-model days: they still load (settings files, flags, saved runs), with a notice.
RENAMED_SETTINGS = {"lr_alpha": "lr_blend", "alpha_reg_weight": "blend_reg_weight"}
RENAMED_VALUES = {("head", "expert"): "first_expert", ("embed_blend", "mean_alpha"): "mean_weights"}


def _deprecated(old: str, new: str) -> None:
    warnings.warn(f"{old} is deprecated: use {new}", FutureWarning, stacklevel=4)


def upgrade_names(values: dict) -> dict:
    """A settings mapping with old setting names (and values) replaced by today's, each with a notice."""
    values = dict(values)
    for old, new in RENAMED_SETTINGS.items():
        if old in values:
            if new in values:
                raise SettingsError(f"{old} is the old name of {new}: give one of them")
            _deprecated(f"the setting {old}", new)
            values[new] = values.pop(old)
    return values


def _upgrade_values(settings) -> None:
    for (name, old), new in RENAMED_VALUES.items():
        if getattr(settings, name) == old:
            _deprecated(f"{name}: {old}", f"{name}: {new}")
            setattr(settings, name, new)


def _boolean(name: str, value: object) -> bool:
    """true/false from YAML or a flag (also yes/no, on/off, 1/0)."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "yes", "on", "1"):
        return True
    if text in ("false", "no", "off", "0"):
        return False
    raise SettingsError(f"{name} must be true or false; got {value!r}")


@dataclass
class ModelSettings:
    """How the stacks are blended."""

    variant: str = setting("1d", "1d: one alpha per layer + linear-conv AEs; 2d: an alpha vector per layer + "
                                 "dual-path AEs", ("1d", "2d"))
    ae_layers: list[int] | None = setting(None, "comma-separated 0-based layers followed by an autoencoder ('' for "
                                                "none; default scales the paper's 2..11 (1d) / 3..10 (2d) of 12)")
    bottleneck: float | None = setting(None, "autoencoder width / hidden size (default 0.75 for 1d, 0.65 for 2d)")
    conv_padding: str = setting("causal", "symmetric reproduces the paper and leaks the next token",
                                ("causal", "symmetric"))
    embed_blend: str = setting("mean_weights", "blend the stacks' embeddings with each stack's weight averaged "
                                               "over layers (the paper's mean alpha), or use the base's",
                               ("mean_weights", "base"))
    head: str = setting("base", "final norm + LM head: the base's (paper), the first expert's, all heads' logits "
                                "blended by the mean weights, or mixture: the stacks' next-token probabilities mixed "
                                "by the last layer's weights", HEADS)
    gate: str = setting("static", "static: one blend per layer (the paper's spline); token: a causal per-token gate "
                                  "on top of the spline", GATES)
    gate_hidden: int = setting(0, "token gate: width of a hidden layer (0 = LayerNorm + linear)")
    gate_evidence: str = setting("none", "token gate: also read each stack's fixed-share log-posterior over the "
                                         "tokens seen so far: at three rates around evidence_rate (fixed_share), or "
                                         "at a grid of rates plus their Bayesian mixture, with which an untrained "
                                         "gate starts (fixed_share_mix)", GATE_EVIDENCE)
    evidence_rate: float = setting(0.02, "fixed-share rate of the gate evidence; the gate also reads 0.1x and 10x "
                                         "this rate (default 0.02)")
    graph: str = setting("sequential", "sequential: the stacks share one running state (paper); parallel: each "
                                       "stack runs on its own states and the blends form a side path to the head",
                         GRAPHS)
    ae_residual: bool = setting(False, "autoencoders as h + AE(h) with the decoder starting at zero (an untrained "
                                       "model is the plain blend); off = the paper's form")
    n_control_points: int = setting(16, "B-spline control points of alpha (default 16)")
    spline_degree: int = setting(3, "B-spline degree (default 3)")

    def __post_init__(self) -> None:
        coerce_numbers(self)
        _upgrade_values(self)
        check_choices(self)
        if self.gate_evidence != "none" and self.gate != "token":
            raise SettingsError("gate_evidence needs gate: token (a static blend reads nothing of the input)")
        if not isinstance(self.gate_hidden, int) or isinstance(self.gate_hidden, bool) or self.gate_hidden < 0:
            raise SettingsError(f"gate_hidden must be a non-negative integer; got {self.gate_hidden!r}")
        check_positive("evidence_rate", self.evidence_rate)
        if self.evidence_rate > 0.09:
            raise SettingsError(f"evidence_rate must be at most 0.09 (the gate also reads 10x this rate, which must "
                                f"stay below 1); got {self.evidence_rate!r}")
        if self.gate_hidden and self.gate != "token":
            raise SettingsError("gate_hidden sizes the token gate: it needs gate: token")
        self.ae_residual = _boolean("ae_residual", self.ae_residual)
        if self.bottleneck is not None and not (isinstance(self.bottleneck, (int, float)) and 0 < self.bottleneck <= 4):
            raise SettingsError(f"bottleneck must be in (0, 4]; got {self.bottleneck!r}")
        if isinstance(self.ae_layers, str):
            self.ae_layers = _parse_int_list("ae_layers", self.ae_layers)
        if self.ae_layers is not None:
            if not isinstance(self.ae_layers, (list, tuple)) or not all(
                    isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in self.ae_layers):
                raise SettingsError(f"ae_layers must be non-negative layer indices; got {self.ae_layers!r}")
            self.ae_layers = sorted(set(self.ae_layers))
        if not isinstance(self.n_control_points, int) or not isinstance(self.spline_degree, int) \
                or self.spline_degree < 1 or self.n_control_points <= self.spline_degree:
            raise SettingsError("n_control_points must be an integer larger than spline_degree (>= 1)")

    def resolved_ae_layers(self, n_layers: int) -> list[int]:
        """The AE layers for a stack of `n_layers`; the default keeps the paper's share of 12 layers."""
        if self.ae_layers is not None:
            bad = [i for i in self.ae_layers if i >= n_layers]
            if bad:
                raise SettingsError(f"ae_layers {bad} do not exist in a model of {n_layers} layers")
            return list(self.ae_layers)
        start, stop = (2, 12) if self.variant == "1d" else (3, 11)
        first = math.floor(start * n_layers / 12 + 0.5)
        last = math.floor(stop * n_layers / 12 + 0.5)
        return list(range(min(first, n_layers - 1), max(last, first + 1)))[: n_layers]

    def resolved_bottleneck(self) -> float:
        if self.bottleneck is not None:
            return self.bottleneck
        return 0.75 if self.variant == "1d" else 0.65


def _parse_int_list(name: str, text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise SettingsError(f"{name} expects comma-separated integers, got {text!r}") from None


DTYPES = ("float32", "bfloat16", "float16")
# Settings that fix which blocks each step sees: a resumed run must keep them, or its data order breaks.
DATA_ORDER_KEYS = ("batch_size", "block_size", "seed", "max_train_blocks", "training_graph", "grad_accum",
                   "switch_rate")
MIXED_PRECISION = ("no", "bf16")
DEVICE_MAPS = ("auto", "balanced", "balanced_low_0", "sequential")


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
    mixed_precision: str | None = setting(None, "bf16: autocast the forward to bfloat16 (trainable parts and losses "
                                                "stay float32); default bf16 on CUDA (unless the stacks are float16), "
                                                "no elsewhere", MIXED_PRECISION)

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
    `LoopSettings`'."""

    lr_blend: float | None = setting(None, "learning rate of the blend's spline (the paper's alpha; default 2e-4 "
                                           "1d, 3e-4 2d)")
    lr_ae: float = setting(1e-4, "learning rate of the autoencoders (default 1e-4)")
    lr_gate: float = setting(1e-3, "learning rate of the token gates (default 1e-3)")
    recon_weight: float | None = setting(None, "weight of the reconstruction loss (default 3 1d, 1 2d)")
    lm_weight: float | None = setting(None, "weight of the language-model loss (default 1 1d, 0.2 2d)")
    blend_reg_weight: float | None = setting(None, "weight of the spline regulariser (default 0 1d, 0.1 2d)")
    gate_label_weight: float = setting(0.0, "weight of the gate cross-entropy towards each labelled token's stack "
                                            "(default 0)")
    load_balance_weight: float = setting(0.0, "weight of a load-balance term on unlabelled tokens' gates (default 0)")
    training_graph: str = setting("sequential", "parallel reproduces the reference's training graph",
                                  ("sequential", "parallel"))
    device_map: str | None = setting(None, "spread the frozen stacks over the available devices (Hugging Face / "
                                           "accelerate placement: auto, balanced, balanced_low_0, sequential) or "
                                           "load them onto one named device")
    dtype: str = setting("float32", "dtype the frozen stacks are loaded in; the trainable parts stay float32",
                         DTYPES)

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


def torch_dtype(name: str):
    """'bfloat16' -> torch.bfloat16, with a message naming the choices."""
    import torch

    check_choice("dtype", name, DTYPES)
    return getattr(torch, name)


def _field_names(cls) -> set[str]:
    return {f.name for f in fields(cls)}


MODEL_KEYS = _field_names(ModelSettings)
TRAIN_KEYS = _field_names(TrainSettings)


def load_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise SettingsError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise SettingsError(f"{path} is not valid YAML: {err}") from err
    except UnicodeDecodeError as err:
        raise SettingsError(f"{path} is not valid UTF-8 (byte {err.start})") from err
    if not isinstance(data, dict):
        raise SettingsError(f"{path} must hold a mapping of setting: value")
    return data


# Named starting points; a config file and flags override any of their values. The dataclass defaults are
# the reference's settings (with causal convolutions), so `paper` adds nothing.
PRESETS: dict[str, dict] = {
    "paper": {},
    # Chosen on the real-text benchmark's selection halves (BENCHMARKS.md): the experts run side by side and a
    # per-token gate, reading each expert's running likelihood and the side path's state, mixes their next-token
    # distributions; it competes with the training-free rate mixture, which it equals untrained.
    "dynamic": {
        "graph": "parallel", "head": "mixture", "gate": "token", "gate_evidence": "fixed_share_mix", "gate_hidden": 32,
        "ae_layers": [], "recon_weight": 0.0, "gate_label_weight": 0.1, "lr_gate": 1e-2, "switch_rate": 0.2,
    },
}
DEFAULT_PRESET = "dynamic"  # what `superpose train` uses without --preset: the best measured (BENCHMARKS.md)


def preset_values(name: str) -> dict:
    check_choice("preset", name, tuple(PRESETS))
    return dict(PRESETS[name])


def preset_settings(name: str) -> tuple[ModelSettings, TrainSettings]:
    """The model and training settings of a preset, for callers of the Python API."""
    model, train, _ = split_settings(preset_values(name))
    return model, train


def split_settings(values: dict, allowed_extra: set[str] = frozenset()) -> tuple[ModelSettings, TrainSettings, dict]:
    """Validate a flat mapping into (model settings, train settings, extras); unknown keys are an error.

    A `preset` key names the values to start from; every other key overrides them."""
    values = upgrade_names(values)
    if "preset" in values:
        values = {**preset_values(values.pop("preset")), **values}
    unknown = sorted(set(values) - MODEL_KEYS - TRAIN_KEYS - set(allowed_extra))
    if unknown:
        raise SettingsError(
            f"unknown setting(s): {', '.join(unknown)}. "
            f"Known: {', '.join(sorted(MODEL_KEYS | TRAIN_KEYS | set(allowed_extra)))}"
        )
    try:
        model = ModelSettings(**{k: v for k, v in values.items() if k in MODEL_KEYS})
        train = TrainSettings(**{k: v for k, v in values.items() if k in TRAIN_KEYS})
    except TypeError as err:
        raise SettingsError(str(err)) from err
    extras = {k: v for k, v in values.items() if k in allowed_extra}
    return model, train, extras
