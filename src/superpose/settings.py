"""Typed, validated settings of the superposed model and of its training.

Settings come from a YAML file and/or flags; both are validated into these dataclasses at the edge,
and the exact settings are saved beside every run.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import yaml


class SettingsError(ValueError):
    """A setting is unknown or has a bad value."""


def _choice(name: str, value: object, allowed: tuple) -> None:
    if value not in allowed:
        raise SettingsError(f"{name} must be one of {', '.join(map(str, allowed))}; got {value!r}")


def _positive(name: str, value: float, allow_zero: bool = False) -> None:
    ok = value >= 0 if allow_zero else value > 0
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not ok or not math.isfinite(value):
        raise SettingsError(f"{name} must be {'non-negative' if allow_zero else 'positive'}; got {value!r}")


@dataclass
class ModelSettings:
    """How the two stacks are blended (SPEC §2-§4)."""

    variant: str = "1d"  # "1d": one alpha per layer + linear-conv AEs; "2d": alpha vector per layer + dual-path AEs
    ae_layers: list[int] | None = None  # 0-based layers followed by an AE; None scales the paper's 2..11 (1d) / 3..10 (2d) of 12
    bottleneck: float | None = None  # AE width / hidden size; None = 0.75 (1d) or 0.65 (2d) as in the paper
    conv_padding: str = "causal"  # "symmetric" reproduces the reference and leaks the next token
    embed_blend: str = "mean_alpha"  # "mean_alpha" blends both embeddings with the mean alpha; "base" uses the base's
    head: str = "base"  # final norm + LM head: "base" (paper), "expert", or "blend" (mean alpha)
    n_control_points: int = 16
    spline_degree: int = 3

    def __post_init__(self) -> None:
        _choice("variant", self.variant, ("1d", "2d"))
        _choice("conv_padding", self.conv_padding, ("causal", "symmetric"))
        _choice("embed_blend", self.embed_blend, ("mean_alpha", "base"))
        _choice("head", self.head, ("base", "expert", "blend"))
        if self.bottleneck is not None and not 0 < self.bottleneck <= 4:
            raise SettingsError(f"bottleneck must be in (0, 4]; got {self.bottleneck!r}")
        if self.ae_layers is not None:
            if not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in self.ae_layers):
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


@dataclass
class TrainSettings:
    """Optimisation (SPEC §5); None values take the variant's reference value."""

    epochs: int = 1
    max_steps: int | None = None  # stop after this many optimiser steps in total
    batch_size: int = 32
    block_size: int = 128
    seed: int = 0
    lr_alpha: float | None = None  # 2e-4 (1d) / 3e-4 (2d)
    lr_ae: float = 1e-4
    weight_decay: float = 1e-2
    grad_clip: float = 1.0  # max grad norm, per parameter group
    recon_weight: float | None = None  # 3 (1d) / 1 (2d)
    lm_weight: float | None = None  # 1 (1d) / 0.2 (2d)
    alpha_reg_weight: float | None = None  # 0 (1d) / 0.1 (2d)
    training_graph: str = "sequential"  # "parallel" reproduces the reference's training graph
    max_train_blocks: int | None = None  # per domain; None = all
    max_valid_blocks: int | None = 64  # per domain
    device: str = "cpu"

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "block_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise SettingsError(f"{name} must be a positive integer; got {value!r}")
        if self.block_size < 2:
            raise SettingsError("block_size must be at least 2")
        for name in ("max_steps", "max_train_blocks", "max_valid_blocks"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise SettingsError(f"{name} must be a positive integer or null; got {value!r}")
        if not isinstance(self.seed, int):
            raise SettingsError(f"seed must be an integer; got {self.seed!r}")
        for name in ("lr_alpha", "lr_ae", "grad_clip"):
            value = getattr(self, name)
            if value is not None:
                _positive(name, value)
        for name in ("weight_decay", "recon_weight", "lm_weight", "alpha_reg_weight"):
            value = getattr(self, name)
            if value is not None:
                _positive(name, value, allow_zero=True)
        _choice("training_graph", self.training_graph, ("sequential", "parallel"))

    def resolved(self, variant: str) -> "TrainSettings":
        """A copy with every None replaced by the variant's reference value."""
        defaults = {
            "1d": dict(lr_alpha=2e-4, recon_weight=3.0, lm_weight=1.0, alpha_reg_weight=0.0),
            "2d": dict(lr_alpha=3e-4, recon_weight=1.0, lm_weight=0.2, alpha_reg_weight=0.1),
        }[variant]
        values = asdict(self)
        for key, value in defaults.items():
            if values[key] is None:
                values[key] = value
        return TrainSettings(**values)


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
    if not isinstance(data, dict):
        raise SettingsError(f"{path} must hold a mapping of setting: value")
    return data


def split_settings(values: dict, allowed_extra: set[str] = frozenset()) -> tuple[ModelSettings, TrainSettings, dict]:
    """Validate a flat mapping into (model settings, train settings, extras); unknown keys are an error."""
    unknown = sorted(set(values) - MODEL_KEYS - TRAIN_KEYS - set(allowed_extra))
    if unknown:
        raise SettingsError(
            f"unknown setting(s): {', '.join(unknown)}. Known: {', '.join(sorted(MODEL_KEYS | TRAIN_KEYS | set(allowed_extra)))}"
        )
    try:
        model = ModelSettings(**{k: v for k, v in values.items() if k in MODEL_KEYS})
        train = TrainSettings(**{k: v for k, v in values.items() if k in TRAIN_KEYS})
    except TypeError as err:
        raise SettingsError(str(err)) from err
    extras = {k: v for k, v in values.items() if k in allowed_extra}
    return model, train, extras
